"""The request contract with Goodfire's API: every call steerstats makes (chat with and without
feature edits, Auto Steer, feature search, lookup) is made twice against the fake server - once
as the seed study made it, through the installed goodfire SDK with its own HTTP layer, and once
through our backend with the presets' options - and the two requests must agree in method,
path, query, headers (less the key) and JSON body, field by field. The fake server validates
each request against the schema the SDK documents and answers 422 on a violation, so a request
both sides agree on is also one the API accepts."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from steerstats.backends import GenerationRequest, Steering, create_backend
from steerstats.backends.goodfire import GoodfireRequestError
from tests.goodfire_server import SUPPORTED_MODELS, GoodfireServer, RawRequest, feature, validate

pytestmark = pytest.mark.timeout(60)

LLAMA_8B, LLAMA_70B = SUPPORTED_MODELS
QUERY = "be funny"
USER = [{"role": "user", "content": "Tell me about Rome"}]
PAPER = {"sdk_system_prompt": True, "system_prompt": "You are a helpful assistant.",
         "timeout_s": "sdk", "feature_ids": "sdk"}
CORRECTED = {**PAPER, "sdk_system_prompt": False}
# The SDK names each Controller after its Python object id: the only field that may differ.
CONTROLLER_NAME = re.compile(r"controller__\d{1,8}")


@pytest.fixture(name="gf")
def gf_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[GoodfireServer]:
    with GoodfireServer() as server:
        monkeypatch.setenv("GOODFIRE_API_KEY", server.api_key)
        monkeypatch.delenv("GOODFIRE_BASE_URL", raising=False)
        yield server


def sdk_client(gf: GoodfireServer) -> Any:
    """The installed SDK, unmodified (its own AsyncHTTPWrapper), pointed at the fake server."""
    import goodfire

    return goodfire.AsyncClient(api_key=gf.api_key, base_url=gf.url)


def ours(gf: GoodfireServer, options: dict[str, Any], model: str = LLAMA_8B) -> Any:
    return create_backend("goodfire", model, {"base_url": gf.url, **options})


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """``{"a.b[0].c": leaf}`` for every leaf of a JSON value (empty containers are leaves)."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{path}.{key}")
                .items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{path}[{i}]")
                .items()}
    return {path or ".": value}


def assert_same_request(sdk: RawRequest, mine: RawRequest) -> None:
    """Method, path, query, headers less the key, and the JSON body field by field."""
    assert (mine.method, mine.path, mine.query) == (sdk.method, sdk.path, sdk.query)
    for r in (sdk, mine):
        assert r.headers.get("authorization", "").startswith("Bearer ")
        assert int(r.headers.get("content-length", "0")) == len(r.raw)
    skip = {"authorization", "content-length"}  # the key; the length is checked above
    assert {k: v for k, v in mine.headers.items() if k not in skip} == {
        k: v for k, v in sdk.headers.items() if k not in skip
    }
    a, b = flatten(sdk.body), flatten(mine.body)
    name = ".controller.name"
    if name in a or name in b:
        assert CONTROLLER_NAME.fullmatch(a.pop(name, "")), sdk.body
        assert CONTROLLER_NAME.fullmatch(b.pop(name, "")), mine.body
    differ = {p: (a.get(p, "<absent>"), b.get(p, "<absent>")) for p in sorted({*a, *b})
              if a.get(p, "<absent>") != b.get(p, "<absent>")}
    assert not differ, "fields that differ (SDK, steerstats):\n" + json.dumps(differ, indent=1)


Call = Callable[[], Awaitable[Any]]


async def both(gf: GoodfireServer, study: Call, steerstats: Call) -> tuple[RawRequest, RawRequest]:
    """The one request each side makes, checked valid by the server."""
    before = len(gf.raw)
    await study()
    await steerstats()
    sdk, mine = gf.raw[before:]
    assert not gf.rejected, gf.rejected
    return sdk, mine


# -- the calls ----------------------------------------------------------------------------


async def test_auto_steer(gf: GoodfireServer) -> None:
    client, backend = sdk_client(gf), ours(gf, PAPER)
    sdk, mine = await both(
        gf,
        lambda: client.features.AutoSteer(specification=QUERY, model=LLAMA_8B),
        lambda: backend.autosteer(QUERY),
    )
    assert (sdk.method, sdk.path) == ("POST", "/api/inference/v1/features/auto-edits")
    assert_same_request(sdk, mine)
    await backend.aclose()


async def test_feature_search(gf: GoodfireServer) -> None:
    client, backend = sdk_client(gf), ours(gf, PAPER)
    sdk, mine = await both(
        gf,
        lambda: client.features.search(QUERY, model=LLAMA_8B, top_k=10),
        lambda: backend.search_features(QUERY, 10),
    )
    assert (sdk.method, sdk.path, sdk.body) == ("GET", "/api/inference/v1/features/search", None)
    assert_same_request(sdk, mine)
    await backend.aclose()


async def test_lookup(gf: GoodfireServer) -> None:
    client, backend = sdk_client(gf), ours(gf, PAPER)
    sdk, mine = await both(
        gf,
        lambda: client.features.lookup([12, 40], model=LLAMA_8B),
        lambda: backend.lookup_features([12, 40]),
    )
    assert (sdk.method, sdk.path) == ("POST", "/api/inference/v1/features/lookup")
    assert_same_request(sdk, mine)
    await backend.aclose()


def edits_steering(edits: list[dict[str, Any]]) -> Steering:
    return Steering("feature_edits", {"edits": edits})


async def study_variant(client: Any, source: str, model: str = LLAMA_8B) -> Any:
    """A Variant as the study built it: Auto Steer's edits, or searched / looked-up features
    with the picker's values."""
    import goodfire

    variant = goodfire.Variant(model)
    if source == "autosteer":
        variant.set(await client.features.AutoSteer(specification=QUERY, model=model))
    elif source == "search":
        found = await client.features.search(QUERY, model=model, top_k=10)
        variant.set(found[1], 0.6)
        variant.set(found[0], -0.25)
    else:
        looked = await client.features.lookup([12], model=model)
        variant.set(looked[12], 0.4)
    return variant


async def our_edits(backend: Any, source: str) -> list[dict[str, Any]]:
    """The same edits as our methods resolve them (autosteer, agentic, features)."""
    if source == "autosteer":
        return list(await backend.autosteer(QUERY))
    if source == "search":
        found = await backend.search_features(QUERY, 10)
        return [{**found[1], "value": 0.6}, {**found[0], "value": -0.25}]
    (looked,) = await backend.lookup_features([12])
    return [{**looked, "value": 0.4}]


@pytest.mark.parametrize("source", ["autosteer", "search", "lookup"])
@pytest.mark.parametrize("model", [LLAMA_8B, LLAMA_70B])
async def test_chat_with_feature_edits(gf: GoodfireServer, source: str, model: str) -> None:
    """Generation under the edits of each source (the study's defaults: 2048 tokens, seed 42,
    temperature 0.6, its system message after the SDK's)."""
    client, backend = sdk_client(gf), ours(gf, PAPER, model)
    variant = await study_variant(client, source, model)
    edits = await our_edits(backend, source)
    messages = [{"role": "system", "content": "You are a helpful assistant."}, *USER]
    sdk, mine = await both(
        gf,
        lambda: client.chat.completions.create(messages, model=variant),
        lambda: backend.generate(GenerationRequest(
            messages=USER, temperature=0.6, max_tokens=2048, seed=42,
            steering=edits_steering(edits),
        )),
    )
    assert (sdk.method, sdk.path) == ("POST", "/api/inference/v1/chat/completions")
    assert sdk.body["controller"]["interventions"]  # the edits are on the wire
    assert_same_request(sdk, mine)
    await backend.aclose()


async def test_chat_prompt_method(gf: GoodfireServer) -> None:
    """The study's prompt method: its template as the system message, the SDK's before it."""
    client, backend = sdk_client(gf), ours(gf, PAPER)
    messages = [{"role": "system", "content": f"When answering, please {QUERY}."}, *USER]
    sdk, mine = await both(
        gf,
        lambda: client.chat.completions.create(messages, model=LLAMA_8B),
        lambda: backend.generate(GenerationRequest(
            messages=messages, temperature=0.6, max_tokens=2048, seed=42)),
    )
    assert "controller" not in sdk.body and len(sdk.body["messages"]) == 3
    assert_same_request(sdk, mine)
    await backend.aclose()


async def test_chat_without_the_sdk_system_prompt(gf: GoodfireServer) -> None:
    """paper-corrected: the SDK told to send no system prompt of its own."""
    client, backend = sdk_client(gf), ours(gf, CORRECTED)
    messages = [{"role": "system", "content": "You are a helpful assistant."}, *USER]
    sdk, mine = await both(
        gf,
        lambda: client.chat.completions.create(
            messages, model=LLAMA_8B, temperature=0.0, max_completion_tokens=64, seed=7,
            system_prompt=""),
        lambda: backend.generate(GenerationRequest(
            messages=USER, temperature=0.0, max_tokens=64, seed=7)),
    )
    assert sdk.body["messages"] == messages
    assert_same_request(sdk, mine)
    await backend.aclose()


async def test_a_different_request_is_caught(gf: GoodfireServer) -> None:
    """The comparison is not vacuous: one field off (our default 512 tokens) is named."""
    client, backend = sdk_client(gf), ours(gf, PAPER)
    sdk, mine = await both(
        gf,
        lambda: client.chat.completions.create(
            [{"role": "system", "content": "You are a helpful assistant."}, *USER], model=LLAMA_8B
        ),
        lambda: backend.generate(GenerationRequest(
            messages=USER, temperature=0.6, max_tokens=512, seed=42)),
    )
    with pytest.raises(AssertionError, match=r'(?s)differ.*\{\s*"\.max_completion_tokens": '
                       r"\[\s*2048,\s*512\s*\]\s*\}"):
        assert_same_request(sdk, mine)
    await backend.aclose()


# -- the fake server refuses what the API's schema does not allow ----------------------------


def chat_body(**controller_feature: Any) -> dict[str, Any]:
    f = {"uuid": feature(LLAMA_8B, 5)["id"], "label": "x", "index_in_sae": 5,
         "max_activation_strength": 1, **controller_feature}
    return {
        "messages": USER, "stream": False, "max_completion_tokens": 2048, "top_p": 0.9,
        "temperature": 0.6, "stop": ["<|eot_id|>"], "seed": 42, "model": LLAMA_8B,
        "controller": {
            "interventions": [{"mode": "nudge", "features": {"features": [f]}, "value": 0.3}],
            "scopes": [], "name": "controller__1", "nonzero_strength_threshold": None,
            "min_nudge_entropy": None, "max_nudge_entropy": None,
        },
    }


@pytest.mark.parametrize(
    ("endpoint", "body", "query", "problem"),
    [
        ("chat", chat_body(), None, None),
        ("chat", chat_body(uuid="6f1d8a52-3c4e-4b7a-9a51-2f0c1e9b7d10"), None, "32 hex digits"),
        ("chat", chat_body(index_in_sae=65536), None, "not an SAE index"),
        ("chat", {**chat_body(), "max_tokens": 10}, None, "extra fields not permitted"),
        ("chat", {**chat_body(), "seed": "42"}, None, "integer or null"),
        ("chat", {**chat_body(), "temperature": 3}, None, r"in \[0, 2\]"),
        ("chat", {"messages": USER}, None, "field required"),
        ("chat", {**chat_body(), "messages": [{"role": "robot", "content": "x"}]}, None, "role"),
        ("autosteer", {"specification": "", "model": LLAMA_8B}, None, "non-empty"),
        ("lookup", {"indices": [-1], "model": LLAMA_8B}, None, "integers >= 0"),
        ("lookup", {"indices": [3], "model": "gpt-4"}, None, "unsupported model"),
        ("search", None, [("query", "x"), ("page", "1"), ("perPage", "10"),
                          ("model", LLAMA_8B)], None),
        ("search", None, [("query", "x"), ("perPage", "0"), ("model", LLAMA_8B)], "page"),
    ],
)
def test_the_server_validates_like_the_schema(
    endpoint: str, body: Any, query: list[tuple[str, str]] | None, problem: str | None
) -> None:
    found = validate(endpoint, body, query)
    if problem is None:
        assert found == []
    else:
        assert found and re.search(problem, json.dumps(found)), found


async def test_a_schema_violation_is_a_422_failure_not_retried(gf: GoodfireServer) -> None:
    backend = ours(gf, {**PAPER, "feature_ids": "dashed"})
    f = feature(LLAMA_8B, 5)
    steering = edits_steering([{"id": f["id"], "index": 5, "label": f["label"], "value": 0.3}])
    with pytest.raises(GoodfireRequestError, match="HTTP 422.*32 hex digits") as info:
        await backend.generate(GenerationRequest(messages=USER, steering=steering))
    assert not backend.should_retry(info.value) and len(gf.rejected) == 1
    await backend.aclose()
