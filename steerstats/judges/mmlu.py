"""``mmlu``: correctness computed from the reply's ``<answer>`` tag against the answer key.

Correct is 1.0, wrong 0.0; a reply without a readable letter is its own outcome (NaN value with
the reason), not "wrong", so the unparsed rate can be reported next to accuracy.
"""

from __future__ import annotations

from typing import Any

from steerstats.backends.base import Backend
from steerstats.datasets import parse_answer
from steerstats.judges._registry import judge
from steerstats.judges.base import Judge, JudgeInput, Prompt, Score


class MMLUJudge(Judge):
    """Grades MMLU replies by their last ``<answer>`` tag; needs no backend."""

    metrics = ("accuracy",)

    def applies_to(self, prompt: Prompt) -> bool:
        return prompt.prompt_set == "mmlu"

    def identity(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "registry_name", "mmlu"),
            "parser": "answer-tag-v1",
        }

    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        key = item.prompt.answer
        if key is None:
            return [Score.missing("accuracy", f"no answer key for prompt {item.prompt.id!r}")]
        letter, why = parse_answer(item.response)
        if letter is None:
            return [Score.missing("accuracy", f"unparsed: {why}")]
        return [Score("accuracy", 1.0 if letter == key.strip().upper() else 0.0)]


@judge("mmlu", metrics=("accuracy",), scale=(0, 1))
def mmlu() -> Judge:
    """MMLU correctness (rater "auto"): 1.0 right, 0.0 wrong, NaN with reason when unreadable."""
    return MMLUJudge()
