"""The ledger (``ledger.db`` beside the cache): every call attempt and every task claim.

Money and trust live here, in SQLite transactions shared by every process on the cache:

- a **claim** (key, owner, lease expiry) is taken atomically before a task runs, so two
  processes never request the same key; the owner's leases are renewed by this module's thread
  while it lives, so a killed owner's claims expire after :data:`LEASE_S` and others take over;
- an **attempt** is reserved (one call, its worst-case cost) *before* its request is sent, in
  the same transaction that checks ``max_calls`` / ``max_usd`` against the experiment's totals,
  and settled afterwards (real cost; ``ok``, ``failed``, ``timeout`` or ``cancelled``). An
  attempt whose process died stays reserved: it counts as a call at its worst-case cost. Totals
  only ever grow, so no kill, failure or re-run gives a budget back.

Operations from the event loop are queued to one thread that applies all waiting operations in
one transaction (SQLite commits are shared, and nothing blocks the loop). ``scope`` is the
experiment's name: the budget covers everything recorded under it.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HEARTBEAT_S", "LEASE_S", "Ledger", "LedgerTotals", "Refusal", "last_scope",
           "new_owner", "remember_scope"]

LEASE_S = 30.0  # a claim not renewed for this long belongs to nobody (its owner died)
HEARTBEAT_S = 5.0  # how often a live owner renews its claims
_BATCH = 512  # most queued items per transaction


def drain(q: queue.SimpleQueue[Any], first: Any, limit: int = _BATCH) -> tuple[list[Any], bool]:
    """``first`` and whatever else ``q`` holds now, up to ``limit`` items, for one transaction;
    ``stop`` is True when the queue's ``None`` sentinel was among them."""
    batch = [first]
    while len(batch) < limit:
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts(
    id INTEGER PRIMARY KEY, scope TEXT NOT NULL, key TEXT, kind TEXT, backend TEXT,
    owner TEXT, attempt INTEGER, state TEXT NOT NULL, reserved_usd REAL, cost_usd REAL,
    started REAL, settled REAL, wait_s REAL, error TEXT);
CREATE TABLE IF NOT EXISTS totals(
    scope TEXT PRIMARY KEY, calls INTEGER NOT NULL, usd REAL NOT NULL, failed INTEGER NOT NULL,
    timeouts INTEGER NOT NULL, retries INTEGER NOT NULL, unsettled INTEGER NOT NULL,
    carried_calls INTEGER NOT NULL, carried_usd REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims(key TEXT PRIMARY KEY, owner TEXT NOT NULL,
    expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def new_owner() -> str:
    """A claim owner id: host, process and a random part (unique per run)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def remember_scope(ledger: Ledger, scope: str, limit_queries: int | None,
                   limit_prompts: int | None) -> None:
    """Note the limits of the latest collect of ``scope`` (a pilot's, or None for the whole
    plan): status and export show that scope unless told otherwise."""
    ledger.set_meta(f"scope:{scope}", {"limit_queries": limit_queries,
                                       "limit_prompts": limit_prompts, "at": time.time()})


def last_scope(ledger: Ledger, scope: str) -> dict[str, int | None]:
    """The limits of the latest collect of ``scope`` (both None when none was a pilot)."""
    got = ledger.get_meta(f"scope:{scope}") or {}
    return {"limit_queries": got.get("limit_queries"), "limit_prompts": got.get("limit_prompts")}


@dataclass(frozen=True)
class LedgerTotals:
    """What the ledger records for a scope. ``calls`` counts every attempt (reserved ones
    included); ``unsettled`` attempts are in flight now or were lost with a killed process;
    ``carried_*`` is usage recorded before the ledger existed (taken from the cache)."""

    calls: int = 0
    usd: float = 0.0
    failed: int = 0
    timeouts: int = 0
    retries: int = 0
    unsettled: int = 0
    carried_calls: int = 0
    carried_usd: float = 0.0


@dataclass(frozen=True)
class Refusal:
    """Why a reservation was refused: ``"calls"`` (max_calls) or ``"usd"`` (max_usd)."""

    reason: str
    totals: LedgerTotals


_ZERO = LedgerTotals()


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


class Ledger:
    """Attempts, totals, claims and small notes (``meta``) in ``<directory>/ledger.db``."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / "ledger.db"
        self._con = _connect(self.path)
        self._con.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the sync API's connection is shared by threads
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._owners: set[str] = set()

    # synchronous reads and notes ---------------------------------------------------------
    def totals(self, scope: str) -> LedgerTotals:
        with self._lock:
            row = self._con.execute("SELECT calls, usd, failed, timeouts, retries, unsettled, "
                                    "carried_calls, carried_usd FROM totals WHERE scope=?",
                                    (scope,)).fetchone()
        return _ZERO if row is None else LedgerTotals(*row)

    def has_scope(self, scope: str) -> bool:
        with self._lock:
            return self._con.execute("SELECT 1 FROM totals WHERE scope=?",
                                     (scope,)).fetchone() is not None

    def any_calls(self) -> bool:
        """Whether any scope ever recorded a call (a cache that had results)."""
        with self._lock:
            row = self._con.execute("SELECT COALESCE(SUM(calls + carried_calls), 0) FROM totals"
                                    ).fetchone()
        return bool(row and row[0])

    def seed(self, scope: str, usd: float, calls: int) -> None:
        """Start ``scope`` with usage recorded before the ledger existed (once; later calls
        are ignored)."""
        with self._lock:
            self._con.execute(
                "INSERT OR IGNORE INTO totals VALUES (?, ?, ?, 0, 0, 0, 0, ?, ?)",
                (scope, int(calls), float(usd), int(calls), float(usd)))

    def get_meta(self, name: str) -> Any:
        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, name: str, value: Any) -> None:
        with self._lock:
            self._con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              (name, json.dumps(value, sort_keys=True)))

    def attempts(self, scope: str | None = None) -> list[dict[str, Any]]:
        """Every attempt row (for audits and tests)."""
        sql = "SELECT * FROM attempts" + (" WHERE scope=?" if scope is not None else "")
        with self._lock:
            cur = self._con.execute(sql, (scope,) if scope is not None else ())
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {t: int(self._con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                    for t in ("attempts", "totals", "claims", "meta")}

    # asynchronous operations (one thread, one transaction per batch) ----------------------
    async def claim(self, key: str, owner: str) -> bool:
        """Take ``key`` for ``owner`` unless another live owner holds it."""
        return bool(await self._call(("claim", key, owner)))

    def release(self, key: str, owner: str) -> None:
        """Give ``key`` up (queued; a lost release only delays others by the lease)."""
        self._post(("release", key, owner))

    async def held_by_others(self, keys: Iterable[str], owner: str) -> set[str]:
        """Those of ``keys`` another live owner holds now."""
        return set(await self._call(("held", list(keys), owner)))

    async def reserve(self, scope: str, *, usd: float, max_calls: int | None,
                      max_usd: float | None, key: str | None, kind: str | None,
                      backend: str | None, owner: str, attempt: int
                      ) -> tuple[int | None, LedgerTotals | Refusal]:
        """Reserve one call and ``usd`` under the caps: (attempt id, totals) or (None,
        Refusal)."""
        out = await self._call(("reserve", scope, usd, max_calls, max_usd, key, kind, backend,
                                owner, attempt))
        return out  # type: ignore[no-any-return]

    def settle(self, attempt_id: int, scope: str, state: str, cost_usd: float,
               reserved_usd: float, error: str | None = None, wait_s: float | None = None
               ) -> None:
        """Book an attempt's outcome (queued: synchronous, safe in cancellation paths)."""
        self._post(("settle", attempt_id, scope, state, cost_usd, reserved_usd, error, wait_s))

    def hold(self, owner: str) -> None:
        """Renew ``owner``'s claims from the ledger thread while this process lives."""
        self._owners.add(owner)
        self._start()

    def drop(self, owner: str) -> None:
        self._owners.discard(owner)

    def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(("flush", done))
        done.wait()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        with self._lock:
            self._con.close()

    # the thread ----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="steerstats-ledger",
                                            daemon=True)
            self._thread.start()

    def _post(self, op: tuple[Any, ...]) -> None:
        self._start()
        self._queue.put((*op, None, None))

    async def _call(self, op: tuple[Any, ...]) -> Any:
        self._start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((*op, loop, fut))
        return await fut

    def _run(self) -> None:
        con = _connect(self.path)
        next_beat = time.time() + HEARTBEAT_S
        try:
            while True:
                try:
                    first = self._queue.get(timeout=max(0.01, next_beat - time.time()))
                except queue.Empty:
                    first = ("renew", None, None)
                if first is None:
                    return
                batch, stop = drain(self._queue, first)
                if time.time() >= next_beat:
                    batch.append(("renew", None, None))
                    next_beat = time.time() + HEARTBEAT_S
                self._apply(con, batch)
                if stop:
                    return
        finally:
            con.close()

    def _apply(self, con: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> None:
        results: list[tuple[Any, Any, Any, BaseException | None]] = []
        flushes = [op[1] for op in batch if op[0] == "flush"]
        ops = [op for op in batch if op[0] != "flush"]
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    loop, fut = op[-2], op[-1]
                    try:
                        value = self._one(con, op[:-2])
                        results.append((loop, fut, value, None))
                    except sqlite3.Error:
                        raise
                    except Exception as exc:  # a bad operation fails alone
                        results.append((loop, fut, None, exc))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except BaseException as exc:  # the whole batch failed: tell every waiter
            results = [(op[-2], op[-1], None, exc) for op in ops]
        for loop, fut, value, error in results:
            if fut is not None:
                loop.call_soon_threadsafe(_resolve, fut, value, error)
        for ev in flushes:
            ev.set()

    def _one(self, con: sqlite3.Connection, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        now = time.time()
        if kind == "claim":
            _, key, owner = op
            row = con.execute("SELECT owner, expires FROM claims WHERE key=?", (key,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            con.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)",
                        (key, owner, now + LEASE_S))
            return True
        if kind == "release":
            con.execute("DELETE FROM claims WHERE key=? AND owner=?", (op[1], op[2]))
            return None
        if kind == "held":
            _, keys, owner = op
            held = []
            for k in keys:
                row = con.execute("SELECT owner, expires FROM claims WHERE key=?",
                                  (k,)).fetchone()
                if row is not None and row[0] != owner and row[1] > now:
                    held.append(k)
            return held
        if kind == "renew":
            for owner in list(self._owners):
                con.execute("UPDATE claims SET expires=? WHERE owner=?", (now + LEASE_S, owner))
            return None
        if kind == "reserve":
            (_, scope, usd, max_calls, max_usd, key, kind_, backend, owner, attempt) = op
            con.execute("INSERT OR IGNORE INTO totals VALUES (?, 0, 0, 0, 0, 0, 0, 0, 0)",
                        (scope,))
            row = con.execute("SELECT calls, usd, failed, timeouts, retries, unsettled, "
                              "carried_calls, carried_usd FROM totals WHERE scope=?",
                              (scope,)).fetchone()
            totals = LedgerTotals(*row)
            if max_calls is not None and totals.calls + 1 > max_calls:
                return None, Refusal("calls", totals)
            if max_usd is not None and totals.usd + usd > max_usd + 1e-12:
                return None, Refusal("usd", totals)
            cur = con.execute(
                "INSERT INTO attempts (scope, key, kind, backend, owner, attempt, state, "
                "reserved_usd, cost_usd, started) VALUES (?, ?, ?, ?, ?, ?, 'reserved', ?, ?, ?)",
                (scope, key, kind_, backend, owner, attempt, usd, usd, now))
            retry = 1 if attempt > 1 else 0
            con.execute("UPDATE totals SET calls=calls+1, usd=usd+?, retries=retries+?, "
                        "unsettled=unsettled+1 WHERE scope=?", (usd, retry, scope))
            return cur.lastrowid, LedgerTotals(
                totals.calls + 1, totals.usd + usd, totals.failed, totals.timeouts,
                totals.retries + retry, totals.unsettled + 1, totals.carried_calls,
                totals.carried_usd)
        if kind == "settle":
            _, aid, scope, state, cost, reserved, error, wait_s = op
            con.execute("UPDATE attempts SET state=?, cost_usd=?, settled=?, error=?, wait_s=? "
                        "WHERE id=?", (state, cost, now, error, wait_s, aid))
            con.execute(
                "UPDATE totals SET usd=usd+?, unsettled=unsettled-1, failed=failed+?, "
                "timeouts=timeouts+? WHERE scope=?",
                (cost - reserved, 0 if state == "ok" else 1, 1 if state == "timeout" else 0,
                 scope))
            return None
        raise ValueError(f"unknown ledger operation {kind!r}")


def _resolve(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)
