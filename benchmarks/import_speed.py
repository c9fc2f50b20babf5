"""Speed and memory of ``steerstats import`` on a 200,000-row CSV (about 46 MB).

Table: 50,000 responses (2 models x 5 methods x 10 queries x 500 prompts), each rated by two
judges twice (rater and repeat columns) -> 200,000 rows with two wide score columns
(behaviour, coherence) and ~200-character responses; a few cells are deliberately bad (an
"inf", an out-of-range 7, a non-number) so the reporting path runs too. Goal (issue 19):
< 10 s and < 500 MB peak resident memory for the whole import (read, identify responses,
melt, check, build the tidy tables). Each run is a fresh Python process (``import_table`` on
the file, then ``write`` of the results directory timed separately); peak memory is that
process's maximum resident set size (``getrusage``), interpreter and libraries included, after
the import alone and after the write too.
Reports the median of ``--repeats`` runs. Writes benchmarks/results/import_speed.json.

Run: PYTHONPATH=. python benchmarks/import_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import write_result

ROWS_GOAL, SECONDS_GOAL, MB_GOAL = 200_000, 10.0, 500.0
HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from steerstats.importers import import_table
t1 = time.perf_counter()
result = import_table(sys.argv[1], score_columns=["behavior", "coherence"],
                      scale={"behavior": (1, 5), "coherence": (1, 5)})
t2 = time.perf_counter()
import_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result.write(sys.argv[2])
t3 = time.perf_counter()
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t2 - t1, "write_s": t3 - t2, "library_import_s": t1 - t0,
                  "peak_rss_mb": peak_kb / 1024, "import_peak_rss_mb": import_peak_kb / 1024,
                  "responses": len(result.generations),
                  "ratings": len(result.scores), "flagged": len(result.flagged)}))
"""


def make_table(path: Path, seed: int = 0) -> int:
    """Write the benchmark CSV; return its size in bytes."""
    rng = np.random.default_rng(seed)
    models, methods, queries, prompts = 2, 5, 10, 500
    n = models * methods * queries * prompts
    mo, me, q, p = np.indices((models, methods, queries, prompts)).reshape(4, -1)
    filler = "The answer, told at some length so the table is as heavy as a real one. "
    response = pd.Series(
        [f"Reply {i}: {filler}{filler[: 30 + i % 50]}" for i in range(n)], dtype="str"
    )
    base = pd.DataFrame({
        "model": np.array(["llama-8b", "llama-70b"])[mo],
        "method": np.array(["control", "prompt", "autosteer", "autosteer+prompt", "agentic"])[me],
        "query": pd.Series([f"be quality number {i}" for i in range(queries)])[q].to_numpy(),
        "prompt": pd.Series([f"Everyday question number {i}, asked plainly?"
                             for i in range(prompts)])[p].to_numpy(),
        "response": response,
    })
    parts = []
    for rater in ("judge-a", "judge-b"):
        for repeat in (0, 1):
            part = base.assign(rater=rater, repeat=repeat)
            part["behavior"] = rng.integers(1, 6, n).astype(str)
            part["coherence"] = rng.integers(1, 6, n).astype(str)
            parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table.loc[[10, 20, 30], "behavior"] = ["inf", "7", "high"]
    table.to_csv(path, index=False)
    return path.stat().st_size


def run_once(csv: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(csv), str(out)], env=env,
                          capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "import_speed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "table.csv"
        size = make_table(csv)
        runs = [run_once(csv, Path(tmp) / f"out{i}") for i in range(args.repeats)]
    seconds = statistics.median(r["import_s"] for r in runs)
    peak = statistics.median(r["peak_rss_mb"] for r in runs)
    first = runs[0]
    print(f"{ROWS_GOAL:,} rows ({size / 1e6:.1f} MB): import {seconds:.2f} s (median of "
          f"{len(runs)}), peak RSS {peak:.0f} MB; {first['responses']:,.0f} responses, "
          f"{first['ratings']:,.0f} ratings; write {first['write_s']:.2f} s")
    write_result(args.out, {
        "benchmark": "import_table on a 200,000-row CSV (issue 19)",
        "rows": ROWS_GOAL,
        "file_mb": round(size / 1e6, 1),
        "responses": first["responses"],
        "ratings": first["ratings"],
        "import_s_median": round(seconds, 3),
        "import_s_runs": [round(r["import_s"], 3) for r in runs],
        "write_s_median": round(statistics.median(r["write_s"] for r in runs), 3),
        "peak_rss_mb_median": round(peak, 1),
        "import_only_peak_rss_mb_median": round(
            statistics.median(r["import_peak_rss_mb"] for r in runs), 1),
        "goal": {"seconds": SECONDS_GOAL, "peak_rss_mb": MB_GOAL},
        "meets_goal": bool(seconds < SECONDS_GOAL and peak < MB_GOAL),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "note": "machine shared with other jobs; load_average_1min recorded at the end",
    })


if __name__ == "__main__":
    main()
