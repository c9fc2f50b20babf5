"""Descriptive tables of a results set: the design that was run, the judging, and what failed.

These are counts, not estimates; `steerstats analyze` writes them beside the statistics so the
report's design and parse-failure sections read numbers from tables like every other section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from steerstats.stats import numeric_values, require_columns

__all__ = ["design_table", "judging_table", "parse_failures"]

_CELL = ["query_id", "prompt_id", "sample"]


def _strengths(values: pd.Series) -> str:
    finite = sorted({float(v) for v in values if pd.notna(v)})
    return ", ".join(f"{v:g}" for v in finite)


def design_table(scores: pd.DataFrame, generations: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model x method x prompt set describing what was collected.

    Returns columns model, method, prompt_set, strengths (comma-separated steering strengths,
    empty when not applicable), n_queries, n_prompts, n_samples, n_responses (generation rows,
    or distinct scored responses when ``generations`` is None), n_failed (generations whose
    ``error`` is set; NaN without ``generations``) and n_absent (query x prompt x sample cells
    that another method of the same model and prompt set has but this one lacks).
    """
    source = generations if generations is not None else scores
    require_columns(source, {c: c for c in ["model", "method", "strength", "prompt_set", *_CELL]})
    frame = source.copy()
    if generations is None:
        frame = frame.drop_duplicates(["model", "method", "strength", "prompt_set", *_CELL])
        frame["_failed"] = np.nan
    else:
        require_columns(generations, {"error": "error"})
        frame["_failed"] = frame["error"].notna() & (frame["error"].astype(str) != "")
    keys = ["model", "method", "prompt_set"]
    cells = frame[["model", "prompt_set", *_CELL]].drop_duplicates()
    n_cells = cells.groupby(["model", "prompt_set"]).size().rename("_n_cells")
    rows = []
    for (model, method, prompt_set), group in frame.groupby(keys, sort=True, dropna=False):
        present = group[_CELL].drop_duplicates().shape[0]
        rows.append({
            "model": model,
            "method": method,
            "prompt_set": prompt_set,
            "strengths": _strengths(group["strength"]),
            "n_queries": group["query_id"].nunique(),
            "n_prompts": group["prompt_id"].nunique(),
            "n_samples": group["sample"].nunique(),
            "n_responses": len(group),
            "n_failed": float(group["_failed"].sum()) if generations is not None else np.nan,
            "n_absent": int(n_cells.loc[(model, prompt_set)]) - present,
        })
    return pd.DataFrame(rows)


def judging_table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per metric x rater: how often each response was judged and how much is missing.

    Returns columns metric, rater, n_repeats (distinct repeat indices), n_responses (distinct
    responses rated), n_ratings (rows) and n_missing (ratings whose value is NaN).
    """
    require_columns(scores, {c: c for c in ["metric", "rater", "repeat", "value", "key"]})
    frame = scores.assign(_nan=~np.isfinite(numeric_values(scores, "value")))
    out = frame.groupby(["metric", "rater"], sort=True).agg(
        n_repeats=("repeat", "nunique"),
        n_responses=("key", "nunique"),
        n_ratings=("value", "size"),
        n_missing=("_nan", "sum"),
    )
    return out.reset_index()


def parse_failures(scores: pd.DataFrame, *, reason: str | None = "reason") -> pd.DataFrame:
    """Share of ratings with no usable value (an unparsed judge answer, an unreadable MMLU tag).

    Returns one row per model x method x metric with n_ratings, n_unparsed, rate
    (n_unparsed / n_ratings) and reasons (each distinct reason with its count, most frequent
    first; empty when none is missing or the table has no ``reason`` column).
    """
    require_columns(scores, {c: c for c in ["model", "method", "metric", "value"]})
    use_reason = reason is not None and reason in scores
    frame = scores.assign(_nan=~np.isfinite(numeric_values(scores, "value")))
    rows = []
    for (model, method, metric), group in frame.groupby(["model", "method", "metric"], sort=True):
        bad = group[group["_nan"]]
        reasons = ""
        if use_reason and len(bad):
            counts = bad[reason].fillna("no reason recorded").astype(str).value_counts()
            reasons = "; ".join(f"{r} ({n})" for r, n in counts.items())
        rows.append({
            "model": model,
            "method": method,
            "metric": metric,
            "n_ratings": len(group),
            "n_unparsed": len(bad),
            "rate": len(bad) / len(group),
            "reasons": reasons,
        })
    return pd.DataFrame(rows)
