"""Test-only judges, registered on import (experiment files list this module in `plugins`).

``test-rubric`` asks its chat backend for a ``<score>N</score>`` (the fake server and the mock
backend answer those) and parses it; ``test-length`` is computed (rater "auto").
"""

from __future__ import annotations

import math
import re

from steerstats.backends.base import Backend, GenerationRequest
from steerstats.judges import judge
from steerstats.judges.base import Judge, JudgeInput, Score, text_digest

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
