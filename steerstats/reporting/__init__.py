"""The report: sections built once from the analysis tables, rendered by Quarto or built in.

``report/index.qmd`` calls these functions in its cells (``print(section_markdown(...))`` with
``output: asis``); ``write_report`` uses Quarto when it is installed and otherwise renders the
same sections into one self-contained HTML file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

from steerstats.errors import PrerequisiteError
from steerstats.reporting.content import Figure, Html, Section, Table, Text
from steerstats.reporting.data import ReportData, read_manifest, read_tables, read_tidy_table
from steerstats.reporting.render import section_markdown, to_html
from steerstats.reporting.sections import SECTIONS, build_sections

__all__ = [
    "SECTIONS",
    "Figure",
    "Html",
    "ReportData",
    "Section",
    "Table",
    "Text",
    "build_sections",
    "load_report",
    "quarto_source",
    "section_markdown",
    "to_html",
    "write_report",
]

Renderer = Literal["auto", "quarto", "builtin"]


def load_report(results: str | Path, *, title: str | None = None,
                n_boot: int = 2000) -> ReportData:
    """The report's input for a results directory: its analysis tables and manifest.

    Reads ``<results>/analysis/*.csv``; when that folder is absent, or older than the results'
    tables, the analysis is run first (``steerstats.analysis.analyze``) and written there.
    """
    path = Path(results)
    analysis = path / "analysis"
    if analysis.is_dir() and not _stale(path, analysis):
        tables = read_tables(analysis)
    else:
        from steerstats.analysis import analyze_results  # the report layer sits above analysis

        tables = analyze_results(path, out=analysis, n_boot=n_boot)
    name = path.resolve().name
    return ReportData(tables=tables, manifest=read_manifest(path),
                      title=title or f"steerstats report: {name}", source=str(path),
                      generations=read_tidy_table(path, "generations"),
                      scores=read_tidy_table(path, "scores"),
                      judgements=read_tidy_table(path, "judgements"))


def _stale(results: Path, analysis: Path) -> bool:
    """True when a tidy table of ``results`` is newer than the analysis written from it."""
    written = [p.stat().st_mtime for p in analysis.glob("*.csv")]
    if not written:
        return True
    inputs = [p.stat().st_mtime for name in ("generations", "scores") for ext in ("parquet", "csv")
              if (p := results / f"{name}.{ext}").exists()]
    return bool(inputs) and max(inputs) > min(written)


def quarto_source() -> Path | None:
    """``report/index.qmd`` of the source tree this package runs from, if there is one."""
    qmd = Path(__file__).resolve().parents[2] / "report" / "index.qmd"
    return qmd if qmd.is_file() else None


def write_report(
    results: str | Path,
    out: str | Path | None = None,
    *,
    renderer: Renderer = "auto",
) -> Path:
    """Render the report of ``results`` into ``out`` (default ``<results>/report``).

    ``renderer="auto"`` uses ``quarto render`` when Quarto is on PATH and the Quarto sources
    are present, else the built-in renderer. Returns the path of the HTML file.
    """
    results = Path(results)
    out_dir = Path(out) if out is not None else results / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    qmd = quarto_source()
    quarto = shutil.which("quarto")
    if renderer == "quarto" and (quarto is None or qmd is None):
        raise PrerequisiteError(
            "renderer='quarto' needs the quarto command on PATH and report/index.qmd from the "
            "steerstats source tree; install Quarto (https://quarto.org) or use --renderer builtin"
        )
    if renderer != "builtin" and quarto is not None and qmd is not None:
        return _render_quarto(quarto, qmd, results, out_dir)
    data = load_report(results)
    page = out_dir / "index.html"
    page.write_text(to_html(data, build_sections(data)), encoding="utf-8")
    return page


def _render_quarto(quarto: str, qmd: Path, results: Path, out_dir: Path) -> Path:
    load_report(results)  # runs the analysis first if needed, so the cells only read tables
    root = qmd.parents[1]
    env = dict(os.environ)
    env["QUARTO_PYTHON"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    cmd = [quarto, "render", str(qmd), "-P", f"results:{results.resolve()}",
           "--output-dir", str(out_dir.resolve())]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PrerequisiteError(
            f"quarto render failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}; "
            "retry with --renderer builtin"
        )
    pages = sorted(out_dir.rglob("index.html"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not pages:
        raise PrerequisiteError(f"quarto render wrote no index.html under {out_dir}")
    return pages[0]
