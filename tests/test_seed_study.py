"""The seed-study re-analysis, run on the real published rows (skipped without ../shared)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _shared import ROOT, shared_path

SEED = shared_path("seed-study", "results")
SHARED = SEED.parents[1] if SEED is not None else None

pytestmark = pytest.mark.skipif(
    SEED is None,
    reason="the seed study's data is not in ../shared/seed-study/results (set STEERSTATS_SHARED "
    "to the shared folder)",
)


def test_seed_study_report(tmp_path: Path) -> None:
    out = tmp_path / "seed"
    done = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "seed_study" / "run.py"), "--shared",
         str(SHARED), "--out", str(out), "--n-boot", "200"],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    page = Path(done.stdout.strip().splitlines()[-1])
    assert page == out / "report" / "index.html"
    html = page.read_text()
    for anchor in ("data", "contamination", "published-means", "survive", "widths",
                   "query-variance", "limits", "mmlu-means", "mmlu-contrasts", "mmlu-power",
                   "open-means", "open-power", "methods"):
        assert f'<section id="{anchor}"' in html, anchor
    assert "<script" not in html

    tests = pd.read_csv(out / "published_tests.csv")
    # The MMLU snapshot has control, prompt and autosteer: 3 pairs x 3 metrics of the 18
    # published Llama-3.1-8B tests, 7 of them published as significant
    # (paper_pairwise_ttests_bonferroni.csv: all but prompt-control accuracy and coherence).
    assert len(tests) == 9 and int(tests["published_significant"].sum()) == 7
    row = tests[(tests.metric == "accuracy") & (tests.method == "autosteer")
                & (tests.baseline == "control")].iloc[0]
    assert row["published_diff"] == pytest.approx(-0.1787)  # "Control vs Auto Steer", 0.1787
    # Pairing can help (it removes question and prompt difficulty: down to 0.67 of the naive
    # width on MMLU accuracy with the two-way moment interval, which no longer triple-counts
    # the residual), clustering by query widens (up to ~6x for behaviour).
    assert (tests["width_ratio"] > 0.6).all() and tests["width_ratio"].median() > 1.0
    # One judging per response: the report says reliability cannot be estimated.
    assert "judged once per response" in html
    means = pd.read_csv(out / "published_means.csv")
    assert set(means.loc[means["mean"].isna(), "method"]) == {"autosteer+prompt"}

    # Issue 16: every MMLU "Auto Steer" row carries the prompt method's instruction in its
    # system prompt (389 of 389; control 0 of 450): those rows are Auto Steer + prompt, and the
    # published Auto Steer numbers are set beside them, saying so.
    found = pd.read_csv(out / "contamination.csv").set_index(["study", "label"])
    assert found.loc[("mmlu", "autosteer"), ["rows", "contaminated"]].tolist() == [389, 389]
    assert found.loc[("mmlu", "control"), ["rows", "with_instruction"]].tolist() == [450, 0]
    assert found.loc[("mmlu", "prompt"), ["rows", "with_instruction"]].tolist() == [449, 449]
    assert found.loc[("mmlu", "autosteer"), "imported_as"] == "autosteer+prompt"
    assert found.xs("open")["contaminated"].sum() == 0
    assert "389 of 389 rows the study labelled Auto Steer carry" in html
    assert "what steering adds on top of the same prompt" in html
    assert set(tests.loc[tests.method == "autosteer", "rows_method"]) == {"autosteer+prompt"}
    assert tests["paired_diff"].notna().all()  # every published test found its rows
    auto = means[(means.method == "autosteer")]
    assert set(auto["rows_method"]) == {"autosteer+prompt"} and auto["mean"].notna().all()
    flagged = pd.read_csv(out / "mmlu" / "flagged.csv")
    assert (flagged["kind"] == "contaminated").sum() == 389  # listed whether imported or not
