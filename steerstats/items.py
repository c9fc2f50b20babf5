"""The value types every layer shares: a steering query and a prompt shown to the model.

Methods, judges, datasets and the collection layer all import them from here, so none of
those packages needs another's protocols to describe what it works on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SENTIMENTS", "Prompt", "Query"]

SENTIMENTS = (None, "positive", "negative")


@dataclass(frozen=True)
class Query:
    """A steering query: the behaviour asked for ("be funny"), with optional judge criteria and,
    for behaviours with a sign (the ``sentiment`` judge), the declared direction."""

    id: str
    text: str
    criteria: str | None = None
    sentiment: str | None = None  # "positive" | "negative"

    def __post_init__(self) -> None:
        if self.sentiment not in SENTIMENTS:
            raise ValueError(
                f"query {self.id!r}: sentiment must be one of "
                f"{', '.join(repr(s) for s in SENTIMENTS if s)} or left out, got {self.sentiment!r}"
            )


@dataclass(frozen=True)
class Prompt:
    """One prompt shown to the model. MMLU prompts carry their answer letter and subject."""

    id: str
    text: str
    prompt_set: str  # "open" | "mmlu"
    answer: str | None = None
    subject: str | None = None
