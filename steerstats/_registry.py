"""A small name -> factory registry shared by backends, methods and judges.

Built-ins register with a decorator at import time; outside packages register through the
``steerstats`` entry-point group under ``package/name`` names, imported on first lookup. The
registry keeps the arguments each object was created with, so it can be logged and rebuilt.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from steerstats.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

ENTRY_POINT_GROUP = "steerstats"


@dataclass(frozen=True)
class RegistryInfo:
    """What was registered: its kind ('method', 'backend', 'judge'), name and metadata."""

    kind: str
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps registered names to factories that build ``T`` from keyword arguments."""

    def __init__(self, kind: str, builtins_module: str) -> None:
        self.kind = kind
        self._builtins_module = builtins_module
        self._factories: dict[str, Callable[..., T]] = {}
        self._info: dict[str, RegistryInfo] = {}
        self._loaded_builtins = False

    def register(self, name: str, **metadata: Any) -> Callable[[F], F]:
        """Decorator: register a factory (function or class) under ``name``."""

        def decorate(factory: F) -> F:
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            self._info[name] = RegistryInfo(self.kind, name, dict(metadata))
            return factory

        return decorate

    def _ensure_loaded(self, name: str | None = None) -> None:
        if not self._loaded_builtins:
            self._loaded_builtins = True
            importlib.import_module(self._builtins_module)
        if name is not None and name not in self._factories and "/" in name:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name == name or ep.name == name.split("/", 1)[0]:
                    ep.load()

    def names(self) -> list[str]:
        """All registered names, built-ins first loaded."""
        self._ensure_loaded()
        return sorted(self._factories)

    def info(self, name: str) -> RegistryInfo:
        self.get(name)
        return self._info[name]

    def get(self, name: str) -> Callable[..., T]:
        """The factory for ``name``; the error lists the valid names."""
        self._ensure_loaded(name)
        try:
            return self._factories[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s are: {valid} "
                f"(plug-ins register as 'package/name' in the '{ENTRY_POINT_GROUP}' "
                "entry-point group)"
            ) from None

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Build ``name`` from keyword arguments, checking them against the factory's signature."""
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        obj = factory(**kwargs)
        try:
            obj.registry_name = name  # type: ignore[attr-defined]
            obj.registry_args = dict(kwargs)  # type: ignore[attr-defined]
        except AttributeError:  # frozen or slotted objects keep their own identity
            pass
        return obj


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise ConfigError naming unknown or missing parameters of ``factory``."""
    sig = inspect.signature(factory)
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{what} got unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise ConfigError(
            f"{what} is missing required parameter(s) {', '.join(map(repr, missing))}")


def options_factory(options: Callable[..., Any], build: Callable[[Any], T]) -> Callable[..., T]:
    """A factory taking ``options``' fields as keywords (an options dataclass), so plug-ins that
    share a parameter set declare it once and the registry still checks each name."""

    def factory(**kwargs: Any) -> T:
        return build(options(**kwargs))

    factory.__signature__ = inspect.signature(options)  # type: ignore[attr-defined]
    factory.__doc__ = options.__doc__
    return factory
