"""Speed of the two-way cluster bootstrap: 2,000 replicates on 71,820 rating rows.

Design: 14 queries x 171 prompts (shared, as MMLU questions are) x 5 methods x 2 models x
3 judge repeats = 71,820 rows (23,940 responses). Goal: ``summarize`` with 2,000 replicates in
under 2 s on the project's 2-core machine. Also times the engine alone (``cluster_bootstrap`` on
the response-level table) and ``paired_contrasts``. Each timing is the median of ``--repeats``
runs after one warm-up. Writes benchmarks/results/stats_speed_bootstrap.json.
(The mixed-model timing lives in benchmarks/stats_speed_mixed.py.)

Run: PYTHONPATH=. python benchmarks/stats_speed.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import write_result

from steerstats.stats import cluster_bootstrap, paired_contrasts, summarize
from steerstats.stats._data import response_level

N_QUERIES, N_PROMPTS, N_METHODS, N_MODELS, N_REPEATS = 14, 171, 5, 2, 3
N_BOOT = 2000
GOAL_S = 2.0


def make_scores(seed: int = 0) -> pd.DataFrame:
    """The benchmark table: judge-like integer scores with query and prompt effects."""
    rng = np.random.default_rng(seed)
    shape = (N_MODELS, N_METHODS, N_QUERIES, N_PROMPTS, N_REPEATS)
    mo, me, q, p, r = np.indices(shape).reshape(5, -1)
    latent = (
        2.5
        + 0.3 * me
        + rng.normal(0, 0.5, N_QUERIES)[q]
        + rng.normal(0, 0.3, N_PROMPTS)[p]
        + rng.normal(0, 0.8, len(q))
    )
    value = np.clip(np.rint(latent), 1, 5)
    value[rng.random(len(value)) < 0.01] = np.nan
    methods = np.array(["control", "prompt", "autosteer", "autosteer+prompt", "agentic"])
    return pd.DataFrame(
        {
            "model": np.array(["llama-8b", "llama-70b"])[mo],
            "method": methods[me],
            "strength": np.nan,
            "query_id": np.array([f"query-{i:02d}" for i in range(N_QUERIES)])[q],
            "prompt_set": "mmlu",
            "prompt_id": np.array([f"mmlu-{i:03d}" for i in range(N_PROMPTS)])[p],
            "sample": 0,
            "metric": "behavior",
            "rater": "judge",
            "repeat": r,
            "value": value,
        }
    )


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float | list[float]]:
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "runs_s": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "stats_speed_bootstrap.json",
    )
    args = parser.parse_args()
    scores = make_scores()
    responses = response_level(scores, ["model", "method", "metric", "query_id", "prompt_id"])
    timings = {
        "summarize": timed(lambda: summarize(scores, n_boot=N_BOOT, seed=1), args.repeats),
        "cluster_bootstrap_engine": timed(
            lambda: cluster_bootstrap(
                responses, groups=["model", "method", "metric"], n_boot=N_BOOT, seed=1
            ),
            args.repeats,
        ),
        "paired_contrasts": timed(
            lambda: paired_contrasts(scores, n_boot=N_BOOT, seed=1), args.repeats
        ),
    }
    passed = timings["summarize"]["median_s"] < GOAL_S  # type: ignore[operator]
    for name, t in timings.items():
        print(f"{name:26s} median {t['median_s']:.3f} s   min {t['min_s']:.3f} s")
    print(f"summarize, {len(scores):,} rows, {N_BOOT} replicates: goal < {GOAL_S} s: "
          f"{'PASS' if passed else 'FAIL'}")
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    payload = {
        "benchmark": "stats_speed_bootstrap",
        "rows": len(scores),
        "responses": len(responses),
        "design": {
            "queries": N_QUERIES,
            "prompts": N_PROMPTS,
            "methods": N_METHODS,
            "models": N_MODELS,
            "repeats": N_REPEATS,
        },
        "n_boot": N_BOOT,
        "goal_s": GOAL_S,
        "passed": bool(passed),
        "timings": timings,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(load),
    }
    write_result(args.out, payload)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
