"""The report's Judges section: a two-judge x two-repeat panel shows every judge-panel table on
both render paths; one judge or one repeat is said plainly, with what it leaves unknown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_tables

from steerstats.reporting import build_sections, load_report, section_markdown, write_report
from steerstats.reporting.content import Figure, Section, Table, Text
from steerstats.reporting.data import ReportData
from steerstats.reporting.judges import judges_section
from steerstats.reporting.sections import contrasts_section

ROOT = Path(__file__).resolve().parents[1]
QMD = ROOT / "report" / "index.qmd"


def _texts(section: Section) -> str:
    return "\n".join(b.markdown for b in section.blocks if isinstance(b, Text))


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gens, scores = report_tables.tidy()
    folder = tmp_path_factory.mktemp("panel") / "results"
    return report_tables.write_folder(folder, gens, report_tables.with_second_judge(scores))


def test_a_panel_shows_every_table_of_the_judges_section(panel: Path) -> None:
    section = judges_section(load_report(panel))
    text = _texts(section)
    assert "2 judges, judge\\-a (2 repeats) and judge\\-b (2 repeats)" in text
    assert "\nNo " not in "\n" + text  # every table is there
    tables = [b for b in section.blocks if isinstance(b, Table)]
    headers = [set(t.frame.columns) for t in tables]
    facet = tables[0].frame
    assert {"test-retest", "inter-rater"} <= set(facet["Facet"])
    assert {"judge-a", "judge-b", "all judges"} <= set(facet["Judge"])
    assert any("Component" in h for h in headers)            # G study
    assert any("Offset [95% CI]" in h for h in headers)      # rater bias
    assert any("Lower limit [95% CI]" in h for h in headers)  # Bland-Altman
    assert any("Holds under every judge" in h for h in headers)  # robustness
    figures = [b for b in section.blocks if isinstance(b, Figure)]
    assert [f.name for f in figures] == ["decision_study"]
    assert ("(solid: 1 repeat per judge; dashed: 2 repeats per judge; dotted: 3 repeats per "
            "judge)") in figures[0].caption
    assert "G ≥ 0.8" in text and "as collected (2 judges x 2 repeats)" in text
    # judge-b rates one point higher: its offset's interval excludes 0, and is listed.
    assert "judge\\-b on behavior: 0." in text
    assert "same Holm families as the pooled ones (one per model x metric x baseline)" in text
    # 4 queries: p-values are withheld, so no conclusion can be checked, and it says so.
    n = len(load_report(panel).tables["judge_robustness"])
    assert f"{n} of {n} pooled contrasts have no p-value (e.g. too few queries)" in text


def test_both_render_paths_draw_the_judges_section(panel: Path, tmp_path: Path) -> None:
    html = write_report(panel, tmp_path / "out", renderer="builtin").read_text(encoding="utf-8")
    assert '<section id="judges"' in html and 'id="fig-decision_study"' in html
    markdown = "".join(report_tables.run_qmd(QMD, panel))
    assert "## Judges {#judges}" in markdown and 'id="fig-decision_study"' in markdown
    section = next(s for s in build_sections(load_report(panel)) if s.id == "judges")
    assert section_markdown(section) in markdown


def test_one_judge_says_what_is_unknown(tmp_path: Path) -> None:
    gens, scores = report_tables.tidy()
    folder = report_tables.write_folder(tmp_path / "one", gens, scores)
    section = judges_section(load_report(folder))
    text = _texts(section)
    assert "- **behavior**: 1 judge, judge\\-a (2 repeats)." in text
    assert ("With one judge (behavior and coherence), whether another judge would give the "
            "same scores") in text
    # The facet table still has each judge's test-retest rows; the panel tables say why not.
    facet = next(b for b in section.blocks if isinstance(b, Table)).frame
    assert set(facet["Facet"]) == {"test-retest"}
    for what in ("generalizability study", "decision study", "rater bias estimates",
                 "Bland-Altman limits", "per-judge conclusions"):
        assert f"No {what}: one judge per metric" in text, what
    assert not any(isinstance(b, Figure) for b in section.blocks)


def test_one_repeat_and_no_tables_never_crash() -> None:
    judging = pd.DataFrame({"metric": ["behavior", "behavior"], "rater": ["a", "b"],
                            "n_repeats": [1, 1], "n_responses": [10, 10],
                            "n_ratings": [10, 10], "n_missing": [0, 0]})
    text = _texts(judges_section(ReportData({"judging": judging})))
    assert "With one judging per judge (behavior), how much a judge disagrees with itself" in text
    empty = judges_section(ReportData({}))
    assert empty.blocks and "No judged metric" in _texts(empty)
    nan_grid = pd.DataFrame({"method": [np.nan], "metric": ["behavior"], "n_raters": [1],
                             "n_repeats": [1], "collected": [True], "g": [np.nan],
                             "phi": [np.nan]})
    blocks = judges_section(ReportData({"decision_study": nan_grid})).blocks
    assert not any(isinstance(b, Figure) for b in blocks)
    assert "no design in the grid reaches G ≥ 0.8" in "\n".join(
        b.markdown for b in blocks if isinstance(b, Text))


def test_contrasts_state_the_holm_family_the_analysis_used(panel: Path) -> None:
    # The family is one model x metric x baseline (stats.holm_by_family), not the whole table.
    data = load_report(panel)
    first = contrasts_section(data).blocks[0]
    assert isinstance(first, Text)
    assert "Holm family: one per model x metric x baseline" in first.markdown
    shown = data.tables["contrasts"].query("n_pairs > 0")
    n = shown.groupby(["model", "metric", "baseline"]).ngroups
    assert n == 12  # 2 models x (accuracy, behavior, coherence) x (control, prompt)
    assert f"({n} families here)" in first.markdown


def test_robustness_lists_the_conclusions_another_judge_changes() -> None:
    rob = pd.DataFrame({
        "model": ["m", "m", "m"], "method": ["caa", "prompt", "<b>x</b>"],
        "strength": [1.0, np.nan, np.nan], "metric": ["behavior"] * 3,
        "baseline": ["control"] * 3, "diff": [0.5, 0.1, np.nan],
        "p_holm": [0.01, 0.4, np.nan],
        "conclusion": ["higher", "not significant", "not estimable"],
        "n_judges": [2, 2, 2], "same_sign": [2, 1, 0], "same_conclusion": [1, 2, 2],
        "holds_under_every_judge": [False, True, True],
        "sign_holds_under_every_judge": [True, False, False],
        "judges": ["a: higher (+0.60); b: not significant (+0.40)", "", ""]})
    blocks = judges_section(ReportData({"judge_robustness": rob})).blocks
    text = "\n".join(b.markdown for b in blocks if isinstance(b, Text))
    assert "1 of 3 pooled contrasts have no p-value" in text
    assert "1 of 2 testable conclusions hold under every judge; these do not:" in text
    assert "- caa \\@ 1 − control on behavior (m): pooled higher; a\\: higher" in text
    table = next(b for b in blocks if isinstance(b, Table)).frame
    assert "Model" not in table and list(table["Holds under every judge"]) == ["no", "yes", "yes"]
