"""``sentiment``: an objective behaviour metric for sentiment queries, computed by VADER.

VADER (Hutto & Gilbert 2014; PyPI ``vaderSentiment``) is a small lexicon-and-rules sentiment
model whose lexicon ships in its wheel: no model, no network, the same number every time. Its
compound score of a response lies in [-1, 1] (-1 most negative, +1 most positive). The judge
signs it by the query's declared direction (``sentiment = "positive" | "negative"`` on the
query), so for every query higher means "more of the asked-for sentiment" and arms can be
compared across queries of both directions. Queries without a direction are refused, by name,
when the run is planned.

The lexicon scores words, not sense: gibberish with a few charged words ("BAD BAD BAD") scores
as strongly as a fluent reply. Read it beside the coherence metrics, never alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerstats.backends.base import Backend
from steerstats.errors import ConfigError, pip_dependency_error
from steerstats.items import Query
from steerstats.judges._registry import judge
from steerstats.judges.base import Judge, JudgeInput, Score

SIGN = {"positive": 1.0, "negative": -1.0}


def _analyzer() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise pip_dependency_error(
            "the sentiment judge", ["vaderSentiment"], extra="local"
        ) from None
    return SentimentIntensityAnalyzer()


def compound(text: str, analyzer: Any | None = None) -> float:
    """VADER's compound score of ``text`` in [-1, 1] (0 for text without charged words)."""
    return float((analyzer or _analyzer()).polarity_scores(text)["compound"])


class SentimentJudge(Judge):
    """VADER compound score of the response, times +1 (positive query) or -1 (negative)."""

    metrics = ("sentiment",)

    def __init__(self) -> None:
        self._vader: Any = None

    def identity(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {**super().identity(), "vader": version("vaderSentiment")}

    def check_queries(self, queries: Sequence[Query]) -> None:
        missing = [q.id for q in queries if q.sentiment not in SIGN]
        if missing:
            raise ConfigError(
                f"the sentiment judge scores a query's declared direction, and queries "
                f"{', '.join(map(repr, missing))} declare none; give each one "
                'sentiment = "positive" or "negative" (or drop the judge)'
            )

    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        self.check_queries([item.query])
        if not item.response.strip():
            return [Score.missing("sentiment", "empty response")]
        if self._vader is None:
            self._vader = _analyzer()
        sign = SIGN[str(item.query.sentiment)]
        return [Score("sentiment", sign * compound(item.response, self._vader))]


@judge("sentiment", metrics=("sentiment",), scale=(-1, 1))
def sentiment() -> Judge:
    """VADER's compound sentiment of each response (in [-1, 1]), signed by the query's declared
    direction so that higher is always more of the sentiment asked for."""
    return SentimentJudge()
