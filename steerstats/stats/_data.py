"""Input checks and reshaping shared by the stats functions (private).

Every public stats function takes a DataFrame in the tidy ``scores`` form with overridable
column names; these helpers validate it with errors that name the column and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def require_columns(data: pd.DataFrame, columns: Mapping[str, str | None]) -> None:
    """Raise ValueError naming each missing column and the keyword that renames it.

    ``columns`` maps a keyword argument name (e.g. ``"rater"``) to the column the caller chose;
    ``None`` values are skipped (optional roles the caller turned off).
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    missing = [(kw, col) for kw, col in columns.items() if col is not None and col not in data]
    if missing:
        parts = [f"column {col!r} not found; pass {kw}=... or rename" for kw, col in missing]
        present = ", ".join(map(str, data.columns))
        raise ValueError("; ".join(parts) + f" (columns present: {present})")


def check_confidence(confidence: float) -> None:
    """Raise ValueError unless ``0 < confidence < 1``."""
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")


def require_metric(
    data: pd.DataFrame, name: str, column: str, *, role: str = "metric", fix: str = ""
) -> None:
    """Raise ValueError when no row of ``column`` is ``name``, listing the metrics present.

    ``role`` names the argument in the message ("behavior metric"); ``fix`` is appended.
    """
    if not (data[column] == name).any():
        present = sorted(map(str, pd.unique(data[column].dropna())))
        raise ValueError(f"{role} {name!r} not found in column {column!r}; present: {present}"
                         + (f"; {fix}" if fix else ""))


def numeric_values(data: pd.DataFrame, value: str) -> pd.Series:
    """The value column as float; a non-numeric entry is an error that names the column."""
    try:
        return pd.to_numeric(data[value], errors="raise").astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {value!r} must be numeric (NaN for missing): {exc}") from None


def response_level(
    data: pd.DataFrame,
    keys: Sequence[str],
    value: str = "value",
) -> pd.DataFrame:
    """Average repeated ratings to one row per ``keys`` combination.

    Returns the ``keys`` columns plus ``value`` (mean of non-missing ratings, NaN if none),
    ``n_ratings`` (non-missing) and ``n_missing`` (NaN ratings: unparsed judge answers).
    """
    vals = numeric_values(data, value)
    frame = data[list(keys)].copy()
    frame["_v"] = vals.to_numpy()
    frame["_ok"] = np.isfinite(frame["_v"].to_numpy())
    grouped = frame.groupby(list(keys), sort=True, dropna=False, observed=True)
    out = grouped.agg(value=("_v", "mean"), n_ratings=("_ok", "sum"), n_total=("_ok", "size"))
    out["n_missing"] = out.pop("n_total") - out["n_ratings"]
    out = out.reset_index()
    return out.rename(columns={"value": value}) if value != "value" else out


def require_clusters(data: pd.DataFrame, clusters: Sequence[str]) -> tuple[str, ...]:
    """Check the cluster columns (keyword ``clusters``) exist; return them as a tuple.

    Accepts one column name or a sequence of them; an empty sequence is an error because the
    bootstrap has nothing to resample.
    """
    names = (clusters,) if isinstance(clusters, str) else tuple(clusters)
    if not names:
        raise ValueError("clusters must name at least one column, e.g. clusters=('query_id',)")
    missing = [c for c in names if c not in data]
    if missing:
        raise ValueError(
            f"cluster column(s) {missing} not found; pass clusters=(...) naming the columns to "
            f"resample, or rename (columns present: {', '.join(map(str, data.columns))})"
        )
    return names


def group_index(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer group code per row and the table of group keys (one row per code, sorted).

    Missing keys (e.g. NaN ``strength`` for strength-less methods) form their own group.
    With no columns every row is group 0 and the key table has one row and no columns.
    """
    cols = list(columns)
    if not cols:
        return np.zeros(len(frame), dtype=np.intp), pd.DataFrame(index=range(1))
    grouped = frame.groupby(cols, sort=True, dropna=False, observed=True)
    codes = grouped.ngroup().to_numpy(dtype=np.intp)
    keys = grouped.size().index.to_frame(index=False)[cols]
    return codes, keys
