"""Every Goodfire method end to end through ``steerstats collect`` and ``export``, against the
fake Goodfire API (tests/goodfire_server.py) with judges on the fake OpenAI-compatible server
(tests/fake_openai_server.py): retries, budget, resume and kill -9 as on the OpenAI backend;
a refused key and an unreachable server as one clear message; no key bytes in the cache."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from steerstats.cli import app
from steerstats.collect import collect, status
from steerstats.collect.cache import Cache
from steerstats.collect.export import tables
from steerstats.config import load_config
from steerstats.results import read_results
from tests.fake_openai_server import FakeOpenAIServer
from tests.goodfire_server import SUPPORTED_MODELS, Fault, GoodfireServer, feature

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
GF_KEY = "gf-e2e-SECRET-7f3a9c0d11"
OA_KEY = "sk-e2e-SECRET-b2d4e6f8a0"
LLAMA_8B, LLAMA_70B = SUPPORTED_MODELS
ALL_METHODS = ("control", "prompt", "autosteer", "autosteer+prompt", "agentic", "features")

METHOD_TABLES = {
    "control": "",
    "prompt": "",
    "autosteer": "strengths = [0, 1]\n",
    "autosteer+prompt": "",
    "agentic": 'params = { picker = "picker", candidates = 4 }\n',
    "features": "params.edits = [{ index = 12, value = 0.25 }, { index = 40, value = -0.1 }]\n",
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFIRE_API_KEY", GF_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OA_KEY)
    for var in ("GOODFIRE_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def gf() -> Iterator[GoodfireServer]:
    with GoodfireServer(api_key=GF_KEY) as server:
        yield server


@pytest.fixture
def oa() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=OA_KEY, timeout_hang=3) as server:
        yield server


def write_experiment(
    tmp_path: Path,
    gf_url: str,
    oa_url: str | None = None,
    *,
    methods: tuple[str, ...] = ALL_METHODS,
    prompts: int = 2,
    mmlu: int = 0,
    model_options: str = "",
    timeout_s: float = 1.0,
    extra: str = "",
    retries: str = "max_attempts = 6\nbase_delay_s = 0.01\nmax_delay_s = 0.05",
) -> Path:
    ms = "\n".join(f'[[methods]]\nname = "{m}"\n{METHOD_TABLES[m]}' for m in methods)
    ps = ", ".join(f'{{ text = "Tell me about topic {i}." }}' for i in range(prompts))
    mm = f'[prompts.mmlu]\nn = {mmlu}\nsource = "paper"\n' if mmlu else ""
    judges = ""
    if oa_url is not None:
        judges = f"""
[[judges]]
name = "behavior"
backend = "openai"
model = "judge-model"
options = {{ base_url = "{oa_url}" }}
repeats = 2

[[judges]]
name = "mmlu"
"""
    path = tmp_path / "exp.toml"
    path.write_text(f"""
[experiment]
name = "goodfire-e2e"
cache_dir = "cache"

[[models]]
label = "llama-8b"
backend = "goodfire"
model = "{LLAMA_8B}"
options = {{ base_url = "{gf_url}", timeout_s = {timeout_s}{model_options} }}

[[helpers]]
label = "picker"
backend = "goodfire"
model = "{LLAMA_70B}"
options = {{ base_url = "{gf_url}", timeout_s = 1.0 }}

{ms}

[queries]
items = [{{ text = "be funny" }}, {{ text = "be formal" }}]

[prompts.open]
items = [{ps}]
{mm}
[sampling]
temperature = 0.0
max_tokens = 64
seed = 3
{judges}
[concurrency]
backends = {{ goodfire = 4, openai = 4 }}

[retries]
{retries}
timeout_s = 5
{extra}
""")
    return path


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "steerstats", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def assert_no_key_bytes(*roots: Path) -> None:
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                for key in (GF_KEY, OA_KEY):
                    assert key.encode() not in data, f"{key[:6]}... found in {f}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_method_through_collect_and_export(
    tmp_path: Path, gf: GoodfireServer, oa: FakeOpenAIServer
) -> None:
    gf.autosteer_answers["be funny"] = [
        (feature(LLAMA_8B, 7, "jokes"), 0.4),
        (feature(LLAMA_8B, 9, "puns"), 0.2),
    ]
    exp = write_experiment(tmp_path, gf.url, oa.url, mmlu=2)
    runner = CliRunner()  # the commands in-process (the error tests below run a subprocess)
    run = runner.invoke(app, ["collect", str(exp), "--quiet"])
    assert run.exit_code == 0, run.output
    out = tmp_path / "results"
    exported = runner.invoke(app, ["export", str(exp), "--out", str(out)])
    assert exported.exit_code == 0, exported.output

    res = read_results(out)
    gens, scores = res.generations, res.scores
    assert set(gens["method"]) == set(ALL_METHODS)
    assert gens["error"].isna().all() and gens["response"].notna().all()
    # 2 queries x (2 open + 2 MMLU prompts) per method and strength; autosteer sweeps 0 and 1
    assert gens.groupby("method").size().to_dict() == {
        m: 8 if m != "autosteer" else 16 for m in ALL_METHODS
    }

    def responses(method: str, strength: float | None = None) -> pd.Series:
        rows = gens[gens.method == method]
        if strength is not None:
            rows = rows[rows.strength == strength]
        return rows.set_index(["query_id", "prompt_id"])["response"].sort_index()

    # steering is visible in the replies; strength 0 is exactly control
    assert responses("control").str.contains("unsteered").all()
    assert responses("autosteer", 1.0).str.contains("steered by 7:\\+0.400, 9:\\+0.200").any()
    assert responses("autosteer", 0.0).equals(responses("control"))
    assert gens.loc[gens.method == "control", "strength"].isna().all()
    assert set(gens.loc[gens.method == "autosteer", "strength"]) == {0.0, 1.0}
    assert (
        responses("autosteer+prompt")[
            responses("autosteer+prompt").index.get_level_values(1).str.startswith("custom")
        ]
        .str.contains("\\[system:")
        .all()
    )
    assert responses("features").str.contains("steered by 12:\\+0.250, 40:-0.100").all()
    assert responses("agentic").str.contains("steered by").all()

    # one Auto Steer call per query x model, one search per query (agentic), one lookup
    assert (gf.served["autosteer"], gf.served["search"], gf.served["lookup"]) == (2, 2, 1)
    assert max(gf.served_keys.values()) == 1

    # judges scored every generation; MMLU accuracy only for MMLU prompts
    behavior = scores[scores.metric == "behavior"]
    assert len(behavior) == 2 * gens["key"].size and behavior["value"].between(1, 5).all()
    accuracy = scores[scores.metric == "accuracy"]
    assert (
        set(accuracy["prompt_set"]) == {"mmlu"}
        and len(accuracy) == (gens.prompt_set == "mmlu").sum()
    )

    # the exact intervention is stored with each generation
    cfg = load_config(exp)
    with Cache(cfg.cache_path) as cache:
        key = gens.loc[
            (gens.method == "autosteer") & (gens.strength == 1.0) & (gens.query_id == "be-funny"),
            "key",
        ].iloc[0]
        record = cache.get(key)
    assert record is not None
    assert [(e["index"], e["value"]) for e in record["detail"]["edits"]] == [(7, 0.4), (9, 0.2)]
    assert record["intervention"]["steering"]["spec"]["edits"][0]["label"] == "jokes"

    # a second run makes no calls at all
    before = (sum(gf.calls.values()), oa.requests)
    again = collect(cfg, progress=False)
    assert again.complete and again.calls == 0
    assert (sum(gf.calls.values()), oa.requests) == before
    assert_no_key_bytes(tmp_path / "cache", out)


def test_a_changed_autosteer_answer_is_a_new_result(tmp_path: Path, gf: GoodfireServer) -> None:
    cfg = load_config(write_experiment(tmp_path, gf.url, methods=("autosteer",), prompts=1))
    assert collect(cfg, progress=False).complete

    def keys() -> pd.Series:
        gens = tables(cfg)[0]
        return gens[gens.strength == 1.0].set_index("query_id")["key"]

    first = keys()
    # the cached Auto Steer answer is reused: forget it, and let the service answer differently
    with Cache(cfg.cache_path) as cache:  # Cache has no public "forget"; entries "m/..." only
        for k in [k for k in cache._dc.iterkeys() if str(k).startswith("m/")]:
            cache._dc.delete(k)
    gf.autosteer_answers["be funny"] = [(feature(LLAMA_8B, 11, "wit"), 0.3)]
    summary = collect(cfg, progress=False)
    assert summary.new_generations == 1  # only the query whose edits changed
    second = keys()
    assert first["be-funny"] != second["be-funny"] and first["be-formal"] == second["be-formal"]


def test_faults_are_retried_and_nothing_is_answered_twice(
    tmp_path: Path, gf: GoodfireServer, oa: FakeOpenAIServer
) -> None:
    cfg = load_config(write_experiment(tmp_path, gf.url, oa.url, timeout_s=0.5))
    gf.inject(
        "chat",
        Fault("status", 429, retry_after="0.05"),
        Fault("status", 500),
        Fault("malformed"),
        Fault("bad_shape"),
        Fault("drop"),
        Fault("timeout", delay_s=1.0),
    )
    gf.inject("autosteer", Fault("status", 503), Fault("drop"))
    gf.inject("search", Fault("status", 429, retry_after="0"), Fault("malformed"))
    gf.inject("lookup", Fault("status", 502))
    oa.inject("500", count=2)
    summary = collect(cfg, progress=False)
    assert summary.complete, summary
    assert summary.retries >= 13
    assert not any(gf.faults.values())  # every injected fault was hit
    assert max(gf.served_keys.values()) == 1 and max(oa.successes.values()) == 1
    # every attempt is counted, those made while resolving methods (Auto Steer...) included
    assert status(cfg).calls == sum(gf.calls.values()) + oa.requests
    gens, _ = tables(cfg)
    assert gens["error"].isna().all()


def test_budget_caps_goodfire_calls_and_a_resume_finishes_without_repeats(
    tmp_path: Path, gf: GoodfireServer
) -> None:
    exp = write_experiment(tmp_path, gf.url, prompts=4, extra="[budget]\nmax_calls = 15\n")
    cfg = load_config(exp)
    summary = collect(cfg, progress=False)
    # Auto Steer, search, lookup and picker calls count against the budget like generations
    assert sum(gf.calls.values()) == 15 and summary.budget_reached and not summary.complete
    again = collect(cfg, progress=False)
    assert sum(gf.calls.values()) == 15 and again.calls == 0  # the cap covers the experiment
    exp.write_text(exp.read_text().replace("max_calls = 15", "max_calls = 1000"))
    resumed = collect(load_config(exp), progress=False)
    assert resumed.complete
    assert max(gf.served_keys.values()) == 1  # resumed without asking anything twice
    assert gf.served["autosteer"] == 2 and gf.served["search"] == 2


def test_max_usd_holds_although_goodfire_reports_no_usage(
    tmp_path: Path, gf: GoodfireServer
) -> None:
    pricing = f'[budget]\nmax_usd = 0.05\n\n[pricing."{LLAMA_8B}"]\ninput = 100.0\noutput = 100.0\n'
    pricing += f'\n[pricing."{LLAMA_70B}"]\ninput = 100.0\noutput = 100.0\n'
    cfg = load_config(
        write_experiment(
            tmp_path, gf.url, methods=("control", "autosteer"), prompts=6, extra=pricing
        )
    )
    summary = collect(cfg, progress=False)
    assert summary.budget_reached and 0 < summary.spent_usd <= 0.05
    gens, _ = tables(cfg)
    done = gens[gens.response.notna()]
    # records shared by several rows (control's prompts across queries) are paid for once
    paid = done.drop_duplicates("key")["cost_usd"].sum()
    assert len(done) > 0 and paid == pytest.approx(summary.spent_usd)


def test_agentic_invalid_picks_are_a_recorded_failure_then_resolve_on_rerun(
    tmp_path: Path, gf: GoodfireServer
) -> None:
    cfg = load_config(write_experiment(tmp_path, gf.url, methods=("agentic",), prompts=1))
    gf.picker_replies.extend(["no json here"] * 6)  # 3 attempts for each of the 2 queries
    summary = collect(cfg, progress=False)
    assert summary.unresolved == 2 and not summary.complete and summary.new_generations == 0
    failures = status(cfg).failures
    assert len(failures) == 2
    assert all(
        "FeaturePickError" in f["error"] and "no JSON object" in f["error"] for f in failures
    )
    gens, _ = tables(cfg)
    assert gens["response"].isna().all() and gens["error"].str.contains("FeaturePickError").all()
    assert collect(cfg, progress=False).complete  # the picker now answers properly


def test_wrong_key_stops_the_run_with_one_message_naming_the_variable(
    tmp_path: Path, gf: GoodfireServer
) -> None:
    exp = write_experiment(tmp_path, gf.url, methods=("control", "autosteer"))
    run = cli("collect", str(exp), "--quiet", env={"GOODFIRE_API_KEY": "gf-wrong-key-000"})
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "GOODFIRE_API_KEY" in errors[0]
    assert "HTTP 401" in errors[0] and "Traceback" not in run.stderr
    assert "gf-wrong-key-000" not in run.stdout + run.stderr
    assert_no_key_bytes(tmp_path / "cache")


def test_unreachable_server_fails_fast_with_one_message_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    exp = write_experiment(
        tmp_path,
        url,
        methods=("control", "autosteer"),
        model_options=", unreachable_after_s = 0.2",
        # each call's retry policy takes at least 0.05/2 + 0.1/2 + 0.2/2 x 3 = 0.375 s
        retries="max_attempts = 6\nbase_delay_s = 0.05\nmax_delay_s = 0.2",
    )
    start = time.monotonic()
    run = cli("collect", str(exp), "--quiet")
    elapsed = time.monotonic() - start
    assert run.returncode == 2, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"cannot reach the Goodfire API at {url}" in errors[0]
    assert "GOODFIRE_BASE_URL" in errors[0] and "Traceback" not in run.stderr
    assert elapsed < 20


def test_kill_9_mid_run_then_resume(tmp_path: Path) -> None:
    with GoodfireServer(api_key=GF_KEY, latency_s=0.05) as gf:
        exp = write_experiment(
            tmp_path, gf.url, methods=("control", "autosteer", "features"), prompts=8
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "steerstats", "collect", str(exp), "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while gf.served["chat"] < 8 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            assert proc.poll() is None, "collect finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
        killed_at = gf.served["chat"]
        summary = collect(load_config(exp), progress=False)
        assert summary.complete
        assert summary.cached_generations > 0 and summary.new_generations < 2 * 8 * 4
        # at most the calls in flight at the kill are asked again; everything else is cached
        repeated = sum(n - 1 for n in gf.served_keys.values())
        assert repeated <= 4 and gf.served["chat"] >= killed_at
        gens, _ = tables(load_config(exp))
        assert gens["response"].notna().all() and not math.isnan(gens["latency_s"].sum())
