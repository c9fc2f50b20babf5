"""Backend registry: ``@backend("name")`` on a Backend subclass."""

from __future__ import annotations

from typing import Any

from steerstats._registry import Registry
from steerstats.backends.base import Backend

registry: Registry[Backend] = Registry("backend", "steerstats.backends._builtins")


def backend(name: str, **metadata: Any):  # type: ignore[no-untyped-def]
    """Register a Backend subclass under ``name`` (what experiment files write as ``backend``)."""

    def decorate(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        return registry.register(name, **metadata)(cls)

    return decorate


def create_backend(name: str, model: str, options: dict[str, Any] | None = None) -> Backend:
    """Instantiate the backend registered as ``name`` for ``model``."""
    return registry.get(name)(model=model, options=options or {})
