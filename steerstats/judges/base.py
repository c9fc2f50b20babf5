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
from steerstats.items import Prompt, Query
from steerstats.methods.base import Intervention


@dataclass(frozen=True)
class Score:
    """One observation. ``value`` is NaN when it could not be determined; ``reason`` says why.

    ``reply`` is the raw text the judge model answered (chat judges), kept so that every score,
    and above all an unparsed one, can be traced to what the judge actually said."""

    metric: str
    value: float
    reason: str | None = None
    reply: str | None = None

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

    How many judgings each generation gets and the ``rater`` label in the scores table belong
    to the experiment's judge entry, not the judge (see ``judges._registry``); the collector
    puts both in the cache key beside :meth:`identity`.
    """

    metrics: tuple[str, ...] = ()

    def check_queries(self, queries: Sequence[Query]) -> None:
        """Raise ConfigError, naming them, if some queries lack what this judge needs (checked
        when a run is planned, before any call). Judges that need nothing accept any."""
        return None

    def applies_to(self, prompt: Prompt) -> bool:
        """Whether this judge scores generations for ``prompt`` (MMLU grading: mmlu only)."""
        return True

    def identity(self) -> dict[str, Any]:
        """What determines this judge's answers (name, template digest, model) for cache keys."""
        return {"name": getattr(self, "registry_name", type(self).__name__)}

    @abstractmethod
    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        """Score ``item`` for judging occasion ``repeat``; ``backend`` is the judge's own, if
        any."""


def text_digest(*parts: str) -> str:
    """Short SHA-256 digest of template texts, recorded so a changed rubric is a new result."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
