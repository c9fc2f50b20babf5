"""The judge protocol: a generation in, one or more scores out.

Rubric judges call a chat backend; automatic judges (MMLU correctness, perplexity) compute.
A score whose value cannot be determined is NaN with a ``reason`` — never 0, never "wrong".
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerstats.backends.base import Backend
from steerstats.methods.base import Intervention, Query


@dataclass(frozen=True)
class Prompt:
    """One prompt shown to the model. MMLU prompts carry their answer letter and subject."""

    id: str
    text: str
    prompt_set: str  # "open" | "mmlu"
    answer: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class Score:
    """One observation. ``value`` is NaN when it could not be determined; ``reason`` says why."""

    metric: str
    value: float
    reason: str | None = None

    @staticmethod
    def missing(metric: str, reason: str) -> Score:
        return Score(metric=metric, value=math.nan, reason=reason)


@dataclass(frozen=True)
class JudgeInput:
    """What a judge sees: the query, the prompt, the response and how it was produced."""

    query: Query
    prompt: Prompt
    response: str
    generation_key: str
    intervention: Intervention


class Judge(ABC):
    """Base class for judges. Register a factory with ``@judge("name", metrics=(...))``.

    ``rater`` labels the judge in the scores table ("auto" for computed metrics); ``repeats`` is
    how many independent judgings each generation gets (the repeat index is in the cache key).
    """

    metrics: tuple[str, ...] = ()
    rater: str = "auto"
    repeats: int = 1

    def check_queries(self, queries: Sequence[Query]) -> None:
        """Raise ConfigError, naming them, if some queries lack what this judge needs (checked
        when a run is planned, before any call). Judges that need nothing accept any."""
        return None

    def applies_to(self, prompt: Prompt) -> bool:
        """Whether this judge scores generations for ``prompt`` (MMLU grading: mmlu only)."""
        return True

    def identity(self) -> dict[str, Any]:
        """What determines this judge's answers (name, template digest, model) for cache keys."""
        return {"name": getattr(self, "registry_name", type(self).__name__), "rater": self.rater}

    @abstractmethod
    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        """Score ``item`` for judging occasion ``repeat``; ``backend`` is the judge's own, if
        any."""


def text_digest(*parts: str) -> str:
    """Short SHA-256 digest of template texts, recorded so a changed rubric is a new result."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
