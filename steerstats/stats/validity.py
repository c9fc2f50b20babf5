"""Judge validity: does a judge's score track an objective measure of the same behaviour?

When an LLM judge (``behavior``) and a reference metric (``sentiment``, computed by a
lexicon) rate the same responses, their agreement is the first check a reviewer of a
judge-rated study asks for. Both scores are averaged over repeats to one value per response;
Spearman's and Pearson's correlations are computed per arm (model x method x strength) and over
all responses, with intervals from a bootstrap that resamples steering queries (responses to
one query share a steering vector and a behaviour, so they are not independent).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ._data import check_confidence, require_columns, require_metric, response_level
from .bootstrap import cluster_weights

__all__ = ["judge_validity"]

RESPONSE_KEYS = ("model", "method", "strength", "query_id", "prompt_set", "prompt_id", "sample")
ARM_KEYS = ("model", "method", "strength")


def _weighted_ranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``x`` in each replicate where row ``i`` appears ``weights[b, i]`` times.

    A value whose copies (over all tied rows) total ``W_eq`` after ``W_less`` smaller copies
    has the mean rank ``W_less + (W_eq + 1) / 2``: exactly ``scipy.stats.rankdata`` of the
    resample written out row by row.
    """
    uniq, inv = np.unique(x, return_inverse=True)
    onehot = np.zeros((len(x), len(uniq)))
    onehot[np.arange(len(x)), inv] = 1.0
    w_eq = weights @ onehot
    w_less = np.cumsum(w_eq, axis=1) - w_eq
    return (w_less + (w_eq + 1.0) / 2.0)[:, inv]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson's r per replicate of rows repeated ``weights[b, i]`` times (NaN if constant)."""
    total = weights.sum(axis=1, keepdims=True)
    dx = x - (weights * x).sum(axis=1, keepdims=True) / total
    dy = y - (weights * y).sum(axis=1, keepdims=True) / total
    cov = (weights * dx * dy).sum(axis=1)
    var = (weights * dx * dx).sum(axis=1) * (weights * dy * dy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var)
    return np.where(var > 1e-24, r, np.nan)


def _correlations(
    x: np.ndarray, y: np.ndarray, clusters: np.ndarray, n_boot: int, confidence: float,
    rng: np.random.Generator,
) -> list[dict[str, float | str]]:
    """Spearman and Pearson rows for one group of responses."""
    levels, codes = np.unique(clusters, return_inverse=True)
    out: list[dict[str, float | str]] = []
    constant = len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0
    (w_query,) = cluster_weights([len(levels)], n_boot, rng)
    weights = w_query[:, codes]
    alpha = (1.0 - confidence) / 2.0
    for name in ("spearman", "pearson"):
        row: dict[str, float | str] = {"statistic": name}
        if constant:
            row.update(estimate=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan,
                       note="fewer than 3 responses or a constant score: no correlation")
            out.append(row)
            continue
        test = sps.spearmanr(x, y) if name == "spearman" else sps.pearsonr(x, y)
        if name == "spearman":
            boot = _weighted_pearson(_weighted_ranks(x, weights), _weighted_ranks(y, weights),
                                     weights)
        else:
            boot = _weighted_pearson(np.broadcast_to(x, weights.shape),
                                     np.broadcast_to(y, weights.shape), weights)
        finite = boot[np.isfinite(boot)]
        low, high = (np.quantile(finite, [alpha, 1.0 - alpha]) if len(finite) >= 2
                     else (np.nan, np.nan))
        note = "" if len(levels) >= 5 else f"only {len(levels)} queries: interval unreliable"
        row.update(estimate=float(test.statistic), ci_low=float(low), ci_high=float(high),
                   p_value=float(test.pvalue), note=note)
        out.append(row)
    return out


def judge_validity(
    data: pd.DataFrame,
    judge: str = "behavior",
    reference: str = "sentiment",
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int | None = 0,
    query: str = "query_id",
    metric: str = "metric",
    value: str = "value",
    response_keys: Sequence[str] = RESPONSE_KEYS,
    arm_keys: Sequence[str] = ARM_KEYS,
) -> pd.DataFrame:
    """Correlation of a judge's scores with a reference metric on the same responses.

    Parameters
    ----------
    data : pandas.DataFrame
        Tidy scores: one row per (response, metric, repeat) with ``metric`` and ``value``.
    judge, reference : str
        The two metric names (e.g. an LLM judge's ``behavior`` and VADER's ``sentiment``).
    n_boot : int
        Bootstrap replicates (queries resampled with replacement).
    confidence : float
        Coverage of the percentile intervals.
    seed : int or None
        Seed of the bootstrap draws.
    query, metric, value : str
        Column names of the steering query (the resampled cluster), metric and value.
    response_keys : sequence of str
        Columns identifying a response (those absent from ``data`` are ignored); repeats of a
        metric for one response are averaged.
    arm_keys : sequence of str
        Columns identifying an arm (those absent are ignored).

    Returns
    -------
    pandas.DataFrame
        One row per arm and one overall row (arm columns ``"all"``/NaN strength), times
        ``statistic`` (``spearman``, ``pearson``), with columns: the arm keys; ``judge`` and
        ``reference`` (the metric names); ``statistic``; ``n_responses`` (responses with both
        scores); ``n_queries``; ``estimate`` (the correlation); ``ci_low``, ``ci_high``
        (query-clustered percentile bootstrap); ``p_value`` (scipy's test of zero correlation,
        treating responses as independent: read the interval instead); ``note`` (why a value
        is missing or unreliable; empty otherwise).

    Examples
    --------
    >>> import steerstats.stats as st
    >>> scores = st.example_scores(seed=0)
    >>> v = st.judge_validity(scores, judge="behavior", reference="coherence")
    >>> list(v.columns[:4]), sorted(set(v["statistic"]))
    (['model', 'method', 'strength', 'judge'], ['pearson', 'spearman'])
    """
    require_columns(data, {"metric": metric, "value": value, "query": query})
    check_confidence(confidence)
    if judge == reference:
        raise ValueError(f"judge and reference must be different metrics, both are {judge!r}")
    for role, name in (("judge metric", judge), ("reference metric", reference)):
        require_metric(data, name, metric, role=role, fix="pass judge=... / reference=...")
    keys = [k for k in response_keys if k in data.columns and k not in (metric, value)]
    if query not in keys:
        keys.append(query)
    arms = [k for k in arm_keys if k in keys]
    wide = None
    for name, column in ((judge, "_judge"), (reference, "_reference")):
        part = response_level(data[data[metric] == name], keys, value)[[*keys, value]]
        part = part.rename(columns={value: column})
        wide = part if wide is None else wide.merge(part, on=keys, how="inner")
    assert wide is not None
    wide = wide[np.isfinite(wide["_judge"]) & np.isfinite(wide["_reference"])]
    rng = np.random.default_rng(seed)
    groups: list[tuple[dict[str, object], pd.DataFrame]] = []
    if arms:
        for key, part in wide.groupby(arms, sort=True, dropna=False):
            values = key if isinstance(key, tuple) else (key,)
            groups.append((dict(zip(arms, values, strict=True)), part))
    overall: dict[str, object] = {k: (np.nan if k == "strength" else "all") for k in arms}
    groups.append((overall, wide))
    rows = []
    for labels, part in groups:
        for row in _correlations(part["_judge"].to_numpy(float),
                                 part["_reference"].to_numpy(float),
                                 part[query].to_numpy(), n_boot, confidence, rng):
            rows.append({**labels, "judge": judge, "reference": reference,
                         "n_responses": len(part), "n_queries": part[query].nunique(), **row})
    columns = [*arms, "judge", "reference", "statistic", "n_responses", "n_queries", "estimate",
               "ci_low", "ci_high", "p_value", "note"]
    return pd.DataFrame(rows, columns=columns)
