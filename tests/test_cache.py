"""Cache keys (canonical JSON), records, failures, resolutions and redaction."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steerstats.backends.base import GenerationRequest, Steering
from steerstats.collect import generation_key, judgement_key
from steerstats.collect.cache import Cache, redact
from steerstats.judges.base import Prompt
from steerstats.keys import cache_key, canonical_json
from steerstats.methods.base import Intervention, Query

ROOT = Path(__file__).resolve().parents[1]


def _gen_inputs(**change: object) -> dict[str, object]:
    base: dict[str, object] = {
        "backend": {"backend": "openai", "model": "m", "base_url": "http://x/v1", "extra_body": {}},
        "system_prompt": None,
        "steering": None,
        "strength": None,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "max_tokens": 64,
        "seed": 1,
        "sample": 0,
    }
    base.update(change)
    return base


def _key(d: dict[str, object]) -> str:
    iv = Intervention(system_prompt=d["system_prompt"], steering=d["steering"],  # type: ignore[arg-type]
                      strength=d["strength"])  # type: ignore[arg-type]
    req = GenerationRequest(messages=d["messages"], temperature=d["temperature"],  # type: ignore[arg-type]
                            max_tokens=d["max_tokens"], seed=d["seed"],  # type: ignore[arg-type]
                            steering=iv.steering)
    return generation_key(d["backend"], iv, req, d["sample"])  # type: ignore[arg-type]


def test_canonical_json_ignores_dict_order_and_normalises_numbers() -> None:
    a = {"b": [1.0, 2.5, {"y": 1, "x": (3, 4)}], "a": -0.0, "c": 0.1 + 0.2}
    b = {"c": 0.3, "a": 0, "b": [1, 2.5, {"x": [3, 4], "y": 1.0}]}
    assert canonical_json(a) == canonical_json(b) == '{"a":0,"b":[1,2.5,{"x":[3,4],"y":1}],"c":0.3}'
    assert canonical_json({"v": math.nan}) == '{"v":"NaN"}'
    assert canonical_json({"s": "ünïcode"}) == '{"s":"ünïcode"}'
    assert cache_key(a) == cache_key(b)
    with pytest.raises(TypeError, match="cannot put object"):
        canonical_json({"x": object()})


def test_cache_key_is_stable_across_processes() -> None:
    inputs = _gen_inputs(steering=Steering("caa", {"layer": 12, "digest": "abc", "coef": 4.0}),
                         strength=4.0)
    here = _key(inputs)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.test_cache import _gen_inputs, _key;"
        "from steerstats.backends.base import Steering;"
        "print(_key(_gen_inputs(steering=Steering('caa', {'coef': 4.0, 'digest': 'abc', "
        "'layer': 12}), strength=4.0)))"
    )
    for hashseed in ("0", "12345"):
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": path}
        out = subprocess.run([sys.executable, "-c", code, str(ROOT)], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        assert out == here


def test_generation_key_changes_when_any_input_changes() -> None:
    changes = [
        {"backend": {"backend": "openai", "model": "m2", "base_url": "http://x/v1",
                     "extra_body": {}}},
        {"backend": {"backend": "openai", "model": "m", "base_url": "http://y/v1",
                     "extra_body": {}}},
        {"backend": {"backend": "openai", "model": "m", "base_url": "http://x/v1",
                     "extra_body": {"top_p": 0.9}}},
        {"system_prompt": "be funny"},
        {"steering": Steering("caa", {"digest": "abc", "coef": 4.0})},
        {"steering": Steering("caa", {"digest": "abc", "coef": 4.5})},
        {"steering": Steering("feature_edits", {"edits": [[123, 0.3]]})},
        {"strength": 2.0},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]},
        {"temperature": 0.0},
        {"max_tokens": 65},
        {"seed": 2},
        {"seed": None},
        {"sample": 1},
    ]
    keys = [_key(_gen_inputs())] + [_key(_gen_inputs(**c)) for c in changes]
    assert len(set(keys)) == len(keys)
    # ... and not when nothing that matters changes (float 64.0 vs int 64, equal dicts)
    assert _key(_gen_inputs(max_tokens=64.0)) == keys[0]


def test_judgement_key_depends_on_judge_generation_query_prompt_and_repeat() -> None:
    q = Query("be-funny", "be funny")
    p = Prompt("common-01", "Tell me about cats.", "open")
    judge = {"name": "behavior", "template": "t1"}
    jb = {"backend": "openai", "model": "gpt"}
    base = judgement_key(judge, jb, "g1", q, p, 0)
    variants = [
        judgement_key({**judge, "template": "t2"}, jb, "g1", q, p, 0),
        judgement_key(judge, {**jb, "model": "gpt2"}, "g1", q, p, 0),
        judgement_key(judge, None, "g1", q, p, 0),
        judgement_key(judge, jb, "g2", q, p, 0),
        judgement_key(judge, jb, "g1", Query("be-funny", "be funny", "criteria"), p, 0),
        judgement_key(judge, jb, "g1", q, Prompt("common-02", "Tell me about cats.", "open"), 0),
        judgement_key(judge, jb, "g1", q, p, 1),
    ]
    assert len({base, *variants}) == 1 + len(variants)
    assert judgement_key(dict(reversed(judge.items())), jb, "g1", q, p, 0) == base
    # the planner's fast path writes the same canonical JSON as the general encoder
    full = cache_key({"v": 1, "kind": "judgement", "judge": judge, "judge_backend": jb,
                      "generation": "g1", "repeat": 0,
                      "query": {"id": q.id, "text": q.text, "criteria": q.criteria},
                      "prompt": {"id": p.id, "text": p.text, "set": p.prompt_set,
                                 "answer": p.answer}})
    assert base == full


def test_results_and_failures(tmp_path: Path) -> None:
    with Cache(tmp_path) as cache:
        assert cache.get("k") is None and "k" not in cache
        f1 = cache.record_failure("k", "generation", "TransientError: 500", 3, {"model": "m"})
        f2 = cache.record_failure("k", "generation", "TransientError: 429", 2)
        assert (f1["attempts"], f2["attempts"]) == (3, 5)
        assert f2["error"] == "TransientError: 429" and f2["first_at"] == f1["first_at"]
        assert cache.get("k") is None  # a failure is never a result
        cache.put("k", {"text": "ok", "cost_usd": 0.001, "latency": math.nan})
        assert cache.failure("k") is None  # cleared by the success
        assert cache.get("k") == {"text": "ok", "cost_usd": 0.001, "latency": None}
        assert cache.record_failure("k", "generation", "late", 1) == {}
        assert cache.failure("k") is None and cache.get("k")["text"] == "ok"  # type: ignore[index]
    with Cache(tmp_path) as again:  # persisted
        assert "k" in again and list(again.failures()) == []


def test_resolution_cache_computes_once_under_concurrency(tmp_path: Path) -> None:
    calls = 0

    async def compute() -> dict[str, object]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return {"edits": [[1, 0.5]], "label": "funny"}

    async def go(cache: Cache) -> list[object]:
        return list(await asyncio.gather(
            *(cache.get_or_compute("autosteer", {"query": "be funny", "b": 1}, compute)
              for _ in range(10))))

    with Cache(tmp_path) as cache:
        values = asyncio.run(go(cache))
        assert calls == 1 and all(v == {"edits": [[1, 0.5]], "label": "funny"} for v in values)
    with Cache(tmp_path) as cache:  # another process would see it too: it is on disk
        asyncio.run(cache.get_or_compute("autosteer", {"b": 1, "query": "be funny"}, compute))
        assert calls == 1
        asyncio.run(cache.get_or_compute("autosteer", {"b": 2, "query": "be funny"}, compute))
        assert calls == 2

        async def bad() -> object:
            return object()

        with pytest.raises(TypeError, match="not JSON-able"):
            asyncio.run(cache.get_or_compute("x", {}, bad))


def test_redact_removes_keys_tokens_and_credential_env_values(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    text = ("Incorrect API key provided: sk-proj-abcDEF123456. "
            "Authorization: Bearer abc.def-123456 "
            "and tok-0123456789 here")
    out = redact(text)
    assert "abcDEF123456" not in out and "abc.def-123456" not in out
    assert "tok-0123456789" not in out and out.count("***") == 3


def test_cache_stores_json_text(tmp_path: Path) -> None:
    """Entries are JSON, readable without steerstats (and greppable for secrets)."""
    with Cache(tmp_path) as cache:
        cache.put("k", {"text": "hello", "n": 1})
        raw = cache._dc.get("r/k")
    assert json.loads(raw) == {"text": "hello", "n": 1}


def test_aput_is_on_disk_when_it_returns_and_groups_concurrent_writes(tmp_path: Path) -> None:
    """Results finishing together share a transaction; each is committed before aput returns."""
    seen_by_other: list[bool] = []

    async def write(cache: Cache, other: Cache, i: int) -> None:
        await cache.aput(f"k{i}", {"text": f"r{i}", "n": i})
        seen_by_other.append(other.get(f"k{i}") == {"text": f"r{i}", "n": i})

    with Cache(tmp_path) as cache, Cache(tmp_path) as other:  # `other`: another connection
        cache.record_failure("k7", "generation", "TransientError: 500", 1)
        transactions = 0
        transact = cache._dc.transact

        def counting(*args: object, **kwargs: object) -> object:
            nonlocal transactions
            transactions += 1
            return transact(*args, **kwargs)

        cache._dc.transact = counting  # type: ignore[method-assign]

        async def go() -> None:
            await asyncio.gather(*(write(cache, other, i) for i in range(200)))

        asyncio.run(go())
        assert len(seen_by_other) == 200 and all(seen_by_other)
        assert 1 <= transactions <= 100  # one per write would be 200
        assert cache.failure("k7") is None  # a success clears the failure, as put() does
    with Cache(tmp_path) as again:
        assert sum(1 for _ in again.results()) == 200


def test_aput_reports_a_failed_write_and_the_writer_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Cache(tmp_path) as cache:
        real_set = cache._dc.set

        def failing_set(key: str, value: object, *a: object, **kw: object) -> object:
            if key == "r/bad":
                raise OSError("disk full")
            return real_set(key, value, *a, **kw)

        monkeypatch.setattr(cache._dc, "set", failing_set)
        with pytest.raises(OSError, match="disk full"):
            asyncio.run(cache.aput("bad", {"text": "x"}))
        asyncio.run(cache.aput("good", {"text": "y"}))
        assert cache.get("good") == {"text": "y"} and cache.get("bad") is None


def test_vector_steering_keeps_the_keys_it_had_as_caa() -> None:
    """The steering kind is "vector" now ("caa" an alias); keys are those caches already hold.
    The literal is cache_key(Steering("caa", spec).canonical()) computed before the rename."""
    spec = {"vector": "3cfaa9d4f342e9d835ad3e04", "layer": 15, "coefficient": 0.5}
    old = "5a25f7b30cf5b641a2779fd03b586a689b9f6e3fce4b1471c91caa5d453d766c"
    assert Steering("caa", spec).kind == "vector"
    assert cache_key(Steering("vector", spec).canonical()) == old
    assert cache_key(Steering("caa", spec).canonical()) == old


def test_credentials_in_urls_are_masked_and_other_urls_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from steerstats.backends import create_backend
    from steerstats.redact import redact_url, secret_name

    monkeypatch.setenv("MY_SERVICE_TOKEN", "plainword-token-value")
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("https://h/openai/deployments/Meta-Llama-3.1-8B-Instruct/v1").endswith(
        "Meta-Llama-3.1-8B-Instruct/v1")
    assert redact_url("http://user:pw@host:1/v1") == "http://***@host:1/v1"
    assert redact_url("http://host/abcd1234efgh5678ijkl9012/v1") == "http://host/***/v1"
    assert redact_url("http://host/plainword-token-value/v1") == "http://host/***/v1"
    assert redact_url("http://host/v1?api-key=xyz&x=1") == "http://host/v1?api-key=***&x=1"
    assert redact("GET http://u:secretpw@h/v1 failed") == "GET http://***@h/v1 failed"
    b = create_backend("openai", "m", {"base_url": "http://k:sk-abcdef123456@127.0.0.1:1/v1"})
    assert b.identity()["base_url"] == "http://***@127.0.0.1:1/v1"
    assert [n for n in ("api_key", "Authorization", "x-api-key", "access_token", "apikey")
            if not secret_name(n)] == []
    assert [n for n in ("max_tokens", "top_p", "tokens", "monkey") if secret_name(n)] == []
