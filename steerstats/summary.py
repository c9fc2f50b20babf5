"""A quick look at a results set: each metric's mean and count per model x method x strength.

No inference (``steerstats analyze`` does that, with clustered CIs); this is the table that
`make demo` prints at the end, to see at a glance what was collected and which way it went.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from steerstats.stats import numeric_values, require_columns

__all__ = ["summary_table"]


def summary_table(
    scores: pd.DataFrame,
    *,
    by: tuple[str, ...] = ("model", "method", "strength"),
    metric: str = "metric",
    value: str = "value",
) -> pd.DataFrame:
    """Mean, count and missing count of each metric per ``by`` group.

    Returns one row per group x metric with the ``by`` columns, ``metric``, ``mean`` (of the
    non-missing values), ``n`` (non-missing values: responses x judge repeats) and
    ``n_missing`` (NaN values, e.g. judge answers that could not be read). Text columns keep
    their order of first appearance (the experiment's order of methods and judges); numeric
    ones sort ascending, NaN (no strength) first.
    """
    require_columns(scores, {**{c: c for c in by}, "metric": metric, "value": value})
    frame = scores[[*by, metric]].copy()
    frame["_v"] = numeric_values(scores, value).to_numpy()
    frame["_ok"] = np.isfinite(frame["_v"].to_numpy())
    grouped = frame.groupby([*by, metric], dropna=False, sort=False)
    out = grouped.agg(
        mean=("_v", "mean"), n=("_ok", "sum"), n_missing=("_ok", lambda s: int((~s).sum()))
    ).reset_index()
    out["n"] = out["n"].astype(int)
    keys = []
    for col in [*by, metric]:
        if pd.api.types.is_numeric_dtype(out[col]):
            keys.append(out[col].fillna(-np.inf))
        else:
            first_seen = {v: i for i, v in enumerate(pd.unique(scores[col]))}
            keys.append(out[col].map(first_seen))
    order = np.lexsort([k.to_numpy() for k in reversed(keys)])
    return out.iloc[order].reset_index(drop=True)
