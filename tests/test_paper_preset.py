"""presets/paper.toml: the seed study's design, checked through the dry run (no calls, no key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerstats.collect import estimate
from steerstats.config import init_experiment, load_config

pytestmark = pytest.mark.timeout(120)


def test_paper_preset_plans_the_seed_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GOODFIRE_API_KEY", "OPENAI_API_KEY", "GOODFIRE_BASE_URL"):
        monkeypatch.delenv(var, raising=False)  # a dry run needs neither key nor server
    cfg = load_config(init_experiment(tmp_path / "paper.toml", preset="paper"))
    assert [(m.name, m.backend, m.model) for m in cfg.models] == [
        ("Llama-3.1-8B", "goodfire", "meta-llama/Meta-Llama-3.1-8B-Instruct"),
        ("Llama-3.3-70B", "goodfire", "meta-llama/Llama-3.3-70B-Instruct"),
    ]
    methods = ["control", "prompt", "autosteer", "autosteer+prompt", "agentic"]
    assert [m.name for m in cfg.methods] == methods
    assert {(j.name, j.model, j.repeats) for j in cfg.judges} == {
        ("behavior", "gpt-4o-mini", 3),
        ("coherence", "gpt-4o-mini", 3),
        ("mmlu", None, None),  # computed: judged once
    }
    report = estimate(cfg)
    # 2 models x 5 methods x 14 queries x (10 topic + 20 common + 171 MMLU prompts)
    assert report.generations == 2 * 5 * 14 * (10 + 20 + 171)
    # behaviour and coherence x 3 repeats on every generation, MMLU grading on MMLU ones
    assert report.judgements == report.generations * 6 + 2 * 5 * 14 * 171
    # every model is priced, so the estimate is a number; Auto Steer and agentic resolutions
    # (3 methods x 2 models x 14 queries) are not resolved in a dry run
    total = report.totals()
    assert total.cost_usd is not None and 10 < total.cost_usd < cfg.budget.max_usd
    assert report.unresolved_units == 3 * 2 * 14
