"""Method registry: ``@method("name")`` on a factory returning a Method."""

from __future__ import annotations

from typing import Any

from steerstats._registry import Registry
from steerstats.methods.base import Method

registry: Registry[Method] = Registry("method", "steerstats.methods._builtins")


def method(name: str, **metadata: Any):  # type: ignore[no-untyped-def]
    """Register a method factory under ``name`` (what experiment files write as ``name``)."""
    return registry.register(name, **metadata)


def create_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """Build the method registered as ``name`` from its ``params`` table."""
    return registry.create(name, **(params or {}))
