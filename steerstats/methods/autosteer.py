"""``autosteer``: Goodfire's Auto Steer turns the query text into feature edits for the model.

The edits are resolved once per query x model through the resolution cache and recorded with
every generation (``Intervention.detail``); the generation's cache key hashes them, so a changed
Auto Steer answer is a new result. A ``strengths`` sweep scales the edits (0 = unsteered).
"""

from __future__ import annotations

from typing import Any

from steerstats.backends.feature_edits import FeatureEdit
from steerstats.methods._feature_steering import (
    backend_extra,
    cached_edits,
    feature_intervention,
    resolution_key,
)
from steerstats.methods._registry import method
from steerstats.methods.base import (
    CachePeek,
    Intervention,
    Method,
    MethodContext,
    Query,
    ResolutionCall,
)

NAMESPACE = "goodfire.autosteer"


async def autosteer_edits(
    query: Query, ctx: MethodContext, method_name: str, own_call: bool = False
) -> list[FeatureEdit]:
    """Auto Steer's edits for ``query`` on the context's model (one call per query x model).

    ``own_call``: ``method_name`` gets edits from an Auto Steer call of its own instead of
    sharing the ``autosteer`` method's (as the seed study's combined method did); Auto Steer
    may answer differently each time, so the two methods may then steer differently.
    """
    call = backend_extra(ctx.backend, "autosteer", method_name)
    key = autosteer_key(query, ctx, method_name, own_call)
    return await cached_edits(ctx, NAMESPACE, key, lambda: call(query.text))


def autosteer_key(
    query: Query, ctx: MethodContext, method_name: str, own_call: bool = False
) -> dict[str, Any]:
    """The resolution-cache key of Auto Steer's answer for ``query`` on the context's model."""
    key = resolution_key(ctx.backend, query=query.text)
    if own_call:
        key["called_for"] = method_name
    return key


def autosteer_call(
    query: Query, ctx: MethodContext, method_name: str, own_call: bool = False
) -> ResolutionCall:
    """The Auto Steer call :func:`autosteer_edits` would make (for the dry run)."""
    backend_extra(ctx.backend, "autosteer", method_name)
    return ResolutionCall("autosteer", ctx.backend, NAMESPACE,
                          autosteer_key(query, ctx, method_name, own_call))


class AutoSteer(Method):
    uses_strength = True

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        edits = await autosteer_edits(query, ctx, "autosteer")
        return feature_intervention(edits, strength, "autosteer", query)

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall]:
        return [autosteer_call(query, ctx, "autosteer")]


@method("autosteer")
def autosteer() -> Method:
    """Steer with the feature edits Auto Steer proposes for the query, scaled by the sweep's
    strength (1 without a sweep)."""
    return AutoSteer()
