"""Import any table of generations and scores, given a column mapping, without guessing.

A response is identified by its content and design cells; rows that share them are ratings of
one response (by rater and repeat), never new responses. Exact duplicate rows are reported and
dropped (or kept as separate responses), conflicting ratings are errors naming their lines,
impossible scores become NaN with a reason, and every step is vectorised (a 200k-row CSV
imports in seconds; ``benchmarks/import_speed.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from steerstats.datasets import normalize_text, slugify
from steerstats.errors import DataError
from steerstats.importers._common import (
    FLAGGED_COLUMNS,
    UNMATCHED_COLUMNS,
    ImportResult,
    coerce,
    file_info,
    frame_of,
)
from steerstats.importers.read import SourceTable, read_source
from steerstats.schema import GENERATION_COLUMNS, SCORE_COLUMNS

__all__ = ["DECLARED_RANGES", "IDENTITY", "MAPPABLE", "describe_summary", "import_table"]

MAPPABLE = tuple(dict.fromkeys((*GENERATION_COLUMNS, *SCORE_COLUMNS, "prompt")))
REQUIRED = ("model", "method")
IDENTITY = ("model", "method", "strength", "query_id", "prompt_set", "prompt_id")
TEXT_CELLS = ("model", "method", "query_id", "query", "prompt_set", "prompt_id", "prompt",
              "response", "rater")

DECLARED_RANGES: dict[str, tuple[float, float]] = {
    "behavior": (1.0, 5.0),
    "coherence": (1.0, 5.0),
    "accuracy": (0.0, 1.0),
}
"""Ranges of the built-in judges' metrics (rubric 1-5, correctness 0-1), applied to columns of
those names unless ``scale`` overrides them."""

# The largest magnitude whose square is finite: beyond it a variance overflows to inf.
MAX_MAGNITUDE = float(np.sqrt(np.finfo(np.float64).max))


def import_table(
    source: str | Any,
    mapping: Mapping[str, str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    score_columns: Sequence[str] | Mapping[str, str] | None = None,
    rater: str = "imported",
    scale: Mapping[str, tuple[float, float]] | None = None,
    keep_duplicates: bool = False,
) -> ImportResult:
    """Import any table of generations (and scores) given a column mapping.

    Parameters
    ----------
    source
        A CSV/TSV/Parquet/Excel path or a DataFrame.
    mapping
        Tidy column name -> the table's column, e.g. ``{"response": "output", "method":
        "system"}``. Columns already named as in the tidy tables need no entry. ``prompt`` maps
        prompt text when there is no prompt id.
    defaults
        Values for absent columns, e.g. ``{"model": "my-model", "prompt_set": "open"}``.
    score_columns
        Wide score columns to melt to long form (metric = column name), or a mapping metric ->
        column. Without it, a table with ``metric`` and ``value`` columns is read as long form
        (one row per score); otherwise no scores are imported.
    rater
        Rater label where the table has no ``rater`` column.
    scale
        Valid range per metric, overriding :data:`DECLARED_RANGES`. A value outside it, not a
        number, not finite, or too large to square becomes NaN with an "unparsed: ..." reason
        and a "score" row in ``flagged``; a missing value is NaN with "missing in source".
    keep_duplicates
        Exact duplicate rows (equal in every imported cell) are dropped and reported in
        ``flagged``; with True the k-th copy is kept as a separate response (sample k), for
        tables where identical rows really are separate generations.

    Returns
    -------
    ImportResult
        ``generations`` (one row per response), ``scores`` (one per rating), ``unmatched``
        (rows that could not be placed: missing design cells, field count different from the
        header), ``flagged`` (duplicates, unusable scores) and ``source`` with the options and
        a ``summary`` of the counts.

    Notes
    -----
    A response is identified by its design cells (model, method, strength, query, prompt set,
    prompt), its ``sample`` when given, and its response text. Rows sharing them are ratings
    of that response, told apart by ``rater`` and ``repeat``; two rows giving the same rating
    (response, metric, rater, repeat) different values are an error naming both lines. Without
    a ``sample`` column, distinct responses of one design cell are numbered 0, 1, ... in order
    of appearance. Derived when absent: ``query_id`` = slug of the query text, ``query`` =
    ``query_id``, ``prompt_id`` = ``p-`` + digest of the prompt text, ``prompt_set`` "open",
    ``strength`` NaN, ``repeat`` 0, ``key`` = SHA-256 of the design cells and sample. Required:
    model, method, a query (``query_id`` or ``query``) and a prompt (``prompt_id`` or
    ``prompt``); a missing one raises DataError naming the file and column. Without a
    ``response`` column (a table of ratings only) responses are told apart by their design
    cells and ``sample``, and their text is missing.
    """
    src = read_source(source)
    label = src.label
    frame = _apply_mapping(src.frame, mapping or {}, label)
    for col, value in (defaults or {}).items():
        if col not in MAPPABLE:
            raise DataError(
                f"{label}: default {col}={value!r}: {col!r} is not a tidy column; "
                f"accepted: {', '.join(MAPPABLE)}"
            )
        if col not in frame:
            frame[col] = value
    _require(frame, label, src.frame.columns)
    src.frame = src.frame.iloc[:0]  # the cells live on in ``frame`` only: memory for 200k rows
    metric_cols = _score_column_map(score_columns, frame, label)
    long_form = metric_cols is None and {"metric", "value"} <= set(frame.columns)
    ranges = _ranges(scale)
    frame["_row"] = src.rows

    frame = _design_cells(frame, rater)
    unmatched = _rejected_rows(src) + _unplaceable(frame, src, long_form)
    if frame["_why"].notna().any():
        frame = frame[frame["_why"].isna()]
    frame = frame.drop(columns="_why")
    frame["repeat"] = _whole_numbers(frame, "repeat", src)

    score_src = list(metric_cols.values()) if metric_cols else []
    content = [*IDENTITY, "query", "response", "rater", "repeat", *score_src]
    content += ["sample"] if "sample" in frame else []
    content += ["metric", "value"] + (["reason"] if "reason" in frame else []) if long_form else []
    frame, flagged, n_dupes = _duplicates(frame, content, src, keep_duplicates)

    frame = _responses(frame, src)
    if metric_cols is not None:
        _conflicts(frame, ["_rid", "rater", "repeat"], src, "ratings")
    elif long_form:
        _conflicts(frame, ["_rid", "metric", "rater", "repeat"], src, "rating")

    _, first_pos = np.unique(frame["_rid"].to_numpy(), return_index=True)
    keep = [c for c in (*GENERATION_COLUMNS, "_rid", "_row") if c in frame]
    firsts = frame[keep].take(first_pos)  # one row per response, ordered by _rid
    if "key" not in firsts:
        firsts = firsts.assign(key=response_keys(firsts))
    if not firsts["key"].is_unique:
        dupes = firsts.loc[firsts["key"].duplicated(keep=False), "_row"].tolist()[:6]
        raise DataError(
            f"{label}: several responses share one key ({_where(src, dupes)}); give each a "
            "distinct 'key' or drop the key column"
        )
    for col in GENERATION_COLUMNS:
        if col not in firsts:
            firsts[col] = np.nan
    generations = coerce(firsts[list(GENERATION_COLUMNS)].copy())
    frame = frame.drop(columns=["response"])  # in ``generations`` now; the scores need none
    frame["key"] = firsts["key"].to_numpy()[frame["_rid"].to_numpy()]
    del firsts

    scores, score_flags, invalid = _scores(frame, metric_cols, long_form, ranges, src)
    flagged += score_flags
    info: dict[str, Any] = {"path": label, "rows": src.n_rows}
    if src.path is not None:
        info = file_info(src.path, src.n_rows)
    summary = {
        "rows_read": src.n_rows,
        "rows_rejected": len(src.rejected),
        "rows_unmatched": len(unmatched),
        "duplicates": n_dupes,
        "duplicates_kept": keep_duplicates,
        "responses": len(generations),
        "ratings": len(scores),
        "scores_unusable": invalid,
    }
    return ImportResult(
        generations=generations,
        scores=scores,
        unmatched=frame_of(unmatched, UNMATCHED_COLUMNS),
        flagged=frame_of(flagged, FLAGGED_COLUMNS),
        source={
            "importer": "table",
            "files": [info],
            "options": {
                "mapping": dict(mapping or {}),
                "defaults": {k: str(v) for k, v in (defaults or {}).items()},
                "score_columns": None if metric_cols is None else dict(metric_cols),
                "long_form": long_form,
                "rater": rater,
                "scale": {k: list(v) for k, v in ranges.items()},
                "keep_duplicates": keep_duplicates,
            },
            "summary": summary,
            "unmatched": len(unmatched),
        },
    )


# ----------------------------------------------------------------------------- columns


def _apply_mapping(raw: pd.DataFrame, mapping: Mapping[str, str], label: str) -> pd.DataFrame:
    unknown = [f"{k}={v}" for k, v in mapping.items() if k not in MAPPABLE]
    if unknown:
        raise DataError(
            f"{label}: mapping {', '.join(unknown)}: "
            f"{', '.join(repr(u.split('=')[0]) for u in unknown)} is not a tidy column; "
            f"accepted: {', '.join(MAPPABLE)}"
        )
    absent = [f"{k}={v!r}" for k, v in mapping.items() if v not in raw.columns]
    if absent:
        raise DataError(
            f"{label}: mapped column(s) not found: {', '.join(absent)} "
            f"(columns present: {', '.join(map(str, raw.columns))})"
        )
    taken = set(mapping.values())
    columns: dict[str, pd.Series] = {tidy: raw[col] for tidy, col in mapping.items()}
    for col in raw.columns:  # tidy-named columns, then the others (for score_columns)
        if col not in columns and col not in taken:
            columns[str(col)] = raw[col]
    return pd.DataFrame(columns, index=raw.index)


def _require(frame: pd.DataFrame, label: str, present: Sequence[Any]) -> None:
    needs = [(c, c) for c in REQUIRED] + [
        ("query_id' or 'query", ("query_id", "query")),
        ("prompt_id' or 'prompt", ("prompt_id", "prompt")),
    ]
    for name, cols in needs:
        options = (cols,) if isinstance(cols, str) else cols
        if not any(c in frame for c in options):
            raise DataError(
                f"{label}: required column '{name}' not found; map it with "
                f"mapping={{'{options[0]}': '<your column>'}} "
                f"or give defaults={{'{options[0]}': ...}} "
                f"(columns present: {', '.join(map(str, present))})"
            )


def _score_column_map(
    score_columns: Sequence[str] | Mapping[str, str] | None, frame: pd.DataFrame, label: str
) -> dict[str, str] | None:
    if score_columns is None:
        return None
    if isinstance(score_columns, str):
        score_columns = [score_columns]
    pairs = (
        dict(score_columns) if isinstance(score_columns, Mapping) else {c: c for c in score_columns}
    )
    absent = [c for c in pairs.values() if c not in frame]
    if absent:
        raise DataError(
            f"{label}: score column(s) {', '.join(map(repr, absent))} not found "
            f"(columns present: {', '.join(map(str, frame.columns))})"
        )
    return pairs


def _ranges(scale: Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]]:
    ranges = dict(DECLARED_RANGES)
    for metric, bounds in (scale or {}).items():
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise DataError(f"range {metric}={bounds!r}: expected two numbers LOW,HIGH") from None
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise DataError(f"range {metric}={low:g},{high:g}: expected finite LOW < HIGH")
        ranges[str(metric)] = (low, high)
    return ranges


def _text(series: pd.Series) -> pd.Series:
    """Cells as text, missing kept missing (a DataFrame's ints and a CSV's digits agree)."""
    if isinstance(series.dtype, pd.StringDtype):
        return series
    return series.astype("str")


def _mapped(series: pd.Series, fn: Any) -> pd.Series:
    """``fn`` over the distinct non-missing values (fast for repetitive columns)."""
    codes, uniques = pd.factorize(series)
    return _repeated_text([fn(v) for v in uniques], codes, series.index)


def _repeated_text(values: Sequence[Any], codes: np.ndarray, index: Any = None) -> pd.Series:
    """Text column ``values[codes]`` (code -1: missing), built without a Python object per row."""
    array = pd.array([None if pd.isna(v) else str(v) for v in values], dtype="str")
    return pd.Series(array.take(codes, allow_fill=True), index=index)


def _numbers(series: pd.Series) -> np.ndarray:
    """Cells as float64 (NaN where missing or not a number), parsing each distinct cell once."""
    if series.dtype.kind in "fiub":
        return series.to_numpy(dtype="float64", na_value=np.nan)
    codes, uniques = pd.factorize(series)
    parsed = pd.to_numeric(pd.Series(np.asarray(uniques, dtype=object)), errors="coerce")
    return np.append(parsed.to_numpy(dtype="float64", na_value=np.nan), np.nan)[codes]


def _safe_slug(text: str) -> Any:
    try:
        return slugify(text)
    except ValueError:
        return np.nan


def _prompt_id(text: str) -> str:
    return "p-" + hashlib.sha256(normalize_text(text).encode()).hexdigest()[:10]


def _design_cells(frame: pd.DataFrame, rater: str) -> pd.DataFrame:
    """Text cells, derived ids, numeric strength, rater; ``_why`` says why a row is unplaceable."""
    for col in TEXT_CELLS:
        if col in frame:
            frame[col] = _text(frame[col])
    frame["_why"] = None
    if "response" not in frame:  # a table of ratings only: responses are their design cells
        frame["response"] = pd.Series(pd.array([None] * len(frame), dtype="str"),
                                      index=frame.index)
    if "query_id" not in frame:
        frame["query_id"] = _mapped(frame["query"], _safe_slug)
        nameless = frame["query"].notna() & frame["query_id"].isna()
        frame.loc[nameless, "_why"] = "query text has no letters or digits to make an id from"
    if "query" not in frame:
        frame["query"] = frame["query_id"]
    if "prompt_id" not in frame:
        frame["prompt_id"] = _mapped(frame["prompt"], _prompt_id)
    if "prompt_set" not in frame:
        frame["prompt_set"] = "open"
    if "strength" in frame:
        given = frame["strength"]
        frame["strength"] = pd.to_numeric(given, errors="coerce").astype("float64")
        bad = given.notna() & frame["strength"].isna()
        frame.loc[bad, "_why"] = "strength is not a number"
    else:
        frame["strength"] = np.nan
    frame["rater"] = frame["rater"].fillna(rater) if "rater" in frame else rater
    if "repeat" not in frame:
        frame["repeat"] = 0
    return frame


def _report_row(src: SourceTable, r: Any, reason: str, line: int | None) -> dict[str, Any]:
    prompt = r.get("prompt", r.get("prompt_id"))
    return {
        "file": src.label,
        "row": int(r["_row"]),
        "line": line,
        "query": r.get("query"),
        "method": r.get("method"),
        "prompt": None if pd.isna(prompt) else normalize_text(str(prompt))[:120],
        "reason": reason,
        "kept": False,
    }


def _rejected_rows(src: SourceTable) -> list[dict[str, Any]]:
    return [
        {"file": src.label, "row": r.row, "line": r.line, "query": None, "method": None,
         "prompt": None, "reason": r.reason, "kept": False}
        for r in src.rejected
    ]


def _unplaceable(frame: pd.DataFrame, src: SourceTable, long_form: bool) -> list[dict[str, Any]]:
    """Rows missing a design cell (or, in long form, the metric): listed, marked in ``_why``."""
    need = ["model", "method", "query_id", "prompt_id"] + (["metric"] if long_form else [])
    missing = frame[need].isna()
    has_gap = missing.any(axis=1)
    if has_gap.any():
        names = missing[has_gap].apply(lambda m: ", ".join(c for c in need if m[c]), axis=1)
        frame.loc[has_gap, "_why"] = "missing value in " + names
    bad = frame[frame["_why"].notna()]
    if bad.empty:
        return []
    lines = src.lines(bad["_row"])
    return [
        _report_row(src, r, str(r["_why"]), line)
        for (_, r), line in zip(bad.iterrows(), lines, strict=True)
    ]


def _where(src: SourceTable, rows: Sequence[int]) -> str:
    """'lines 3, 7' for a text file, else 'rows 1, 5' (0-based data rows)."""
    lines = src.lines(rows)
    if all(line is not None for line in lines):
        return "lines " + ", ".join(str(line) for line in lines)
    return "rows " + ", ".join(str(int(r)) for r in rows)


def _whole_numbers(frame: pd.DataFrame, col: str, src: SourceTable) -> pd.Series:
    numbers = pd.to_numeric(frame[col], errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round())
    if bad.any():
        rows = frame.loc[bad, "_row"].tolist()
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise DataError(
            f"{src.label}: column {col!r} must hold whole numbers (0, 1, ...) in every row; "
            f"not at {_where(src, rows[:5])}{more}"
        )
    return numbers.astype("int64")


# ----------------------------------------------------------------------------- identity


def _duplicates(
    frame: pd.DataFrame, content: list[str], src: SourceTable, keep: bool
) -> tuple[pd.DataFrame, list[dict[str, Any]], int]:
    """Exact duplicates (equal in every imported cell): reported; dropped unless ``keep``, in
    which case ``_copy`` numbers the copies so each is its own response."""
    group = frame.groupby(content, dropna=False, sort=False).ngroup()
    copy = group.groupby(group.to_numpy()).cumcount()
    frame["_copy"] = copy.to_numpy() if keep else 0
    dup = (copy > 0).to_numpy()
    n = int(dup.sum())
    if not n:
        return frame, [], 0
    first_row = frame["_row"].groupby(group.to_numpy()).transform("first")
    dupes = frame[dup]
    originals = first_row[dup].tolist()
    lines = src.lines(dupes["_row"])
    first_lines = src.lines(originals)
    fate = "kept as a separate response (keep_duplicates)" if keep else "dropped"
    flagged = []
    for (_, r), line, orig, orig_line in zip(dupes.iterrows(), lines, originals, first_lines,
                                             strict=True):
        where = f"line {orig_line}" if orig_line is not None else f"row {int(orig)}"
        flagged.append({
            **_report_row(src, r, f"duplicate: the same cells as {where}; {fate}", line),
            "kind": "duplicate", "column": None, "kept": keep,
        })
    if not keep:
        frame = frame[~dup]
    return frame, flagged, n


def _responses(frame: pd.DataFrame, src: SourceTable) -> pd.DataFrame:
    """``_rid`` (one per response) and ``sample``: given, or numbered within each design cell."""
    design = list(IDENTITY)
    given = "sample" in frame
    if given:
        frame["sample"] = _whole_numbers(frame, "sample", src)
        cell = [*design, "sample"]
        content = frame.groupby([*cell, "response", "_copy"], dropna=False, sort=False).ngroup()
        per_cell = content.groupby(
            [frame[c] for c in cell], dropna=False, sort=False
        ).transform("nunique")
        if (per_cell > 1).any():
            clash = frame.loc[(per_cell > 1).to_numpy(), "_row"].tolist()[:6]
            raise DataError(
                f"{src.label}: several rows describe the same generation with different "
                f"responses ({_where(src, clash)}); give each a distinct 'sample' or 'key', "
                "or drop the sample column to have responses numbered"
            )
        frame["_rid"] = content.to_numpy()
        return frame
    rid = frame.groupby([*design, "response", "_copy"], dropna=False, sort=False).ngroup()
    frame["_rid"] = rid.to_numpy()
    rids, first_pos = np.unique(rid.to_numpy(), return_index=True)
    order = np.argsort(first_pos, kind="stable")  # responses in order of first appearance
    firsts = frame[design].take(first_pos[order])
    sample = np.empty(len(rids), dtype=np.int64)
    sample[rids[order]] = firsts.groupby(design, dropna=False, sort=False).cumcount().to_numpy()
    frame["sample"] = sample[rid.to_numpy()]
    return frame


def _conflicts(frame: pd.DataFrame, cell: list[str], src: SourceTable, what: str) -> None:
    """Two rows giving one rating cell (after exact duplicates went) are an error naming them."""
    clash = frame.duplicated(cell, keep=False)
    if not clash.any():
        return
    rows = frame[clash.to_numpy()]
    first = rows.iloc[0]
    same = rows[(rows[cell] == first[cell]).all(axis=1)]["_row"].tolist()[:6]
    detail = ", ".join(f"{c} {first[c]!r}" for c in ("model", "method", "query_id", "prompt_id"))
    if "metric" in cell:
        detail += f", metric {first['metric']!r}"
    raise DataError(
        f"{src.label}: conflicting duplicates at {_where(src, same)}: the same {what} of one "
        f"response ({detail}, rater {first['rater']!r}, repeat {int(first['repeat'])}) with "
        "different values; give each rating its own 'rater' or 'repeat', or each response "
        "its own 'sample'"
    )


def response_keys(firsts: pd.DataFrame) -> list[str]:
    """Each response's key: :func:`row_key` of its design cells and sample, built column-wise
    (the canonical JSON of every distinct cell is made once) and hashed per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts: list[Any] = []
    for i, name in enumerate(sorted((*IDENTITY, "sample"))):
        parts += [("{" if i == 0 else ",") + f'"{name}":', pa.array(_json_cells(firsts[name]))]
    blobs = pc.binary_join_element_wise(*parts, "}", "").to_pylist()
    return [hashlib.sha256(b.encode("utf-8")).hexdigest() for b in blobs]


def _json_cells(series: pd.Series) -> np.ndarray:
    """Canonical JSON of each cell, as ``row_key`` writes it (None for missing)."""
    codes, uniques = pd.factorize(series)
    if series.dtype.kind == "f":
        texts = [json.dumps(float(v)) for v in uniques]
    elif series.dtype.kind in "iu":
        texts = [json.dumps(int(v)) for v in uniques]
    else:
        texts = [json.dumps(v, ensure_ascii=False, default=str) for v in uniques]
    return np.array([*texts, "null"], dtype=object)[codes]


# ----------------------------------------------------------------------------- scores


def _scores(
    frame: pd.DataFrame,
    metric_cols: dict[str, str] | None,
    long_form: bool,
    ranges: Mapping[str, tuple[float, float]],
    src: SourceTable,
) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, int]]:
    """The scores table (one row per rating), the unusable cells as flagged rows, and counts.

    Columns are gathered by position (``pos``: the frame row of each rating), so the large
    text columns of the source are never copied per metric."""
    n = len(frame)
    if metric_cols is not None and metric_cols and n:
        pos = np.tile(np.arange(n), len(metric_cols))
        metric = _repeated_text(list(metric_cols), np.repeat(np.arange(len(metric_cols)), n))
        raw = pd.concat([frame[c].reset_index(drop=True) for c in metric_cols.values()],
                        ignore_index=True)
        column = np.repeat(list(metric_cols.values()), n)
        given = pd.Series(np.nan, index=raw.index, dtype=object)
    elif long_form and n:
        pos = np.arange(n)
        metric = _text(frame["metric"]).reset_index(drop=True)
        raw = frame["value"].reset_index(drop=True)
        column = np.full(n, "value", dtype=object)
        given = (frame["reason"].reset_index(drop=True).astype(object) if "reason" in frame
                 else pd.Series(np.nan, index=raw.index, dtype=object))
    else:
        return coerce(pd.DataFrame(columns=list(SCORE_COLUMNS))), [], {}
    long = pd.DataFrame(
        {c: frame[c].take(pos).reset_index(drop=True)
         for c in (*IDENTITY, "sample", "key", "rater", "repeat")}
    )
    long["metric"] = metric

    number = _numbers(raw)
    missing = raw.isna().to_numpy()
    nan = np.isnan(number)
    not_number = ~missing & nan
    finite = np.isfinite(number)
    not_finite = ~missing & ~nan & ~finite
    codes, names = pd.factorize(long["metric"])
    bounds = np.array([ranges.get(str(m), (np.nan, np.nan)) for m in names] + [(np.nan, np.nan)],
                      dtype=float).reshape(-1, 2)
    low, high = bounds[codes, 0], bounds[codes, 1]
    with np.errstate(invalid="ignore"):
        outside = finite & ((number < low) | (number > high))
    huge = finite & ~outside & (np.abs(np.where(finite, number, 0.0)) > MAX_MAGNITUDE)
    valid = finite & ~huge & ~outside
    long["value"] = np.where(valid, number, np.nan)

    given_ok = given.notna().to_numpy().copy()
    if given_ok.any():
        given_ok &= given.astype(str).str.len().to_numpy() > 0
    reason = pd.Series(np.where(given_ok, given.to_numpy(dtype=object), None), dtype=object)
    reason[missing & ~given_ok] = "missing in source"
    flagged_mask = not_number | not_finite | huge | outside
    idx = np.flatnonzero(flagged_mask)
    texts = []
    for i in idx:
        v = number[i]
        if not_number[i]:
            texts.append(f"unparsed: value {raw.iat[i]!r} is not a number")
        elif not_finite[i]:
            texts.append(f"unparsed: value {v:g} is not finite")
        elif huge[i]:
            texts.append(f"unparsed: value {v:g} is too large to analyse (its square overflows)")
        else:
            texts.append(f"unparsed: value {v:g} is outside {low[i]:g}-{high[i]:g}")
    if len(idx):
        reason.iloc[idx] = texts
    reason[valid] = None
    long["reason"] = reason.to_numpy()

    sub = frame.iloc[pos[idx]]
    lines = src.lines(sub["_row"]) if len(idx) else []
    flagged = [
        {**_report_row(src, r, text, line), "kind": "score", "column": col}
        for (_, r), text, line, col in zip(sub.iterrows(), texts, lines, column[idx],
                                           strict=True)
    ]
    counts = {
        "not a number": int(not_number.sum()),
        "not finite": int(not_finite.sum()),
        "too large": int(huge.sum()),
        "out of range": int(outside.sum()),
    }
    del raw, given, number, reason
    return coerce(long[list(SCORE_COLUMNS)]), flagged, counts


def describe_summary(summary: Mapping[str, Any]) -> str:
    """The import summary as one line for the terminal."""
    unusable = summary.get("scores_unusable") or {}
    bad = ", ".join(f"{v} {k}" for k, v in unusable.items() if v)
    dupes = summary.get("duplicates", 0)
    fate = "kept" if summary.get("duplicates_kept") else "dropped"
    return (
        f"{summary['rows_read']} rows read, {summary['rows_rejected']} rejected (field count), "
        f"{summary['rows_unmatched']} not placed; {dupes} exact duplicate(s) {fate}; "
        f"{summary['responses']} responses, {summary['ratings']} ratings"
        + (f"; unusable scores made NaN: {bad}" if bad else "")
    )

