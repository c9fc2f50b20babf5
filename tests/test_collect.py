"""Planning and running collection against a fake OpenAI-compatible server on 127.0.0.1:
retries through every fault, resume without repeats, budget caps under concurrency, per-backend
concurrency, failure records, resolution caching, dry-run estimates and secrets."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steerstats.collect import collect, estimate, status, with_plan
from steerstats.collect.cache import Cache
from steerstats.collect.export import tables
from steerstats.collect.metering import worst_case_prompt_tokens
from steerstats.config import Experiment, load_config
from tests.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-SECRETKEYf00dcafe0123456789"
FAST_RETRIES = "[retries]\nbase_delay_s = 0.01\nmax_delay_s = 0.05\ntimeout_s = 5\n"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=KEY, timeout_hang=3) as s:
        yield s


def experiment(tmp_path: Path, url: str, *, queries: int = 2, prompts: int = 3,
               methods: tuple[str, ...] = ("control", "prompt"), judges: bool = True,
               extra: str = "", concurrency: int = 4, timeout_s: float = 2.0,
               max_attempts: int = 6) -> Experiment:
    qs = ", ".join(f'{{ text = "be style {i}" }}' for i in range(queries))
    ps = ", ".join(f'{{ text = "Tell me about topic number {i}." }}' for i in range(prompts))
    ms = "\n".join(f'[[methods]]\nname = "{m}"\n' for m in methods)
    js = f"""
[[judges]]
name = "test-rubric"
backend = "openai"
model = "judge-model"
options = {{ base_url = "{url}", timeout_s = {timeout_s} }}
repeats = 2

[[judges]]
name = "test-length"
""" if judges else ""
    text = f"""
[experiment]
name = "t"
cache_dir = "cache"
plugins = ["tests.collect_plugins"]

[[models]]
label = "target"
backend = "openai"
model = "target-model"
options = {{ base_url = "{url}", timeout_s = {timeout_s} }}

{ms}

[queries]
items = [{qs}]

[prompts.open]
items = [{ps}]

[sampling]
temperature = 0.5
max_tokens = 16
seed = 11

[concurrency]
backends = {{ openai = {concurrency} }}

{FAST_RETRIES}max_attempts = {max_attempts}
{js}
{extra}
"""
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return load_config(path)


def test_plan_sizes_dedupe_and_limits(tmp_path: Path) -> None:
    cfg = experiment(tmp_path, "http://127.0.0.1:9/v1", queries=3, prompts=4)

    def sizes(p):  # type: ignore[no-untyped-def]
        return len(p.generations), len(p.generation_keys()), len(p.judgements)

    # 2 methods x 3 queries x 4 prompts; control's prompts are shared by all queries, so its
    # 12 tasks have 4 distinct requests; judges: rubric x2 repeats + length = 3 per generation
    assert with_plan(cfg, sizes) == (24, 4 + 12, 72)
    assert with_plan(cfg, sizes, limit_queries=1, limit_prompts=2) == (4, 4, 12)


def test_run_survives_every_fault_then_rerun_makes_no_calls(tmp_path: Path,
                                                             server: FakeOpenAIServer) -> None:
    cfg = experiment(tmp_path, server.url, timeout_s=0.5)
    for fault in ("429", "500", "malformed", "drop"):
        server.inject(fault, count=2, retry_after=0.05)
    server.inject("timeout", count=1)
    summary = collect(cfg, progress=False)
    assert summary.complete, summary
    assert server.faults_served == {"429": 2, "500": 2, "malformed": 2, "drop": 2, "timeout": 1}
    assert summary.retries >= 9
    # 2 queries x 3 prompts: control shares its 3 requests, prompt has 6; rubric judge: 2
    # repeats per generation task (12 tasks, different query text each) -> 24 judge calls
    assert summary.new_generations == 9 and summary.new_judgements == 12 * 3
    assert sum(server.successes.values()) == 9 + 24
    assert max(server.successes.values()) == 1  # no request answered twice
    assert summary.calls == server.requests  # every attempt counted, faults included

    gens, scores = tables(cfg)
    assert gens["error"].isna().all() and gens["response"].str.startswith("Fake reply").all()
    assert (scores["metric"].value_counts().to_dict() == {"behavior": 24, "length": 12})
    assert scores.loc[scores.metric == "behavior", "value"].between(1, 5).all()

    before = server.requests
    again = collect(cfg, progress=False)
    assert server.requests == before and again.calls == 0
    assert again.cached_generations == 9 and again.new_generations == 0 and again.complete


def test_retry_after_is_honoured(tmp_path: Path, server: FakeOpenAIServer) -> None:
    cfg = experiment(tmp_path, server.url, queries=1, prompts=1, methods=("control",),
                     judges=False)
    server.inject("429", count=1, retry_after=0.8)
    t0 = time.perf_counter()
    summary = collect(cfg, progress=False)
    assert summary.complete and summary.retries == 1
    assert time.perf_counter() - t0 >= 0.8  # base_delay_s is 0.01: only Retry-After explains it


def test_concurrency_is_bounded_per_backend(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.1) as slow:
        cfg = experiment(tmp_path, slow.url, queries=1, prompts=12, methods=("control",),
                         judges=False, concurrency=3)
        summary = collect(cfg, progress=False)
        assert summary.complete and slow.max_in_flight == 3


def test_max_calls_holds_under_concurrency_and_across_runs(tmp_path: Path,
                                                           server: FakeOpenAIServer) -> None:
    cfg = experiment(tmp_path, server.url, queries=1, prompts=30, methods=("control",),
                     judges=False, concurrency=8, extra="[budget]\nmax_calls = 10\n")
    server.inject("500", count=3)  # retried attempts count as calls
    summary = collect(cfg, progress=False)
    assert server.requests == 10 and summary.calls == 10
    assert summary.new_generations == 7 and summary.budget_pending == 23
    assert summary.budget_reached and not summary.complete
    again = collect(cfg, progress=False)  # the budget covers the experiment, not the run
    assert server.requests == 10 and again.calls == 0 and again.budget_pending == 23
    st = status(cfg)
    row = st.rows[0]
    assert (row.done, row.failed + row.pending, st.calls) == (7, 23, 10)


def test_max_usd_is_never_exceeded_under_concurrency(tmp_path: Path,
                                                     server: FakeOpenAIServer) -> None:
    price_in = 1000.0  # USD per million prompt tokens: $0.001 a token
    extra = (f'[budget]\nmax_usd = 0.2\n\n[pricing."target-model"]\ninput = {price_in}\n'
             "output = 0.0\n")
    cfg = experiment(tmp_path, server.url, queries=1, prompts=40, methods=("control",),
                     judges=False, concurrency=8, extra=extra)
    summary = collect(cfg, progress=False)
    assert summary.budget_reached and summary.budget_pending > 0
    with Cache(cfg.cache_path) as cache:
        costs = [r["cost_usd"] for r in (cache.get(k) for k in with_plan(
            cfg, lambda p: p.generation_keys())) if r is not None]
    spent = sum(costs)
    assert len(costs) == server.total_successes == summary.new_generations
    assert spent <= 0.2 + 1e-12  # the cap held, at 8 calls in flight
    worst = with_plan(cfg, lambda p: max(worst_case_prompt_tokens(g.request)
                                         for g in p.generations)) * price_in / 1e6
    assert spent > 0.2 - worst  # ... and stopped only when the next call might not fit
    assert summary.spent_usd == pytest.approx(spent)


def test_failures_are_recorded_then_cleared_by_a_later_success(tmp_path: Path,
                                                               server: FakeOpenAIServer) -> None:
    cfg = experiment(tmp_path, server.url, queries=1, prompts=2, methods=("control",),
                     max_attempts=2)
    server.inject("500", count=2, match="topic number 1")
    summary = collect(cfg, progress=False)
    assert summary.failed_generations == 1 and summary.blocked_judgements == 3
    assert not summary.complete
    gens, scores = tables(cfg)
    bad = gens[gens.prompt_id == "custom-01"]
    assert bad["response"].isna().all()
    assert bad["error"].iloc[0].startswith("failed after 2 attempts: TransientError: server error")
    blocked = scores[scores.prompt_id == "custom-01"]
    assert blocked["value"].isna().all()
    assert blocked["reason"].str.startswith("generation failed after 2 attempts").all()
    st = status(cfg)
    gen_row = next(r for r in st.rows if r.stage == "generate")
    assert (gen_row.done, gen_row.failed) == (1, 1) and st.failures[0]["attempts"] == 2

    summary = collect(cfg, progress=False)  # the fault is gone: retried and cleared
    assert summary.complete and summary.new_generations == 1
    gens, _ = tables(cfg)
    assert gens["error"].isna().all()
    with Cache(cfg.cache_path) as cache:
        assert list(cache.failures()) == []


def test_resolution_calls_are_cached_and_metered(tmp_path: Path, server: FakeOpenAIServer) -> None:
    extra = f"""
[[helpers]]
label = "helper"
backend = "openai"
model = "helper-model"
options = {{ base_url = "{server.url}" }}

[[methods]]
name = "test-picker"
params = {{ helper = "helper" }}

[pricing."target-model"]
input = 1.0
output = 1.0

[pricing."helper-model"]
input = 1.0
output = 1.0

[pricing."judge-model"]
input = 1.0
output = 1.0

[budget]
max_usd = 10.0
"""
    cfg = experiment(tmp_path, server.url, methods=("control",), judges=False, extra=extra)
    before = status(cfg)  # no calls: the picker's tasks wait for their resolution
    picker = next(r for r in before.rows if r.method == "test-picker")
    assert (picker.done, picker.pending) == (0, 6) and server.requests == 0
    dry = estimate(cfg)
    assert dry.unresolved_units == 2
    summary = collect(cfg, progress=False)
    assert summary.complete
    # control's 3 shared prompts, the picker's 2 x 3 (its system prompt differs per query) and
    # one helper call per query, each request answered once
    assert server.total_successes == 3 + 6 + 2 == len(server.successes)
    after = status(cfg)
    assert after.calls == 11 and after.spent_usd > 0
    gens, _ = tables(cfg)
    picked = gens[gens.method == "test-picker"]
    assert picked["error"].isna().all()
    n = server.requests
    assert collect(cfg, progress=False).calls == 0 and server.requests == n


def test_dry_run_estimates_calls_tokens_and_cost_without_calling(tmp_path: Path,
                                                                  server: FakeOpenAIServer
                                                                  ) -> None:
    cfg = experiment(tmp_path, server.url, queries=1, prompts=2, methods=("control",))
    text = cfg.path.read_text()  # type: ignore[union-attr]
    text = text.replace("Tell me about topic number 0.", "x" * 40)
    text = text.replace("Tell me about topic number 1.", "y" * 40)
    text = text.replace('be style 0', "be brief").replace("max_tokens = 16", "max_tokens = 10")
    text += ('\n[pricing."target-model"]\ninput = 1.0\noutput = 2.0\n'
             '\n[pricing."judge-model"]\ninput = 1.0\noutput = 2.0\n')
    cfg.path.write_text(text)  # type: ignore[union-attr]
    cfg = load_config(cfg.path)  # type: ignore[arg-type]
    rep = estimate(cfg)
    rows = {r.stage: r for r in rep.rows}
    gen = rows["generate"]
    # a user message of 40 characters ~ 10 tokens + 4 per message + 8 for the reply = 22 input
    # tokens; output at max_tokens = 10: (22 * $1 + 10 * $2) / 1e6 per call, 2 calls
    assert (gen.tasks, gen.to_run, gen.calls) == (2, 2, 2)
    assert (gen.input_tokens, gen.output_tokens) == (44, 20)
    assert gen.cost_usd == pytest.approx(2 * 42e-6)
    rub = rows["test-rubric/judge-model"]
    # judge input: (40 + 8 characters) // 4 + max_tokens 10 + 400 template = 422 tokens; its
    # max_tokens = 64 out; 2 generations x 2 repeats = 4 calls of (422 + 2 * 64) / 1e6 USD
    assert (rub.calls, rub.input_tokens, rub.output_tokens) == (4, 4 * 422, 4 * 64)
    assert rub.cost_usd == pytest.approx(4 * 550e-6)
    length = rows["test-length"]
    assert (length.to_run, length.calls, length.cost_usd) == (2, 0, 0.0)
    assert rep.totals().cost_usd == pytest.approx(84e-6 + 2200e-6)
    assert server.requests == 0

    collect(cfg, limit_prompts=1, progress=False)
    rows = {r.stage: r for r in estimate(cfg).rows}
    assert (rows["generate"].cached, rows["generate"].to_run) == (1, 1)
    rub = rows["test-rubric/judge-model"]
    assert (rub.cached, rub.to_run) == (2, 2)


def test_no_api_key_bytes_anywhere_under_the_cache(tmp_path: Path,
                                                   server: FakeOpenAIServer) -> None:
    cfg = experiment(tmp_path, server.url, queries=1, prompts=2, max_attempts=1)
    server.inject("500", count=1, match="topic number 1")  # a failure record too
    collect(cfg, progress=False)
    assert server.unauthorized == 0 and server.total_successes > 0  # the key was used
    from steerstats.collect.export import export

    export(cfg, tmp_path / "results")
    files = [p for p in (*cfg.cache_path.rglob("*"), *(tmp_path / "results").rglob("*"))
             if p.is_file()]
    assert len(files) >= 4
    for p in files:
        data = p.read_bytes()
        for needle in (KEY, "SECRETKEYf00dcafe", "f00dcafe0123456789"):
            assert needle.encode() not in data, p


def test_tidy_tables_follow_the_plan_before_and_after(tmp_path: Path,
                                                      server: FakeOpenAIServer) -> None:
    cfg = experiment(tmp_path, server.url, queries=1, prompts=2, methods=("prompt",))
    gens, scores = tables(cfg)  # nothing collected: every task is a pending row
    assert len(gens) == 2 and gens["error"].str.startswith("pending").all()
    assert len(scores) == 2 * 2 + 2 and scores["value"].isna().all()
    assert scores["reason"].str.startswith("pending").all()
    collect(cfg, progress=False)
    gens, scores = tables(cfg)
    assert gens["error"].isna().all() and scores["reason"].isna().all()
    assert gens["key"].str.len().eq(64).all() and gens["n_tokens"].dtype == "Int64"
    assert set(scores["rater"]) == {"judge-model", "auto"}
    assert json.loads(json.dumps(list(gens.columns))) == list(gens.columns)


def test_sync_entry_points_work_inside_a_running_event_loop(tmp_path: Path) -> None:
    """As in Jupyter or Quarto, where a loop is already running in the calling thread."""
    import asyncio

    from steerstats.collect import acollect

    path = tmp_path / "exp.toml"
    path.write_text('[experiment]\nname = "nb"\n\n[[models]]\nbackend = "mock"\nmodel = "m"\n\n'
                    '[[methods]]\nname = "control"\n\n[queries]\nitems = [{ text = "be brief" }]'
                    '\n\n[prompts.open]\nitems = [{ text = "hello" }]\n')
    cfg = load_config(path)

    async def notebook() -> tuple[bool, int, int]:
        summary = await acollect(cfg, progress=False)
        gens, _ = tables(cfg)  # a sync helper called from inside the loop
        return summary.complete, len(gens), status(cfg).rows[0].done

    assert asyncio.run(notebook()) == (True, 1, 1)


def test_runs_set_the_plan_aside_from_the_cycle_collector_and_restore_it() -> None:
    from steerstats.collect.run import _fewer_gc_passes

    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with _fewer_gc_passes():
        assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] >= 10_000
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    gc.freeze()  # a process that froze objects itself keeps its own setting
    try:
        frozen = gc.get_freeze_count()
        with _fewer_gc_passes():
            assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
