"""Collector throughput against the fake OpenAI-compatible server, beside its ceilings.

One run, one local server (its own process, 50 ms latency per reply), concurrency 32, the same
number of calls for each contender, each on distinct request bodies:

- ``aiohttp``: a raw aiohttp loop (the machine's ceiling for HTTP from one Python process);
- ``sdk``: a bare ``AsyncOpenAI`` loop on the same transport steerstats uses (the SDK's
  aiohttp client, retries off, ``chat.completions.create``) - the goal's reference;
- ``steerstats``: ``collect()`` in-process (claims, ledger, cache and all), and the CLI
  (``steerstats collect -q``, process start-up included);
- ``workers``: the CLI with ``--workers 2`` against ``--workers 1`` on the same plan; the
  server counts request bodies, so duplicates would show;
- ``warm``: a re-run of a finished experiment: zero calls, cache lookups per second.

Goals: steerstats in-process >= 0.9 of the SDK loop; 0 duplicate requests with workers;
>= 20,000 cache lookups/s warm. The machine is shared (2 cores, other jobs): the load average
is recorded at start and end. Writes benchmarks/results/collect_throughput.json.

    PYTHONPATH=. python benchmarks/collect_throughput.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
CONCURRENCY = 32
KEY = "sk-benchmark-not-secret"

SERVER = """
import json, sys, time
from tests.fake_openai_server import FakeOpenAIServer
s = FakeOpenAIServer(latency=float(sys.argv[1])).start()
print(s.url, flush=True)
for line in sys.stdin:  # commands: stats, reset; EOF stops the server
    if line.strip() == "reset":
        s.reset_counts()
        print("ok", flush=True)
    else:
        with s._lock:
            calls = dict(s.calls)
        print(json.dumps({"requests": s.requests, "distinct": len(calls),
                          "max_per_body": max(calls.values(), default=0),
                          "cpu_s": time.process_time()}), flush=True)
s.stop()
"""


class Server:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
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


def body(i: int, tag: str) -> dict[str, Any]:
    return {"model": "bench-model", "temperature": 0.0, "max_tokens": 16, "seed": 0,
            "messages": [{"role": "user", "content": f"Benchmark prompt number {i}{tag}."}]}


async def _aiohttp_loop(url: str, n: int) -> float:
    import aiohttp

    sem = asyncio.Semaphore(CONCURRENCY)
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(i: int) -> None:
            async with sem, session.post(f"{url}/chat/completions",
                                         json=body(i, " (aiohttp)")) as resp:
                await resp.json()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0


async def _sdk_loop(url: str, n: int) -> float:
    from openai import AsyncOpenAI, DefaultAioHttpClient

    client = AsyncOpenAI(api_key=KEY, base_url=url, max_retries=0, timeout=30,
                         http_client=DefaultAioHttpClient(timeout=30))
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with sem:
            await client.chat.completions.create(**body(i, " (sdk)"))

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0
    finally:
        await client.close()


def experiment(url: str, n: int, cache_dir: Path, tag: str) -> str:
    items = ",\n  ".join(f'{{ text = "Benchmark prompt number {i}{tag}." }}' for i in range(n))
    return f"""
[experiment]
name = "throughput"
cache_dir = "{cache_dir}"

[[models]]
backend = "openai"
model = "bench-model"
options = {{ base_url = "{url}", timeout_s = 30 }}

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


def write_experiment(tmp: Path, name: str, url: str, n: int) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(experiment(url, n, tmp / f"{name}-cache", f" ({name})"))
    return path


def cli_run(path: Path, workers: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": KEY}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "steerstats", "collect", str(path), "-q",
                    "--workers", str(workers)], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per contender")
    args = ap.parse_args()
    n = args.calls
    os.environ["OPENAI_API_KEY"] = KEY

    from steerstats.collect import collect
    from steerstats.config import load_config

    load_start = os.getloadavg()[0]
    server = Server()
    results: dict[str, Any] = {}

    def measured(name: str, seconds: float, calls: int | None = None) -> None:
        stats = server.ask("stats")
        calls = stats["requests"] if calls is None else calls
        results[name] = {"calls": calls, "seconds": seconds, "calls_per_s": calls / seconds,
                         "server_requests": stats["requests"],
                         "max_requests_per_body": stats["max_per_body"],
                         "load_avg_1m_after": os.getloadavg()[0]}
        print(f"{name:>22}: {calls} calls in {seconds:.2f}s = {calls / seconds:.0f} calls/s "
              f"(server saw {stats['requests']}, max {stats['max_per_body']} per body; load "
              f"{os.getloadavg()[0]:.1f})")
        server.ask("reset")

    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            # warm-up: modules loaded, connections opened, as a long run would have
            asyncio.run(_sdk_loop(server.url, 100))
            collect(load_config(write_experiment(tmp, "warmup", server.url, 100)),
                    progress=False)
            server.ask("reset")

            measured("raw aiohttp loop", asyncio.run(_aiohttp_loop(server.url, n)))
            measured("bare AsyncOpenAI loop", asyncio.run(_sdk_loop(server.url, n)))
            cfg = load_config(write_experiment(tmp, "inprocess", server.url, n))
            summary = collect(cfg, progress=False)
            measured("steerstats in-process", summary.elapsed_s)
            measured("steerstats CLI", cli_run(write_experiment(tmp, "cli", server.url, n), 1))
            measured("CLI --workers 1", cli_run(write_experiment(tmp, "w1", server.url, n), 1))
            measured("CLI --workers 2", cli_run(write_experiment(tmp, "w2", server.url, n), 2))

            t0 = time.perf_counter()
            warm = collect(cfg, progress=False)
            warm_total = time.perf_counter() - t0
    finally:
        server.close()

    sdk = results["bare AsyncOpenAI loop"]["calls_per_s"]
    ours = results["steerstats in-process"]["calls_per_s"]
    lookups = warm.lookups / warm.lookup_s if warm.lookup_s > 0 else float("inf")
    payload = {
        "benchmark": "collect_throughput",
        "latency_s": LATENCY, "concurrency": CONCURRENCY, "calls": n,
        "ideal_calls_per_s": CONCURRENCY / LATENCY,
        "contenders": results,
        "steerstats_fraction_of_sdk": ours / sdk,
        "steerstats_cli_fraction_of_sdk": results["steerstats CLI"]["calls_per_s"] / sdk,
        "goal_fraction_of_sdk": 0.9,
        "workers_2_over_1": (results["CLI --workers 2"]["calls_per_s"]
                             / results["CLI --workers 1"]["calls_per_s"]),
        "workers_duplicate_requests": (results["CLI --workers 2"]["server_requests"] - n),
        "warm_calls": warm.calls, "warm_lookups": warm.lookups,
        "cache_lookups_per_s": lookups, "goal_cache_lookups_per_s": 20_000,
        "warm_rerun_s_incl_planning": warm_total,
        "cpus": os.cpu_count(), "niceness": os.nice(0), "load_avg_1m_start": load_start,
        "load_avg_1m_end": os.getloadavg()[0],
    }
    print(f"steerstats in-process = {ours / sdk:.2f} of the bare SDK loop (goal 0.9); CLI "
          f"{payload['steerstats_cli_fraction_of_sdk']:.2f} (start-up included)")
    print(f"--workers 2 / --workers 1 = {payload['workers_2_over_1']:.2f}; duplicate requests "
          f"{payload['workers_duplicate_requests']}")
    print(f"warm: {warm.calls} calls, {warm.lookups} lookups at {lookups:,.0f}/s (goal 20,000); "
          f"re-run incl. planning {warm_total:.2f}s")
    print(f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end, "
          f"{os.cpu_count()} CPUs (shared with other jobs)")
    write_result(ROOT / "benchmarks" / "results" / "collect_throughput.json", payload)


if __name__ == "__main__":
    main()
