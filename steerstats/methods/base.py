"""The steering-method protocol.

A method turns (steering query, strength) into a resolved :class:`Intervention`: a system
prompt, a backend :class:`~steerstats.backends.Steering`, or both. Resolution may call the
backend (Auto Steer, building a CAA vector); the context gives it the steered model's backend,
a cache for such resolutions, and other chat backends (an agentic picker).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from steerstats.backends.base import Backend, GenerationRequest, Steering
from steerstats.items import Query


@dataclass(frozen=True)
class Intervention:
    """What a method resolved to. Its canonical form goes into the generation's cache key.

    ``strength`` is reported in the tidy tables (NaN when None). ``detail`` is JSON-able
    information stored with the generation (e.g. feature labels) that does not change the answer.
    """

    system_prompt: str | None = None
    steering: Steering | None = None
    strength: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def canonical(self) -> dict[str, Any]:
        return {
            "system_prompt": self.system_prompt,
            "steering": None if self.steering is None else self.steering.canonical(),
            "strength": (None if self.strength is None or math.isnan(self.strength)
                         else float(self.strength)),
        }


class ResolutionCache(Protocol):
    """Memoises expensive resolutions (Auto Steer edits, feature searches) by a JSON-able key."""

    async def get_or_compute(
        self, namespace: str, key: Mapping[str, Any], compute: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Return the cached JSON-able value for (namespace, key), computing and storing it once."""
        ...


@dataclass(frozen=True)
class ResolutionCall:
    """A backend call a resolution would make, described for the dry run (nothing is called).

    ``kind`` names it ("autosteer", "feature search", "feature lookup", "chat", "vector");
    ``backend`` serves it (its price, concurrency group and latency); ``namespace`` and ``key``
    are its resolution-cache entry, so a call shared by several methods or strengths is counted
    once and a cached one is free. ``request``: a chat call's request (its tokens and price).
    ``calls`` is the expected number, ``max_calls`` the most (e.g. a picker's retries).
    """

    kind: str
    backend: Backend
    namespace: str
    key: Mapping[str, Any]
    request: GenerationRequest | None = None
    calls: int = 1
    max_calls: int = 1


# (found, value) of a resolution-cache entry, looked up without computing anything.
CachePeek = Callable[[str, Mapping[str, Any]], tuple[bool, Any]]


@dataclass
class MethodContext:
    """What a method may use while resolving: the steered model's backend, a resolution cache,
    and a factory for other chat backends by config name (e.g. the agentic picker's LLM)."""

    backend: Backend
    cache: ResolutionCache
    chat_backend: Callable[[str], Backend] | None = None
    cache_dir: str | None = None


class Method(ABC):
    """Base class for steering methods. Register a factory with ``@method("name")``.

    ``strengths`` is a sweep from the experiment file; methods without a strength knob use
    ``(None,)``. Resolving with strength 0 must reproduce control exactly.
    """

    uses_strength: bool = False

    @abstractmethod
    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        """The intervention for ``query`` at ``strength``."""

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall] | None:
        """The backend calls resolving ``query`` at ``strength`` would make, for the dry run
        (cached ones may be listed: the dry run drops them); ``cached`` peeks at the resolution
        cache (e.g. a search result a later call's key depends on). None: the method cannot
        say, and its calls go uncounted (the dry run says so)."""
        return None

    def identity(self) -> dict[str, Any]:
        """Registered name and creation arguments (set by the registry), for logs and manifests."""
        return {
            "name": getattr(self, "registry_name", type(self).__name__),
            "args": json.loads(json.dumps(getattr(self, "registry_args", {}), sort_keys=True,
                                          default=str)),
        }
