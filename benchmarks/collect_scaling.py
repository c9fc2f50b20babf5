"""Collector throughput over 1, 2 and 4 replicas of one model (``base_urls``), with
``collect --workers`` 1 and 2, in one run.

Each replica is a fake OpenAI-compatible server in its own process answering after 50 ms, with
16 calls in flight per replica in total (each of N workers gets ``max_concurrency`` 16 / N, as
the README advises), so the ideal is 16 x replicas / 0.05 = 320 x replicas calls/s whatever
the worker count: workers only help when one client process's CPU is the limit. Every
combination runs the real CLI (``python -m steerstats collect -q --workers N``) on a fresh
plan of distinct requests. Reported per run:

- ``calls_per_s``: the steady rate, from the servers' arrival times of the 10% to the 90%
  request (a process's first call pays a one-time set-up of the HTTP client, ~1 s here, and
  the last calls drain); ``window_calls_per_s`` is every request over the servers' busy window
  and ``wall_calls_per_s`` includes process start-up and planning;
- ``fraction_of_ideal``: ``calls_per_s`` over the ideal;
- ``client_cpu_ms_per_call``: the marginal CPU time per call of all collector processes (user
  + system, this benchmark's children): the run's CPU minus that of a small run (200 calls,
  same workers: start-up, planning, client set-up) over the difference in calls;
  ``cpu_bound_calls_per_s`` is the ceiling that implies for one core;
- ``duplicates``: requests beyond one per request body, counted at the servers (must be 0).

The machine is shared: the 1-minute load average is recorded before and after every run.
Prints and writes benchmarks/results/collect_scaling.json.

    PYTHONPATH=. python benchmarks/collect_scaling.py [--calls 2000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
WORKERS = (1, 2)
WARMUP_CALLS = 200
SMALL_CALLS = 200  # the run whose CPU is subtracted (fixed costs)

# A fake server that also notes when its first request came and its last reply left
# (wall clock, comparable across processes). Commands on stdin: "stats", "reset"; EOF stops it.
SERVER = """
import json, sys, time
from tests.fake_openai_server import FakeOpenAIServer

class Timed(FakeOpenAIServer):
    arrivals = []
    last = None
    async def _respond(self, *args):
        self.arrivals.append(time.time())
        try:
            return await super()._respond(*args)
        finally:
            self.last = time.time()

s = Timed(latency=float(sys.argv[1])).start()
print(s.url, flush=True)
for line in sys.stdin:
    if line.strip() == "reset":
        s.reset_counts()
        s.arrivals, s.last = [], None
        print("ok", flush=True)
    else:
        with s._lock:
            calls = dict(s.calls)
        print(json.dumps({"requests": s.requests, "distinct": len(calls),
                          "max_per_body": max(calls.values(), default=0),
                          "arrivals": s.arrivals, "last": s.last,
                          "cpu_s": time.process_time()}), flush=True)
s.stop()
"""


class Server:
    """One fake replica in its own process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(LATENCY)], env=env,
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        return json.loads(line) if line.startswith("{") else line

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def experiment(urls: list[str], n_prompts: int, cache_dir: str, tag: str, per_worker: int
               ) -> str:
    items = ",\n  ".join(f'{{ text = "Scaling prompt {i}{tag}." }}' for i in range(n_prompts))
    quoted = ", ".join(f'"{u}"' for u in urls)
    # No [concurrency] section: the backend's own limit (per replica, per worker) applies.
    return f"""
[experiment]
name = "scaling"
cache_dir = "{cache_dir}"

[[models]]
backend = "openai"
model = "bench-model"
options = {{ base_urls = [{quoted}], max_concurrency = {per_worker}, timeout_s = 30 }}

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


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli(path: Path, workers: int, env: dict[str, str]) -> tuple[float, float]:
    """Run ``steerstats collect`` on ``path``: (wall seconds, CPU seconds of its processes).
    The CLI waits for its workers, so their CPU time is in ours for its children."""
    c0, t0 = children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "steerstats", "collect", str(path), "-q",
                    "--workers", str(workers)], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    return time.perf_counter() - t0, children_cpu_s() - c0


def fresh_plan(tmp: Path, name: str, urls: list[str], calls: int, workers: int) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(experiment(urls, calls, str(tmp / f"{name}-cache"), f" ({name})",
                               max(1, PER_REPLICA // workers)))
    return path


def steady_rate(arrivals: list[float]) -> float:
    """Requests per second between the 10% and the 90% arrival."""
    t = sorted(arrivals)
    lo, hi = len(t) // 10, len(t) * 9 // 10
    return (hi - lo) / (t[hi] - t[lo]) if hi > lo and t[hi] > t[lo] else float("nan")


def run_once(tmp: Path, name: str, servers: list[Server], calls: int, workers: int,
             env: dict[str, str]) -> dict[str, Any]:
    urls = [s.url for s in servers]
    load_before = os.getloadavg()[0]
    _, cpu_small = cli(fresh_plan(tmp, f"{name}-small", urls, SMALL_CALLS, workers), workers, env)
    for s in servers:
        s.ask("reset")
    wall, cpu = cli(fresh_plan(tmp, name, urls, calls, workers), workers, env)
    stats = [s.ask("stats") for s in servers]
    requests = sum(st["requests"] for st in stats)
    arrivals = [t for st in stats for t in st["arrivals"]]
    window = max(st["last"] for st in stats if st["last"]) - min(arrivals)
    ideal = PER_REPLICA * len(urls) / LATENCY
    rate = steady_rate(arrivals)
    cpu_ms = 1000 * max(0.0, cpu - cpu_small) / max(1, requests - SMALL_CALLS)
    return {
        "replicas": len(urls), "workers": workers,
        "max_concurrency_per_worker": max(1, PER_REPLICA // workers),
        "calls": requests, "duplicates": requests - calls,
        "max_requests_per_body": max(st["max_per_body"] for st in stats),
        "calls_per_s": rate, "ideal_calls_per_s": ideal, "fraction_of_ideal": rate / ideal,
        "window_s": window, "window_calls_per_s": requests / window,
        "wall_s": wall, "wall_calls_per_s": requests / wall,
        "client_cpu_s": cpu, "client_cpu_s_small_run": cpu_small,
        "client_cpu_ms_per_call": cpu_ms,
        "cpu_bound_calls_per_s": 1000 / cpu_ms if cpu_ms > 0 else float("inf"),
        "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="generation calls per run")
    ap.add_argument("--repeats", type=int, default=1, help="runs per replicas x workers")
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)  # servers on 127.0.0.1 need no key
    servers = [Server(env) for _ in range(max(REPLICAS))]
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            cli(fresh_plan(tmp, "warmup", [s.url for s in servers], WARMUP_CALLS, 1), 1, env)
            for i in range(args.repeats):
                for n in REPLICAS:
                    for w in WORKERS:
                        run = run_once(tmp, f"r{n}-w{w}-{i}", servers[:n], args.calls, w, env)
                        runs.append(run)
                        print(f"{n} replica(s) x {w} worker(s): {run['calls']} calls, "
                              f"{run['calls_per_s']:.0f} calls/s steady "
                              f"({run['fraction_of_ideal']:.2f} of ideal "
                              f"{run['ideal_calls_per_s']:.0f}; "
                              f"{run['window_calls_per_s']:.0f}/s over the window, "
                              f"{run['wall_calls_per_s']:.0f}/s with start-up); "
                              f"{run['client_cpu_ms_per_call']:.2f} ms CPU per call; "
                              f"{run['duplicates']} duplicates; load "
                              f"{run['load_avg_1m_before']:.1f} -> "
                              f"{run['load_avg_1m_after']:.1f}", flush=True)
    finally:
        server_cpu = [s.ask("stats")["cpu_s"] for s in servers]
        for s in servers:
            s.close()

    def median(n: int, w: int, field: str) -> float:
        return statistics.median(r[field] for r in runs
                                 if r["replicas"] == n and r["workers"] == w)

    summary = {
        f"{n}x{w}": {
            **{field: median(n, w, field)
               for field in ("calls_per_s", "fraction_of_ideal", "client_cpu_ms_per_call")},
            "duplicates": sum(r["duplicates"] for r in runs
                              if r["replicas"] == n and r["workers"] == w),
        }
        for n in REPLICAS for w in WORKERS
    }
    write_result(ROOT / "benchmarks" / "results" / "collect_scaling.json", {
        "benchmark": "collect_scaling",
        "latency_s": LATENCY,
        "concurrency_per_replica": PER_REPLICA,
        "calls_per_run": args.calls,
        "runs": runs,
        "summary_replicas_x_workers": summary,
        "total_duplicates": sum(r["duplicates"] for r in runs),
        "server_cpu_s_total": sum(server_cpu),
        "cpus": os.cpu_count(),
        "niceness": os.nice(0),
        "note": "shared machine; see the load averages per run. calls_per_s is the steady "
                "rate (10%-90% of arrivals); window_calls_per_s and wall_calls_per_s include "
                "the first call's client set-up and (wall) process start-up",
    })


if __name__ == "__main__":
    main()
