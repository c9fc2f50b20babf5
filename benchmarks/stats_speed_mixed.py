"""Speed and memory of the crossed mixed model on 23,940 response-level rows.

Design: 14 queries x 171 prompts (shared, as MMLU questions are) x 5 methods x 2 models, one
response per cell judged 3 times (71,820 rating rows, 1% unparsed), so ``mixed_model`` averages
the repeats to 23,940 response-level rows and fits
``value ~ method * model + (1|query) + (1|prompt) + (1|query:method)`` by REML with
Satterthwaite df. Goal (issue 13): < 5 s, no slower than lme4, < 2 GB on a 2-core machine.

Reports the median wall time of ``--repeats`` fits after one warm-up (default engine, "numpy"),
the peak traced allocation of one fit (tracemalloc) and the process's peak RSS. With
``--compare lme4`` (and/or ``statsmodels``) it also fits through those engines once and
records their time and the largest difference from the default engine's variance components.
statsmodels' one-group MixedLM is slow at this size (minutes), so it is not run by default.
Writes benchmarks/results/stats_speed_mixed.json.

Run: PYTHONPATH=. python benchmarks/stats_speed_mixed.py [--compare lme4 statsmodels]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from steerstats.stats import mixed_model, simulate_crossed

GOAL_S, GOAL_MB = 5.0, 2048.0


def make_scores(seed: int = 0):  # type: ignore[no-untyped-def]
    scores = simulate_crossed(
        {"control": 3.0, "prompt": 3.3, "autosteer": 3.4, "autosteer+prompt": 3.0, "agentic": 3.0},
        n_queries=14, n_topic=0, n_common=171, n_repeats=3,
        model={"llama-8b": 0.0, "llama-70b": 0.0}, sd_query=0.5, sd_prompt=0.3,
        sd_query_method=0.3, sd_response=0.6, sd_repeat=0.4, discrete=True, seed=seed,
    )
    rng = np.random.default_rng(seed)
    scores.loc[rng.random(len(scores)) < 0.01, "value"] = np.nan
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", nargs="*", default=[], choices=["lme4", "statsmodels"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "stats_speed_mixed.json"))
    args = parser.parse_args()

    scores = make_scores()
    fit = mixed_model(scores, "behavior")  # warm-up
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fit = mixed_model(scores, "behavior")
        runs.append(time.perf_counter() - start)
    tracemalloc.start()
    mixed_model(scores, "behavior")
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    result: dict[str, object] = {
        "benchmark": "mixed_model, crossed random effects, REML + Satterthwaite",
        "rating_rows": len(scores),
        "response_rows": fit.n_obs,
        "responses_all_missing": fit.n_missing,
        "random_effect_levels": {g: int(n) for g, n in zip(
            fit.variance_components["group"][:3], fit.variance_components["n_levels"][:3],
            strict=True)},
        "engine": "numpy",
        "median_s": statistics.median(runs),
        "runs_s": runs,
        "traced_peak_mb": traced_peak / 2**20,
        "process_peak_rss_mb": rss_mb,
        "goal_s": GOAL_S,
        "goal_mb": GOAL_MB,
        "meets_goal": statistics.median(runs) < GOAL_S and rss_mb < GOAL_MB,
        "variance_components": dict(zip(fit.variance_components["group"],
                                        fit.variance_components["variance"], strict=True)),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }
    comparisons = {}
    for engine in args.compare:
        start = time.perf_counter()
        other = mixed_model(scores, "behavior", engine=engine)
        seconds = time.perf_counter() - start
        diff = np.abs(other.variance_components["variance"].to_numpy()
                      - fit.variance_components["variance"].to_numpy())
        fixed_diff = np.abs(other.fixed["estimate"] - fit.fixed["estimate"])
        comparisons[engine] = {
            "seconds": seconds,
            "max_abs_diff_variance": float(diff.max()),
            "max_abs_diff_fixed": float(fixed_diff.max()),
            "max_rel_diff_df": float(np.abs(other.fixed["df"] / fit.fixed["df"] - 1).max()),
        }
    if comparisons:
        result["comparisons"] = comparisons
        result["process_peak_rss_mb_after_comparisons"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
