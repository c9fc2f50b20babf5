"""The report: the Quarto document's cells, the built-in renderer, and the page in Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import report_tables

from steerstats.reporting import (
    ReportData,
    build_sections,
    load_report,
)
from steerstats.reporting import sections as sec
from steerstats.reporting.content import Figure, Table, Text
from steerstats.reporting.render import block_html
from steerstats.reporting.samples import FILTER_JS
from steerstats.reporting.sections import SECTIONS
from steerstats.results import write_results

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results directory whose analysis tables are already written."""
    path = tmp_path_factory.mktemp("results")
    generations, scores = report_tables.tidy()
    write_results(path, generations, scores, {"source": "test"})  # first: analysis is newer
    report_tables.judgements(scores).to_parquet(path / "judgements.parquet", index=False)
    analysis = path / "analysis"
    analysis.mkdir()
    for name, table in report_tables.tables().items():
        table.to_csv(analysis / f"{name}.csv", index=False)
    (path / "manifest.json").write_text(json.dumps({
        "steerstats_version": "0.1.0", "created_at": "2026-01-02T03:04:05Z",
        "experiment_digest": "ab" * 32,
    }))
    return path


qmd_cells = report_tables.qmd_cells
run_qmd = report_tables.run_qmd


def test_qmd_cells_render_every_section(results_dir: Path) -> None:
    qmd = ROOT / "report" / "index.qmd"
    cells = qmd_cells(qmd)
    assert any("parameters" in o for opts, _ in cells for o in opts), "no parameters cell"
    assert 'results = "results/demo"' in qmd.read_text()  # the demo's results by default
    outputs = run_qmd(qmd, results_dir)
    markdown = "".join(outputs)
    data = load_report(results_dir)
    expected = build_sections(data)
    assert len(expected) == len(SECTIONS)
    for section in expected:
        assert markdown.count(f"{{#{section.id}}}") == 1, section.id
        # The cells print the same section objects, as the same HTML, as the built-in renderer.
        first = section.blocks[0]
        assert isinstance(first, Text) and block_html(first) in markdown
    n_figures = sum(isinstance(b, Figure) for s in expected for b in s.blocks)
    assert markdown.count('<figure class="chart') == n_figures >= 7
    assert markdown.count("<script") == 1 and FILTER_JS in markdown and "<table" in markdown
    # Every asis cell's output is balanced raw-HTML fencing (pandoc would otherwise swallow
    # the rest of the document).
    for out in outputs:
        assert fences_balanced(out)


def fences_balanced(markdown: str) -> bool:
    """True when every raw-HTML block opened by a backtick fence is closed by the same fence."""
    open_fence = None
    for line in markdown.splitlines():
        if open_fence is None:
            m = re.match(r"^(`{3,})\{=html\}$", line)
            if m:
                open_fence = m.group(1)
            elif line.startswith("```"):
                return False
        elif line == open_fence:
            open_fence = None
    return open_fence is None


def test_text_numbers_come_from_tables(results_dir: Path) -> None:
    data = load_report(results_dir)
    contrasts = data.tables["contrasts"]
    text = sec.contrasts_section(data).blocks[0].markdown  # type: ignore[union-attr]
    n_sig = int((contrasts["p_holm"] < 0.05).sum())
    assert f"{n_sig} of {len(contrasts)} contrasts" in text
    # Changing a table changes the text: nothing is typed in.
    changed = dict(data.tables)
    changed["contrasts"] = contrasts.assign(p_holm=1.0)
    other = sec.contrasts_section(ReportData(changed)).blocks[0]
    assert f"0 of {len(contrasts)} contrasts" in other.markdown  # type: ignore[union-attr]
    summary = data.tables["summary"]
    top = summary[(summary.model == "m-large") & (summary.metric == "behavior")]["mean"].max()
    means = sec.means_section(data)
    assert f"{top:.2f}" in "".join(getattr(b, "markdown", "") for b in means.blocks)


def test_analysis_is_computed_when_absent_or_stale(tmp_path: Path) -> None:
    from steerstats.results import write_results

    generations, scores = report_tables.tidy()
    write_results(tmp_path, generations, scores, {"source": "test"})
    data = load_report(tmp_path, n_boot=50)  # no analysis/ yet: it is run and written
    assert (tmp_path / "analysis" / "summary.csv").exists() and "summary" in data.tables
    before = (tmp_path / "analysis" / "summary.csv").stat().st_mtime
    load_report(tmp_path, n_boot=50)  # up to date: read, not recomputed
    assert (tmp_path / "analysis" / "summary.csv").stat().st_mtime == before
    later = before + 10
    os.utime(tmp_path / "scores.parquet", (later, later))  # the results changed since
    load_report(tmp_path, n_boot=50)
    assert (tmp_path / "analysis" / "summary.csv").stat().st_mtime > before


def test_missing_analysis_says_why(results_dir: Path) -> None:
    tables = dict(load_report(results_dir).tables)
    del tables["reliability"]
    tables["skipped"] = pd.DataFrame({
        "analysis": ["reliability"],
        "reason": ["each response was judged once, so judge agreement cannot be estimated"],
    })
    section = sec.reliability_section(ReportData(tables))
    assert section.blocks[0].markdown.startswith("Not computed: each response was judged once")  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def builtin_page(results_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in report, written by the command line."""
    out = tmp_path_factory.mktemp("rep")
    done = subprocess.run(
        [sys.executable, "-m", "steerstats", "report", str(results_dir), "--out", str(out),
         "--renderer", "builtin"], capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    page = Path(done.stdout.strip())
    assert page == out / "index.html" and page.exists()
    return page


def test_cli_builtin_report(builtin_page: Path) -> None:
    html = builtin_page.read_text()
    # One script, the samples filter, and a policy that allows only it and nothing remote.
    assert html.count("<script") == 1 and f"<script>{FILTER_JS}</script>" in html
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<math" in html and html.count("<svg") >= 7


def test_quarto_is_called_with_the_results_parameter(results_dir: Path, tmp_path: Path) -> None:
    """With quarto on PATH, `steerstats report` hands Quarto the qmd and the results folder."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.json"
    fake = bindir / "quarto"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        f"pathlib.Path({str(log)!r}).write_text(json.dumps(sys.argv[1:]))\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--output-dir') + 1]) / 'report'\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'index.html').write_text('<html></html>')\n"
    )
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "q"
    done = subprocess.run([sys.executable, "-m", "steerstats", "report", str(results_dir),
                           "--out", str(out)], capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    argv = json.loads(log.read_text())
    assert argv[0] == "render" and argv[1] == str(ROOT / "report" / "index.qmd")
    assert argv[argv.index("-P") + 1] == f"results:{results_dir.resolve()}"
    assert Path(done.stdout.strip()) == out / "report" / "index.html"


@pytest.mark.browser
def test_builtin_report_in_chromium(results_dir: Path, builtin_page: Path) -> None:
    import browser

    why = browser.ensure_chromium()
    if why:
        pytest.skip(why)
    page = builtin_page
    data = load_report(results_dir)
    sections = build_sections(data)
    charts = [b.name for s in sections for b in s.blocks if isinstance(b, Figure)]
    visit = browser.visit(page, """
        return {
          sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
          headings: Array.from(document.querySelectorAll('section > h2')).map(h => h.textContent),
          charts: Array.from(document.querySelectorAll('figure.chart'))
                    .filter(f => f.querySelector('svg') && f.querySelector('svg')
                      .getBoundingClientRect().height > 50).map(f => f.dataset.chart),
          tables: document.querySelectorAll('table.table').length,
          math: document.querySelectorAll('math').length,
          scripts: document.querySelectorAll('script').length,
        };""", screenshot=ARTIFACTS / "report.png")
    assert visit.requests == [], visit.requests
    assert visit.console == [], visit.console
    assert visit.dom["sections"] == [s.id for s in sections]
    assert visit.dom["headings"] == [s.title for s in sections]
    assert visit.dom["charts"] == charts and len(charts) >= 7
    assert visit.dom["tables"] >= 8 and visit.dom["math"] >= 9 and visit.dom["scripts"] == 1
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_finding_comes_first_and_reads_from_the_tables(results_dir: Path) -> None:
    data = load_report(results_dir)
    sections = build_sections(data)
    assert sections[0].id == "finding"
    finding = sections[0]
    text = finding.blocks[0].markdown  # type: ignore[union-attr]
    tr = data.tables["tradeoff"]
    best = tr.loc[tr["behavior_gain"].idxmax()]
    assert f"{best['behavior_gain']:.2f} [{best['behavior_gain_ci_low']:.2f}, " in text
    assert "Pareto-optimal arms" in text and "cannot tell" in text
    names = [b.name for b in finding.blocks if isinstance(b, Figure)]
    assert names == ["tradeoff", "dose"]
    # The dose panel starts at strength 0: the baseline's mean.
    dose = next(b for b in finding.blocks if isinstance(b, Figure) and b.name == "dose")
    values = next(iter(dose.chart.to_dict()["datasets"].values()))
    assert min(v["strength"] for v in values) == 0
    # Changing the table changes the sentence.
    changed = dict(data.tables)
    changed["tradeoff"] = tr.assign(behavior_gain=tr["behavior_gain"] + 10)
    other = sec.finding_section(ReportData(changed)).blocks[0].markdown  # type: ignore[union-attr]
    assert f"{best['behavior_gain'] + 10:.2f}" in other


def test_holm_family_is_stated(results_dir: Path) -> None:
    contrasts = sec.contrasts_section(load_report(results_dir))
    assert "Holm family:" in contrasts.blocks[0].markdown  # type: ignore[union-attr]


@pytest.mark.browser
def test_samples_show_every_arm_and_filter_in_chromium(results_dir: Path,
                                                       builtin_page: Path) -> None:
    import browser

    why = browser.ensure_chromium()
    if why:
        pytest.skip(why)
    visit = browser.visit(builtin_page, """
        const first = document.querySelector('#samples details.sample-query');
        const arms = Array.from(first.querySelectorAll('.sample-card strong'))
          .map(e => e.textContent);
        const all = document.getElementById('samples-all');
        const before = all.querySelectorAll('.sample-card:not([hidden])').length;
        const form = all.querySelector('form');
        form.elements.query.value = 'be-rude';
        form.elements.arm.value = 'caa';
        form.elements.strength.value = '2';
        form.dispatchEvent(new Event('change'));
        const shown = Array.from(all.querySelectorAll('.sample-card:not([hidden])'));
        return {arms: arms, before: before, formHidden: form.hidden,
                shown: shown.map(c => [c.dataset.query, c.dataset.arm, c.dataset.strength]),
                output: form.querySelector('output').textContent,
                replies: first.querySelectorAll('pre').length};""")
    assert visit.console == [] and visit.requests == []
    generations, _ = report_tables.tidy()
    open_rows = generations[generations["prompt_set"] == "open"]
    arms = {f"{m} @ {s:g}" if s == s else m for m, s in zip(open_rows["method"],
                                                             open_rows["strength"], strict=True)}
    assert set(visit.dom["arms"]) == arms
    assert visit.dom["replies"] > 0  # the judge's raw replies are in the page
    assert visit.dom["before"] == len(generations) and not visit.dom["formHidden"]
    expected = generations[(generations["query_id"] == "be-rude") &
                           (generations["method"] == "caa") & (generations["strength"] == 2)]
    assert len(visit.dom["shown"]) == len(expected) > 0
    assert all(row == ["be-rude", "caa", "2"] for row in visit.dom["shown"])
    assert visit.dom["output"] == f"{len(expected)} of {len(generations)} shown"


def test_statistics_notes_and_flags_are_shown(results_dir: Path) -> None:
    """Columns the statistics may add are shown when present: a ``note`` (e.g. inference
    withheld with too few queries) as a line and a table column, a ``singular`` fit flag."""
    tables = dict(load_report(results_dir).tables)
    tables["summary"] = tables["summary"].assign(note="too few queries (4 < 6): no interval")
    tables["variance_components"] = tables["variance_components"].assign(
        singular=lambda d: d["metric"] == "behavior")
    data = ReportData(tables)
    means = sec.means_section(data)
    assert any("too few queries" in getattr(b, "markdown", "") for b in means.blocks)
    table = next(b for b in means.blocks if isinstance(b, Table))
    assert "Note" in table.frame.columns
    mixed = sec.mixed_model_section(data)
    assert any(getattr(b, "markdown", "").startswith("Singular fit for behavior")
               for b in mixed.blocks)
