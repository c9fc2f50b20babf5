"""The collection commands end to end: kill -9 mid-run and resume, init / dry run / status /
export through the CLI, and user errors printed without a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from steerstats.cli import app
from steerstats.collect import status
from steerstats.collect.cache import Cache
from steerstats.config import load_config
from steerstats.results import read_results
from tests.fake_openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-cli-0123456789abcdef"


def write_experiment(tmp_path: Path, url: str, prompts: int = 6) -> Path:
    ps = ", ".join(f'{{ text = "Prompt number {i} about the world." }}' for i in range(prompts))
    path = tmp_path / "exp.toml"
    path.write_text(f"""
[experiment]
name = "cli"
cache_dir = "cache"
plugins = ["tests.collect_plugins"]

[[models]]
backend = "openai"
model = "target-model"
options = {{ base_url = "{url}" }}

[[methods]]
name = "control"

[[methods]]
name = "prompt"

[queries]
items = [{{ text = "be terse" }}, {{ text = "be florid" }}]

[prompts.open]
items = [{ps}]

[sampling]
max_tokens = 16
seed = 5

[[judges]]
name = "test-rubric"
backend = "openai"
model = "judge-model"
options = {{ base_url = "{url}" }}

[[judges]]
name = "test-length"

[concurrency]
backends = {{ openai = 3 }}

[retries]
base_delay_s = 0.01
""")
    return path


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OPENAI_API_KEY": KEY}


def _finished(cache_dir: Path) -> dict[str, str]:
    with Cache(cache_dir) as cache:
        return {r["key"]: r["finished_at"] for r in cache.results()}


def _called(cache_dir: Path) -> int:
    with Cache(cache_dir) as cache:
        return sum(1 for r in cache.results() if r["calls"] > 0)


def test_kill_9_mid_run_then_resume_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.02) as server:
        path = write_experiment(tmp_path, server.url)
        cache_dir = tmp_path / "cache"
        server.hold_after(12)  # answer 12 calls, then park every request: calls in flight
        proc = subprocess.Popen([sys.executable, "-m", "steerstats", "collect", str(path), "-q"],
                                env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if (server.total_successes >= 12 and server.held >= 1 and cache_dir.exists()
                        and _called(cache_dir) >= 12):
                    break
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
            else:
                pytest.fail("the collector did not reach the hold point")
            # every answered call was persisted before the kill; the parked ones are in flight
            assert server.total_successes == 12 == _called(cache_dir)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        before = _finished(cache_dir)
        server.release(drop=True)  # the killed run's parked requests never get answers

        rerun = subprocess.run([sys.executable, "-m", "steerstats", "collect", str(path), "-q"],
                               env=_env(), cwd=tmp_path, capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "complete" in rerun.stdout
        assert max(server.successes.values()) == 1  # no request was answered twice
        # 6 control + 12 prompt generations, 24 rubric judgements: one answer each
        assert server.total_successes == 6 + 12 + 24
        after = _finished(cache_dir)
        assert all(after[k] == v for k, v in before.items())  # no result lost or redone
        st = status(load_config(path))
        assert all(r.failed == 0 and r.pending == 0 for r in st.rows)


def test_cli_init_dry_run_status_and_export(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    runner = CliRunner()
    res = runner.invoke(app, ["init", str(tmp_path / "new.toml"), "--preset", "openai"])
    assert res.exit_code == 0 and (tmp_path / "new.toml").is_file()
    assert "steerstats collect" in res.stdout

    with FakeOpenAIServer(api_key=KEY) as server:
        path = write_experiment(tmp_path, server.url, prompts=2)
        res = runner.invoke(app, ["collect", str(path), "--dry-run"])
        assert res.exit_code == 0, res.output
        assert "dry run: 8 generation tasks, 16 judge tasks" in res.stdout
        assert server.requests == 0

        res = runner.invoke(app, ["collect", str(path), "-q", "--limit-queries", "1",
                                  "--limit-prompts", "1"])
        assert res.exit_code == 0, res.output
        assert "complete" in res.stdout and server.total_successes == 2 + 2

        res = runner.invoke(app, ["status", str(path)])
        assert res.exit_code == 0 and "pending" in res.stdout and "test-rubric" in res.stdout

        res = runner.invoke(app, ["collect", str(path), "-q"])
        assert res.exit_code == 0 and "complete" in res.stdout

    for fmt in ("parquet", "csv"):
        res = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / fmt),
                                  "--format", fmt])
        assert res.exit_code == 0, res.output
    pq, csv = read_results(tmp_path / "parquet"), read_results(tmp_path / "csv")
    assert (tmp_path / "csv" / "generations.csv").is_file()
    assert (tmp_path / "parquet" / "experiment.toml").read_text() == path.read_text()
    pd.testing.assert_frame_equal(pq.generations, csv.generations)
    pd.testing.assert_frame_equal(pq.scores, csv.scores)
    man = pq.manifest
    assert man["row_counts"] == {"generations": 8, "scores": 16, "judgements": 8}
    assert pq.judgements is not None and len(pq.judgements) == 8  # one per rubric call
    assert pq.judgements["reply"].str.contains("<score>").all()
    assert man["experiment"]["digest"] == load_config(path).digest()
    assert man["failures"]["generations_failed"] == 0 and man["format"] == "parquet"
    assert {j["label"] for j in man["judges"]} == {"test-rubric/judge-model", "test-length"}
    assert man["judges"][0]["identity"]["template"]  # the rubric's template digest
    assert "pandas" in man["packages"] and man["seeds"]["sampling"] == 5


def test_user_errors_print_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[experiment]\nname = "x"\nmystery = 1\n')
    res = subprocess.run([sys.executable, "-m", "steerstats", "collect", str(bad), "--dry-run"],
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {bad}: ")
    assert "experiment.mystery: unknown key 'mystery'" in res.stderr
    assert "Traceback" not in res.stderr


def test_every_shipped_preset_is_a_valid_experiment(tmp_path: Path) -> None:
    from steerstats.config import init_experiment, preset_names

    assert preset_names()
    for name in preset_names():
        cfg = load_config(init_experiment(tmp_path / f"{name}.toml", name))
        assert cfg.experiment.name


def test_openai_preset_pilot_with_shipped_datasets_and_judges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    runner = CliRunner()
    path = tmp_path / "my.toml"
    assert runner.invoke(app, ["init", str(path), "--preset", "openai"]).exit_code == 0
    with FakeOpenAIServer(api_key=KEY) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # the preset leaves base_url unset
        args = ["collect", str(path), "-q", "--limit-queries", "1", "--limit-prompts", "2"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        assert "complete" in res.stdout
    from steerstats.collect.export import tables

    gens, scores = tables(load_config(path), limit_queries=1, limit_prompts=2)
    assert set(gens["prompt_set"]) == {"open", "mmlu"} and gens["error"].isna().all()
    assert set(gens["query_id"]) == {"be-funny"} and len(gens) == 2 * (2 + 2)
    acc = scores[scores.metric == "accuracy"]
    assert set(acc["rater"]) == {"auto"} and set(acc["prompt_set"]) == {"mmlu"}
    assert acc["value"].isin([0.0, 1.0]).all()  # the fake server always answers a letter
    rubric = scores[scores.metric.isin(["behavior", "coherence"])]
    assert set(rubric["rater"]) == {"gpt-4o-mini"} and rubric["repeat"].max() == 1
    assert rubric["value"].between(1, 5).all()
    assert (rubric.groupby(["metric", "key"]).size() == 2).all()  # 2 repeats per generation
