"""What a report is built from: the analysis tables of one results directory, plus its manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from steerstats.errors import DataError


@dataclass
class ReportData:
    """The analysis tables by name (see ``steerstats.analysis.TABLES``) and the run's manifest.

    ``skipped`` maps an analysis name to the reason it was not run (e.g. reliability without
    repeated judgings); sections print that reason instead of a result.
    """

    tables: dict[str, pd.DataFrame]
    manifest: dict[str, Any] = field(default_factory=dict)
    title: str = "steerstats report"
    source: str = ""
    #: The tidy tables the samples section reads (None when the folder has none).
    generations: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None
    judgements: pd.DataFrame | None = None

    def get(self, name: str) -> pd.DataFrame | None:
        """The table ``name``, or None when it is absent or has no rows."""
        table = self.tables.get(name)
        return None if table is None or table.empty else table

    def skipped(self, name: str) -> str | None:
        """Why analysis ``name`` was not run, if it was skipped."""
        table = self.tables.get("skipped")
        if table is None or table.empty:
            return None
        hit = table.loc[table["analysis"] == name, "reason"]
        return str(hit.iloc[0]) if len(hit) else None


def read_tables(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Every ``<name>.csv`` in ``directory`` as a DataFrame keyed by ``name``."""
    path = Path(directory)
    if not path.is_dir():
        raise DataError(f"analysis directory {str(path)!r} does not exist")
    tables: dict[str, pd.DataFrame] = {}
    for csv in sorted(path.glob("*.csv")):
        try:
            tables[csv.stem] = pd.read_csv(csv)
        except pd.errors.EmptyDataError:
            tables[csv.stem] = pd.DataFrame()
    return tables


def read_tidy_table(results_dir: str | Path, name: str) -> pd.DataFrame | None:
    """``<results_dir>/<name>.parquet`` (or ``.csv``) as read, or None when absent or empty.

    The report shows these tables' text as it is; it needs no schema check beyond the columns
    each section looks for.
    """
    base = Path(results_dir)
    for ext in ("parquet", "csv"):
        path = base / f"{name}.{ext}"
        if not path.is_file():
            continue
        try:
            table = pd.read_parquet(path) if ext == "parquet" else pd.read_csv(path)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: cannot be read ({exc}); re-export the results") from None
        return None if table.empty else table
    return None


def read_manifest(results_dir: str | Path) -> dict[str, Any]:
    """The results directory's ``manifest.json`` (empty dict when there is none)."""
    path = Path(results_dir) / "manifest.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); re-export the results") from None
    return data if isinstance(data, dict) else {}
