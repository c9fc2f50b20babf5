"""Coverage of the default 95% intervals of ``summarize`` and ``paired_contrasts``.

Data come from a crossed random-effects model with 14 queries (``simulate_crossed``: query,
prompt, query x method, response and judge-repeat terms; 10 topic prompts nested in each
query plus 20 shared prompts; 3 judge repeats), in two scenarios (``SCENARIOS``):
between-query variation dominant (the main one, where the >= 0.93 target is checked), and
prompt/noise dominant (fewer data sets; shows how conservative the intervals get there).
The truth is each method's mean over new queries and prompts (and each method's difference
from control). For every simulated data set
we record whether each interval covers the truth, for:

- ``naive``: row-level intervals that treat every rating as independent (mean +/- z*SD/sqrt(n);
  for contrasts the unpaired Welch t interval, as in the seed study's t-tests);
- ``percentile``: the plain two-way cluster bootstrap percentile interval;
- ``expanded``: Hesterberg's expanded percentile interval;
- ``default``: what ``summarize`` / ``paired_contrasts`` return with default arguments.

Coverage is the share of intervals that cover; its Monte-Carlo SE is computed over data sets
(the estimates within one data set are correlated). Writes benchmarks/results/coverage.json.

Run: PYTHONPATH=. python benchmarks/coverage.py [--n-sims 1000] [--n-sims-noise 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import write_result
from scipy import stats as sps

from steerstats.stats import (
    cluster_bootstrap,
    paired_contrasts,
    simulate_crossed,
    summarize,
)
from steerstats.stats._data import response_level
from steerstats.stats.contrasts import paired_cells

MEANS = {"control": 2.0, "prompt": 3.0, "steer": 3.5}
SIZES = dict(n_queries=14, n_topic=10, n_common=20, n_repeats=3)
# "queries": between-query variation dominates (query and query x method effects), as when
# steerability differs by concept; the pass criterion is judged here. "noise": prompt and
# response noise dominate, where the pigeonhole bootstrap is known to be conservative.
SCENARIOS: dict[str, dict[str, float]] = {
    "queries": dict(
        sd_query=0.5, sd_prompt=0.3, sd_query_method=0.5, sd_response=0.7, sd_repeat=0.5
    ),
    "noise": dict(
        sd_query=0.3, sd_prompt=0.6, sd_query_method=0.2, sd_response=1.0, sd_repeat=0.7
    ),
}
CONFIDENCE = 0.95
TARGET = 0.93
CLUSTERS = ("query_id", "prompt_id")


def one_dataset(i: int, seed: int, scenario: str) -> dict[str, np.ndarray]:
    """Coverage indicators (one per estimand) and widths for each interval type."""
    rng = np.random.default_rng([seed, i])
    data = simulate_crossed(MEANS, seed=rng, **SCENARIOS[scenario], **SIZES)  # type: ignore[arg-type]
    methods = list(MEANS)
    truth_mean = np.array([MEANS[m] for m in methods])
    others = [m for m in methods if m != "control"]
    truth_diff = np.array([MEANS[m] - MEANS["control"] for m in others])
    z = sps.norm.ppf(0.5 + CONFIDENCE / 2)
    out: dict[str, list[tuple[float, float]]] = {}

    # summarize: default, and the alternatives from the same replicates
    table = summarize(data, strength=None, seed=i).set_index("method").loc[methods]
    out["summarize/default"] = list(zip(table["ci_low"], table["ci_high"], strict=True))
    resp = response_level(data, ["method", *CLUSTERS, "sample"])
    res = cluster_bootstrap(resp, groups=["method"], clusters=CLUSTERS, seed=i)
    order = [res.groups["method"].tolist().index(m) for m in methods]
    for kind in ("percentile", "expanded", "t"):
        lo, hi = res.interval(CONFIDENCE, kind)  # type: ignore[arg-type]
        out[f"summarize/{kind}"] = list(zip(lo[order], hi[order], strict=True))
    naive = data.groupby("method")["value"].agg(["mean", "std", "size"]).loc[methods]
    half = z * naive["std"] / np.sqrt(naive["size"])
    out["summarize/naive"] = list(zip(naive["mean"] - half, naive["mean"] + half, strict=True))

    # paired contrasts against control
    con = paired_contrasts(data, "control", strength=None, seed=i).set_index("method")
    con = con.loc[others]
    out["contrasts/default"] = list(zip(con["ci_low"], con["ci_high"], strict=True))
    pairs = paired_cells(
        data, "control", model="model", method="method", strength=None, metric="metric",
        value="value", clusters=CLUSTERS, sample="sample",
    ).pairs
    res_d = cluster_bootstrap(pairs, "diff", groups=["method"], clusters=CLUSTERS, seed=i)
    order_d = [res_d.groups["method"].tolist().index(m) for m in others]
    for kind in ("percentile", "expanded", "t"):
        lo, hi = res_d.interval(CONFIDENCE, kind)  # type: ignore[arg-type]
        out[f"contrasts/{kind}"] = list(zip(lo[order_d], hi[order_d], strict=True))
    welch = []
    base = data.loc[data["method"] == "control", "value"].to_numpy()
    for m in others:
        arm = data.loc[data["method"] == m, "value"].to_numpy()
        ci = sps.ttest_ind(arm, base, equal_var=False).confidence_interval(CONFIDENCE)
        welch.append((ci.low, ci.high))
    out["contrasts/naive"] = welch

    for fn in ("summarize", "contrasts"):
        if not np.allclose(out[f"{fn}/default"], out[f"{fn}/t"]):
            raise RuntimeError(f"{fn}: engine replicates differ from the public function's")
    result = {}
    for key, intervals in out.items():
        arr = np.asarray(intervals, dtype=float)
        truth = truth_mean if key.startswith("summarize") else truth_diff
        result[key] = np.stack(
            [(arr[:, 0] <= truth) & (truth <= arr[:, 1]), arr[:, 1] - arr[:, 0]], axis=1
        )
    return result


def run_scenario(scenario: str, n_sims: int, seed: int) -> tuple[pd.DataFrame, float]:
    """Coverage table for one scenario and its run time."""
    start = time.perf_counter()
    runs = [one_dataset(i, seed, scenario) for i in range(n_sims)]
    elapsed = time.perf_counter() - start
    rows = []
    for key in runs[0]:
        cover = np.stack([r[key][:, 0] for r in runs])  # (sims, estimands)
        width = np.stack([r[key][:, 1] for r in runs])
        per_sim = cover.mean(axis=1)
        rows.append(
            {
                "scenario": scenario,
                "function": key.split("/")[0],
                "interval": key.split("/")[1],
                "coverage": float(cover.mean()),
                "mc_se": float(per_sim.std(ddof=1) / np.sqrt(len(per_sim))),
                "coverage_per_estimand": cover.mean(axis=0).tolist(),
                "mean_width": float(width.mean()),
            }
        )
    order = {"naive": 0, "percentile": 1, "expanded": 2, "t": 3, "default": 4}
    table = pd.DataFrame(rows).sort_values(
        ["function", "interval"], key=lambda s: s.map(order) if s.name == "interval" else s
    )
    return table, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sims", type=int, default=1000, help="data sets, main scenario")
    parser.add_argument(
        "--n-sims-noise", type=int, default=300, help="data sets, noise-heavy scenario"
    )
    parser.add_argument("--seed", type=int, default=20260501)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "coverage.json"
    )
    args = parser.parse_args()
    pd.set_option("display.width", 120)
    tables = []
    runtimes = {}
    for scenario, n in (("queries", args.n_sims), ("noise", args.n_sims_noise)):
        if n < 2:
            continue
        table, elapsed = run_scenario(scenario, n, args.seed)
        runtimes[scenario] = elapsed
        tables.append(table)
        print(f"\nscenario {scenario!r} {SCENARIOS[scenario]}: {n} data sets, "
              f"nominal {CONFIDENCE}, {elapsed:.0f} s")
        print(table.drop(columns=["scenario", "coverage_per_estimand"]).to_string(index=False))
    main_table = tables[0]
    default = main_table[main_table["interval"] == "default"].set_index("function")["coverage"]
    passed = bool((default >= TARGET).all())
    print(f"\ndefault coverage >= {TARGET} in scenario 'queries': {'PASS' if passed else 'FAIL'}")
    payload = {
        "benchmark": "coverage",
        "nominal": CONFIDENCE,
        "target": TARGET,
        "passed": passed,
        "seed": args.seed,
        "n_sims": {"queries": args.n_sims, "noise": args.n_sims_noise},
        "design": {**SIZES, "means": MEANS, "n_boot": 2000, "simulator": "simulate_crossed"},
        "scenarios": SCENARIOS,
        "estimands": {
            "summarize": list(MEANS),
            "contrasts": [f"{m} - control" for m in MEANS if m != "control"],
        },
        "results": pd.concat(tables).to_dict(orient="records"),
        "runtime_s": runtimes,
    }
    write_result(args.out, payload)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
