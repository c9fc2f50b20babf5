"""Collector throughput over 1, 2 and 4 replicas of one model (``base_urls``).

Each replica is a fake OpenAI-compatible server in its own process answering after 50 ms; the
openai backend keeps 16 calls in flight per replica, so the ideal is 16 x n / 0.05 = 320 x n
calls/s. Goal: near-linear scaling until the client's CPU is the limit, which is reported as
CPU ms per call (this process's CPU time over the run / calls) and the ceiling it implies
(1000 / that, for one core). ``collect --workers N`` (several collector processes) is not
measured here: the flag was not on main when this was written. The machine is shared; the
1-minute load average is recorded before and after every run. Prints and writes
benchmarks/results/collect_scaling.json.

    PYTHONPATH=. python benchmarks/collect_scaling.py [--calls 2000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import write_result  # noqa: E402

LATENCY = 0.05
PER_REPLICA = 16
REPLICAS = (1, 2, 4)
WARMUP_CALLS = 200

SERVER = """
import sys, time
from tests.fake_openai_server import FakeOpenAIServer
s = FakeOpenAIServer(latency=float(sys.argv[1])).start()
print(s.url, flush=True)
sys.stdin.read()  # runs until the benchmark closes our stdin
print(time.process_time(), s.requests, flush=True)
s.stop()
"""


def experiment(urls: list[str], n_prompts: int, cache_dir: str, tag: str) -> str:
    items = ",\n  ".join(f'{{ text = "Scaling prompt {i}{tag}." }}' for i in range(n_prompts))
    quoted = ", ".join(f'"{u}"' for u in urls)
    # No [concurrency] section: the backend's own limit (16 per replica) applies.
    return f"""
[experiment]
name = "scaling"
cache_dir = "{cache_dir}"

[[models]]
backend = "openai"
model = "bench-model"
options = {{ base_urls = [{quoted}], max_concurrency = {PER_REPLICA}, timeout_s = 30 }}

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

[retries]
base_delay_s = 0.05
"""


def run_once(tmp: Path, name: str, urls: list[str], calls: int, tag: str = "") -> dict[str, Any]:
    from steerstats.collect import collect
    from steerstats.config import parse_config

    path = tmp / f"{name}.toml"
    path.write_text(experiment(urls, calls, str(tmp / f"{name}-cache"), tag or f" ({name})"))
    cfg = parse_config(path.read_text(), path)
    load_before = os.getloadavg()[0]
    c0 = time.process_time()
    out = collect(cfg, progress=False)
    cpu = time.process_time() - c0
    ideal = PER_REPLICA * len(urls) / LATENCY
    rate = out.calls / out.elapsed_s
    cpu_ms = 1000 * cpu / max(1, out.calls)
    return {
        "replicas": len(urls), "calls": out.calls, "retries": out.retries,
        "run_s": out.elapsed_s, "calls_per_s": rate, "ideal_calls_per_s": ideal,
        "fraction_of_ideal": rate / ideal, "client_cpu_ms_per_call": cpu_ms,
        "cpu_bound_calls_per_s": 1000 / cpu_ms if cpu_ms > 0 else float("inf"),
        "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="generation calls per run")
    ap.add_argument("--repeats", type=int, default=1, help="runs per replica count")
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)  # servers on 127.0.0.1 need no key
    os.environ.pop("OPENAI_API_KEY", None)
    servers = [
        subprocess.Popen([sys.executable, "-c", SERVER, str(LATENCY)], env=env, cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(max(REPLICAS))
    ]
    runs: list[dict[str, Any]] = []
    try:
        urls = [s.stdout.readline().strip() for s in servers if s.stdout is not None]
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            run_once(tmp, "warmup", urls, WARMUP_CALLS)
            for n in REPLICAS:
                for i in range(args.repeats):
                    run = run_once(tmp, f"r{n}-{i}", urls[:n], args.calls)
                    runs.append(run)
                    print(f"{n} replica(s): {run['calls']} calls in {run['run_s']:.2f}s = "
                          f"{run['calls_per_s']:.0f} calls/s ({run['fraction_of_ideal']:.2f} of "
                          f"ideal {run['ideal_calls_per_s']:.0f}); "
                          f"{run['client_cpu_ms_per_call']:.2f} ms CPU per call (ceiling "
                          f"{run['cpu_bound_calls_per_s']:.0f}/s); load "
                          f"{run['load_avg_1m_before']:.1f} -> {run['load_avg_1m_after']:.1f}")
    finally:
        server_cpu = []
        for s in servers:
            if s.stdin is not None:
                s.stdin.close()
            line = s.stdout.readline().split() if s.stdout is not None else []
            s.wait(timeout=30)
            if len(line) == 2:
                server_cpu.append(1000 * float(line[0]) / max(1, int(line[1])))
    summary = {
        str(n): {
            "calls_per_s": statistics.median(r["calls_per_s"] for r in runs
                                             if r["replicas"] == n),
            "fraction_of_ideal": statistics.median(r["fraction_of_ideal"] for r in runs
                                                   if r["replicas"] == n),
        }
        for n in REPLICAS
    }
    write_result(ROOT / "benchmarks" / "results" / "collect_scaling.json", {
        "benchmark": "collect_scaling",
        "latency_s": LATENCY,
        "concurrency_per_replica": PER_REPLICA,
        "calls_per_run": args.calls,
        "runs": runs,
        "summary_by_replicas": summary,
        "server_cpu_ms_per_call": statistics.median(server_cpu) if server_cpu else None,
        "workers": "not measured: `collect --workers` was not on main",
        "cpus": os.cpu_count(),
        "note": "shared machine; see the load averages per run",
    })


if __name__ == "__main__":
    main()
