"""Collector throughput against the fake OpenAI-compatible server.

The server (its own process, so it does not share this interpreter's CPU) answers every call
after 50 ms; the collector runs with concurrency 32, so the ideal is 32 / 0.05 = 640 calls/s.
Then the same experiment is re-run warm: zero calls, and we time the cache lookups.
Goals: >= 0.8 of ideal calls/s; >= 5,000 cache lookups/s. To separate the collector's own
cost from the HTTP client's, it also reports CPU ms per call of this process, and runs the
same plan on the in-process mock backend (no HTTP). Prints and writes
benchmarks/results/collect_throughput.json.

    PYTHONPATH=. python benchmarks/collect_throughput.py [--calls 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LATENCY = 0.05
CONCURRENCY = 32

SERVER = """
import sys, time
from tests.fake_openai_server import FakeOpenAIServer
s = FakeOpenAIServer(latency=float(sys.argv[1])).start()
print(s.url, flush=True)
sys.stdin.read()  # runs until the benchmark closes our stdin
s.stop()
"""


def experiment(url: str, n_prompts: int, cache_dir: str, backend: str = "openai") -> str:
    items = ",\n  ".join(f'{{ text = "Benchmark prompt number {i}." }}' for i in range(n_prompts))
    options = f'options = {{ base_url = "{url}", timeout_s = 30 }}' if backend == "openai" else ""
    return f"""
[experiment]
name = "throughput"
cache_dir = "{cache_dir}"

[[models]]
backend = "{backend}"
model = "bench-model"
{options}

[[methods]]
name = "control"

[queries]
items = [{{ text = "be brief" }}]

[prompts.open]
items = [
  {items}
]

[sampling]
temperature = 0.0
max_tokens = 16
seed = 0

[concurrency]
default = {CONCURRENCY}

[retries]
base_delay_s = 0.05
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000, help="generation calls in the cold run")
    args = ap.parse_args()

    from steerstats.collect import collect
    from steerstats.config import parse_config

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-benchmark-not-secret"}
    os.environ["OPENAI_API_KEY"] = env["OPENAI_API_KEY"]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(LATENCY)], env=env, cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.toml"
            path.write_text(experiment(url, args.calls, str(Path(tmp) / "cache")))
            cfg = parse_config(path.read_text(), path)

            import openai  # noqa: F401  (imported before timing, as a long run would have)

            t0, c0 = time.perf_counter(), time.process_time()
            cold = collect(cfg, progress=False)
            cold_total, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0 = time.perf_counter()
            warm = collect(cfg, progress=False)
            warm_total = time.perf_counter() - t0

            mock_path = Path(tmp) / "mock.toml"
            mock_path.write_text(experiment(url, args.calls, str(Path(tmp) / "mock-cache"),
                                            backend="mock"))
            mock_cfg = parse_config(mock_path.read_text(), mock_path)
            c0 = time.process_time()
            mock = collect(mock_cfg, progress=False)
            mock_cpu = time.process_time() - c0
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)

    ideal = CONCURRENCY / LATENCY
    run_s = cold.elapsed_s
    achieved = cold.calls / run_s
    lookups_per_s = warm.lookups / warm.lookup_s if warm.lookup_s > 0 else float("inf")
    warm_tasks_per_s = warm.lookups / warm_total
    result = {
        "benchmark": "collect_throughput",
        "latency_s": LATENCY,
        "concurrency": CONCURRENCY,
        "calls": cold.calls,
        "retries": cold.retries,
        "cold_run_s": run_s,
        "cold_total_s_incl_planning_and_startup": cold_total,
        "achieved_calls_per_s": achieved,
        "ideal_calls_per_s": ideal,
        "fraction_of_ideal": achieved / ideal,
        "goal_fraction_of_ideal": 0.8,
        "client_cpu_ms_per_call": 1000 * cold_cpu / max(1, cold.calls),
        "collector_only_mock_backend": {
            "tasks": mock.new_generations,
            "tasks_per_s": mock.new_generations / mock.elapsed_s,
            "cpu_ms_per_task_incl_planning": 1000 * mock_cpu / max(1, mock.new_generations),
        },
        "warm_calls": warm.calls,
        "warm_lookups": warm.lookups,
        "cache_lookups_per_s": lookups_per_s,
        "warm_rerun_s_incl_planning": warm_total,
        "warm_rerun_tasks_per_s_incl_planning": warm_tasks_per_s,
        "goal_cache_lookups_per_s": 5000,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg_1m": os.getloadavg()[0]},
    }
    print(f"cold: {cold.calls} calls in {run_s:.2f}s = {achieved:.0f} calls/s "
          f"(ideal {ideal:.0f}/s, {achieved / ideal:.2f} of ideal; goal 0.8)")
    print(f"this process spent {1000 * cold_cpu / max(1, cold.calls):.2f} ms CPU per call; "
          f"the collector alone (mock backend, no HTTP): "
          f"{mock.new_generations / mock.elapsed_s:,.0f} tasks/s, "
          f"{1000 * mock_cpu / max(1, mock.new_generations):.2f} ms CPU per task")
    print(f"warm: {warm.calls} calls; {warm.lookups} cache lookups at {lookups_per_s:,.0f}/s "
          f"(goal 5,000/s); whole re-run incl. planning {warm_total:.2f}s "
          f"({warm_tasks_per_s:,.0f} tasks/s)")
    print(f"load average during run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    out = ROOT / "benchmarks" / "results" / "collect_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
