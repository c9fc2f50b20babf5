"""A tiny subset of the demo preset through the command line: collect, re-collect from the
cache with no model calls, export. Uses the real packaged model (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "STEERSTATS_CACHE_DIR": os.environ.get("STEERSTATS_CACHE_DIR", str(ROOT / "cache")),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "steerstats", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_demo_subset_collects_caches_and_exports(tmp_path):
    run("init", "demo.toml", "--preset", "demo", cwd=tmp_path)
    spec = tmp_path / "demo.toml"
    text = spec.read_text()
    assert "max_tokens = 40" in text
    spec.write_text(text.replace("max_tokens = 40", "max_tokens = 12"))
    limits = ("--limit-queries", "1", "--limit-prompts", "1")

    first = run("collect", "demo.toml", "-q", *limits, cwd=tmp_path)
    assert "complete" in first
    again = run("collect", "demo.toml", "-q", *limits, cwd=tmp_path)
    assert "calls 0 " in again  # everything came from the cache: no model call at all
    run("export", "demo.toml", "--out", "results", *limits, cwd=tmp_path)

    gens = pd.read_parquet(tmp_path / "results" / "generations.parquet")
    scores = pd.read_parquet(tmp_path / "results" / "scores.parquet")
    assert gens["error"].isna().all()
    cells = sorted(f"{m} {s:g}" for m, s in zip(gens["method"], gens["strength"], strict=True))
    assert cells == [
        "caa 0.1",
        "caa 0.2",
        "caa 0.3",
        "caa+prompt 0.2",
        "control nan",
        "prompt nan",
        "random 0.1",
        "random 0.2",
        "random 0.3",
    ]
    assert set(scores["metric"]) == {
        "behavior",
        "behavior_argmax",
        "coherence",
        "coherence_argmax",
        "coherence_ppl",
        "coherence_nll",
        "capability_nll",
        "sentiment",
    }
    # two rubric wordings per reply, each its own rater with one repeat; one computed value
    per_reply = scores.groupby(["key", "metric"]).size().unstack()
    assert (per_reply["behavior"] == 2).all() and (per_reply["coherence_ppl"] == 1).all()
    rubric = scores[scores.metric.isin(["behavior", "coherence"])]
    assert set(rubric["rater"]) == {"smollm2/wording-1", "smollm2/wording-2"}
    assert (rubric["repeat"] == 0).all()
    # the steered model loses more on the reference text as the strength rises
    cap = scores[(scores.metric == "capability_nll") & (scores.method == "caa")]
    by_strength = cap.groupby("strength")["value"].mean()
    assert by_strength.is_monotonic_increasing
    control_cap = scores[(scores.metric == "capability_nll") & (scores.method == "control")]
    assert control_cap["value"].mean() < by_strength.iloc[0]
