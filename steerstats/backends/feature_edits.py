"""The ``feature_edits`` steering spec: SAE feature nudges as plain JSON-able data.

A ``Steering(kind="feature_edits", spec={"edits": [...]})`` carries one entry per feature:
``{"id": <feature uuid>, "index": <index in the SAE>, "label": <description>, "value": <nudge>}``.
Methods build it (Auto Steer, agentic picks, an explicit list); the goodfire backend applies it.
The spec is what the generation's cache key hashes, so a different answer from Auto Steer is a
different key. This module imports nothing heavy, so methods can use it without the SDK.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steerstats.backends.base import Steering

KIND = "feature_edits"


class FeatureEdit(BaseModel):
    """One feature nudge: which feature (uuid and SAE index), its label, and the value added."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    index: int = Field(ge=0)
    label: str = ""
    value: float

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("feature edit value must be a finite number")
        return v

    def scaled(self, scale: float) -> FeatureEdit:
        return self.model_copy(update={"value": self.value * scale})


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: problem; field: problem``."""
    parts = []
    for e in exc.errors():
        where = ".".join(map(str, e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def parse_edits(items: Iterable[Mapping[str, Any]], where: str) -> list[FeatureEdit]:
    """Validate raw edit dicts; ``where`` names their origin in the error (a reply, a spec)."""
    edits = []
    for n, item in enumerate(items):
        try:
            edits.append(FeatureEdit.model_validate(item))
        except ValidationError as exc:
            raise ValueError(
                f"{where}: invalid feature edit {n} ({describe_validation_error(exc)}); each edit "
                "is {'id': <uuid>, 'index': <int >= 0>, 'label': <str>, 'value': <finite float>}"
            ) from None
    return edits


def edits_from_steering(steering: Steering) -> list[FeatureEdit]:
    """The edits inside a ``feature_edits`` steering; other kinds are a TypeError naming the fix."""
    if steering.kind != KIND:
        raise TypeError(
            f"this backend applies {KIND!r} steering, got {steering.kind!r}; "
            "use a backend that supports it (e.g. 'local' for 'vector')"
        )
    raw = steering.spec.get("edits")
    if not isinstance(raw, list):
        raise TypeError(f"{KIND} steering spec needs an 'edits' list, got {dict(steering.spec)!r}")
    return parse_edits(raw, f"{KIND} steering spec")


def edits_steering(edits: Iterable[FeatureEdit], scale: float = 1.0) -> Steering | None:
    """A ``feature_edits`` Steering with every value multiplied by ``scale``.

    None when nothing would change the model (no edits, or scale 0), so that a zero-strength
    sweep step resolves exactly like the unsteered control.
    """
    scaled = [e.scaled(scale) for e in edits]
    if scale == 0 or not scaled:
        return None
    return Steering(kind=KIND, spec={"edits": [e.model_dump() for e in scaled]})
