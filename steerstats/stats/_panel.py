"""Shared input handling of the judge-panel statistics (private to ``steerstats.stats``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from steerstats.schema import AUTO_RATER
from steerstats.stats._data import numeric_values, require_columns, require_metric

_GENERATION = ("model", "method", "strength", "query_id", "prompt_id", "sample")


def as_list(x: str | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def judged_items(scores: pd.DataFrame, targets: str | Sequence[str] | None) -> list[str]:
    """A judged item: a generation *for a query* (control replies can be shared by queries)."""
    if targets is not None:
        return as_list(targets)
    if "key" in scores.columns:
        return ["key", "query_id"] if "query_id" in scores.columns else ["key"]
    return [c for c in _GENERATION if c in scores.columns]


def prepare_panel(
    scores: pd.DataFrame, by: list[str], targets: list[str], rater: str, extra: Sequence[str],
    value: str, metric: str,
) -> pd.DataFrame:
    """The columns used, value as float in ``_value``, computed metrics (rater 'auto') left out."""
    require_columns(scores, {"value": value, "metric": metric, "rater": rater})
    for kw, cols in (("by", by), ("targets", targets), ("extra", list(extra))):
        for col in cols:
            require_columns(scores, {kw: col})
    cols = list(dict.fromkeys([*by, metric, *targets, rater, *extra]))
    data = scores[cols].copy()
    data["_value"] = numeric_values(scores, value).to_numpy()
    return data[data[rater].astype(str) != AUTO_RATER]


def panel_metrics(
    data: pd.DataFrame, metrics: str | Sequence[str] | None, rater: str, metric: str,
    what: str,
) -> list[str]:
    """Metrics rated by two or more judges (all such metrics, or the requested ones)."""
    n_raters = data.groupby(metric)[rater].nunique()
    if metrics is None:
        chosen = sorted(str(m) for m in n_raters.index[n_raters >= 2])
        if not chosen:
            raise ValueError(f"{what} needs a metric rated by two or more judges (column "
                             f"{rater!r}); every metric here has one judge")
        return chosen
    chosen = as_list(metrics)
    for m in chosen:
        require_metric(data, m, metric)
        if n_raters.get(m, 0) < 2:
            raise ValueError(f"metric {m!r} is rated by a single judge (column {rater!r}); "
                             f"{what} needs two or more")
    return chosen


def is_integer(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return bool(len(v)) and bool(np.all(v == np.round(v)))
