"""``base_urls``: the openai backend over several fake servers of one model."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from steerstats.backends import GenerationRequest, TransientError, create_backend
from steerstats.errors import ConfigError
from tests.fake_openai_server import FakeOpenAIServer


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def servers() -> Iterator[list[FakeOpenAIServer]]:
    started = [FakeOpenAIServer(latency=0.05, timeout_hang=2).start() for _ in range(3)]
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def dead_url() -> str:
    """A port on 127.0.0.1 nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest([{"role": "user", "content": f"question {i}"}], max_tokens=8)
            for i in range(n)]


async def run(backend, reqs):  # type: ignore[no-untyped-def]
    try:
        return await asyncio.gather(*(backend.generate(r) for r in reqs))
    finally:
        await backend.aclose()


async def test_calls_spread_over_replicas_within_each_ones_concurrency(servers) -> None:
    urls = [s.url for s in servers]
    single = await run(create_backend("openai", "m", {"base_url": servers[0].url}),
                       requests(24))
    servers[0].reset_counts()
    pooled = create_backend("openai", "m", {"base_urls": urls, "max_concurrency": 2})
    assert pooled.max_concurrency() == 6
    got = await run(pooled, requests(24))
    assert [r.text for r in got] == [r.text for r in single]  # any replica, same answer
    assert {r.extra["replica"] for r in got} == {0, 1, 2}
    served = [s.requests for s in servers]
    assert sum(served) == 24 and min(served) >= 6, served
    assert max(s.max_in_flight for s in servers) <= 2


async def test_fails_over_from_a_dead_and_an_erroring_replica(servers) -> None:
    servers[1].inject("500", count=1000)
    urls = [dead_url(), servers[1].url, servers[2].url]
    pooled = create_backend("openai", "m", {"base_urls": urls, "max_concurrency": 4})
    got = await run(pooled, requests(20))
    assert all(r.text.startswith("Fake reply") for r in got)
    assert {r.extra["replica"] for r in got} == {2}
    failures = {row["url"]: row["failures"] for row in pooled.replicas.stats()}
    assert failures[urls[0]] >= 1 and failures[urls[1]] >= 1
    # a failed replica cools down: far fewer than one failed attempt per call
    assert servers[1].faults_served["500"] < 20


async def test_all_replicas_failing_is_transient() -> None:
    pooled = create_backend("openai", "m", {"base_urls": [dead_url(), dead_url()]})
    with pytest.raises(TransientError, match="all 2 replicas failed"):
        await run(pooled, requests(1))


def test_cache_identity_names_no_replica() -> None:
    a = create_backend("openai", "m", {"base_urls": ["http://127.0.0.1:1/v1",
                                                     "http://127.0.0.1:2/v1"]})
    b = create_backend("openai", "m", {"base_urls": ["http://10.0.0.9:8000/v1/"],
                                       "max_concurrency": 64})
    assert a.identity() == b.identity()
    assert "127.0.0.1" not in str(a.identity())


@pytest.mark.parametrize("options, message", [
    ({"base_urls": []}, "non-empty list"),
    ({"base_urls": "http://x/v1"}, "non-empty list"),
    ({"base_urls": ["ftp://x"]}, "http"),
    ({"base_urls": ["http://x/v1", "http://x/v1/"]}, "twice"),
    ({"base_urls": ["http://x/v1"], "base_url": "http://y/v1"}, "not both"),
])
def test_bad_base_urls_are_config_errors(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        create_backend("openai", "m", options)


async def test_a_rejected_key_is_not_failed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    from steerstats.errors import PrerequisiteError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with FakeOpenAIServer(api_key="sk-right") as guarded, FakeOpenAIServer() as open_:
        pooled = create_backend("openai", "m", {"base_urls": [guarded.url, open_.url],
                                                "max_concurrency": 1})
        with pytest.raises(PrerequisiteError, match="401") as info:
            await run(pooled, requests(1))
    assert any(guarded.url in note for note in info.value.__notes__)
    assert open_.requests == 0
