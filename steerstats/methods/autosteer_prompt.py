"""``autosteer+prompt``: Auto Steer's feature edits plus the query as a system prompt.

The edits are the same (cached) ones ``autosteer`` uses; the system prompt is the ``prompt``
method's, from the same template, so the combination differs from each part in one way only.
With ``reuse_autosteer = false`` the edits come from an Auto Steer call of the method's own, as
in the seed study (which called Auto Steer afresh for its combined method): then the combination
may also differ from ``autosteer`` in its edits.
"""

from __future__ import annotations

from steerstats.errors import ConfigError
from steerstats.methods._feature_steering import feature_intervention
from steerstats.methods._registry import method
from steerstats.methods.autosteer import autosteer_call, autosteer_edits
from steerstats.methods.base import (
    CachePeek,
    Intervention,
    Method,
    MethodContext,
    Query,
    ResolutionCall,
)
from steerstats.methods.prompt import DEFAULT_TEMPLATE, PromptMethod, render_prompt


class AutoSteerPrompt(Method):
    uses_strength = True

    def __init__(self, template: str, reuse_autosteer: bool = True) -> None:
        self.template = PromptMethod(template).template  # same validation as the prompt method
        if not isinstance(reuse_autosteer, bool):
            raise ConfigError(
                "method 'autosteer+prompt': reuse_autosteer must be true or false, "
                f"got {reuse_autosteer!r}"
            )
        self.reuse_autosteer = reuse_autosteer

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        edits = await autosteer_edits(
            query, ctx, "autosteer+prompt", own_call=not self.reuse_autosteer
        )
        prompt = render_prompt(self.template, query)
        return feature_intervention(edits, strength, "autosteer", query, system_prompt=prompt)

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall]:
        return [autosteer_call(query, ctx, "autosteer+prompt", own_call=not self.reuse_autosteer)]


@method("autosteer+prompt")
def autosteer_prompt(
    template: str = DEFAULT_TEMPLATE,
    reuse_autosteer: bool = True,
) -> Method:
    """Auto Steer's edits (scaled by the sweep's strength) and the ``prompt`` method's system
    prompt; at strength 0 it is exactly the ``prompt`` method. ``reuse_autosteer``: share the
    ``autosteer`` method's Auto Steer call (true) or make one of its own (false, the seed
    study's way)."""
    return AutoSteerPrompt(template, reuse_autosteer)
