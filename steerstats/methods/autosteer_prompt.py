"""``autosteer+prompt``: Auto Steer's feature edits plus the query as a system prompt.

The edits are the same (cached) ones ``autosteer`` uses; the system prompt is the ``prompt``
method's, from the same template, so the combination differs from each part in one way only.
"""

from __future__ import annotations

from steerstats.methods._feature_steering import feature_intervention
from steerstats.methods._registry import method
from steerstats.methods.autosteer import autosteer_edits
from steerstats.methods.base import Intervention, Method, MethodContext, Query
from steerstats.methods.prompt import DEFAULT_TEMPLATE, PromptMethod, render_prompt


class AutoSteerPrompt(Method):
    uses_strength = True

    def __init__(self, template: str) -> None:
        self.template = PromptMethod(template).template  # same validation as the prompt method

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        edits = await autosteer_edits(query, ctx, "autosteer+prompt")
        prompt = render_prompt(self.template, query)
        return feature_intervention(edits, strength, "autosteer", query, system_prompt=prompt)


@method("autosteer+prompt")
def autosteer_prompt(
    template: str = DEFAULT_TEMPLATE,
) -> Method:
    """Auto Steer's edits (scaled by the sweep's strength) and the ``prompt`` method's system
    prompt; at strength 0 it is exactly the ``prompt`` method."""
    return AutoSteerPrompt(template)
