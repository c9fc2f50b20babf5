"""The backend protocol: where text comes from.

A backend needs one method, an async ``generate``; concurrency and retry classification have
defaults it may override. Steering reaches a backend as a resolved :class:`Steering` (JSON-able
spec: feature edits, a vector digest and coefficient); prompts reach it as chat messages.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from steerstats.redact import redact_url, secret_name

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": str}

# Option names never copied into cache keys, records, logs or exports.
SECRET_OPTION_NAMES = frozenset(
    {"api_key", "authorization", "auth", "token", "password", "headers"})


@dataclass(frozen=True)
class Steering:
    """A resolved intervention the backend applies while generating.

    ``kind`` names the mechanism ("vector", "feature_edits", ...); ``spec`` is JSON-able and
    fully determines it (vector digest not path, feature ids and values), so it can go in a
    cache key. ``"caa"`` is accepted for ``"vector"`` (its name before other vector methods).
    """

    kind: str
    spec: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.kind == "caa":
            object.__setattr__(self, "kind", "vector")

    def canonical(self) -> dict[str, Any]:
        # Keys keep the spelling "caa" for vectors, so caches made before the rename still match.
        kind = _KEY_SPELLING.get(self.kind, self.kind)
        return {"kind": kind, "spec": json.loads(json.dumps(self.spec, sort_keys=True))}


_KEY_SPELLING = {"vector": "caa"}


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion: messages, sampling parameters and optional steering."""

    messages: Sequence[Message]
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = None
    steering: Steering | None = None

    def canonical(self) -> dict[str, Any]:
        """Everything that determines the answer, as plain JSON-able data (for cache keys)."""
        return {
            "messages": [dict(m) for m in self.messages],
            "temperature": float(self.temperature),
            "max_tokens": int(self.max_tokens),
            "seed": self.seed,
            "steering": None if self.steering is None else self.steering.canonical(),
        }


@dataclass
class GenerationResult:
    """What came back. ``extra`` is JSON-able backend detail worth keeping (never secrets)."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TransientError(Exception):
    """A failure worth retrying (rate limit, 5xx, timeout, dropped connection, malformed reply).

    ``timeout`` marks a request that got no reply in time (counted and logged as a timeout)."""

    def __init__(self, message: str, retry_after: float | None = None,
                 timeout: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.timeout = timeout


class Backend(ABC):
    """Base class for text sources. Subclasses register with ``@backend("name")``."""

    name: ClassVar[str] = "backend"

    def __init__(self, model: str, options: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.options: dict[str, Any] = dict(options or {})

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Produce one completion for ``request``; raise TransientError for retryable faults."""

    def max_concurrency(self) -> int:
        """Calls this backend may have in flight at once (config can lower or raise it)."""
        return 8

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` is transient; the collector retries with backoff when true."""
        return isinstance(exc, TransientError | asyncio.TimeoutError | ConnectionError)

    def retry_after(self, exc: BaseException) -> float | None:
        """Seconds the server asked us to wait (Retry-After), if it said."""
        return getattr(exc, "retry_after", None)

    def identity(self) -> dict[str, Any]:
        """What about this backend determines answers: name, model id, non-secret options
        (URLs with their credentials masked)."""
        public = {k: _public(v) for k, v in sorted(self.options.items())
                  if k.lower() not in SECRET_OPTION_NAMES and not secret_name(k)}
        return {"backend": self.name, "model": self.model, "options": public}

    async def aclose(self) -> None:  # noqa: B027 (an optional hook: nothing to release here)
        """Release clients, files or models."""


def _public(value: Any) -> Any:
    """``value`` with URLs' credentials masked, recursively (options may nest)."""
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {k: _public(v) for k, v in value.items() if not secret_name(str(k))}
    if isinstance(value, list | tuple):
        return [_public(v) for v in value]
    return value
