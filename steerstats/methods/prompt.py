"""``prompt``: steering by system prompt, templated from the query; works on every backend."""

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

DEFAULT_TEMPLATE = "You are a helpful assistant. In every reply, {query}."
# The seed study's MMLU prompt method (its open-prompt study used "When answering to the
# following prompt, {query}"); it replaced the request's system message, as every template does.
SEED_STUDY_TEMPLATE = "When answering, please {query}."


def render_prompt(template: str, query: Query) -> str:
    """Fill ``{query}`` in ``template`` with the query text (e.g. "be funny")."""
    return template.replace("{query}", query.text)


class PromptMethod(Method):
    def __init__(self, template: str) -> None:
        if "{query}" not in template:
            raise ValueError(f"prompt template must contain '{{query}}', got {template!r}")
        self.template = template

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        return Intervention(system_prompt=render_prompt(self.template, query))

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall]:
        return []  # resolves without a call


@method("prompt")
def prompt(template: str = DEFAULT_TEMPLATE) -> Method:
    """System prompt asking for the queried behaviour; ``{query}`` is replaced by its text."""
    return PromptMethod(template)
