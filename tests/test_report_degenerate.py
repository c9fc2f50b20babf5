"""The report renders on ordinary but degenerate results, on both render paths, and says in
one line what it cannot show: one arm, no baseline, no cost metric, all values NaN, judge
scores all unparsed, one query, one rater, one prompt, imported scores without responses, and
judge panels with one repeat or no parsed rating."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_tables

from steerstats.reporting import build_sections, load_report, to_html, write_report
from steerstats.reporting.content import Text

ROOT = Path(__file__).resolve().parents[1]
QMD = ROOT / "report" / "index.qmd"
FAILED_SECTION = "could not be built from these data"

Tidy = tuple[pd.DataFrame, pd.DataFrame]


def _keep(gens: pd.DataFrame, scores: pd.DataFrame, column: str, values: set[str]) -> Tidy:
    return (gens[gens[column].isin(values)].reset_index(drop=True),
            scores[scores[column].isin(values)].reset_index(drop=True))


def _nan(scores: pd.DataFrame, metrics: set[str] | None = None) -> pd.DataFrame:
    hit = scores["metric"].isin(metrics) if metrics else pd.Series(True, index=scores.index)
    out = scores.copy()
    out.loc[hit, "value"] = np.nan
    out.loc[hit, "reason"] = "unparsed: no <score> tag"
    return out


CASES: dict[str, tuple[Callable[[pd.DataFrame, pd.DataFrame], Tidy], list[str]]] = {
    "one_arm": (lambda g, s: _keep(g, s, "method", {"control"}),
                ["Not computed: no baseline method"]),
    "no_baseline": (lambda g, s: _keep(g, s, "method", {"caa"}),
                    ["Not computed: no baseline method"]),
    "no_cost_metric": (lambda g, s: (g[g["prompt_set"] == "open"].reset_index(drop=True),
                                     s[s["metric"] == "behavior"].reset_index(drop=True)),
                       ["no cost metric"]),
    "all_nan": (lambda g, s: (g, _nan(s)),
                ["No mean could be computed", "every rating is missing"]),
    "judges_unparsed": (lambda g, s: (g, _nan(s, {"behavior", "coherence"})), []),
    "one_query": (lambda g, s: _keep(g, s, "query_id", {"be-funny"}),
                  ["fewer than 6"]),
    "one_rater": (lambda g, s: (g, s[s["repeat"] == 0].reset_index(drop=True)),
                  ["Not computed: each response was judged once",
                   "With one judge (behavior and coherence), whether another judge",
                   "No decision study: one judge per metric"]),
    "two_judges_one_repeat": (
        lambda g, s: (g, report_tables.with_second_judge(s[s["repeat"] == 0])),
        ["With one judging per judge (behavior and coherence), how much a judge disagrees",
         "what more repeats per judge would buy is unknown"]),
    "two_judges_all_nan": (lambda g, s: (g, _nan(report_tables.with_second_judge(s))),
                           ["every rating is missing"]),
    "one_prompt": (lambda g, s: _keep(g, s, "prompt_id", {"common-00", "mmlu-000"}), []),
    "no_responses": (lambda g, s: (g.iloc[0:0], s),
                     ["No responses are in these results"]),
}


@pytest.fixture(scope="module")
def base() -> Tidy:
    return report_tables.tidy()


def _folder(tmp_path: Path, name: str, base: Tidy) -> Path:
    build, _ = CASES[name]
    gens, scores = build(base[0].copy(), base[1].copy())
    return report_tables.write_folder(tmp_path / name, gens, scores,
                                      with_judgements=name != "no_responses")


def _texts(sections: list) -> str:  # type: ignore[type-arg]
    return "\n".join(b.markdown for s in sections for b in s.blocks if isinstance(b, Text))


@pytest.mark.parametrize("name", list(CASES))
def test_degenerate_folder_renders_on_both_paths(name: str, base: Tidy, tmp_path: Path) -> None:
    folder = _folder(tmp_path, name, base)
    _, expected_notes = CASES[name]
    # The built-in page.
    page = write_report(folder, tmp_path / "out", renderer="builtin")
    html = page.read_text(encoding="utf-8")
    assert FAILED_SECTION not in html
    sections = build_sections(load_report(folder))
    prose = _texts(sections)
    assert FAILED_SECTION not in prose
    for note in expected_notes:
        assert note in prose, (note, prose[:2000])
    for section in sections:
        assert f'<section id="{section.id}"' in html
        assert section.blocks, section.id  # every section says something, if only one line
    # The qmd's code, run without Quarto: the same sections as Markdown.
    markdown = "".join(report_tables.run_qmd(QMD, folder))
    assert FAILED_SECTION not in markdown
    for section in sections:
        assert f"{{#{section.id}}}" in markdown
    assert to_html(load_report(folder), sections).count("<section ") == len(sections)


def test_imported_scores_without_responses_or_judgements(base: Tidy, tmp_path: Path) -> None:
    folder = _folder(tmp_path, "no_responses", base)
    sections = {s.id: s for s in build_sections(load_report(folder))}
    samples = sections["samples"].blocks
    assert len(samples) == 1 and isinstance(samples[0], Text)
    assert samples[0].markdown.startswith("No responses are in these results")
