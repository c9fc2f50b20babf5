"""The metered proxy: budget reservations, retries and backoff, timeouts, backend extras."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from steerstats.backends.base import Backend, GenerationRequest, GenerationResult, TransientError
from steerstats.collect.metering import (
    Budget,
    Meter,
    NeedsResolution,
    Price,
    RetryPolicy,
    track_usage,
    worst_case_prompt_tokens,
)
from steerstats.errors import BudgetExceeded

FAST = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.01, timeout_s=1.0)


class Scripted(Backend):
    """Fails the first ``fail`` calls with ``exc``, then answers; records concurrency."""

    name = "scripted"

    def __init__(self, fail: int = 0, exc: BaseException | None = None, usage: int = 10,
                 hang_first: bool = False) -> None:
        super().__init__("scripted-model", {"api_key": "sk-never-in-identity"})
        self.fail, self.exc, self.usage, self.hang_first = fail, exc, usage, hang_first
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.sync_attr = "plain"

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            if self.hang_first and self.calls == 1:
                await asyncio.sleep(60)
            if self.calls <= self.fail:
                raise self.exc or TransientError("boom", retry_after=None)
            return GenerationResult("ok", "stop", self.usage, self.usage)
        finally:
            self.in_flight -= 1

    async def autosteer(self, query: str) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.fail:
            raise TransientError("rate limited", retry_after=0.0)
        return {"edits": [[1, 0.5]], "query": query}

    def describe(self) -> str:
        return "sync extra"


def req(n: int = 10) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": "x" * n}], max_tokens=20)


def test_worst_case_prompt_tokens_bounds_bytes() -> None:
    # 3 bytes per character for this text: never fewer tokens than bytes could produce
    r = GenerationRequest(messages=[{"role": "system", "content": "ab"},
                                    {"role": "user", "content": "日本"}])
    assert worst_case_prompt_tokens(r) == (2 + 4) + (6 + 4) + 8


async def test_transient_failures_are_retried_and_every_attempt_counted() -> None:
    inner = Scripted(fail=2)
    meter = Meter(retry=FAST)
    with track_usage() as usage:
        res = await meter.wrap(inner).generate(req())
    assert res.text == "ok" and inner.calls == 3
    assert (usage.calls, meter.stats.calls, meter.stats.retries) == (3, 3, 2)
    assert meter.budget.calls == 3


async def test_giving_up_after_max_attempts_and_not_retrying_other_errors() -> None:
    meter = Meter(retry=FAST)
    with pytest.raises(TransientError):
        await meter.wrap(Scripted(fail=10)).generate(req())
    assert meter.stats.calls == 4
    bad = Scripted(fail=10, exc=ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        await Meter(retry=FAST).wrap(bad).generate(req())
    assert bad.calls == 1


async def test_a_hung_call_times_out_and_is_retried() -> None:
    inner = Scripted(hang_first=True)
    meter = Meter(retry=RetryPolicy(max_attempts=2, base_delay_s=0.001, timeout_s=0.1))
    assert (await meter.wrap(inner).generate(req())).text == "ok"
    assert inner.calls == 2 and meter.stats.retries == 1


def test_backoff_is_exponential_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(0)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)):
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert cap / 2 <= min(delays) and max(delays) <= cap
        assert len(set(delays)) > 100  # jittered
    assert all(30.0 <= policy.delay(1, 30.0, rng) <= 33.0 for _ in range(50))


async def test_concurrency_limit_per_backend_name() -> None:
    inner = Scripted()
    meter = Meter(concurrency={"scripted": 3})
    proxy = meter.wrap(inner)
    await asyncio.gather(*(proxy.generate(req()) for _ in range(20)))
    assert inner.max_in_flight == 3 and proxy.max_concurrency() == 3


async def test_usd_budget_holds_under_concurrency() -> None:
    price = Price(input=1e6, output=0.0)  # $1 a prompt token
    worst = price.cost(worst_case_prompt_tokens(req()), 20)  # reserved per call: $30
    budget = Budget(max_usd=100.0)
    meter = Meter(budget=budget, pricing={"scripted-model": price}, concurrency={"scripted": 8})
    proxy = meter.wrap(Scripted(usage=7))  # each call really costs $7
    results = await asyncio.gather(*(proxy.generate(req()) for _ in range(40)),
                                   return_exceptions=True)
    done = [r for r in results if isinstance(r, GenerationResult)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(done) + len(refused) == 40 and refused
    assert budget.spent_usd == 7.0 * len(done) <= 100.0
    assert budget.spent_usd + worst > 100.0  # it stopped only when the worst case might not fit
    assert "raise [budget]" in str(refused[0])


async def test_call_budget_counts_failed_attempts() -> None:
    budget = Budget(max_calls=5)
    meter = Meter(budget=budget, retry=FAST)
    proxy = meter.wrap(Scripted(fail=3))
    await proxy.generate(req())  # 3 failures + 1 success
    with pytest.raises(BudgetExceeded):
        await asyncio.gather(proxy.generate(req()), proxy.generate(req()))
    assert budget.calls == 5


async def test_extras_are_metered_and_plain_attributes_pass_through() -> None:
    inner = Scripted(fail=1)
    meter = Meter(retry=FAST, budget=Budget(max_calls=10))
    proxy = meter.wrap(inner)
    assert await proxy.autosteer("be funny") == {"edits": [[1, 0.5]], "query": "be funny"}
    assert meter.stats.calls == 2 and meter.budget.calls == 2  # the retry was counted
    assert proxy.describe() == "sync extra" and proxy.sync_attr == "plain"
    assert proxy.inner is inner and proxy.name == "scripted" and proxy.model == "scripted-model"
    assert "api_key" not in proxy.identity()["options"]
    assert meter.wrap(inner) is proxy


async def test_dry_meter_makes_no_calls() -> None:
    inner = Scripted()
    proxy = Meter(dry=True).wrap(inner)
    with pytest.raises(NeedsResolution):
        await proxy.generate(req())
    with pytest.raises(NeedsResolution):
        await proxy.autosteer("x")
    assert inner.calls == 0
