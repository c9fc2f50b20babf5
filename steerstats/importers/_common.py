"""What every importer returns (:class:`ImportResult`) and the small helpers they share."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

UNMATCHED_COLUMNS: tuple[str, ...] = (
    "file",
    "row",
    "line",
    "query",
    "method",
    "prompt",
    "reason",
    "kept",
)
"""Columns of ``unmatched.csv``: one row per source row that could not be placed."""

FLAGGED_COLUMNS: tuple[str, ...] = (
    "file",
    "row",
    "line",
    "kind",
    "column",
    "query",
    "method",
    "prompt",
    "reason",
    "kept",
)
"""Columns of ``flagged.csv``: one row per source row or cell that was placed but not taken as
it stood (``kind`` "duplicate", "score" or "contaminated")."""

NOTE_COLUMNS: tuple[str, ...] = ("file", "kind", "query", "rows", "detail")


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    """A typed empty report table (``row``/``rows`` int64, ``line`` float: NaN when unknown)."""
    return frame_of([], columns)


def frame_of(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A report table (unmatched, flagged, notes) from dict rows, with fixed dtypes."""
    out = pd.DataFrame(rows, columns=list(columns))
    for col in ("row", "rows"):
        if col in out:
            out[col] = out[col].astype("int64")
    if "line" in out:
        out["line"] = pd.to_numeric(out["line"], errors="coerce").astype("float64")
    if "kept" in out:
        out["kept"] = out["kept"].astype(bool)
    return out


@dataclass
class ImportResult:
    """The tidy tables of an import, the rows that could not be placed, and what was read.

    ``unmatched`` (:data:`UNMATCHED_COLUMNS`) has one row per source row that could not be
    placed: ``file``, ``row`` (0-based data row, header excluded), ``line`` (1-based line of
    the file where the row starts, the header being line 1; NaN for a DataFrame or Parquet),
    ``query``, ``method``, ``prompt`` (normalised, first 120 characters), ``reason``, and
    ``kept`` (whether it was still imported with derived ids). ``flagged``
    (:data:`FLAGGED_COLUMNS`) has one row per row or cell that was imported but not as it
    stood: ``kind`` "duplicate" (an exact duplicate row, dropped unless kept), "score" (a
    score made NaN: not a number, not finite, outside its range) or "contaminated" (a row
    whose system prompt holds its query's steering instruction although its method sends
    none), with the source ``column`` where one applies. ``notes`` (:data:`NOTE_COLUMNS`) has
    one row per file and query text that was not imported as itself (``kind`` "alias",
    "alias-not-applied", "extra-query", "unknown-query"), a "spelling" row per file counting
    MMLU prompts matched only after reading "behavior" as "behaviour", and a "contaminated" row
    per file and method label. ``source`` is JSON-able (files with SHA-256 and row counts,
    options, design-file digests, the notes, the summary counts) for the manifest.
    """

    generations: pd.DataFrame
    scores: pd.DataFrame
    unmatched: pd.DataFrame
    source: dict[str, Any] = field(default_factory=dict)
    notes: pd.DataFrame = field(default_factory=lambda: empty_frame(NOTE_COLUMNS))
    flagged: pd.DataFrame = field(default_factory=lambda: empty_frame(FLAGGED_COLUMNS))

    @property
    def n_unmatched(self) -> int:
        return len(self.unmatched)

    def flag_counts(self) -> dict[str, int]:
        """Flagged rows or cells per kind ("duplicate", "score", "contaminated")."""
        counts = self.flagged["kind"].value_counts()
        return {str(k): int(v) for k, v in counts.items()}

    def write(self, out_dir: str | Path, fmt: str = "parquet") -> Path:
        """Write a results directory: the tidy tables, ``manifest.json`` (what was read, with
        which options, what could not be placed or was flagged) and ``unmatched.csv``,
        ``flagged.csv`` and ``import_notes.csv``."""
        from steerstats.results import package_versions, write_results

        unparsed = self.scores["value"].isna() & self.scores["reason"].fillna("").str.startswith(
            "unparsed"
        )
        manifest = {
            "python": platform.python_version(),
            "packages": package_versions(),
            "import": self.source,
            "unmatched_rows": self.n_unmatched,
            "flagged": self.flag_counts(),
            "flagged_reasons": sorted({_reason_head(r) for r in self.flagged["reason"]}),
            "failures": {"scores_unparsed": int(unparsed.sum())},
        }
        out = write_results(out_dir, self.generations, self.scores, manifest, fmt=fmt)  # type: ignore[arg-type]
        self.unmatched.to_csv(out / "unmatched.csv", index=False)
        self.flagged.to_csv(out / "flagged.csv", index=False)
        self.notes.to_csv(out / "import_notes.csv", index=False)
        return out


def _reason_head(reason: Any) -> str:
    """The reason's kind, the text before its first colon ("contaminated", "duplicate", ...)."""
    return str(reason).split(":", 1)[0]


def row_key(content: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a row's identifying content (stable across runs)."""
    blob = json.dumps(
        content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_info(path: Path, rows: int) -> dict[str, Any]:
    """A source file as the manifest records it: path, SHA-256 and data rows."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest(), "rows": rows}


FLOAT_COLUMNS = ("strength", "n_tokens", "latency_s", "cost_usd", "value")
INT_COLUMNS = ("sample", "repeat")


def coerce(frame: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes: floats (NaN for missing), int64 sample/repeat, text elsewhere (NaN missing;
    pandas' string dtype is kept as it is, object otherwise)."""
    for col in frame.columns:
        if col in FLOAT_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        elif col in INT_COLUMNS:
            frame[col] = frame[col].astype("int64")
        elif col != "kept" and not isinstance(frame[col].dtype, pd.StringDtype):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), np.nan)
    return frame.reset_index(drop=True)


def tidy_frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A tidy table from dict rows, with the contract's dtypes."""
    return coerce(pd.DataFrame(rows, columns=list(columns)))
