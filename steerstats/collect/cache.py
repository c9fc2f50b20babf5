"""The disk cache: content-addressed requests -> records (diskcache, SQLite underneath).

A key is the SHA-256 of the canonical JSON of everything that determines an answer (DESIGN.md).
Three kinds of entry live under one directory:

- results (``r/<key>``): a finished generation or judgement, written the moment it finishes
  (:meth:`Cache.aput` groups the results that finish together into one transaction, committed
  by a writer thread, and returns only once its record is on disk);
- resolutions (``m/<digest>``): memoised method resolutions (Auto Steer edits, feature searches),
  implementing :class:`steerstats.methods.base.ResolutionCache`;
- failures (``failures/``, a store of their own so a success can clear one cheaply): the last
  error, attempt count and time of a task that has not yet succeeded; never a result;
- the ledger (``ledger.db``, :mod:`steerstats.collect.ledger`): every attempt (spend, budget)
  and every task claim, shared by all processes on the cache.

A cache that cannot be read (truncated, garbled) is a :class:`CacheError` naming the file and
the way out (``steerstats cache check``); an emptied ``cache.db`` beside a ledger that recorded
calls is one too, never a fresh start that would pay for everything again.

Values are stored as JSON text, so the cache is readable without this package. Nothing secret
goes in: backends' ``identity()`` drops secret option names and masks credentials in URLs;
error texts are redacted.
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import diskcache

from steerstats.collect.ledger import Ledger, drain
from steerstats.errors import SteerstatsError
from steerstats.keys import KEY_VERSION, cache_key
from steerstats.redact import redact, secret_values

_RESULT = "r/"
_RESOLUTION = "m/"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# Redaction

# The scrubbing lives in a low module (backends use it too); re-exported here.
__all__ = ["Cache", "CacheError", "redact", "secret_values"]


# ---------------------------------------------------------------------------------------------
# The cache


class CacheError(SteerstatsError):
    """The cache cannot be trusted as it is (corrupt, or emptied after results were stored)."""


def corrupt(path: Path, exc: BaseException | str) -> CacheError:
    """The one-line error for an unreadable cache file."""
    return CacheError(
        f"{path}: the cache is damaged ({exc}); run `steerstats cache check {path.parent}` to "
        "see what is readable and rebuild its indexes, or restore the file from a backup"
    )


@dataclass
class ResolutionLedger:
    """Spend and calls of memoised resolutions served or made through this cache (for budgets)."""

    cost_usd: float = 0.0
    calls: int = 0
    seen: set[str] = field(default_factory=set)


class Cache:
    """Results, failures and method resolutions under one directory (safe across processes)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        db = self.directory / "cache.db"
        try:
            self.ledger = Ledger(self.directory)
        except sqlite3.DatabaseError as exc:
            raise corrupt(self.directory / "ledger.db", exc) from None
        if db.is_file() and db.stat().st_size == 0 and self.ledger.any_calls():
            self.ledger.close()
            raise CacheError(
                f"{db} is empty (0 bytes) but {self.ledger.path.name} records calls made for "
                "results stored in it: restore cache.db from a backup (starting afresh would "
                f"pay for every result again; to really start over, delete {self.directory})"
            )
        # JSON text kept in SQLite (not separate files); never evicted.
        settings = {"disk_min_file_size": 2**22, "eviction_policy": "none", "cull_limit": 0}
        try:
            self._dc = diskcache.Cache(str(self.directory), **settings)
            self._fail = diskcache.Cache(str(self.directory / "failures"), **settings)
            self._dc.get(_RESULT)  # a garbled file fails here rather than mid-run
        except sqlite3.DatabaseError as exc:
            self.ledger.close()
            raise corrupt(db, exc) from None
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed: set[str] | None = None  # keys with a failure record, loaded on first use
        self.resolutions = ResolutionLedger()
        self._writer: _Writer | None = None

    # results ---------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        """The finished record for ``key``, or None."""
        try:
            raw = self._dc.get(_RESULT + key)
            return None if raw is None else json.loads(raw)
        except sqlite3.DatabaseError as exc:
            raise corrupt(self.directory / "cache.db", exc) from None
        except ValueError as exc:
            raise corrupt(self.directory / "cache.db", f"record {key} is not JSON: {exc}"
                          ) from None

    def __contains__(self, key: object) -> bool:
        try:
            return isinstance(key, str) and (_RESULT + key) in self._dc
        except sqlite3.DatabaseError as exc:
            raise corrupt(self.directory / "cache.db", exc) from None

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        """Store a finished record (JSON-able) and clear any failure recorded for ``key``."""
        self._dc.set(_RESULT + key, _record_text(record))
        self.clear_failure(key)

    async def aput(self, key: str, record: Mapping[str, Any]) -> None:
        """:meth:`put` from inside an event loop: returns once the record is committed.

        Results that finish while the writer thread is committing are written together in the
        next transaction, so the per-write cost of SQLite is shared and stays off the loop."""
        if self._writer is None:
            self._writer = _Writer(self._dc)
        await self._writer.write(_RESULT + key, _record_text(record))
        self.clear_failure(key)

    def results(self) -> Iterator[dict[str, Any]]:
        """Every finished record (generations and judgements), in no particular order."""
        try:
            for k in self._dc.iterkeys():
                if isinstance(k, str) and k.startswith(_RESULT):
                    raw = self._dc.get(k)
                    if raw is not None:
                        yield json.loads(raw)
        except sqlite3.DatabaseError as exc:
            raise corrupt(self.directory / "cache.db", exc) from None

    def is_empty(self) -> bool:
        """Whether the cache holds no entry at all."""
        return next(iter(self._dc.iterkeys()), None) is None

    # failures --------------------------------------------------------------------------------
    def failure(self, key: str, fresh: bool = False) -> dict[str, Any] | None:
        """The recorded failure for ``key`` (error, attempts, last_at, kind), or None.

        ``fresh`` reads the store (another process may have recorded one since we loaded)."""
        if not fresh and key not in self._failed_keys():  # loaded once (few of them)
            return None
        raw = self._fail.get(key)
        return None if raw is None else json.loads(raw)

    def record_failure(self, key: str, kind: str, error: str, attempts: int,
                       detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Add ``attempts`` to the failure count of ``key`` and keep the latest error (redacted).

        Does nothing if a result exists (a success is never overwritten by a failure)."""
        if (_RESULT + key) in self._dc:
            return {}
        with self._fail.transact():
            prev = self.failure(key) or {}
            rec = {
                "key": key,
                "kind": kind,
                "error": redact(error)[:2000],
                "attempts": int(prev.get("attempts", 0)) + int(attempts),
                "first_at": prev.get("first_at") or now_iso(),
                "last_at": now_iso(),
                "detail": _jsonable(dict(detail or {})),
            }
            self._fail.set(key, json.dumps(rec, ensure_ascii=False, allow_nan=False))
        self._failed_keys().add(key)
        return rec

    def clear_failure(self, key: str) -> None:
        """Forget the failure recorded for ``key`` (after a success that is not a result)."""
        if key in self._failed_keys():
            self._fail.delete(key)
            self._failed.discard(key)  # type: ignore[union-attr]

    def _failed_keys(self) -> set[str]:
        if self._failed is None:
            self._failed = {k for k in self._fail.iterkeys() if isinstance(k, str)}
        return self._failed

    def failures(self) -> Iterator[dict[str, Any]]:
        """Every recorded failure."""
        for k in self._fail.iterkeys():
            raw = self._fail.get(k)
            if raw is not None:
                yield json.loads(raw)

    # resolutions (ResolutionCache protocol) --------------------------------------------------
    def resolution_key(self, namespace: str, key: Mapping[str, Any]) -> str:
        return cache_key({"v": KEY_VERSION, "kind": "resolution", "namespace": namespace,
                          "key": key})

    def peek_resolution(self, namespace: str, key: Mapping[str, Any]) -> tuple[bool, Any]:
        """(True, value) if (namespace, key) is cached, else (False, None); never computes."""
        digest = self.resolution_key(namespace, key)
        raw = self._dc.get(_RESOLUTION + digest)
        if raw is None:
            return False, None
        rec = json.loads(raw)
        self._note_resolution(digest, rec)
        return True, rec["value"]

    async def get_or_compute(
        self, namespace: str, key: Mapping[str, Any], compute: Callable[[], Awaitable[Any]]
    ) -> Any:
        """The cached JSON-able value for (namespace, key); computed and stored once otherwise.

        Concurrent callers asking for the same entry wait for one computation. The spend and
        calls of the computation (metered backend calls made inside it) are stored beside it."""
        digest = self.resolution_key(namespace, key)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            raw = self._dc.get(_RESOLUTION + digest)
            if raw is not None:
                rec = json.loads(raw)
                self._note_resolution(digest, rec)
                return rec["value"]
            from steerstats.collect.metering import track_usage

            started = time.perf_counter()
            with track_usage() as usage:
                value = await compute()
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"resolution {namespace!r} returned a value that is not JSON-able ({exc}); "
                    "return plain dicts/lists/str/numbers"
                ) from None
            rec = {
                "namespace": namespace,
                "key": _jsonable(dict(key)),
                "value": value,
                "cost_usd": usage.cost_usd,
                "calls": usage.calls,
                "latency_s": time.perf_counter() - started,
                "created_at": now_iso(),
            }
            self._dc.set(_RESOLUTION + digest,
                         json.dumps(rec, ensure_ascii=False, allow_nan=False))
            self._note_resolution(digest, rec)
            return value

    def _note_resolution(self, digest: str, rec: Mapping[str, Any]) -> None:
        if digest not in self.resolutions.seen:
            self.resolutions.seen.add(digest)
            self.resolutions.cost_usd += float(rec.get("cost_usd") or 0.0)
            self.resolutions.calls += int(rec.get("calls") or 0)

    # housekeeping ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._dc.close()
        self._fail.close()
        self.ledger.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record_text(record: Mapping[str, Any]) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):  # NaN, tuples of objects, numpy scalars...
        return json.dumps(_jsonable(record), ensure_ascii=False, allow_nan=False)


_Pending = tuple[str, str, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class _Writer:
    """A thread committing queued results to ``dc``, as many per transaction as are waiting;
    each writer's future is resolved (on its own loop) after the commit that holds it."""

    def __init__(self, dc: diskcache.Cache) -> None:
        self._dc = dc
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="steerstats-cache-writer",
                                        daemon=True)
        self._thread.start()

    async def write(self, key: str, text: str) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put((key, text, loop, fut))
        await fut

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch, stop = drain(self._queue, first)
                error: BaseException | None = None
                try:
                    with self._dc.transact(retry=True):
                        for key, text, _, _ in batch:
                            self._dc.set(key, text)
                except BaseException as exc:  # handed to every waiting writer
                    error = exc
                by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
                for _, _, loop, fut in batch:
                    by_loop.setdefault(loop, []).append(fut)
                for loop, futs in by_loop.items():
                    try:
                        loop.call_soon_threadsafe(_settle, futs, error)
                    except RuntimeError:  # that loop has closed: nobody is waiting
                        pass
                if stop:
                    return
        finally:
            self._dc.close()  # this thread's SQLite connection


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in futures:
        if fut.cancelled():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def _jsonable(obj: Any) -> Any:
    """JSON-able copy: NaN/inf floats become None, tuples lists, objects their canonical form."""
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "canonical"):
        return _jsonable(obj.canonical())
    if hasattr(obj, "item") and callable(obj.item):
        return _jsonable(obj.item())
    return str(obj)
