"""``control``: no steering at all; the baseline every other method is compared with."""

from __future__ import annotations

from steerstats.methods._registry import method
from steerstats.methods.base import (
    CachePeek,
    Intervention,
    Method,
    MethodContext,
    Query,
    ResolutionCall,
)


class Control(Method):
    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        return Intervention()

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall]:
        return []  # resolves without a call


@method("control")
def control() -> Method:
    """The unsteered model."""
    return Control()
