"""The feature-edit methods (autosteer, autosteer+prompt, agentic, features) resolved with a
fake MethodContext: the goodfire backend on the fake server, an in-memory resolution cache and a
scripted picker model."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from steerstats.backends import Backend, GenerationRequest, GenerationResult, create_backend
from steerstats.backends.feature_edits import FeatureEdit
from steerstats.errors import ConfigError
from steerstats.methods import Intervention, MethodContext, Query, create_method
from steerstats.methods.agentic import FeaturePickError, parse_pick
from tests.goodfire_server import (
    SUPPORTED_MODELS,
    GoodfireServer,
    feature,
    goodfire_server_fixture,  # noqa: F401  (the goodfire_server fixture)
)

pytestmark = pytest.mark.timeout(60)

LLAMA_8B, LLAMA_70B = SUPPORTED_MODELS
FUNNY = Query(id="be-funny", text="be funny")
FORMAL = Query(id="be-formal", text="be formal")


class MemoryCache:
    """In-memory ResolutionCache: stores JSON round-tripped values, counts computations."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str], Any] = {}
        self.computed: Counter[str] = Counter()

    async def get_or_compute(
        self, namespace: str, key: Mapping[str, Any], compute: Callable[[], Awaitable[Any]]
    ) -> Any:
        k = (namespace, json.dumps(key, sort_keys=True))
        if k not in self.store:
            value = await compute()
            self.store[k] = json.loads(json.dumps(value))
            self.computed[namespace] += 1
        return self.store[k]


class ScriptedPicker(Backend):
    """A chat backend that answers with the next scripted reply and keeps the requests."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        super().__init__("scripted-picker")
        self.replies = list(replies)
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        return GenerationResult(text=self.replies.pop(0))


def context(
    server: GoodfireServer, cache: MemoryCache, model: str = LLAMA_8B, picker: Backend | None = None
) -> MethodContext:
    backend = create_backend("goodfire", model, {"base_url": server.url, "timeout_s": 2.0})
    pickers = {} if picker is None else {"picker-llm": picker}
    return MethodContext(backend=backend, cache=cache, chat_backend=lambda name: pickers[name])


def spec_values(iv: Intervention) -> list[tuple[int, float]]:
    assert iv.steering is not None and iv.steering.kind == "feature_edits"
    return [(e["index"], e["value"]) for e in iv.steering.spec["edits"]]


def request_for(iv: Intervention, user: str = "Tell me about Rome") -> GenerationRequest:
    """How a collector turns an intervention into a request (system prompt first, if any)."""
    messages = [{"role": "user", "content": user}]
    if iv.system_prompt:
        messages.insert(0, {"role": "system", "content": iv.system_prompt})
    return GenerationRequest(messages=messages, steering=iv.steering)


# -- autosteer ------------------------------------------------------------------------------


async def test_autosteer_resolves_once_per_query_and_model(goodfire_server: GoodfireServer) -> None:
    goodfire_server.autosteer_answers["be funny"] = [
        (feature(LLAMA_8B, 7, "jokes"), 0.4),
        (feature(LLAMA_8B, 9, "puns"), -0.2),
    ]
    cache = MemoryCache()
    ctx = context(goodfire_server, cache)
    method = create_method("autosteer")
    assert method.uses_strength
    full = await method.resolve(FUNNY, 1.0, ctx)
    half = await method.resolve(FUNNY, 0.5, ctx)
    assert spec_values(full) == [(7, 0.4), (9, -0.2)]
    assert spec_values(half) == [(7, 0.2), (9, -0.1)]
    assert full.steering.spec["edits"][0] == {
        "id": feature(LLAMA_8B, 7)["id"],
        "index": 7,
        "label": "jokes",
        "value": 0.4,
    }
    assert full.system_prompt is None and (full.detail["scale"], half.detail["scale"]) == (1.0, 0.5)
    # the unscaled edits and their source are on record with every generation
    assert half.detail["source"] == "autosteer" and half.detail["scale"] == 0.5
    assert half.detail["edits"] == full.steering.spec["edits"]
    await method.resolve(FORMAL, 1.0, ctx)
    other_model = context(goodfire_server, cache, LLAMA_70B)
    await method.resolve(FUNNY, 1.0, other_model)
    # one Auto Steer call per query x model, however many strengths and prompts
    assert goodfire_server.served["autosteer"] == 3
    assert cache.computed["goodfire.autosteer"] == 3


async def test_autosteer_scale_zero_reproduces_control(goodfire_server: GoodfireServer) -> None:
    ctx = context(goodfire_server, MemoryCache())
    zero = await create_method("autosteer").resolve(FUNNY, 0.0, ctx)
    control = await create_method("control").resolve(FUNNY, None, ctx)
    assert zero.steering is None and zero.system_prompt is None and zero.detail["scale"] == 0.0
    # the same intervention as control, so the same generation key: one shared result
    assert zero.canonical() == control.canonical()
    assert request_for(zero) == request_for(control)
    replies = [await ctx.backend.generate(request_for(iv)) for iv in (zero, control)]
    assert replies[0].text == replies[1].text and "unsteered" in replies[0].text


async def test_a_changed_autosteer_answer_is_a_new_result(goodfire_server: GoodfireServer) -> None:
    method = create_method("autosteer")
    before = await method.resolve(FUNNY, 1.0, context(goodfire_server, MemoryCache()))
    goodfire_server.autosteer_answers["be funny"] = [(feature(LLAMA_8B, 11, "wit"), 0.3)]
    after = await method.resolve(FUNNY, 1.0, context(goodfire_server, MemoryCache()))
    assert before.canonical() != after.canonical()  # the generation's cache key hashes this
    assert spec_values(after) == [(11, 0.3)]


async def test_autosteer_with_no_edits_is_unsteered(goodfire_server: GoodfireServer) -> None:
    goodfire_server.autosteer_answers["be funny"] = []
    iv = await create_method("autosteer").resolve(
        FUNNY, 1.0, context(goodfire_server, MemoryCache())
    )
    assert iv.steering is None and iv.detail["edits"] == []


async def test_autosteer_needs_a_backend_with_auto_steer() -> None:
    ctx = MethodContext(backend=create_backend("mock", "mock-model"), cache=MemoryCache())
    with pytest.raises(ConfigError, match="needs a backend with 'autosteer'.*uses backend 'mock'"):
        await create_method("autosteer").resolve(FUNNY, 1.0, ctx)


async def test_strength_is_a_finite_scale(goodfire_server: GoodfireServer) -> None:
    ctx = context(goodfire_server, MemoryCache())
    default = await create_method("autosteer").resolve(FUNNY, None, ctx)
    assert default.detail["scale"] == 1.0 and default.steering is not None  # no sweep: scale 1
    for bad in (math.inf, math.nan):
        with pytest.raises(ConfigError, match="must be a finite number"):
            await create_method("autosteer").resolve(FUNNY, bad, ctx)


# -- autosteer+prompt -----------------------------------------------------------------------


async def test_autosteer_prompt_combines_the_same_edits_with_the_prompt_method(
    goodfire_server: GoodfireServer,
) -> None:
    cache = MemoryCache()
    ctx = context(goodfire_server, cache)
    combined = await create_method("autosteer+prompt").resolve(FUNNY, 1.0, ctx)
    alone = await create_method("autosteer").resolve(FUNNY, 1.0, ctx)
    prompt = await create_method("prompt").resolve(FUNNY, None, ctx)
    assert combined.steering == alone.steering
    assert combined.system_prompt == prompt.system_prompt and "be funny" in combined.system_prompt
    assert goodfire_server.served["autosteer"] == 1  # shared cached resolution
    zero = await create_method("autosteer+prompt").resolve(FUNNY, 0.0, ctx)
    assert request_for(zero) == request_for(prompt)  # scale 0 is the prompt method exactly
    assert zero.canonical() == prompt.canonical()
    custom = create_method("autosteer+prompt", {"template": "Always {query}."})
    assert (await custom.resolve(FUNNY, 1.0, ctx)).system_prompt == "Always be funny."
    with pytest.raises(ValueError, match="must contain '\\{query\\}'"):
        create_method("autosteer+prompt", {"template": "no placeholder"})


# -- agentic --------------------------------------------------------------------------------


def pick(*choices: tuple[int, float], reasoning: str = "these fit") -> str:
    return json.dumps(
        {"reasoning": reasoning, "features": [{"feature": n, "strength": s} for n, s in choices]}
    )


async def test_agentic_searches_then_the_picker_chooses(goodfire_server: GoodfireServer) -> None:
    picker = ScriptedPicker([pick((2, 0.5), (1, -0.25))])
    cache = MemoryCache()
    ctx = context(goodfire_server, cache, picker=picker)
    method = create_method("agentic", {"picker": "picker-llm", "candidates": 5})
    iv = await method.resolve(FUNNY, 1.0, ctx)
    found = await ctx.backend.search_features("be funny", 5)
    assert spec_values(iv) == [(found[1]["index"], 0.5), (found[0]["index"], -0.25)]
    assert iv.steering.spec["edits"][0]["id"] == found[1]["id"]
    assert iv.detail["source"] == "agentic" and iv.detail["reasoning"] == "these fit"
    assert iv.detail["pick_attempts"] == 1 and len(iv.detail["candidates"]) == 5
    # the picker saw every candidate label, numbered, and the query
    shown = picker.requests[0].messages[-1]["content"]
    assert "be funny" in shown and all(
        f"{i}. {f['label']}" in shown for i, f in enumerate(found, 1)
    )
    # other strengths reuse the cached search and pick: no second search or picker call
    zero = await method.resolve(FUNNY, 0.0, ctx)
    assert zero.steering is None and zero.detail["edits"] == iv.detail["edits"]
    assert goodfire_server.served["search"] == 2  # the method's one + this test's own
    assert len(picker.requests) == 1


async def test_agentic_retries_an_invalid_pick_with_the_problem(
    goodfire_server: GoodfireServer,
) -> None:
    picker = ScriptedPicker(
        ["I would pick the first feature.", "```json\n" + pick((1, 0.3)) + "\n```"]
    )
    ctx = context(goodfire_server, MemoryCache(), picker=picker)
    iv = await create_method("agentic", {"picker": "picker-llm", "candidates": 3}).resolve(
        FUNNY, 1.0, ctx
    )
    assert iv.detail["pick_attempts"] == 2 and len(spec_values(iv)) == 1
    retry = picker.requests[1].messages
    assert retry[-2] == {"role": "assistant", "content": "I would pick the first feature."}
    assert "no JSON object" in retry[-1]["content"]


async def test_agentic_fails_after_the_configured_attempts_and_never_guesses(
    goodfire_server: GoodfireServer,
) -> None:
    bad = ["not json", pick((9, 0.3)), pick((1, 5.0))]
    picker = ScriptedPicker(bad + [pick((1, 0.3))])
    cache = MemoryCache()
    ctx = context(goodfire_server, cache, picker=picker)
    method = create_method("agentic", {"picker": "picker-llm", "candidates": 3, "attempts": 3})
    with pytest.raises(FeaturePickError) as info:
        await method.resolve(FUNNY, 1.0, ctx)
    message = str(info.value)
    assert "3 attempt(s)" in message and "'be-funny'" in message
    assert (
        "no JSON object" in message
        and "feature 9 is not in the list" in message
        and "outside [-1.0, 1.0]" in message
    )
    assert len(picker.requests) == 3
    assert cache.computed["agentic.pick"] == 0  # a failure is not cached: the next run asks again
    assert spec_values(await method.resolve(FUNNY, 1.0, ctx)) != []


async def test_agentic_needs_a_picker_and_candidates(goodfire_server: GoodfireServer) -> None:
    method = create_method("agentic", {"picker": "picker-llm"})
    no_pickers = MethodContext(
        backend=context(goodfire_server, MemoryCache()).backend, cache=MemoryCache()
    )
    with pytest.raises(ConfigError, match="needs a chat backend"):
        await method.resolve(FUNNY, 1.0, no_pickers)
    goodfire_server.search_results["be funny"] = []
    with pytest.raises(FeaturePickError, match="found no features"):
        await method.resolve(
            FUNNY, 1.0, context(goodfire_server, MemoryCache(), picker=ScriptedPicker([]))
        )
    with pytest.raises(ConfigError, match="min_strength < max_strength"):
        create_method("agentic", {"picker": "p", "min_strength": 1, "max_strength": 0})
    with pytest.raises(ConfigError, match="attempts must be an integer >= 1"):
        create_method("agentic", {"picker": "p", "attempts": 0})
    with pytest.raises(ConfigError, match="missing required parameter.*'picker'"):
        create_method("agentic", {})


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ('{"features": []}', "between 1 and 2 features, got 0"),
        (pick((1, 0.1), (2, 0.1), (3, 0.1)), "between 1 and 2 features, got 3"),
        (pick((1, 0.1), (1, 0.2)), "chosen once"),
        (pick((0, 0.1)), "feature 0 is not in the list"),
        (
            '{"features": [{"feature": 1, "strength": 0.1, "why": "x"}]}',
            "does not match the required form",
        ),
        (
            '{"features": [{"feature": "first", "strength": 0.1}]}',
            "does not match the required form",
        ),
        ('{"features": [{"feature": 1, "strength": NaN}]}', "outside"),
        ("[1, 2]", "does not match the required form"),
    ],
)
def test_parse_pick_rejects(reply: str, problem: str) -> None:
    candidates = [FeatureEdit(id=f"id-{i}", index=i, label=f"f{i}", value=0.0) for i in range(3)]
    with pytest.raises(ValueError, match=problem):
        parse_pick(reply, candidates, max_features=2, lo=-1.0, hi=1.0)


def test_parse_pick_accepts_text_around_the_json() -> None:
    candidates = [
        FeatureEdit(id=f"id-{i}", index=10 + i, label=f"f{i}", value=0.0) for i in range(3)
    ]
    edits, why = parse_pick(
        "Sure! " + pick((3, -0.5), reasoning="r") + " Hope that helps.", candidates, 2, -1, 1
    )
    assert [(e.index, e.value, e.id) for e in edits] == [(12, -0.5, "id-2")] and why == "r"


# -- features -------------------------------------------------------------------------------


async def test_features_by_index_id_and_label(goodfire_server: GoodfireServer) -> None:
    goodfire_server.search_results["Humor and jokes"] = [
        feature(LLAMA_8B, 321, "Humor and jokes"),
        feature(LLAMA_8B, 5, "jokes"),
    ]
    cache = MemoryCache()
    ctx = context(goodfire_server, cache)
    given = feature(LLAMA_8B, 77, "given label")
    method = create_method(
        "features",
        {
            "edits": [
                {"index": 12, "value": 0.3},
                {"index": 77, "id": given["id"], "label": "given label", "value": -0.1},
                {"label": "humor and JOKES", "value": 0.2},
            ],
        },
    )
    iv = await method.resolve(FUNNY, 0.5, ctx)
    edits = iv.steering.spec["edits"]
    assert [(e["index"], e["value"]) for e in edits] == [(12, 0.15), (77, -0.05), (321, 0.1)]
    assert (
        edits[0]["id"] == feature(LLAMA_8B, 12)["id"]
        and edits[0]["label"] == feature(LLAMA_8B, 12)["label"]
    )
    assert edits[1]["id"] == given["id"] and edits[2]["label"] == "Humor and jokes"
    # the same edits for every query; lookups and searches are resolved once
    other = await method.resolve(FORMAL, 0.5, ctx)
    assert other.steering == iv.steering
    assert goodfire_server.served["lookup"] == 1 and goodfire_server.served["search"] == 1
    assert (await method.resolve(FUNNY, 0.0, ctx)).steering is None


async def test_features_errors_name_the_problem(goodfire_server: GoodfireServer) -> None:
    ctx = context(goodfire_server, MemoryCache())
    with pytest.raises(ConfigError, match="no feature\\(s\\) with index 999999999"):
        await create_method("features", {"edits": [{"index": 999999999, "value": 0.2}]}).resolve(
            FUNNY, 1.0, ctx
        )
    goodfire_server.search_results["sarcasm"] = [
        feature(LLAMA_8B, 4, "irony"),
        feature(LLAMA_8B, 6, "wit"),
    ]
    with pytest.raises(
        ConfigError,
        match="label 'sarcasm' matches no feature exactly.*4: irony; 6: wit.*'index' instead",
    ):
        await create_method("features", {"edits": [{"label": "sarcasm", "value": 0.2}]}).resolve(
            FUNNY, 1.0, ctx
        )
    with pytest.raises(ConfigError, match="entry 1 .*'index' or its exact 'label'"):
        create_method("features", {"edits": [{"value": 0.2}]})
    with pytest.raises(ConfigError, match="entry 2 .*'id' needs the feature's SAE 'index'"):
        create_method(
            "features", {"edits": [{"index": 1, "value": 0.1}, {"id": "abc", "value": 0.2}]}
        )
    with pytest.raises(ConfigError, match="entry 1 .*value"):
        create_method("features", {"edits": [{"index": 1, "value": "lots"}]})
    with pytest.raises(ConfigError, match="non-empty list"):
        create_method("features", {"edits": []})


def test_feature_edit_spec_round_trip_and_errors() -> None:
    from steerstats.backends import Steering
    from steerstats.backends.feature_edits import edits_from_steering, edits_steering, parse_edits

    edits = parse_edits([{"id": "u-1", "index": 3, "label": "x", "value": 0.5}], "test")
    steering = edits_steering(edits, 2.0)
    assert steering is not None and edits_from_steering(steering)[0].value == 1.0
    assert edits_steering(edits, 0.0) is None and edits_steering([], 1.0) is None
    with pytest.raises(ValueError, match="test: invalid feature edit 0 \\(value: .*finite"):
        parse_edits([{"id": "u-1", "index": 3, "value": float("inf")}], "test")
    with pytest.raises(ValueError, match="edit 0 \\(index: Input should be greater than or equal"):
        parse_edits([{"id": "u-1", "index": -1, "value": 0.1}], "test")
    with pytest.raises(TypeError, match="needs an 'edits' list"):
        edits_from_steering(Steering("feature_edits", {"features": []}))
    with pytest.raises(ConfigError, match="entry 1 .*valid dictionary"):
        create_method("features", {"edits": [3]})


async def test_agentic_picker_can_be_a_goodfire_model(goodfire_server: GoodfireServer) -> None:
    """Any configured chat backend may pick; here Llama-70B on the fake Goodfire API, whose
    first reply is invalid (a feature number not in the list), so the pick takes two tries."""
    goodfire_server.picker_replies.append(pick((42, 0.3)))
    picker = create_backend("goodfire", LLAMA_70B, {"base_url": goodfire_server.url})
    ctx = context(goodfire_server, MemoryCache(), picker=picker)
    iv = await create_method("agentic", {"picker": "picker-llm", "candidates": 4}).resolve(
        FUNNY, 1.0, ctx
    )
    found = await ctx.backend.search_features("be funny", 4)
    assert spec_values(iv) == [(found[0]["index"], 0.3), (found[1]["index"], -0.15)]
    assert iv.detail["pick_attempts"] == 2
    picks = [p for e, p in goodfire_server.requests if e == "chat"]
    assert [p["model"] for p in picks] == [LLAMA_70B, LLAMA_70B]
    assert "feature 42 is not in the list" in picks[1]["messages"][-1]["content"]


# -- the seed study's choices (issue 16) ----------------------------------------------------


async def test_autosteer_prompt_can_call_auto_steer_afresh_as_the_seed_study_did(
    goodfire_server: GoodfireServer,
) -> None:
    ctx = context(goodfire_server, MemoryCache())
    alone = await create_method("autosteer").resolve(FUNNY, 1.0, ctx)
    goodfire_server.autosteer_answers["be funny"] = [(feature(LLAMA_8B, 77, "puns"), 0.4)]
    own = create_method("autosteer+prompt", {"reuse_autosteer": False})
    combined = await own.resolve(FUNNY, 1.0, ctx)
    assert goodfire_server.served["autosteer"] == 2  # a call of its own, once per query x model
    assert spec_values(combined) == [(77, 0.4)] != spec_values(alone)
    assert spec_values(await own.resolve(FUNNY, 0.5, ctx)) == [(77, 0.2)]
    shared = await create_method("autosteer+prompt").resolve(FUNNY, 1.0, ctx)
    assert shared.steering == alone.steering  # the default shares autosteer's call
    assert goodfire_server.served["autosteer"] == 2
    with pytest.raises(ConfigError, match="reuse_autosteer must be true or false"):
        create_method("autosteer+prompt", {"reuse_autosteer": "no"})


def xml_pick(*choices: tuple[object, object], reasoning: str = "these fit") -> str:
    tags = "".join(
        f"<feature><number>{n}</number><strength>{s}</strength></feature>" for n, s in choices
    )
    return f"<reasoning>{reasoning}</reasoning>\n<features>{tags}</features>"


def test_parse_pick_reads_xml_tags() -> None:
    candidates = [
        FeatureEdit(id=f"id-{i}", index=10 + i, label=f"f{i}", value=0.0) for i in range(4)
    ]
    reply = "Here you go & enjoy:\n" + xml_pick((3, -0.5), (1, " 0.25 "), reasoning="r < s")
    edits, why = parse_pick(reply, candidates, 3, -0.6, 0.6, answer_format="xml")
    assert [(e.index, e.value) for e in edits] == [(12, -0.5), (10, 0.25)] and why == "r < s"
    for bad, problem in [
        ("<features></features>", "between 1 and 3 features, got 0"),
        ("I pick feature 2.", "no <features>"),
        ("<features><feature><number>2</number></feature></features>", "needs a <number> and"),
        (xml_pick((1, 0.7)), r"outside \[-0.6, 0.6\]"),
        (xml_pick(("two", 0.1)), "XML does not match the required form"),
        (xml_pick((1, 0.1), (2, 0.1), (3, 0.1), (4, 0.1)), "between 1 and 3 features, got 4"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_pick(bad, candidates, 3, -0.6, 0.6, answer_format="xml")


async def test_the_seed_studys_picker_llama_70b_on_goodfire_answering_in_xml(
    goodfire_server: GoodfireServer,
) -> None:
    picker = create_backend(
        "goodfire", LLAMA_70B, {"base_url": goodfire_server.url, "sdk_system_prompt": True}
    )
    ctx = context(goodfire_server, MemoryCache(), picker=picker)
    params = {
        "picker": "picker-llm", "candidates": 10, "max_features": 3, "min_strength": -0.6,
        "max_strength": 0.6, "temperature": 0.0, "max_tokens": 2048, "seed": 42,
        "answer_format": "xml",
    }
    iv = await create_method("agentic", params).resolve(FUNNY, 1.0, ctx)
    found = await ctx.backend.search_features("be funny", 10)
    assert spec_values(iv) == [(found[0]["index"], 0.3), (found[1]["index"], -0.15)]
    (search, *_), (chat,) = (
        [p for e, p in goodfire_server.requests if e == kind] for kind in ("search", "chat")
    )
    assert search["perPage"] == "10"
    assert (chat["model"], chat["temperature"], chat["max_completion_tokens"], chat["seed"]) == (
        LLAMA_70B, 0.0, 2048, 42,
    )
    asked = chat["messages"][-1]["content"]
    assert "<features>" in asked and "between 1 and 3" in asked and "-0.6 and 0.6" in asked
    assert "JSON" not in asked
    with pytest.raises(ConfigError, match="answer_format must be one of json, xml"):
        create_method("agentic", {**params, "answer_format": "yaml"})
