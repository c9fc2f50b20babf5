"""Test-only judges and a method, registered on import (test experiment files list this module
in ``plugins``).

``test-rubric`` asks its chat backend for a ``<score>N</score>`` (the fake server and the mock
backend answer those) and parses it; ``test-length`` is computed (rater "auto");
``test-picker`` resolves through a helper chat model and the resolution cache.
"""

from __future__ import annotations

import math
import re

from steerstats.backends.base import Backend, GenerationRequest
from steerstats.judges import judge
from steerstats.judges.base import Judge, JudgeInput, Score, text_digest
from steerstats.methods import method
from steerstats.methods.base import Intervention, Method, MethodContext, Query

TEMPLATE = "Rate how well the response does this: {query}. Reply with <score>N</score>, N in 1-5."


class RubricForTests(Judge):
    metrics = ("behavior",)
    max_tokens = 64

    def identity(self) -> dict[str, object]:
        return {**super().identity(), "template": text_digest(TEMPLATE)}

    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        if backend is None:
            raise ValueError("test-rubric needs a backend")
        prompt = TEMPLATE.format(query=item.query.text) + "\n\n" + item.response
        res = await backend.generate(GenerationRequest(
            messages=[{"role": "user", "content": prompt}], temperature=1.0,
            max_tokens=self.max_tokens, seed=repeat))
        m = re.search(r"<score>(\d+)</score>", res.text)
        if m is None:
            return [Score.missing("behavior", "unparsed: no <score> tag")]
        return [Score("behavior", float(m.group(1)))]


class LengthForTests(Judge):
    metrics = ("length",)

    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        n = len(item.response.split())
        return [Score("length", float(n) if n else math.nan, None if n else "empty response")]


@judge("test-rubric", metrics=("behavior",))
def rubric_for_tests() -> Judge:
    return RubricForTests()


@judge("test-length", metrics=("length",))
def length_for_tests() -> Judge:
    return LengthForTests()


class PickerForTests(Method):
    """Resolves by asking a helper chat model for a system prompt, memoised in the resolution
    cache (like an agentic feature picker): re-runs must not ask again."""

    def __init__(self, helper: str) -> None:
        self.helper = helper

    async def resolve(self, query: Query, strength: float | None, ctx: MethodContext
                      ) -> Intervention:
        async def ask() -> str:
            if ctx.chat_backend is None:
                raise ValueError("test-picker needs chat backends")
            res = await ctx.chat_backend(self.helper).generate(GenerationRequest(
                messages=[{"role": "user", "content": f"Write a system prompt to {query.text}."}],
                temperature=0.0, max_tokens=32))
            return res.text

        text = await ctx.cache.get_or_compute("test-picker", {"query": query.text}, ask)
        return Intervention(system_prompt=str(text), detail={"picked_by": self.helper})


@method("test-picker")
def picker_for_tests(helper: str) -> Method:
    return PickerForTests(helper)
