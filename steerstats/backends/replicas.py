"""Several servers of one model: spread calls over them, a bounded number in flight on each,
failing over when one errors.

The ``openai`` backend becomes a :class:`ReplicatedOpenAIBackend` (the same requests and replies,
over a :class:`ReplicaPool`) when an experiment names ``base_urls = [...]`` instead of one
``base_url``; ``max_concurrency`` is then the limit per replica. Each call goes to the replica
with the fewest calls in flight among those with a free slot and not cooling down; a replica
that fails transiently (5xx, 429, timeout, dropped connection) cools down (for its
``Retry-After``, else 1 s doubling to 30 s, reset by a success) and the call is tried at once
on another replica. Only when every replica has failed does the call fail, as a
:class:`TransientError` the collector retries.

Replicas serve the same model, so which one answered is not part of a cache key: the
backend's identity names the model and no URL (adding, removing or moving replicas keeps the
cache). The replica that answered (its index in ``base_urls``) is kept in the result's
``extra`` for the record; messages name replicas without credentials or query strings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from steerstats.backends.base import GenerationRequest, GenerationResult, TransientError
from steerstats.backends.openai_compat import OpenAIBackend, _make_client
from steerstats.errors import ConfigError

__all__ = ["Replica", "ReplicaPool", "ReplicatedOpenAIBackend", "parse_base_urls"]

T = TypeVar("T")
COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 30.0


def parse_base_urls(value: Any) -> list[str]:
    """The ``base_urls`` option: a non-empty list of distinct http(s) URLs (trailing / dropped)."""
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(
            f"openai backend: base_urls must be a non-empty list of URLs, got {value!r}")
    urls: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.startswith(("http://", "https://")):
            raise ConfigError(
                f"openai backend: every entry of base_urls must be an http(s) URL, got {item!r}")
        url = item.rstrip("/")
        if url in urls:
            raise ConfigError(f"openai backend: base_urls lists {url} twice")
        urls.append(url)
    return urls


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment (what messages may show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass
class Replica:
    """One server: its client, calls in flight, and health."""

    url: str
    index: int
    client: Any = None
    in_flight: int = 0
    calls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    last_error: str | None = field(default=None, repr=False)

    def cooling(self, now: float) -> bool:
        return now < self.down_until


class ReplicaPool:
    """Calls spread over replicas, at most ``per_replica`` in flight on each."""

    def __init__(self, urls: Sequence[str], make_client: Callable[[str], Any],
                 per_replica: int) -> None:
        if per_replica < 1:
            raise ConfigError(f"openai backend: max_concurrency must be >= 1, got {per_replica}")
        self.per_replica = per_replica
        self.make_client = make_client
        self.replicas = [Replica(url, i) for i, url in enumerate(urls)]
        self._changed: asyncio.Condition | None = None

    @property
    def capacity(self) -> int:
        """Calls the pool can have in flight at once."""
        return self.per_replica * len(self.replicas)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def _pick(self, tried: set[str]) -> Replica | None:
        """The least-busy untried replica with a free slot, healthy ones first."""
        now = time.monotonic()
        free = [r for r in self.replicas
                if r.url not in tried and r.in_flight < self.per_replica]
        if not free:
            return None
        return min(free, key=lambda r: (r.cooling(now), r.down_until, r.in_flight, r.calls))

    async def _acquire(self, tried: set[str]) -> Replica:
        changed = self._condition()
        async with changed:
            while True:
                # A cooling replica is used only when every healthy untried one is full.
                replica = self._pick(tried)
                now = time.monotonic()
                waiting_for_healthy = (
                    replica is not None and replica.cooling(now)
                    and any(not r.cooling(now) and r.url not in tried for r in self.replicas)
                )
                if replica is not None and not waiting_for_healthy:
                    replica.in_flight += 1
                    replica.calls += 1
                    return replica
                await changed.wait()

    async def _release(self, replica: Replica) -> None:
        changed = self._condition()
        async with changed:
            replica.in_flight -= 1
            changed.notify_all()

    async def call(self, fn: Callable[[Any, str], Awaitable[T]]) -> tuple[T, int]:
        """``fn(client, url)`` on a replica, failing over on transient errors; returns its
        result and the index of the replica that answered."""
        tried: set[str] = set()
        while True:
            replica = await self._acquire(tried)
            try:
                if replica.client is None:  # made on first use, inside the event loop
                    replica.client = self.make_client(replica.url)
                result = await fn(replica.client, replica.url)
            except TransientError as exc:  # another replica may answer
                self._failed(replica, exc)
                tried.add(replica.url)
                if len(tried) == len(self.replicas):
                    raise TransientError(
                        f"all {len(self.replicas)} replicas failed; last "
                        f"({public_url(replica.url)}): {exc}",
                        retry_after=self._soonest_back(),
                    ) from exc
                continue
            finally:
                await self._release(replica)
            replica.consecutive_failures = 0
            replica.down_until = 0.0
            return result, replica.index

    def _failed(self, replica: Replica, exc: TransientError) -> None:
        replica.failures += 1
        replica.consecutive_failures += 1
        replica.last_error = str(exc)
        wait = exc.retry_after
        if wait is None:
            wait = min(MAX_COOLDOWN_S, COOLDOWN_S * 2 ** (replica.consecutive_failures - 1))
        replica.down_until = time.monotonic() + wait

    def _soonest_back(self) -> float:
        now = time.monotonic()
        return max(0.0, min(r.down_until for r in self.replicas) - now)

    def stats(self) -> list[dict[str, Any]]:
        """Per replica: URL, calls sent, transient failures."""
        return [{"url": public_url(r.url), "calls": r.calls, "failures": r.failures}
                for r in self.replicas]

    async def aclose(self) -> None:
        for replica in self.replicas:
            if replica.client is not None:
                await replica.client.close()
                replica.client = None


_client: ContextVar[Any] = ContextVar("steerstats_replica_client")


class ReplicatedOpenAIBackend(OpenAIBackend):
    """The ``openai`` backend over replicas: each call's request is built and its reply read
    by :class:`OpenAIBackend`, on the client of the replica the pool picked."""

    def __init__(self, model: str, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        if "base_url" in options:
            raise ConfigError("openai backend: give base_url or base_urls, not both")
        urls = parse_base_urls(options.get("base_urls"))
        super().__init__(model, options)
        self.replicas = ReplicaPool(urls, lambda url: _make_client(url, self.timeout_s),
                                    per_replica=int(self.options.get("max_concurrency", 16)))

    def identity(self) -> dict[str, Any]:
        """The model and request-shaping options, no URL: any replica may answer a key."""
        return {"backend": self.name, "model": self.model, "base_url": "replicas",
                "extra_body": self.extra_body}

    def max_concurrency(self) -> int:
        return self.replicas.capacity

    def _get_client(self) -> Any:
        return _client.get()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        async def on(client: Any, url: str) -> GenerationResult:
            token = _client.set(client)
            try:
                return await OpenAIBackend.generate(self, request)
            except Exception as exc:
                exc.add_note(f"replica: {public_url(url)}")
                raise
            finally:
                _client.reset(token)

        result, index = await self.replicas.call(on)
        result.extra["replica"] = index
        return result

    async def aclose(self) -> None:
        await self.replicas.aclose()
        await super().aclose()
