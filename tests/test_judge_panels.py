"""Judge panels: two judges on the same metric, each its own rater id and repeats, end to end.

Runs against the fake OpenAI-compatible server on 127.0.0.1: collect, status, export, analyze.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerstats.analysis import analyze
from steerstats.cli import app
from steerstats.collect import status, with_plan
from steerstats.collect.cache import Cache
from steerstats.config import load_config
from steerstats.results import read_results
from tests.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-panel-0123456789abcdef"
N_GEN = 2 * 3 * 3  # methods x queries x prompts


def _experiment(tmp_path: Path, url: str) -> Path:
    ps = ", ".join(f'{{ text = "Prompt {i}: tell me about rivers." }}' for i in range(3))
    path = tmp_path / "panel.toml"
    path.write_text(f"""
[experiment]
name = "panel"
cache_dir = "cache"

[[models]]
backend = "openai"
model = "target-model"
options = {{ base_url = "{url}" }}

[[methods]]
name = "control"

[[methods]]
name = "prompt"

[queries]
items = [{{ text = "be terse" }}, {{ text = "be florid" }}, {{ text = "be formal" }}]

[prompts.open]
items = [{ps}]

[sampling]
max_tokens = 16
seed = 5

# The panel: the same rubric judged by two models, each with its own rater id and repeats.
[[judges]]
name = "behavior"
backend = "openai"
model = "judge-a"
repeats = 2
options = {{ base_url = "{url}" }}

[[judges]]
name = "behavior"
backend = "openai"
model = "judge-b"
rater = "judge-b-strict"
repeats = 3
options = {{ base_url = "{url}" }}

[pricing."target-model"]
input = 1.0
output = 2.0

[pricing."judge-a"]
input = 0.5
output = 1.0

[pricing."judge-b"]
input = 3.0
output = 6.0

[budget]
max_usd = 5.0

[retries]
base_delay_s = 0.01
""")
    return path


def test_two_judges_on_one_metric_run_end_to_end(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    runner = CliRunner()
    with FakeOpenAIServer(api_key=KEY) as server:
        path = _experiment(tmp_path, server.url)
        cfg = load_config(path)
        assert [j.label for j in cfg.judges] == ["behavior/judge-a", "behavior/judge-b-strict"]
        res = runner.invoke(app, ["collect", str(path), "--dry-run"])
        assert res.exit_code == 0, res.output
        assert f"{N_GEN} generation tasks, {N_GEN * (2 + 3)} judge tasks" in res.stdout

        res = runner.invoke(app, ["collect", str(path), "-q"])
        assert res.exit_code == 0 and "complete" in res.stdout, res.output
        # Control ignores the query, so its 3 prompts are generated once (3 + 9 generations),
        # but judged per query; every judging is its own request (judges and repeats differ).
        assert server.total_successes == (3 + 9) + N_GEN * (2 + 3)
        served = server.requests

        # A re-run of the finished panel makes no call.
        res = runner.invoke(app, ["collect", str(path), "-q"])
        assert res.exit_code == 0 and server.requests == served

    # Cache keys: one per judge x generation x repeat, none shared between the judges.
    keys: dict[str, set[str | None]] = {}
    for judge, key in with_plan(cfg, lambda p: [(j.judge, j.key) for j in p.judgements]):
        keys.setdefault(judge, set()).add(key)
    assert {k: len(v) for k, v in keys.items()} == {
        "behavior/judge-a": N_GEN * 2, "behavior/judge-b-strict": N_GEN * 3}
    assert not keys["behavior/judge-a"] & keys["behavior/judge-b-strict"]
    with Cache(tmp_path / "cache") as cache:
        assert all(cache.get(k) is not None for v in keys.values() for k in v)

    # status: done and spend per judge; the spend adds up to the ledger's total.
    report = status(cfg)
    per_stage: dict[str, list[float]] = {}
    for row in report.rows:
        acc = per_stage.setdefault(row.stage, [0, 0, 0.0])
        acc[0] += row.done
        acc[1] += row.pending + row.failed
        acc[2] += row.spend_usd
    assert per_stage["behavior/judge-a"][:2] == [N_GEN * 2, 0]
    assert per_stage["behavior/judge-b-strict"][:2] == [N_GEN * 3, 0]
    # judge-b costs 6x judge-a per token and judges 1.5x as often.
    assert per_stage["behavior/judge-b-strict"][2] > 5 * per_stage["behavior/judge-a"][2] > 0
    assert sum(v[2] for v in per_stage.values()) == pytest.approx(report.spent_usd)
    assert report.spent_usd < 5.0
    res = runner.invoke(app, ["status", str(path)])
    assert res.exit_code == 0
    assert "behavior/judge-a" in res.stdout and "behavior/judge-b-strict" in res.stdout

    # Export: one rater per judge, each with its own repeats; analyze sees a panel.
    res = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    scores = read_results(tmp_path / "res").scores
    beh = scores[scores["metric"] == "behavior"]
    assert beh.groupby("rater")["repeat"].nunique().to_dict() == {"judge-a": 2,
                                                                  "judge-b-strict": 3}
    tables = analyze(tmp_path / "res", n_boot=100)
    for name in ("rater_reliability", "g_study", "decision_study", "rater_bias", "bland_altman"):
        assert name in tables, tables["skipped"].to_string()
    tr = tables["rater_reliability"].query("facet == 'test-retest'")
    assert set(tr["rater"]) == {"judge-a", "judge-b-strict"}
    assert set(tables["rater_bias"]["rater"]) == {"judge-a", "judge-b-strict"}


def test_the_openai_presets_commented_panel_is_a_valid_panel(tmp_path: Path) -> None:
    from steerstats.config import init_experiment

    text = init_experiment(tmp_path / "openai.toml", "openai").read_text()
    start = text.index('# [[judges]]\n# name = "behavior"')
    end = text.index("# output = 0.0", start) + len("# output = 0.0")
    block = "\n".join(line[2:] if line.startswith("# ") else "" if line == "#" else line
                      for line in text[start:end].splitlines())
    path = tmp_path / "panel.toml"
    path.write_text(text[:start] + block + text[end:])
    cfg = load_config(path)
    beh = [j for j in cfg.judges if j.name == "behavior"]
    assert [j.rater_label for j in beh] == ["gpt-4o-mini", "open-judge"]
    assert [j.repeats for j in beh] == [2, 2]
