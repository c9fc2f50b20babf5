"""The goodfire backend against the fake Goodfire server (tests/goodfire_server.py): every call
type, the payloads the SDK sends, fault -> error mapping, auth and connection failures, and that
the API key stays out of identities and error messages."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from email.utils import formatdate

import pytest

from steerstats.backends import GenerationRequest, Steering, TransientError, create_backend
from steerstats.backends.goodfire import (
    GoodfireRequestError,
    GoodfireUnreachable,
    parse_retry_after,
)
from steerstats.errors import ConfigError, PrerequisiteError
from tests.goodfire_server import (
    SUPPORTED_MODELS,
    Fault,
    GoodfireServer,
    feature,
    goodfire_server_fixture,  # noqa: F401  (the goodfire_server fixture)
)

pytestmark = pytest.mark.timeout(60)
ENV = "GOODFIRE_BASE_URL"

LLAMA_8B = SUPPORTED_MODELS[0]
HELLO = GenerationRequest(
    messages=[{"role": "user", "content": "Tell me about Rome"}], max_tokens=64, seed=3
)


def make(server: GoodfireServer, model: str = LLAMA_8B, **options: object):
    return create_backend("goodfire", model, {"base_url": server.url, "timeout_s": 2.0, **options})


def edits_spec(model: str, *pairs: tuple[int, float]) -> Steering:
    edits = []
    for index, value in pairs:
        f = feature(model, index)
        edits.append({"id": f["id"], "index": index, "label": f["label"], "value": value})
    return Steering("feature_edits", {"edits": edits})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_plain_chat_sends_the_request_as_given(goodfire_server: GoodfireServer) -> None:
    backend = make(goodfire_server)
    result = await backend.generate(HELLO)
    assert "unsteered" in result.text and "Tell me about Rome" in result.text
    assert result.finish_reason == "stop"
    ((endpoint, payload),) = goodfire_server.requests
    assert endpoint == "chat"
    # no SDK default system prompt is slipped in; sampling fields are ours
    assert payload["messages"] == [{"role": "user", "content": "Tell me about Rome"}]
    assert payload["model"] == LLAMA_8B and "controller" not in payload
    assert (payload["max_completion_tokens"], payload["temperature"], payload["seed"]) == (
        64,
        0.0,
        3,
    )
    assert payload["top_p"] == 0.9 and payload["stop"] == ["<|eot_id|>", "<|begin_of_text|>"]
    await backend.aclose()


async def test_feature_edits_reach_the_server_and_change_the_reply(
    goodfire_server: GoodfireServer,
) -> None:
    backend = make(goodfire_server)
    steering = edits_spec(LLAMA_8B, (101, 0.4), (2002, -0.25))
    steered = await backend.generate(GenerationRequest(messages=HELLO.messages, steering=steering))
    plain = await backend.generate(GenerationRequest(messages=HELLO.messages))
    assert "steered by 101:+0.400, 2002:-0.250" in steered.text
    assert steered.text != plain.text
    assert steered.extra["n_feature_edits"] == 2
    controller = goodfire_server.requests[0][1]["controller"]
    sent = [
        (iv["mode"], iv["features"]["features"][0]["index_in_sae"], iv["value"])
        for iv in controller["interventions"]
    ]
    assert sent == [("nudge", 101, 0.4), ("nudge", 2002, -0.25)]
    assert (
        controller["interventions"][0]["features"]["features"][0]["uuid"]
        == feature(LLAMA_8B, 101)["id"]
    )
    await backend.aclose()


async def test_system_prompt_option_only_fills_a_missing_system_message(
    goodfire_server: GoodfireServer,
) -> None:
    backend = make(goodfire_server, system_prompt="Be brief.")
    await backend.generate(HELLO)
    with_system = [{"role": "system", "content": "Be funny."}, *HELLO.messages]
    await backend.generate(GenerationRequest(messages=with_system))
    first, second = (p["messages"] for _, p in goodfire_server.requests)
    assert first[0] == {"role": "system", "content": "Be brief."}
    assert second == with_system  # exactly one system message: the request's own
    await backend.aclose()


async def test_extras_autosteer_search_lookup(goodfire_server: GoodfireServer) -> None:
    backend = make(goodfire_server)
    goodfire_server.autosteer_answers["be funny"] = [
        (feature(LLAMA_8B, 7, "jokes"), 0.35),
        (feature(LLAMA_8B, 9, "puns"), 0.2),
    ]
    edits = await backend.autosteer("be funny")
    assert edits == [
        {"id": feature(LLAMA_8B, 7)["id"], "index": 7, "label": "jokes", "value": 0.35},
        {"id": feature(LLAMA_8B, 9)["id"], "index": 9, "label": "puns", "value": 0.2},
    ]
    found = await backend.search_features("be funny", 4)
    assert len(found) == 4 and all(set(f) == {"id", "index", "label"} for f in found)
    search_payload = goodfire_server.requests[1][1]
    assert search_payload == {"query": "be funny", "page": "1", "perPage": "4", "model": LLAMA_8B}
    looked = await backend.lookup_features([12, 10**9])  # the second index does not exist
    assert looked == [
        {"id": feature(LLAMA_8B, 12)["id"], "index": 12, "label": feature(LLAMA_8B, 12)["label"]}
    ]
    assert goodfire_server.requests[0] == (
        "autosteer",
        {"specification": "be funny", "model": LLAMA_8B},
    )
    assert dict(goodfire_server.served) == {"autosteer": 1, "search": 1, "lookup": 1}
    await backend.aclose()


async def test_concurrent_calls_share_one_client(goodfire_server: GoodfireServer) -> None:
    backend = make(goodfire_server, max_concurrency=4)
    requests = [
        GenerationRequest(messages=[{"role": "user", "content": f"prompt {i}"}]) for i in range(24)
    ]
    results = await asyncio.gather(*(backend.generate(r) for r in requests))
    assert [f"'prompt {i}'" in r.text for i, r in enumerate(results)] == [True] * 24
    assert backend.max_concurrency() == 4
    await backend.aclose()


CALLS = {
    "chat": lambda b: b.generate(HELLO),
    "autosteer": lambda b: b.autosteer("be funny"),
    "search": lambda b: b.search_features("be funny", 3),
}


@pytest.mark.parametrize("endpoint", sorted(CALLS))
@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        (Fault("status", 429, retry_after="7"), 7.0),
        (Fault("status", 429), None),
        (Fault("status", 500), None),
        (Fault("status", 503, retry_after="2"), 2.0),
        (Fault("malformed"), None),
        (Fault("bad_shape"), None),
        (Fault("drop"), None),
        (Fault("timeout", delay_s=3.0), None),
    ],
    ids=[
        "429-retry-after",
        "429",
        "500",
        "503",
        "malformed-json",
        "bad-shape",
        "dropped",
        "timeout",
    ],
)
async def test_faults_become_one_transient_error(
    goodfire_server: GoodfireServer, endpoint: str, fault: Fault, retry_after: float | None
) -> None:
    backend = make(goodfire_server, timeout_s=0.3)
    goodfire_server.inject(endpoint, fault)
    start = time.monotonic()
    with pytest.raises(TransientError) as info:
        await CALLS[endpoint](backend)
    elapsed = time.monotonic() - start
    assert backend.should_retry(info.value)
    assert backend.retry_after(info.value) == retry_after
    assert goodfire_server.calls[endpoint] == 1  # the SDK's own (blocking) retries are off
    assert elapsed < 1.5
    assert goodfire_server.api_key not in str(info.value)
    # the fault was used up: the same call now succeeds on the same backend
    await CALLS[endpoint](backend)
    await backend.aclose()


def test_retry_after_parsing() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    in_a_minute = parse_retry_after(formatdate(time.time() + 60, usegmt=True))
    assert in_a_minute is not None and 55 < in_a_minute <= 60
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("endpoint", sorted(CALLS))
async def test_wrong_key_is_a_prerequisite_error_naming_the_variable(
    goodfire_server: GoodfireServer, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    monkeypatch.setenv("GOODFIRE_API_KEY", "gf-wrong-key-42")
    backend = make(goodfire_server)
    with pytest.raises(PrerequisiteError, match="GOODFIRE_API_KEY") as info:
        await CALLS[endpoint](backend)
    assert "401" in str(info.value) and goodfire_server.url in str(info.value)
    assert "gf-wrong-key-42" not in str(info.value)
    assert not backend.should_retry(info.value)
    assert goodfire_server.calls[endpoint] == 1
    # the key stays refused: later calls fail the same way without another request
    with pytest.raises(PrerequisiteError, match="GOODFIRE_API_KEY"):
        await backend.generate(HELLO)
    assert sum(goodfire_server.calls.values()) == 1
    await backend.aclose()


async def test_forbidden_is_not_retried(goodfire_server: GoodfireServer) -> None:
    backend = make(goodfire_server)
    goodfire_server.inject("chat", Fault("status", 403, body=b"Insufficient permissions."))
    with pytest.raises(PrerequisiteError, match="GOODFIRE_API_KEY"):
        await backend.generate(HELLO)
    await backend.aclose()


async def test_rejected_request_is_a_plain_failure_and_the_key_is_redacted(
    goodfire_server: GoodfireServer,
) -> None:
    backend = make(goodfire_server)
    echo = f"bad request; you sent Authorization: Bearer {goodfire_server.api_key}".encode()
    goodfire_server.inject("chat", Fault("status", 422, body=echo))
    with pytest.raises(GoodfireRequestError) as info:
        await backend.generate(HELLO)
    assert "HTTP 422" in str(info.value) and "Bearer ***" in str(info.value)
    assert goodfire_server.api_key not in str(info.value)
    assert not backend.should_retry(info.value)
    unsupported = make(goodfire_server, model="meta-llama/Not-A-Goodfire-Model")
    with pytest.raises(GoodfireRequestError, match="HTTP 422.*unsupported model"):
        await unsupported.generate(HELLO)
    await backend.aclose()
    await unsupported.aclose()


async def test_connection_refused_names_the_base_url_and_fails_fast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOODFIRE_API_KEY", "gf-some-key")
    url = f"http://127.0.0.1:{closed_port()}"
    backend = create_backend("goodfire", LLAMA_8B, {"base_url": url})
    start = time.monotonic()
    for call in CALLS.values():
        with pytest.raises(
            GoodfireUnreachable, match="cannot connect to the Goodfire API at " + url
        ) as info:
            await call(backend)
        assert backend.should_retry(info.value)
    assert time.monotonic() - start < 2.0
    await backend.aclose()


async def test_a_dead_base_url_trips_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFIRE_API_KEY", "gf-some-key")
    url = f"http://127.0.0.1:{closed_port()}"
    backend = create_backend("goodfire", LLAMA_8B, {"base_url": url, "unreachable_after_s": 0.2})
    with pytest.raises(GoodfireUnreachable):  # retryable at first: the retry policy runs
        await backend.generate(HELLO)
    await asyncio.sleep(0.25)
    with pytest.raises(
        PrerequisiteError, match=f"cannot reach the Goodfire API at {url}: 1 connection attempt"
    ):
        await backend.autosteer("be funny")
    # from now on every call fails at once, without another connection attempt
    start = time.monotonic()
    for _ in range(50):
        with pytest.raises(
            PrerequisiteError, match=f"1 connection attempt\\(s\\) over .* all failed.*{ENV}"
        ):
            await backend.generate(HELLO)
    assert time.monotonic() - start < 0.5
    await backend.aclose()


async def test_missing_key_fails_before_any_request(
    goodfire_server: GoodfireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOODFIRE_API_KEY")
    backend = make(goodfire_server)
    with pytest.raises(PrerequisiteError, match="environment variable GOODFIRE_API_KEY"):
        await backend.generate(HELLO)
    assert sum(goodfire_server.calls.values()) == 0


def test_options_are_checked_and_the_key_is_never_an_option() -> None:
    with pytest.raises(ConfigError, match="GOODFIRE_API_KEY"):
        create_backend("goodfire", LLAMA_8B, {"api_key": "gf-secret"})
    with pytest.raises(ConfigError, match="unknown option.*'temperatur'.*accepted: base_url"):
        create_backend("goodfire", LLAMA_8B, {"temperatur": 0.3})


def test_identity_has_the_base_url_and_answer_options_but_no_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOODFIRE_API_KEY", "gf-secret-identity-key")
    monkeypatch.setenv("GOODFIRE_BASE_URL", "https://user:pw@goodfire.example:8443/")
    backend = create_backend("goodfire", LLAMA_8B, {"timeout_s": 5})
    ident = backend.identity()
    assert ident == {
        "backend": "goodfire",
        "model": LLAMA_8B,
        "options": {
            "base_url": "https://goodfire.example:8443",
            "top_p": 0.9,
            "stop": ["<|eot_id|>", "<|begin_of_text|>"],
            "system_prompt": "",
            "sdk_system_prompt": "",  # the SDK's default system prompt is not sent
            "feature_ids": "sdk",
        },
    }
    assert "gf-secret" not in repr(ident) and "pw" not in repr(ident)
    # timeouts and concurrency do not change answers, so they do not change keys
    assert (
        create_backend("goodfire", LLAMA_8B, {"timeout_s": "sdk", "max_concurrency": 2}).identity()
        == ident
    )
    assert backend.base_url == "https://user:pw@goodfire.example:8443"
    monkeypatch.delenv("GOODFIRE_BASE_URL")
    assert (
        create_backend("goodfire", LLAMA_8B).identity()["options"]["base_url"]
        == "https://api.goodfire.ai"
    )


async def test_other_steering_kinds_are_refused(goodfire_server: GoodfireServer) -> None:
    backend = make(goodfire_server)
    caa = Steering("vector", {"vector": "abc123", "coefficient": 4.0})
    with pytest.raises(TypeError, match="'feature_edits'.*got 'vector'"):
        await backend.generate(GenerationRequest(messages=HELLO.messages, steering=caa))
    assert sum(goodfire_server.calls.values()) == 0


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "goodfire", None)  # makes `import goodfire` raise ImportError
    with pytest.raises(PrerequisiteError, match=r"pip install 'steerstats\[goodfire\]'"):
        create_backend("goodfire", LLAMA_8B)


def test_registering_backends_does_not_import_the_sdk() -> None:
    code = (
        "import sys; from steerstats.backends import registry; names = registry.names(); "
        "assert 'goodfire' in names, names; assert 'goodfire' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- the seed study's request details (issue 16) and SDK compatibility (issue 12 item 8) -------


async def test_sdk_system_prompt_goes_first_in_every_request(
    goodfire_server: GoodfireServer,
) -> None:
    from goodfire.api.chat.client import DEFAULT_SYSTEM_PROMPT

    backend = make(goodfire_server, sdk_system_prompt=True, system_prompt="You are a helper.")
    await backend.generate(HELLO)
    own = [{"role": "system", "content": "When answering, please be funny."}, *HELLO.messages]
    await backend.generate(GenerationRequest(messages=own))
    first, second = (p["messages"] for _, p in goodfire_server.requests)
    sdk = {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    # as the SDK's async create() does: its prompt first, then the request's (or the filler)
    assert first == [sdk, {"role": "system", "content": "You are a helper."}, *HELLO.messages]
    assert second == [sdk, *own]
    assert backend.identity()["options"]["sdk_system_prompt"] == DEFAULT_SYSTEM_PROMPT
    await backend.aclose()


async def test_feature_ids_go_out_as_the_sdk_sends_them(goodfire_server: GoodfireServer) -> None:
    import uuid

    backend = make(goodfire_server)
    found = await backend.search_features("be funny", 2)
    dashed = str(uuid.UUID(found[0]["id"]))
    spec = Steering("feature_edits", {"edits": [{**found[0], "value": 0.3}]})
    await backend.generate(GenerationRequest(messages=HELLO.messages, steering=spec))
    (_, payload) = goodfire_server.requests[-1]
    sent = payload["controller"]["interventions"][0]["features"]["features"][0]["uuid"]
    assert sent == found[0]["id"] == uuid.UUID(dashed).hex  # 32 hex digits, no dashes
    # an id stored with dashes (an older cache) is sent as the SDK would send its UUID ...
    moved = Steering("feature_edits", {"edits": [{**found[0], "id": dashed, "value": 0.3}]})
    hexed = make(goodfire_server, feature_ids="hex")
    await hexed.generate(GenerationRequest(messages=HELLO.messages, steering=moved))
    assert goodfire_server.requests[-1][1]["controller"]["interventions"][0]["features"][
        "features"][0]["uuid"] == uuid.UUID(dashed).hex
    # ... and dashes on the wire are refused by a server that validates the id format
    with pytest.raises(GoodfireRequestError, match="HTTP 422.*uuid must be 32 hex digits"):
        await make(goodfire_server, feature_ids="dashed").generate(
            GenerationRequest(messages=HELLO.messages, steering=spec)
        )
    with pytest.raises(ConfigError, match="feature_ids"):
        make(goodfire_server, feature_ids="braces")
    await backend.aclose()
    await hexed.aclose()


async def test_sdk_timeouts_are_the_sdks_own_per_call(goodfire_server: GoodfireServer) -> None:
    backend = make(goodfire_server, timeout_s="sdk")
    seen = {}
    for name, call in {**CALLS, "lookup": lambda b: b.lookup_features([3])}.items():
        await call(backend)
        seen[name] = backend._transport.last_timeout_s
    # chat.completions.create(timeout=320), features.AutoSteer(timeout=60); search and lookup
    # pass none, so the SDK wrapper's default (10 s) applies
    assert seen == {"chat": 320.0, "autosteer": 60.0, "search": 10.0, "lookup": 10.0}
    fixed = make(goodfire_server, timeout_s=7)
    await fixed.generate(HELLO)
    assert fixed._transport.last_timeout_s == 7.0
    with pytest.raises(ConfigError, match="timeout_s"):
        make(goodfire_server, timeout_s="forever")
    await backend.aclose()
    await fixed.aclose()


@pytest.mark.parametrize("version", ["0.3.1", "0.3.0", "0.4.0", "1.0"])
def test_unsupported_sdk_release_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    import goodfire

    monkeypatch.setattr(goodfire, "__version__", version)
    with pytest.raises(PrerequisiteError, match=rf"goodfire SDK {version} is not supported.*"
                       r"pip install 'goodfire>=0\.3\.2,<0\.4'"):
        create_backend("goodfire", LLAMA_8B)


def test_a_changed_http_wrapper_signature_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from goodfire.api.utils import AsyncHTTPWrapper

    async def post(self, url, headers=None, body=None, timeout=10):  # type: ignore[no-untyped-def]
        raise AssertionError("never called")

    monkeypatch.setattr(AsyncHTTPWrapper, "post", post)
    with pytest.raises(PrerequisiteError, match=r"incompatible.*AsyncHTTPWrapper\.post\(self, "
                       r"url, headers, body, timeout\)"):
        create_backend("goodfire", LLAMA_8B)


async def test_an_incompatible_sdk_is_reported_once_and_not_retried(
    goodfire_server: GoodfireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # goodfire 0.3.0/0.3.1 return the reply message as a pydantic model, not a dict
    from goodfire.api.chat import client as chat_client
    from pydantic import BaseModel

    class Message(BaseModel):
        role: str
        content: str

    class Choice(BaseModel):
        index: int
        message: Message
        finish_reason: str | None

    class Completion(chat_client.ChatCompletion):  # type: ignore[misc]
        choices: list[Choice]  # type: ignore[assignment]

    monkeypatch.setattr(chat_client, "ChatCompletion", Completion)
    backend = make(goodfire_server)
    with pytest.raises(PrerequisiteError, match=r"goodfire SDK .* is incompatible.*chat "
                       r"completion.*TypeError.*pip install 'goodfire>=0\.3\.2,<0\.4'") as info:
        await backend.generate(HELLO)
    assert not backend.should_retry(info.value)
    # reported once: every later call fails at once, without another (paid) request
    for call in CALLS.values():
        with pytest.raises(PrerequisiteError, match="incompatible"):
            await call(backend)
    assert goodfire_server.calls["chat"] == 1 and sum(goodfire_server.calls.values()) == 1
    await backend.aclose()


async def test_a_reply_the_sdk_cannot_parse_stays_retryable(
    goodfire_server: GoodfireServer,
) -> None:
    backend = make(goodfire_server)
    goodfire_server.autosteer_answers["be odd"] = [({"id": "x", "label": "y"}, 0.3)]  # no index
    with pytest.raises(TransientError, match="malformed Auto Steer reply.*KeyError"):
        await backend.autosteer("be odd")
    goodfire_server.autosteer_answers["be odd"] = [(feature(LLAMA_8B, 5), "strong")]
    with pytest.raises(TransientError, match="malformed Auto Steer reply.*not a number"):
        await backend.autosteer("be odd")
    assert (await backend.autosteer("be funny"))  # the backend is still usable
    await backend.aclose()


async def test_an_unusable_base_url_is_named_not_blamed_on_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOODFIRE_API_KEY", "gf-some-key")
    backend = create_backend("goodfire", LLAMA_8B, {"base_url": "ftp://goodfire.example"})
    with pytest.raises(PrerequisiteError, match="base URL 'ftp://goodfire.example' is not usable"):
        await backend.generate(HELLO)
    await backend.aclose()
