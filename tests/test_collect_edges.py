"""Edge cases of the experiment file and the cache (issue 12 item 7): each is a one-line error
naming the file and the field (exit code 2) or a message, never a traceback or a silent no-op;
and `collect --check` with the dry run's wall-time estimate."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from steerstats.backends.base import GenerationRequest, GenerationResult, TransientError
from steerstats.cli import main
from steerstats.collect import RunSummary, collect
from steerstats.collect.cache import Cache, CacheError
from steerstats.collect.maintenance import check_cache
from steerstats.collect.metering import Meter, RetryPolicy
from steerstats.collect.printing import print_summary
from steerstats.config import load_config
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_collect_trust import KEY, write

GOOD = """
[experiment]
name = "edge"

[[models]]
backend = "mock"
model = "m1"

[[methods]]
name = "control"

[queries]
items = [{ text = "be brief" }]

[prompts.open]
items = [{ text = "Hello there." }]
"""


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["steerstats", *args]
    try:
        main()
        rc = 0
    except SystemExit as exc:
        rc = int(exc.code or 0)
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    rc, _, err = run_cli(args, capsys)
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def test_an_experiment_file_that_is_not_utf8(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.toml"
    path.write_bytes(GOOD.replace("be brief", "be br\xe9f").encode("latin-1"))
    one_line_error(["collect", str(path), "--dry-run"], capsys, str(path),
                   "not UTF-8 text: byte 0xe9 at line 13, column 25")


def test_a_prompts_file_that_is_not_utf8_or_a_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(GOOD.replace('items = [{ text = "Hello there." }]', 'file = "p.jsonl"'))
    (tmp_path / "p.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    one_line_error(["collect", str(path), "--dry-run"], capsys, "prompts.open.file",
                   "p.jsonl", "not UTF-8")
    (tmp_path / "p.jsonl").unlink()
    (tmp_path / "p.jsonl").mkdir()
    one_line_error(["collect", str(path), "--dry-run"], capsys, "prompts.open.file",
                   "is a directory")


def test_a_directory_given_as_the_experiment_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(["collect", str(tmp_path), "--dry-run"], capsys, str(tmp_path),
                   "is a directory")


@pytest.mark.parametrize(("old", "new", "field"), [
    ('items = [{ text = "be brief" }]', "items = []", "queries.items"),
    ('items = [{ text = "Hello there." }]', "items = []", "prompts.open.items"),
    ('name = "control"', 'name = "prompt"\nstrengths = [nan, 1.0]', "methods[0].strengths[0]"),
    ('[queries]', '[budget]\nmax_usd = inf\n\n[queries]', "budget.max_usd"),
    ('[queries]', '[retries]\ntimeout_s = nan\n\n[queries]', "retries.timeout_s"),
])
def test_empty_and_non_finite_values_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str,
        field: str) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(GOOD.replace(old, new, 1))
    one_line_error(["collect", str(path)], capsys, str(path), field)


def test_a_garbled_cache_names_the_file_and_the_way_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(GOOD)
    rc, _, err = run_cli(["collect", str(path), "-q"], capsys)
    assert rc == 0, err
    db = tmp_path / "cache" / "cache.db"
    db.write_bytes(b"this is not a database at all" * 100)
    one_line_error(["collect", str(path), "-q"], capsys, str(db), "steerstats cache check")
    one_line_error(["status", str(path)], capsys, str(db), "steerstats cache check")
    rc, out, _ = run_cli(["cache", "check", str(path)], capsys)
    assert rc == 1 and "cache.db: damaged" in out and "restore it from a backup" in out


def test_a_truncated_cache_is_reported_not_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(GOOD.replace('items = [{ text = "Hello there." }]', "items = [" + ", ".join(
        f'{{ text = "Prompt {i} {"x" * 200}" }}' for i in range(300)) + "]"))
    assert run_cli(["collect", str(path), "-q"], capsys)[0] == 0
    db = tmp_path / "cache" / "cache.db"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    rc, _, err = run_cli(["export", str(path), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "Traceback" not in err and "cache check" in err, err


def test_an_emptied_cache_after_collecting_is_an_error_not_a_fresh_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(GOOD)
    assert run_cli(["collect", str(path), "-q"], capsys)[0] == 0
    db = tmp_path / "cache" / "cache.db"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    db.write_bytes(b"")
    one_line_error(["collect", str(path), "-q"], capsys, str(db), "0 bytes",
                   "restore cache.db from a backup")
    with pytest.raises(CacheError):
        Cache(tmp_path / "cache")


def test_cache_check_counts_and_rebuilds_indexes(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(GOOD)
    assert run_cli(["collect", str(path), "-q"], capsys)[0] == 0
    rep = check_cache(tmp_path / "cache", rebuild=True)
    assert rep.ok and rep.counts["generations"] == 1 and rep.counts["ledger attempts"] == 1
    assert "cache.db" in rep.rebuilt
    rc, out, _ = run_cli(["cache", "check", str(tmp_path / "cache"), "--rebuild-indexes"],
                         capsys)
    assert rc == 0 and "holds: " in out and "1 generations" in out and "rebuilt" in out
    assert load_config(path) and collect(load_config(path), progress=False).calls == 0


class _Stubborn:
    """A backend whose server always says: come back in an hour."""

    name = "stubborn"
    model = "s"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        if self.calls == 1:
            raise TransientError("rate limited (429)", retry_after=3600)
        return GenerationResult("ok")

    def should_retry(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientError)

    def retry_after(self, exc: BaseException) -> float | None:
        return getattr(exc, "retry_after", None)

    def max_concurrency(self) -> int:
        return 1


def test_a_huge_retry_after_is_capped_with_a_message() -> None:
    notes: list[str] = []
    meter = Meter(retry=RetryPolicy(base_delay_s=0.001, max_retry_after_s=0.05),
                  on_event=notes.append)
    backend = _Stubborn()
    req = GenerationRequest(messages=[{"role": "user", "content": "hi"}])

    async def go() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await meter.call(backend, backend.generate, (req,), {}, request=req)  # type: ignore[arg-type]
        return loop.time() - t0

    took = asyncio.run(go())
    assert took < 5 and backend.calls == 2
    assert any("asked to wait 3600s (Retry-After); waiting 0s instead "
               "(retries.max_retry_after_s)" in n for n in notes), notes


def test_a_timeout_has_a_message() -> None:
    class Slow(_Stubborn):
        async def generate(self, request: GenerationRequest) -> GenerationResult:
            await asyncio.sleep(5)
            return GenerationResult("late")

    meter = Meter(retry=RetryPolicy(max_attempts=1, timeout_s=0.05))
    backend = Slow()
    req = GenerationRequest(messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(TimeoutError, match=r"no reply within 0.05s \(retries.timeout_s\)"):
        asyncio.run(meter.call(backend, backend.generate, (req,), {},  # type: ignore[arg-type]
                               request=req))


def test_the_budget_message_keeps_its_brackets() -> None:
    buf = io.StringIO()
    s = RunSummary(generations=3, budget_pending=2,
                   budget_note="budget reached: 3 of max_calls 3 calls made (raise [budget] in "
                               "the experiment file to spend more)")
    print_summary(Console(file=buf, width=200), s)
    assert "(raise [budget] in the experiment file to spend more)" in buf.getvalue()


def test_check_reports_latency_and_parsing_and_the_dry_run_uses_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(api_key=KEY, latency=0.2) as server:
        path = write(tmp_path, server.url, judge="behavior")
        rc, out, _ = run_cli(["collect", str(path), "--dry-run"], capsys)
        assert rc == 0 and "wall time: unknown until `steerstats collect --check`" in out
        rc, out, err = run_cli(["collect", str(path), "--check"], capsys)
        assert rc == 0, out + err
        assert server.requests == 2  # one generation, one judgement
        assert "generate target-model" in out and "judge behavior/judge-model" in out
        assert "0.2" in out and "yes" in out and "[concurrency]" in out
        rc, out, _ = run_cli(["collect", str(path), "--dry-run"], capsys)
        assert rc == 0 and "wall time ~" in out
        assert "latency measured by `steerstats collect --check`" in out
