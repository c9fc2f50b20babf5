"""The `openai` backend against a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator

import pytest

from steerstats.backends import GenerationRequest, Steering, TransientError, create_backend
from steerstats.backends.openai_compat import parse_retry_after
from steerstats.errors import ConfigError, PrerequisiteError
from tests.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=KEY, timeout_hang=5) as s:
        yield s


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def req(text: str = "hi", **kw: object) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], **kw)  # type: ignore[arg-type]


async def test_generate_returns_text_usage_and_finish_reason(server: FakeOpenAIServer) -> None:
    b = create_backend("openai", "fake-model", {"base_url": server.url})
    try:
        res = await b.generate(req("hello there", max_tokens=5, seed=3, temperature=0.0))
    finally:
        await b.aclose()
    assert res.text.startswith("Fake reply ") and res.finish_reason == "stop"
    assert res.completion_tokens == len(res.text.split()) and res.prompt_tokens is not None
    assert server.total_successes == 1 and server.unauthorized == 0


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "drop", "timeout"])
async def test_faults_become_transient_errors(server: FakeOpenAIServer, fault: str) -> None:
    b = create_backend("openai", "fake-model", {"base_url": server.url, "timeout_s": 0.5})
    server.inject(fault, retry_after=7)
    try:
        with pytest.raises(TransientError) as err:
            await b.generate(req())
        assert b.should_retry(err.value)
        if fault in ("drop", "timeout"):  # aiohttp reports both as timeouts: told apart here
            assert str(err.value).startswith(
                "timed out" if fault == "timeout" else "connection error"), str(err.value)
        assert b.retry_after(err.value) == (7.0 if fault == "429" else None)
        res = await b.generate(req())  # the next call is fine: nothing sticks
        assert res.text.startswith("Fake reply")
    finally:
        await b.aclose()
    assert server.faults_served[fault] == 1


def test_parse_retry_after_seconds_ms_and_dates() -> None:
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after({"retry-after": future}) or 0) <= 31
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


async def test_wrong_key_is_a_prerequisite_error(server: FakeOpenAIServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-000000")
    b = create_backend("openai", "fake-model", {"base_url": server.url})
    try:
        with pytest.raises(PrerequisiteError, match="rejected the API key.*OPENAI_API_KEY"):
            await b.generate(req())
    finally:
        await b.aclose()
    assert server.unauthorized == 1


async def test_missing_key_for_a_remote_server_fails_before_any_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    b = create_backend("openai", "gpt-4o-mini", {"base_url": "https://api.example.invalid/v1"})
    with pytest.raises(PrerequisiteError, match="set the OPENAI_API_KEY environment variable"):
        await b.generate(req())


async def test_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with FakeOpenAIServer() as s:  # like vLLM / llama.cpp started without --api-key
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        b = create_backend("openai", "local-model")
        try:
            assert (await b.generate(req())).text
        finally:
            await b.aclose()
        assert b.identity()["base_url"] == s.url


def test_options_are_checked_and_identity_keeps_only_what_shapes_answers() -> None:
    with pytest.raises(ConfigError, match="unknown option.*basse_url.*accepted: base_url"):
        create_backend("openai", "m", {"basse_url": "http://127.0.0.1:1/v1"})
    b = create_backend("openai", "m", {"base_url": "http://127.0.0.1:1/v1/", "timeout_s": 5,
                                       "max_concurrency": 3, "extra_body": {"top_p": 0.5}})
    assert b.identity() == {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1",
                            "extra_body": {"top_p": 0.5}}
    assert b.max_concurrency() == 3


async def test_activation_steering_is_refused_with_a_fix() -> None:
    b = create_backend("openai", "m", {"base_url": "http://127.0.0.1:1/v1"})
    with pytest.raises(ConfigError, match="cannot apply 'vector' steering.*local, goodfire"):
        await b.generate(req(steering=Steering("caa", {"digest": "x"})))
