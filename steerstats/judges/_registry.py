"""Judge registry: ``@judge("name", metrics=(...))`` on a factory returning a Judge."""

from __future__ import annotations

from typing import Any

from steerstats._registry import Registry
from steerstats.judges.base import Judge

registry: Registry[Judge] = Registry("judge", "steerstats.judges._builtins")


def judge(name: str, **metadata: Any):  # type: ignore[no-untyped-def]
    """Register a judge factory under ``name``; metadata records e.g. ``metrics`` and ``scale``."""
    return registry.register(name, **metadata)


def create_judge(name: str, params: dict[str, Any] | None = None) -> Judge:
    """Build the judge registered as ``name`` from its ``params`` table."""
    return registry.create(name, **(params or {}))
