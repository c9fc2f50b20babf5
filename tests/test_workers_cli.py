"""``steerstats collect --workers 2`` through the CLI against the fake OpenAI server: the plan is
completed with every request sent exactly once, both processes do a share of it, and the
budget holds across them. Servers are on 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from steerstats.collect import collect
from steerstats.collect.cache import Cache
from steerstats.collect.run import claim_window
from steerstats.collect.session import Session
from steerstats.config import load_config
from tests.fake_openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-workers-0123456789abcdef"
NAME = "workers"


def write(tmp_path: Path, url: str, *, prompts: int, extra: str = "",
          options: str = "max_concurrency = 4") -> Path:
    """An experiment of ``prompts`` control generations; ``options`` follow ``base_url``
    (or replace it when they name ``base_urls``)."""
    ps = ", ".join(f'{{ text = "Worker prompt {i}." }}' for i in range(prompts))
    endpoint = "" if "base_urls" in options else f'base_url = "{url}", '
    path = tmp_path / "exp.toml"
    path.write_text(f"""
[experiment]
name = "{NAME}"
cache_dir = "cache"

[[models]]
backend = "openai"
model = "target-model"
options = {{ {endpoint}{options} }}

[[methods]]
name = "control"

[queries]
items = [{{ text = "be terse" }}]

[prompts.open]
items = [{ps}]

[sampling]
max_tokens = 16
seed = 3

[retries]
base_delay_s = 0.01
{extra}
""", encoding="utf-8")
    return path


def collect_cli(path: Path, workers: int) -> subprocess.CompletedProcess[str]:
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "OPENAI_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "steerstats", "collect", str(path), "-q",
                           "--workers", str(workers)], env=env, cwd=path.parent,
                          capture_output=True, text=True, timeout=300)


def attempts_by_owner(path: Path) -> Counter[str]:
    with Cache(path.parent / "cache") as cache:
        return Counter(a["owner"] for a in cache.ledger.attempts(NAME))


def test_two_workers_send_each_request_once_and_share_the_plan(tmp_path: Path) -> None:
    n = 120  # alone, one worker needs 6 s (2 in flight, 0.1 s each): start-up skew is small
    with FakeOpenAIServer(api_key=KEY, latency=0.1) as server:
        path = write(tmp_path, server.url, prompts=n, options="max_concurrency = 2")
        p = collect_cli(path, 2)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "complete" in p.stdout
        assert server.requests == n and len(server.calls) == n
        assert max(server.calls.values()) == 1
    owners = attempts_by_owner(path)
    assert sum(owners.values()) == n
    # Each process claims about twice the calls it may have in flight, not the whole plan:
    # with a 1024-task window the first to start claimed all 120 and the other idled.
    assert len(owners) == 2 and min(owners.values()) >= n // 10, owners


def test_two_workers_hold_max_calls_between_them(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.03) as server:
        path = write(tmp_path, server.url, prompts=120, extra="[budget]\nmax_calls = 50\n")
        p = collect_cli(path, 2)
        assert p.returncode == 1, p.stdout + p.stderr  # not complete: the budget stopped it
        assert "budget reached" in p.stdout
        assert server.requests == 50 and max(server.calls.values()) == 1
    assert sum(attempts_by_owner(path).values()) == 50
    with Cache(path.parent / "cache") as cache:
        assert cache.ledger.totals(NAME).calls == 50
        assert len(list(cache.results())) == 50


def test_worker_i_of_n_starts_i_n_of_the_way_through_the_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers that all began at the first task tried every claim the others held: about
    # 3,900 claims for 2,000 calls with two workers (benchmarks/collect_scaling.py).
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY, latency=0.02) as server:  # one call at a time
        path = write(tmp_path, server.url, prompts=10, options="max_concurrency = 1")
        collect(load_config(path), progress=False, share=(1, 2))
        assert server.requests == 10
    with Cache(path.parent / "cache") as cache:
        records = sorted(cache.results(), key=lambda r: r["finished_at"])
    order = [r["task"]["prompt_id"] for r in records]
    ids = sorted(order)  # custom-00 ... custom-09
    assert order == ids[5:] + ids[:5], order


def test_claim_window_is_about_twice_the_calls_in_flight(tmp_path: Path) -> None:
    def window(options: str, extra: str = "") -> int:
        cfg = load_config(write(tmp_path, "http://127.0.0.1:9/v1", prompts=1, extra=extra,
                                options=options))
        session = Session(cfg, dry=True)
        try:
            gen = type("G", (), {"model": cfg.models[0].name})()
            return claim_window(session, [gen], [])  # type: ignore[list-item]
        finally:
            session.cache.close()

    assert window("max_concurrency = 16") == 32
    assert window("max_concurrency = 1") == 8  # never fewer than 8 tasks alive
    assert window("max_concurrency = 5000") == 1024  # never more than WINDOW
    assert window("max_concurrency = 16", "[concurrency]\ndefault = 40\n") == 80
    two = 'base_urls = ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]'
    assert window(f"{two}, max_concurrency = 16") == 64  # 16 per replica
