"""Collection you can trust with money (issue 12): one request per key across processes, a
budget that survives kills and failures, secrets kept off disk, visible timeouts, judge replies
kept, honest completion and the pilot scope remembered. Servers are on 127.0.0.1 only."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import tests.fake_openai_server as fake
from steerstats.cli import app
from steerstats.collect import collect, status
from steerstats.collect.cache import Cache
from steerstats.collect.export import export
from steerstats.config import load_config
from steerstats.results import read_results
from tests.fake_openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-trust-0123456789abcdefXYZ"


def write(tmp_path: Path, url: str, *, prompts: int = 6, extra: str = "", judge: str =
          "test-rubric", retries: str = "base_delay_s = 0.01", model_options: str = "",
          concurrency: int = 3) -> Path:
    ps = ", ".join(f'{{ text = "Prompt number {i} about the world." }}' for i in range(prompts))
    opts = model_options or f'base_url = "{url}"'
    path = tmp_path / "exp.toml"
    path.write_text(f"""
[experiment]
name = "trust"
cache_dir = "cache"
plugins = ["tests.collect_plugins"]

[[models]]
backend = "openai"
model = "target-model"
options = {{ {opts} }}

[[methods]]
name = "control"

[[methods]]
name = "prompt"

[queries]
items = [{{ text = "be terse" }}, {{ text = "be florid" }}]

[prompts.open]
items = [{ps}]

[sampling]
max_tokens = 16
seed = 5

[[judges]]
name = "{judge}"
backend = "openai"
model = "judge-model"
options = {{ base_url = "{url}" }}

[concurrency]
backends = {{ openai = {concurrency} }}

[retries]
{retries}
{extra}
""", encoding="utf-8")
    return path


def env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OPENAI_API_KEY": KEY}


def _interactive_sigint() -> None:
    """Ctrl-C as at a terminal: a suite started in the background (`make test &`, nohup) has
    SIGINT ignored, and a child inherits that, so the Ctrl-C test's signal did nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "steerstats", *args], env=env(), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interactive_sigint)


def ledger_calls(path: Path) -> int:
    with Cache(path.parent / "cache") as cache:
        return cache.ledger.totals("trust").calls


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


# 6 control + 12 prompt generations, 24 rubric judgements: 42 distinct requests
ALL = 6 + 12 + 24


def test_two_concurrent_collects_serve_every_body_once(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.03) as server:
        path = write(tmp_path, server.url)
        procs = [cli("collect", str(path), "-q", cwd=tmp_path) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        assert max(server.calls.values()) == 1 and server.requests == ALL
        assert ledger_calls(path) == ALL


def test_two_concurrent_collects_hold_max_calls_together(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.03) as server:
        path = write(tmp_path, server.url, extra="[budget]\nmax_calls = 20\n")
        procs = [cli("collect", str(path), "-q", cwd=tmp_path) for _ in range(2)]
        for p in procs:
            p.communicate(timeout=300)
        assert server.requests == 20 and max(server.calls.values()) == 1
        st = status(load_config(path))
        assert st.ledger.calls == 20


def test_workers_option_shares_one_plan(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.03) as server:
        path = write(tmp_path, server.url)
        p = cli("collect", str(path), "-q", "--workers", "2", cwd=tmp_path)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err
        assert "complete" in out
        assert max(server.calls.values()) == 1 and server.requests == ALL


def test_three_kills_mid_run_never_exceed_max_calls(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.5) as server:
        path = write(tmp_path, server.url, extra="[budget]\nmax_calls = 25\n")
        for _ in range(3):
            before = server.requests
            proc = cli("collect", str(path), "-q", cwd=tmp_path)
            try:
                deadline = time.monotonic() + 60
                while server.requests < before + 4 and time.monotonic() < deadline:
                    assert proc.poll() is None, proc.communicate()
                    time.sleep(0.02)
                assert server.requests >= before + 4
            finally:  # killed with calls in flight: sent (billed) but never answered
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            assert server.requests <= 25
        final = cli("collect", str(path), "-q", cwd=tmp_path)
        out, _ = final.communicate(timeout=300)
        assert "budget reached: 25 of max_calls 25" in out
        assert server.requests <= 25  # the in-flight attempts counted against the cap
        assert ledger_calls(path) == 25 >= server.requests


def test_failed_attempts_then_success_then_rerun_never_lowers_the_count(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY) as server:
        path = write(tmp_path, server.url, prompts=1,
                     retries="base_delay_s = 0.01\nmax_attempts = 2")
        cfg = load_config(path)
        server.inject("500", count=4, match="Prompt number 0")
        collect(cfg, progress=False)
        seen = [status(cfg).ledger.calls]
        assert seen[0] == server.requests
        collect(cfg, progress=False)  # the failures now succeed
        seen.append(status(cfg).ledger.calls)
        collect(cfg, progress=False)  # nothing left to do
        seen.append(status(cfg).ledger.calls)
        assert seen == sorted(seen) and seen[-1] == server.requests
        assert status(cfg).ledger.failed == 4


def test_a_key_in_the_base_url_never_reaches_disk(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    secret = "abcd1234efgh5678ijkl9012mnop"
    with FakeOpenAIServer(api_key=KEY) as server:
        base = server.url.replace("/v1", f"/{secret}/v1")
        userinfo = server.url.replace("http://", f"http://user:{secret}@")
        path = write(tmp_path, server.url, prompts=2,
                     model_options=f'base_url = "{base}"')
        path.write_text(path.read_text().replace(
            f'model = "judge-model"\noptions = {{ base_url = "{server.url}" }}',
            f'model = "judge-model"\noptions = {{ base_url = "{userinfo}" }}'))
        cfg = load_config(path)
        summary = collect(cfg, progress=False)
        # the client refuses user:key@ beside a bearer key: the judge's failures (with their
        # error texts, which quote the URL) are on disk too, and must not carry the key either
        assert summary.new_generations == 6 and summary.failed_judgements == 8
        export(cfg, tmp_path / "results")
    found = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "exp.toml"
             and secret.encode() in p.read_bytes()]
    assert found == []
    for p in (tmp_path / "cache").rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes()


@pytest.mark.parametrize("option", [
    "extra_body = { api_key = \"sk-abc\" }",
    "extra_body = { nested = { Authorization = \"Bearer x\" } }",
    "extra_headers = { x-api-key = \"k\" }",
    "token = \"abc\"",
])
def test_credential_options_are_refused_naming_the_field_and_variable(
        tmp_path: Path, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "http://127.0.0.1:9/v1",
                 model_options=f'base_url = "http://127.0.0.1:9/v1", {option}')
    rc, err = run_main(["collect", str(path), "--dry-run"], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    field = option.split(" = ")[0]
    assert f"models[0]: options.{field}" in err and "OPENAI_API_KEY" in err
    assert str(path) in err


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from steerstats import cli as cli_module

    old = sys.argv
    sys.argv = ["steerstats", *args]
    try:
        cli_module.main()
        rc = 0
    except SystemExit as exc:
        rc = int(exc.code or 0)
    finally:
        sys.argv = old
    return rc, capsys.readouterr().err


def test_a_slow_server_shows_and_counts_timeouts_and_retries(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=1.0) as server:
        path = write(tmp_path, server.url, prompts=1, concurrency=2,
                     retries="base_delay_s = 0.01\nmax_attempts = 2\ntimeout_s = 0.3")
        cfg = load_config(path)
        buf = io.StringIO()
        out = Console(file=buf, width=250, force_terminal=False)
        summary = collect(cfg, progress=True, console=out)
    text = buf.getvalue()
    assert "timeout: openai/target-model attempt 1 had no reply after 0.3s; retrying in" in text
    assert "giving up after 2 attempt(s)" in text
    assert summary.timeouts == summary.calls > 0 and summary.retries > 0
    assert "in flight 0 retries" in text and f"timeouts {summary.timeouts}" in text
    st = status(cfg)
    assert st.ledger.timeouts == summary.timeouts and st.ledger.retries == summary.retries
    failed = [f for f in st.failures if "no reply within 0.3s" in f["error"]]
    assert failed  # a timed-out attempt has a message, not "TimeoutError: "


def test_an_unparsed_judge_is_warned_early_and_the_final_line_is_honest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = fake.reply_text

    def no_tags(body: dict[str, object]) -> str:
        text = plain(body)  # type: ignore[arg-type]
        return "A fine reply, I would say." if "<score>" in text else text

    monkeypatch.setattr(fake, "reply_text", no_tags)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as server:
        path = write(tmp_path, server.url, judge="behavior")
        runner = CliRunner()
        res = runner.invoke(app, ["collect", str(path), "-q"])
    assert res.exit_code == 0, res.output
    assert "judge behavior/judge-model: 20 of its first 20 scores could not be parsed" in (
        res.output)
    assert "every task has a result; 24 of 24 scores unparsed (100%)" in res.stdout
    assert "[green]complete" not in res.stdout and "complete: every" not in res.stdout
    res = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    r = read_results(tmp_path / "r")
    assert r.judgements is not None and len(r.judgements) == 24
    assert (r.judgements["reply"] == "A fine reply, I would say.").all()
    merged = r.scores.merge(r.judgements, on=["key", "rater", "repeat", "query_id"])
    assert len(merged) == 24 and merged["value"].isna().all()
    assert merged["reason"].eq("unparsed: no <score> tag").all()


def test_the_pilot_scope_is_remembered_by_status_and_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steerstats.analysis.analyze import analyze

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    runner = CliRunner()
    with FakeOpenAIServer(api_key=KEY) as server:
        path = write(tmp_path, server.url)
        res = runner.invoke(app, ["collect", str(path), "-q", "--limit-queries", "1",
                                  "--limit-prompts", "2"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["status", str(path)])
    assert "--limit-queries 1 --limit-prompts 2" in res.output and " pending" in res.output
    rows = [line.split("│") for line in res.stdout.splitlines() if "│ control" in line
            or "│ prompt" in line]
    assert rows and all(r[6].strip() == "0" for r in rows)  # nothing pending in the pilot
    res = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "pilot")])
    assert res.exit_code == 0
    assert len(read_results(tmp_path / "pilot").generations) == 4  # 1 query x 2 prompts x 2
    res = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "all"), "--all"])
    full = read_results(tmp_path / "all")
    # the control generations are shared by both queries: 6 of 24 have responses, 18 pending
    assert len(full.generations) == 24 and full.generations["error"].notna().sum() == 18
    tables = analyze(tmp_path / "all", n_boot=50)
    assert (tables["parse_failures"]["n_unparsed"] == 0).all()
    assert tables["parse_failures"]["n_ratings"].sum() == 4


def test_ctrl_c_books_the_calls_in_flight(tmp_path: Path) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.5) as server:
        path = write(tmp_path, server.url, extra="[budget]\nmax_calls = 30\n")
        proc = cli("collect", str(path), "-q", cwd=tmp_path)
        deadline = time.monotonic() + 60
        while server.requests < 4 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, out + err
        assert "interrupted" in err
        with Cache(tmp_path / "cache") as cache:
            t = cache.ledger.totals("trust")
            states = {a["state"] for a in cache.ledger.attempts("trust")}
        # every attempt sent is booked; the interrupted ones settled as cancelled, none lost
        assert t.calls >= server.requests and t.unsettled == 0
        assert "cancelled" in states
