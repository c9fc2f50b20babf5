"""Judge registry: ``@judge("name", metrics=(...), repeats=k)`` on a factory returning a Judge.

``repeats`` (judgings per response) has one owner: the experiment file's ``[[judges]]
repeats``; a judge only declares its default in its registry metadata (1 when absent). A
factory that needs the number (to check it against its rubric wordings) declares a
``repeats`` parameter and is given the effective value when it is built.
"""

from __future__ import annotations

import inspect
from typing import Any

from steerstats._registry import Registry
from steerstats.errors import ConfigError
from steerstats.judges.base import Judge

registry: Registry[Judge] = Registry("judge", "steerstats.judges._builtins")


def judge(name: str, **metadata: Any):  # type: ignore[no-untyped-def]
    """Register a judge factory under ``name``; metadata records e.g. ``metrics`` and ``scale``."""
    return registry.register(name, **metadata)


def default_repeats(name: str) -> int:
    """The judgings per response judge ``name`` declares as its default (1 when it does not)."""
    return int(registry.info(name).metadata.get("repeats", 1))


def create_judge(name: str, params: dict[str, Any] | None = None, *,
                 repeats: int | None = None) -> Judge:
    """Build the judge registered as ``name`` from its ``params`` table, for ``repeats``
    judgings per response (default: the judge's declared default)."""
    kwargs = dict(params or {})
    if "repeats" in kwargs:
        raise ConfigError(
            f"judge {name!r}: repeats is not a judge parameter; set it on the judge entry "
            "([[judges]] repeats = N)"
        )
    if "repeats" in inspect.signature(registry.get(name)).parameters:
        kwargs["repeats"] = default_repeats(name) if repeats is None else int(repeats)
    return registry.create(name, **kwargs)
