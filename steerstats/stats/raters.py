"""Judges as raters: reliability by facet, each judge's offset, and limits of agreement.

``reliability`` pools every judging of a response into one set of occasions; here the two
facets of an LLM-judged score are kept apart: a judge disagreeing with itself on a re-run
(test-retest) and judges disagreeing with each other (inter-rater), with each judge's
systematic offset from the panel and Bland-Altman limits of agreement between two judges.
The variance decomposition is in ``gstudy.py``; conclusions under each judge in
``robustness.py``.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from steerstats.stats._data import require_metric, response_level
from steerstats.stats._panel import (
    as_list,
    is_integer,
    judged_items,
    panel_metrics,
    prepare_panel,
)
from steerstats.stats.bootstrap import CIMethod, check_bootstrap_args, cluster_bootstrap
from steerstats.stats.reliability import reliability

__all__ = ["bland_altman", "rater_bias", "rater_reliability"]


# ---------------------------------------------------------------------------------------------
# Reliability by facet


def rater_reliability(
    scores: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    *,
    metrics: str | Sequence[str] | None = None,
    targets: str | Sequence[str] | None = None,
    rater: str = "rater",
    repeat: str = "repeat",
    n_boot: int = 1000,
    seed: int | None = 0,
    value: str = "value",
    metric: str = "metric",
) -> pd.DataFrame:
    """Reliability by facet: each judge against itself, and the judges against each other.

    *Test-retest*: the repeats of one judge on the same response (ICCs, and Krippendorff's
    alpha and agreement rates where the scores are integers). *Inter-rater*: the judges
    against each other, each judge's repeats averaged first. Both come from
    :func:`steerstats.stats.reliability`, so they read like its table.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table, one row per rating (columns as ``steerstats.schema.SCORE_COLUMNS``).
    by : str or list of str, optional
        Columns to split by first (e.g. ``"method"``).
    metrics : str or list of str, optional
        Metrics to analyse; default every metric with a repeated judge or two judges.
        Computed metrics (rater ``"auto"``) are left out.
    targets : str or list of str, optional
        Columns identifying a judged response; default ``("key", "query_id")`` when present,
        else (model, method, strength, query_id, prompt_id, sample).
    rater, repeat : str
        Columns naming the judge and the repeat index. ``rater="repeat"`` treats each repeat
        as its own rater (e.g. a local judge whose repeats are different rubric wordings).
    n_boot, seed
        Bootstrap of targets for alpha and agreement intervals (as in ``reliability``).
    value, metric : str
        Column names of the rating and the metric.

    Returns
    -------
    pandas.DataFrame
        One row per (``by``, metric, facet, rater, statistic):

        - the ``by`` columns, ``metric``
        - ``facet``: ``"test-retest"`` (one judge's repeats) or ``"inter-rater"`` (judges,
          repeats averaged)
        - ``rater``: the judge (test-retest) or NaN (inter-rater: the whole panel)
        - ``n_raters``: judges compared (1 for test-retest)
        - ``integer_scores``: whether the scores compared are all integers; if not, ordinal and
          nominal alpha and exact agreement are NaN with a ``note`` (they count exact matches,
          which continuous scores never have); the ICCs, interval alpha and agreement within
          one point are reported
        - ``statistic``, ``estimate``, ``ci_low``, ``ci_high``, ``ci_method``, ``n_targets``,
          ``n_ratings``, ``n_occasions``, ``n_targets_dropped``: as in
          :func:`steerstats.stats.reliability` (occasions are repeats for test-retest and
          judges for inter-rater)

    Raises
    ------
    ValueError
        A column is missing, or no metric has a repeated judge or two judges.

    Notes
    -----
    Test-retest tells how much of a judge's score is sampling noise (its own disagreement
    on a re-run); inter-rater how much a different judge would change it. Averaging a judge's
    repeats before comparing judges removes the first from the second, so a low inter-rater
    ICC with a high test-retest ICC means the judges measure different things, not noisily.
    ICC(2,1) and ICC(3,1) of the inter-rater facet differ by the judges' systematic offsets
    (see :func:`rater_bias`).

    Examples
    --------
    >>> from steerstats.stats import rater_reliability, simulate_panel
    >>> panel = simulate_panel(n_responses=60, n_raters=2, n_repeats=2, seed=1)
    >>> rel = rater_reliability(panel, n_boot=200)
    >>> rel.loc[rel["statistic"] == "ICC2", ["facet", "rater", "estimate"]].round(2)
              facet    rater  estimate
    1   test-retest  judge-0      0.74
    18  test-retest  judge-1      0.70
    35  inter-rater      NaN      0.71
    """
    by_cols = as_list(by)
    target_cols = judged_items(scores, targets)
    data = prepare_panel(scores, by_cols, target_cols, rater, [repeat], value, metric)
    wanted = None if metrics is None else as_list(metrics)
    for m in wanted or []:
        require_metric(data, m, metric)
    frames: list[pd.DataFrame] = []
    pairs = data.groupby([metric, rater], sort=True)[repeat].nunique()
    for (name, judge), n_rep in pairs.items():
        if n_rep < 2 or (wanted is not None and name not in wanted):
            continue
        sub = data[(data[metric] == name) & (data[rater] == judge)]
        table = _reliability_rows(sub, by_cols, name, target_cols, repeat, n_boot, seed,
                                  metric)
        frames.append(table.assign(facet="test-retest", rater=judge, n_raters=1))
    n_judges = data.groupby(metric)[rater].nunique()
    for name, k in n_judges.items():
        if k < 2 or (wanted is not None and name not in wanted):
            continue
        sub = data[data[metric] == name]
        avg = response_level(sub, [*by_cols, metric, *target_cols, rater], value="_value")
        table = _reliability_rows(avg, by_cols, name, target_cols, rater, n_boot, seed,
                                  metric)
        frames.append(table.assign(facet="inter-rater", rater=np.nan, n_raters=int(k)))
    if not frames:
        raise ValueError(f"no metric has a repeated judge (two or more values of {repeat!r}) "
                         f"or two judges (column {rater!r}); rater reliability needs either")
    out = pd.concat(frames, ignore_index=True)
    lead = [*by_cols, "metric", "facet", "rater", "n_raters", "integer_scores"]
    out = out[[*lead, *[c for c in out.columns if c not in lead]]]
    facet_order = out["facet"].map({"test-retest": 0, "inter-rater": 1})
    out = out.assign(_f=facet_order).sort_values(["metric", "_f"], kind="stable")
    return out.drop(columns="_f").reset_index(drop=True)


def _reliability_rows(
    sub: pd.DataFrame, by_cols: list[str], name: str, targets: list[str], occasion: str,
    n_boot: int, seed: int | None, metric: str,
) -> pd.DataFrame:
    """``reliability`` of one metric's ratings with ``occasion`` as the rating occasion; on
    scores that are not integers its categorical statistics are NaN with a note."""
    integer = is_integer(sub["_value"].to_numpy(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = reliability(sub, by_cols or None, metrics=[name], targets=targets,
                            occasions=(occasion,), n_boot=n_boot, seed=seed, value="_value",
                            metric=metric)
    if metric != "metric" and metric in table:
        table = table.rename(columns={metric: "metric"})
    return table.assign(integer_scores=integer)


# ---------------------------------------------------------------------------------------------
# Rater bias and Bland-Altman limits of agreement


def _judge_means(
    data: pd.DataFrame, by_cols: list[str], targets: list[str], clusters: Sequence[str],
    rater: str, metric: str,
) -> pd.DataFrame:
    """Each judge's mean over its repeats per response (parsed ratings only)."""
    keys = list(dict.fromkeys([*by_cols, metric, *targets, *clusters, rater]))
    ok = data[np.isfinite(data["_value"].to_numpy(float))]
    return ok.groupby(keys, sort=True, dropna=False)["_value"].mean().reset_index()


def rater_bias(
    scores: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    *,
    metrics: str | Sequence[str] | None = None,
    targets: str | Sequence[str] | None = None,
    rater: str = "rater",
    clusters: Sequence[str] = ("query_id",),
    n_boot: int = 2000,
    confidence: float = 0.95,
    ci_method: CIMethod = "t",
    seed: int | None = 0,
    value: str = "value",
    metric: str = "metric",
) -> pd.DataFrame:
    """Each judge's mean offset from the panel mean, per metric, with query-clustered CIs.

    On the responses every judge of the panel rated, each judge's score (its repeats
    averaged) minus the panel's mean score for that response, averaged over responses. A
    judge that rates everything 0.5 higher has offset +0.5 minus its share of the panel mean.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table, one row per rating.
    by : str or list of str, optional
        Columns to split by first (e.g. ``"method"``).
    metrics : str or list of str, optional
        Metrics; default every metric rated by two or more judges (rater ``"auto"`` left out).
    targets : str or list of str, optional
        Columns identifying a judged response (default as in :func:`rater_reliability`).
    rater : str
        Column naming the judge.
    clusters : sequence of str
        Cluster factors the bootstrap resamples (default queries: responses to one query share
        its difficulty, so they are not independent).
    n_boot, confidence, ci_method, seed
        As in :func:`steerstats.stats.summarize`.
    value, metric : str
        Column names of the rating and the metric.

    Returns
    -------
    pandas.DataFrame
        One row per (``by``, metric, judge):

        - the ``by`` columns, ``metric``, ``rater``
        - ``offset``: mean of (judge's score - panel mean) over the complete responses
        - ``ci_low``, ``ci_high``: confidence limits of ``offset`` (cluster bootstrap)
        - ``judge_mean``, ``panel_mean``: the judge's and the panel's mean on those responses
        - ``n_responses``: responses rated (parsed) by every judge of the panel
        - ``n_clusters``: levels of the first cluster factor among them
        - ``n_raters``: judges in the panel

    Notes
    -----
    Responses missing a parsed score from some judge are left out (counted in
    ``n_responses``), so every offset is over the same responses and the offsets of a panel
    sum to 0. The interval resamples clusters (queries) with the replicate weights of
    :func:`steerstats.stats.cluster_bootstrap`, all judges jointly.

    Examples
    --------
    >>> from steerstats.stats import rater_bias, simulate_panel
    >>> panel = simulate_panel(n_responses=60, n_raters=2, offsets=(0.0, 0.5), seed=3)
    >>> rater_bias(panel, n_boot=500)[["rater", "offset", "ci_low", "ci_high"]].round(2)
         rater  offset  ci_low  ci_high
    0  judge-0   -0.28   -0.38    -0.18
    1  judge-1    0.28    0.18     0.38
    """
    by_cols = as_list(by)
    target_cols = judged_items(scores, targets)
    check_bootstrap_args(n_boot, confidence, ci_method)
    names = as_list(clusters)
    data = prepare_panel(scores, by_cols, target_cols, rater, names, value, metric)
    chosen = panel_metrics(data, metrics, rater, metric, "rater bias")
    data = data[data[metric].isin(chosen)]
    means = _judge_means(data, by_cols, target_cols, names, rater, metric)
    panel_keys = [*by_cols, metric]
    resp_keys = list(dict.fromkeys([*panel_keys, *target_cols]))
    n_panel = means.groupby(panel_keys, dropna=False)[rater].transform("nunique")
    n_here = means.groupby(resp_keys, dropna=False)[rater].transform("nunique")
    complete = means[(n_here == n_panel) & (n_panel >= 2)].copy()
    complete["_panel"] = complete.groupby(resp_keys, dropna=False)["_value"].transform("mean")
    complete["_offset"] = complete["_value"] - complete["_panel"]
    groups = [*panel_keys, rater]
    if complete.empty:
        raise ValueError("no response was rated (parsed) by every judge of a panel")
    res = cluster_bootstrap(complete, "_offset", groups=groups, clusters=names, n_boot=n_boot,
                            seed=seed)
    low, high = res.interval(confidence, ci_method)
    out = res.groups.copy()
    out["offset"] = res.estimate
    out["ci_low"], out["ci_high"] = low, high
    agg = complete.groupby(groups, dropna=False).agg(
        judge_mean=("_value", "mean"), panel_mean=("_panel", "mean"),
        n_responses=("_value", "size"), n_clusters=(names[0], "nunique")).reset_index()
    out = out.merge(agg, on=groups, how="left")
    out["n_raters"] = out.groupby(panel_keys, dropna=False)[rater].transform("size")
    out = out.rename(columns={metric: "metric", rater: "rater"})
    return out[[*by_cols, "metric", "rater", "offset", "ci_low", "ci_high", "judge_mean",
                "panel_mean", "n_responses", "n_clusters", "n_raters"]].reset_index(drop=True)


def bland_altman(
    scores: pd.DataFrame,
    rater_a: str | None = None,
    rater_b: str | None = None,
    by: str | Sequence[str] | None = None,
    *,
    metrics: str | Sequence[str] | None = None,
    targets: str | Sequence[str] | None = None,
    rater: str = "rater",
    clusters: Sequence[str] = ("query_id",),
    agreement: float = 0.95,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int | None = 0,
    value: str = "value",
    metric: str = "metric",
) -> pd.DataFrame:
    """Bland-Altman limits of agreement between two judges, per metric.

    The difference of two judges' scores on the same response (each judge's repeats averaged)
    has mean ``bias`` and SD ``sd``; 95% of single differences are expected within
    ``bias +/- 1.96 sd``: how far apart two judges' scores of one response can be.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table, one row per rating.
    rater_a, rater_b : str, optional
        The two judges (difference is ``a - b``). Default: every pair of judges of a metric,
        in sorted order.
    by : str or list of str, optional
        Columns to split by first.
    metrics : str or list of str, optional
        Metrics; default every metric rated by two or more judges.
    targets : str or list of str, optional
        Columns identifying a judged response (default as in :func:`rater_reliability`).
    rater : str
        Column naming the judge.
    clusters : sequence of str
        Cluster factors the bootstrap resamples (default queries).
    agreement : float
        Share of differences the limits should hold (0.95: ``z = 1.96``).
    n_boot, confidence, seed
        Query-clustered bootstrap for the intervals.
    value, metric : str
        Column names of the rating and the metric.

    Returns
    -------
    pandas.DataFrame
        One row per (``by``, metric, judge pair):

        - the ``by`` columns, ``metric``, ``rater_a``, ``rater_b``
        - ``n_responses``: responses with a parsed score from both judges
        - ``bias``: mean of ``a - b``; ``bias_ci_low``, ``bias_ci_high``: its interval
        - ``sd``: SD of the differences (ddof 1)
        - ``loa_low``, ``loa_high``: ``bias -/+ z sd``
        - ``loa_low_ci_low``, ``loa_low_ci_high``, ``loa_high_ci_low``, ``loa_high_ci_high``:
          percentile intervals of the limits from the same resamples
        - ``n_repeats_a``, ``n_repeats_b``: mean parsed repeats per response of each judge
          (the limits are for scores averaged over that many repeats)

    Notes
    -----
    Bland & Altman (1986). The intervals resample clusters (queries), not responses, with the
    weights of :func:`steerstats.stats.cluster_bootstrap`; a resample's SD is computed from
    the resampled first and second moments (times ``n / (n - 1)``). The bias interval is the
    percentile interval too. Checked against Bland & Altman's (1986) peak-flow example in
    the tests.

    References
    ----------
    Bland, J. M., Altman, D. G. (1986). Statistical methods for assessing agreement between
    two methods of clinical measurement. The Lancet 327(8476), 307-310.

    Examples
    --------
    >>> from steerstats.stats import bland_altman, simulate_panel
    >>> panel = simulate_panel(n_responses=60, n_raters=2, offsets=(0.0, 0.5), seed=3)
    >>> ba = bland_altman(panel, n_boot=500)
    >>> ba[["rater_a", "rater_b", "bias", "loa_low", "loa_high"]].round(2)
       rater_a  rater_b  bias  loa_low  loa_high
    0  judge-0  judge-1 -0.56    -1.99      0.86
    """
    if not 0 < agreement < 1:
        raise ValueError(f"agreement must be between 0 and 1 (e.g. 0.95), got {agreement!r}")
    check_bootstrap_args(n_boot, confidence, "percentile")
    by_cols = as_list(by)
    target_cols = judged_items(scores, targets)
    names = as_list(clusters)
    data = prepare_panel(scores, by_cols, target_cols, rater, names, value, metric)
    if (rater_a is None) != (rater_b is None):
        raise ValueError("give both rater_a and rater_b, or neither (every pair of judges)")
    if rater_a is not None:
        for r in (rater_a, rater_b):
            if not (data[rater] == r).any():
                present = sorted(map(str, data[rater].dropna().unique()))
                raise ValueError(f"rater {r!r} not found in column {rater!r}; present: {present}")
    chosen = panel_metrics(data, metrics, rater, metric, "Bland-Altman")
    ok = data[np.isfinite(data["_value"].to_numpy(float))]
    reps = ok.groupby([*by_cols, metric, *target_cols, rater], dropna=False).size()
    means = _judge_means(data, by_cols, target_cols, names, rater, metric)
    frames = []
    for name in chosen:
        m = means[means[metric] == name]
        judges = sorted(m[rater].unique()) if rater_a is None else [rater_a, rater_b]
        todo = (list(itertools.combinations(judges, 2)) if rater_a is None or rater_b is None
                else [(rater_a, rater_b)])
        for a, b in todo:
            keys = list(dict.fromkeys([*by_cols, metric, *target_cols, *names]))
            left = m[m[rater] == a][[*keys, "_value"]]
            right = m[m[rater] == b][[*keys, "_value"]]
            pair = left.merge(right, on=keys, suffixes=("_a", "_b"))
            pair["_d"] = pair["_value_a"] - pair["_value_b"]
            pair["rater_a"], pair["rater_b"] = a, b
            r_m = reps.xs(name, level=metric)
            pair["_na"] = _lookup(r_m, pair, [*by_cols, *target_cols], rater, a)
            pair["_nb"] = _lookup(r_m, pair, [*by_cols, *target_cols], rater, b)
            frames.append(pair)
    if not frames or all(f.empty for f in frames):
        raise ValueError("no response has parsed scores from both judges of a pair")
    pairs = pd.concat(frames, ignore_index=True)
    group_cols = [*by_cols, metric, "rater_a", "rater_b"]
    stacked = pd.concat([pairs.assign(_stat=0, _x=pairs["_d"]),
                         pairs.assign(_stat=1, _x=pairs["_d"] ** 2)], ignore_index=True)
    res = cluster_bootstrap(stacked, "_x", groups=[*group_cols, "_stat"], clusters=names,
                            n_boot=n_boot, seed=seed)
    keys = res.groups
    z = float(stats.norm.ppf(0.5 + agreement / 2))
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    rows = []
    for key, g in pairs.groupby(group_cols, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        sel = np.ones(len(keys), dtype=bool)
        for col, v in zip(group_cols, key, strict=True):
            sel &= (keys[col] == v).to_numpy() | (keys[col].isna() & pd.isna(v)).to_numpy()
        i1 = np.flatnonzero(sel & (keys["_stat"] == 0).to_numpy())[0]
        i2 = np.flatnonzero(sel & (keys["_stat"] == 1).to_numpy())[0]
        d = g["_d"].to_numpy(float)
        n = len(d)
        bias, sd = float(d.mean()), float(d.std(ddof=1)) if n > 1 else np.nan
        m1, m2 = res.replicates[:, i1], res.replicates[:, i2]
        sd_b = np.sqrt(np.maximum(m2 - m1**2, 0.0) * n / max(n - 1, 1))
        lo_b, hi_b = m1 - z * sd_b, m1 + z * sd_b
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            qs = [np.nanquantile(x, q) if np.isfinite(x).any() else (np.nan, np.nan)
                  for x in (m1, lo_b, hi_b)]
        rows.append({
            **dict(zip(group_cols, key, strict=True)), "n_responses": n, "bias": bias,
            "bias_ci_low": float(qs[0][0]), "bias_ci_high": float(qs[0][1]), "sd": sd,
            "loa_low": bias - z * sd, "loa_high": bias + z * sd,
            "loa_low_ci_low": float(qs[1][0]), "loa_low_ci_high": float(qs[1][1]),
            "loa_high_ci_low": float(qs[2][0]), "loa_high_ci_high": float(qs[2][1]),
            "n_repeats_a": float(g["_na"].mean()), "n_repeats_b": float(g["_nb"].mean()),
        })
    out = pd.DataFrame(rows)
    return out.rename(columns={metric: "metric"}).reset_index(drop=True)


def _lookup(counts: pd.Series, frame: pd.DataFrame, keys: list[str], rater: str,
            judge: object) -> np.ndarray:
    """Per row of ``frame``, the count of ``judge``'s parsed ratings of that response."""
    idx = pd.MultiIndex.from_frame(frame[keys].assign(**{rater: judge}))
    return counts.reindex(idx).to_numpy(float)
