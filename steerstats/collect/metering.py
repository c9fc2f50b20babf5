"""The metered backend proxy: budget, per-backend concurrency and retries for every call.

The collector hands methods and judges a :class:`MeteredBackend` wrapping each real backend.
They call ``generate(...)`` (or a backend extra such as ``autosteer``) as usual; the proxy

- waits for a slot in its backend's concurrency group (one semaphore per backend name);
- reserves the call's worst-case cost (prompt bytes as an upper bound on prompt tokens, plus
  ``max_tokens``) and one call from the budget *before* calling, so concurrent calls can never
  push spend or call count past the cap, and settles the real cost afterwards;
- with a ledger (:mod:`steerstats.collect.ledger`), makes the reservation a row in the cache's
  ledger before the request is sent, checked against the caps of every process on the cache;
- retries transient faults (the backend's ``should_retry``: 429, 5xx, timeouts, dropped
  connections, malformed replies) with exponential backoff and jitter, waiting at least as long
  as the server's ``Retry-After`` (capped at ``max_retry_after_s``, saying so); every attempt
  counts as a call; timeouts and retries are reported through ``Meter.on_event`` as they
  happen;
- adds calls, tokens and cost to the usage of the task being run (a context variable), so each
  cached record carries what it cost.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from steerstats.backends.base import Backend, GenerationRequest, GenerationResult
from steerstats.collect.ledger import Ledger, Refusal
from steerstats.errors import BudgetExceeded, SteerstatsError

# ---------------------------------------------------------------------------------------------
# Usage of the task being run


@dataclass
class Usage:
    """Calls (attempts included), tokens and cost accumulated while a task runs."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    latency_s: float = 0.0  # summed over successful calls
    replies: list[str] = field(default_factory=list)  # texts of the generations returned

    def add(self, calls: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0,
            cost_usd: float | None = 0.0, latency_s: float = 0.0) -> None:
        self.calls += calls
        self.latency_s += latency_s
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if cost_usd is None:
            self.cost_known = False
        else:
            self.cost_usd += cost_usd


_USAGE: ContextVar[tuple[Usage, ...]] = ContextVar("steerstats_usage", default=())
# (key, kind) of the task whose calls are being made, for the ledger's attempt rows.
CURRENT_TASK: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "steerstats_task", default=(None, None))


@contextmanager
def track_usage() -> Iterator[Usage]:
    """Collect the usage of metered calls made inside the block (nested blocks all see them)."""
    usage = Usage()
    token = _USAGE.set((*_USAGE.get(), usage))
    try:
        yield usage
    finally:
        _USAGE.reset(token)


def _add_usage(**kw: Any) -> None:
    for usage in _USAGE.get():
        usage.add(**kw)


# ---------------------------------------------------------------------------------------------
# Pricing and token estimates


@dataclass(frozen=True)
class Price:
    """USD per million input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


# Chat templates add a few special tokens per message and to prime the reply.
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_REPLY = 8


def worst_case_prompt_tokens(request: GenerationRequest) -> int:
    """An upper bound on prompt tokens: byte-level tokenisers never emit more tokens than bytes."""
    n = sum(len(m.get("content", "").encode("utf-8")) + _TOKENS_PER_MESSAGE
            for m in request.messages)
    return n + _TOKENS_PER_REPLY


def estimate_prompt_tokens(request: GenerationRequest) -> int:
    """A typical-case estimate of prompt tokens (about four characters a token), for dry runs."""
    n = sum(len(m.get("content", "")) / 4 + _TOKENS_PER_MESSAGE for m in request.messages)
    return int(n) + _TOKENS_PER_REPLY


# ---------------------------------------------------------------------------------------------
# Budget


class NeedsResolution(Exception):
    """Raised by dry (planning-only) proxies and caches: answering would need a backend call."""


@dataclass
class _Reservation:
    usd: float
    attempt_id: int | None = None


class Budget:
    """Spend and call caps, checked before each call and never exceeded under concurrency.

    With a ``ledger`` the caps cover every attempt recorded under ``scope`` (the experiment) by
    any process, past or present: each reservation is a ledger row written before the call.
    Without one (tests, embedding), ``spent_usd`` and ``calls`` start from what is passed in.
    """

    def __init__(self, max_usd: float | None = None, max_calls: int | None = None,
                 spent_usd: float = 0.0, calls: int = 0, ledger: Ledger | None = None,
                 scope: str = "", owner: str = "") -> None:
        self.max_usd = max_usd
        self.max_calls = max_calls
        self.spent_usd = spent_usd
        self.calls = calls
        self.ledger = ledger
        self.scope = scope
        self.owner = owner
        self.exhausted = False
        self.refused = 0
        self._reserved_usd = 0.0
        self._in_flight = 0
        self._settles = 0
        self._changed: asyncio.Event | None = None
        if ledger is not None:
            t = ledger.totals(scope)
            self.spent_usd, self.calls = t.usd, t.calls

    def _fits(self, usd: float) -> bool:
        if self.max_calls is not None and self.calls + self._in_flight + 1 > self.max_calls:
            return False
        if self.max_usd is not None and self.spent_usd + self._reserved_usd + usd > self.max_usd:
            return False
        return True

    async def reserve(self, usd: float, backend: str | None = None,
                      attempt: int = 1) -> _Reservation:
        """Hold ``usd`` and one call; wait while calls in flight may free room; else refuse."""
        if self.ledger is not None:
            return await self._reserve_in_ledger(usd, backend, attempt)
        while True:
            if self.exhausted:
                self.refused += 1
                raise BudgetExceeded(self.describe())
            if self._fits(usd):
                self._reserved_usd += usd
                self._in_flight += 1
                return _Reservation(usd)
            if self._in_flight == 0:
                self.exhausted = True
                continue
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def refresh(self) -> None:
        """Re-read spend and calls from the ledger (after it was seeded)."""
        if self.ledger is not None:
            t = self.ledger.totals(self.scope)
            self.spent_usd, self.calls = t.usd - self._reserved_usd, t.calls

    async def _reserve_in_ledger(self, usd: float, backend: str | None,
                                 attempt: int) -> _Reservation:
        assert self.ledger is not None
        key, kind = CURRENT_TASK.get()
        while True:
            if self.exhausted:
                self.refused += 1
                raise BudgetExceeded(self.describe())
            settled_before = self._settles
            aid, out = await self.ledger.reserve(
                self.scope, usd=usd, max_calls=self.max_calls, max_usd=self.max_usd, key=key,
                kind=kind, backend=backend, owner=self.owner, attempt=attempt)
            totals = out.totals if isinstance(out, Refusal) else out
            self.calls = totals.calls
            self.spent_usd = totals.usd - self._reserved_usd
            if aid is not None:
                self._reserved_usd += usd
                self._in_flight += 1
                self.spent_usd = totals.usd - self._reserved_usd
                return _Reservation(usd, aid)
            assert isinstance(out, Refusal)
            if out.reason == "calls":
                self.exhausted = True
                continue
            if self._settles != settled_before:  # calls settled (below their reservation)
                continue                         # while the refusal was on its way: ask again
            if self._in_flight == 0:
                self.exhausted = True
                continue
            if self._changed is None:  # our calls in flight may cost less than reserved
                self._changed = asyncio.Event()
            await self._changed.wait()

    def settle(self, reservation: _Reservation, usd: float | None, state: str = "ok",
               error: str | None = None) -> None:
        """Release a reservation and book what the call really cost (synchronous: safe in
        cancellation paths). ``state``: ok, failed, timeout or cancelled (a cancelled call may
        still be billed: it is booked at its reservation)."""
        self._reserved_usd -= reservation.usd
        self._in_flight -= 1
        self._settles += 1
        if state == "cancelled":
            usd = reservation.usd
        if self.ledger is not None and reservation.attempt_id is not None:
            self.ledger.settle(reservation.attempt_id, self.scope, state, float(usd or 0.0),
                               reservation.usd, error)
        else:
            self.calls += 1
        self.spent_usd += usd or 0.0
        if self.max_usd is not None and self.spent_usd >= self.max_usd:
            self.exhausted = True
        if self.max_calls is not None and self.calls >= self.max_calls:
            self.exhausted = True
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def describe(self) -> str:
        parts = []
        if self.max_usd is not None:
            parts.append(f"spent ${self.spent_usd:.4f} of max_usd ${self.max_usd:.4f}")
        if self.max_calls is not None:
            parts.append(f"{self.calls} of max_calls {self.max_calls} calls made")
        return ("budget reached: " + "; ".join(parts)
                + " (raise [budget] in the experiment file to spend more)")


# ---------------------------------------------------------------------------------------------
# Retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per call, backoff (exponential with jitter) and a per-attempt timeout."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    timeout_s: float | None = 300.0
    max_retry_after_s: float = 300.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); a server's
        ``retry_after`` above ``max_retry_after_s`` is capped there."""
        exp = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        delay = exp / 2 + rng.uniform(0, exp / 2)
        if retry_after is not None and retry_after > 0:
            retry_after = min(retry_after, self.max_retry_after_s)
            delay = max(delay, min(self.max_retry_after_s,
                                   retry_after + rng.uniform(0, 0.1 * retry_after)))
        return delay


# ---------------------------------------------------------------------------------------------
# The meter and its proxies


@dataclass
class MeterStats:
    calls: int = 0
    retries: int = 0
    timeouts: int = 0
    in_flight: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.perf_counter)


class Meter:
    """Budget, concurrency groups, retry policy and pricing shared by every proxy in a run."""

    def __init__(
        self,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        pricing: Mapping[str, Price] | None = None,
        concurrency: Mapping[str, int] | None = None,
        default_concurrency: int | None = None,
        dry: bool = False,
        seed: int | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.budget = budget or Budget()
        # Told (one line each) of timeouts, retries and capped Retry-After waits as they happen.
        self.on_event = on_event
        self._retry_notes = 0
        self.retry = retry or RetryPolicy()
        self.pricing = dict(pricing or {})
        self.concurrency = dict(concurrency or {})
        self.default_concurrency = default_concurrency
        self.dry = dry
        self.stats = MeterStats()
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._rng = random.Random(seed)
        self._proxies: dict[int, MeteredBackend] = {}

    def limit_for(self, backend: Backend) -> int:
        """Calls the backend's group may have in flight: config per backend name, then the
        config default, then the backend's own ``max_concurrency()``."""
        name = backend.name
        if name in self.concurrency:
            return self.concurrency[name]
        if self.default_concurrency is not None:
            return self.default_concurrency
        return max(1, int(backend.max_concurrency()))

    def _semaphore(self, backend: Backend) -> asyncio.Semaphore:
        sem = self._semaphores.get(backend.name)
        if sem is None:
            sem = self._semaphores[backend.name] = asyncio.Semaphore(self.limit_for(backend))
        return sem

    def wrap(self, backend: Backend) -> MeteredBackend:
        """The (shared) metered proxy of ``backend``."""
        proxy = self._proxies.get(id(backend))
        if proxy is None:
            proxy = self._proxies[id(backend)] = MeteredBackend(backend, self)
        return proxy

    def price(self, backend: Backend) -> Price | None:
        return self.pricing.get(backend.model)

    async def call(
        self,
        backend: Backend,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        request: GenerationRequest | None = None,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` under the backend's semaphore, budget and retry policy."""
        if self.dry:
            raise NeedsResolution(f"{backend.name}:{getattr(fn, '__name__', 'call')}")
        price = self.price(backend) if request is not None else None
        worst_prompt = worst_case_prompt_tokens(request) if request is not None else 0
        reserve_usd = 0.0
        if price is not None and request is not None:
            reserve_usd = price.cost(worst_prompt, request.max_tokens)
        sem = self._semaphore(backend)
        label = f"{backend.name}/{backend.model}"
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            async with sem:
                reservation = await self.budget.reserve(reserve_usd, label, attempt)
                t0 = time.perf_counter()
                self.stats.in_flight += 1
                try:
                    if self.retry.timeout_s is not None:
                        try:
                            async with asyncio.timeout(self.retry.timeout_s):
                                out = await fn(*args, **kwargs)
                        except TimeoutError as exc:
                            if str(exc):
                                raise
                            raise TimeoutError(
                                f"no reply within {self.retry.timeout_s:g}s (retries.timeout_s)"
                            ) from None
                    else:
                        out = await fn(*args, **kwargs)
                except BaseException as exc:
                    self.stats.in_flight -= 1
                    timed_out = _is_timeout(exc)
                    state = ("cancelled" if isinstance(exc, asyncio.CancelledError)
                             else "timeout" if timed_out else "failed")
                    self.budget.settle(reservation, 0.0, state,
                                       f"{type(exc).__name__}: {exc}"[:500])
                    self.stats.calls += 1
                    self.stats.failed_calls += 1
                    if timed_out:
                        self.stats.timeouts += 1
                    _add_usage(calls=1, cost_usd=0.0)
                    if isinstance(exc, asyncio.CancelledError | SteerstatsError):
                        raise
                    transient = isinstance(exc, TimeoutError) or backend.should_retry(exc)
                    if not transient or attempt >= self.retry.max_attempts:
                        if timed_out:
                            self._note(f"timeout: {label} attempt {attempt} had no reply after "
                                       f"{time.perf_counter() - t0:.1f}s; giving up after "
                                       f"{attempt} attempt(s)")
                        raise
                    retry_after = backend.retry_after(exc)
                    why = f"{type(exc).__name__}: {exc}"
                else:
                    self.stats.in_flight -= 1
                    cost, pt, ct = self._cost(out, price, worst_prompt, request)
                    self.budget.settle(reservation, cost)
                    self.stats.calls += 1
                    self.stats.prompt_tokens += pt
                    self.stats.completion_tokens += ct
                    self.stats.cost_usd += cost or 0.0
                    _add_usage(calls=1, prompt_tokens=pt, completion_tokens=ct, cost_usd=cost,
                               latency_s=time.perf_counter() - t0)
                    if isinstance(out, GenerationResult):
                        for usage in _USAGE.get():
                            usage.replies.append(out.text)
                    return out
            self.stats.retries += 1
            delay = self.retry.delay(attempt, retry_after, self._rng)
            if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                self._note(f"{label}: the server asked to wait {retry_after:.0f}s (Retry-After); "
                           f"waiting {delay:.0f}s instead (retries.max_retry_after_s)")
            if timed_out:
                self._note(f"timeout: {label} attempt {attempt} had no reply after "
                           f"{time.perf_counter() - t0:.1f}s; retrying in {delay:.1f}s")
            elif self._retry_notes < _RETRY_NOTES:
                self._retry_notes += 1
                more = (" (further retries are counted on the progress bar)"
                        if self._retry_notes == _RETRY_NOTES else "")
                self._note(f"retry: {label} attempt {attempt} failed ({why[:200]}); retrying in "
                           f"{delay:.1f}s{more}")
            await asyncio.sleep(delay)

    def _note(self, message: str) -> None:
        if self.on_event is not None:
            self.on_event(message)

    @staticmethod
    def _cost(out: Any, price: Price | None, worst_prompt: int,
              request: GenerationRequest | None) -> tuple[float | None, int, int]:
        if request is None:  # a backend extra: counted as a call, no token cost known
            return 0.0, 0, 0
        if not isinstance(out, GenerationResult):
            raise TypeError(f"generate() must return a GenerationResult, got {type(out).__name__}")
        # Missing usage is charged at the worst case, so the budget stays an upper bound.
        pt = out.prompt_tokens if out.prompt_tokens is not None else worst_prompt
        ct = out.completion_tokens if out.completion_tokens is not None else request.max_tokens
        return (None if price is None else price.cost(pt, ct)), pt, ct


_RETRY_NOTES = 5  # retries (other than timeouts) logged one by one before only counting them


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or bool(getattr(exc, "timeout", False))


class MeteredBackend(Backend):
    """A backend proxy whose calls go through a :class:`Meter` (see the module docstring).

    ``generate`` is metered with cost; any other coroutine method of the wrapped backend (an
    extra such as ``autosteer`` or ``search_features``) is metered for concurrency, retries and
    call count; plain attributes and synchronous methods pass straight through. ``inner`` is
    the wrapped backend.
    """

    def __init__(self, inner: Backend, meter: Meter) -> None:
        self.inner = inner
        self._meter = meter
        self._wrapped: dict[str, Callable[..., Any]] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def model(self) -> str:  # type: ignore[override]
        return self.inner.model

    @property
    def options(self) -> dict[str, Any]:  # type: ignore[override]
        return self.inner.options

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        out = await self._meter.call(self.inner, self.inner.generate, (request,), {},
                                     request=request)
        return out  # type: ignore[no-any-return]

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def max_concurrency(self) -> int:
        return self._meter.limit_for(self.inner)

    def should_retry(self, exc: BaseException) -> bool:
        return self.inner.should_retry(exc)

    def retry_after(self, exc: BaseException) -> float | None:
        return self.inner.retry_after(exc)

    async def aclose(self) -> None:
        """The collector closes the wrapped backend; methods and judges must not."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("inner", "_meter", "_wrapped"):
            raise AttributeError(attr)
        value = getattr(self.inner, attr)
        if not inspect.iscoroutinefunction(value):
            return value
        wrapped = self._wrapped.get(attr)
        if wrapped is None:
            meter, inner = self._meter, self.inner

            @functools.wraps(value)
            async def metered(*args: Any, **kwargs: Any) -> Any:
                return await meter.call(inner, value, args, kwargs)

            wrapped = self._wrapped[attr] = metered
        return wrapped

    def __repr__(self) -> str:
        return f"MeteredBackend({self.inner!r})"
