"""Dose-response over steering strength: per-query slopes, steerability spread, strength choice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from steerstats.stats._data import (
    check_confidence,
    require_columns,
    require_metric,
    response_level,
)

__all__ = ["DoseResponse", "dose_response"]

_ROUNDOFF = float(np.sqrt(np.finfo(float).eps))


@dataclass
class DoseResponse:
    """Tables from :func:`dose_response` (each tidy, one row per estimate).

    Attributes
    ----------
    slopes : pandas.DataFrame
        Per model x method x metric x query: the slope of the metric on strength.
    steerability : pandas.DataFrame
        Per model x method x metric: how slopes vary across queries.
    selection : pandas.DataFrame
        Per model x method (x query): the strength chosen on one half of the prompts and its
        behaviour and coherence on the other half.
    """

    slopes: pd.DataFrame
    steerability: pd.DataFrame
    selection: pd.DataFrame


def _cluster_slopes(resp: pd.DataFrame, keys: list[str], confidence: float) -> pd.DataFrame:
    """OLS slope of y on x per ``keys`` group with CR1 cluster-robust SE (clusters: prompts).

    Matches ``statsmodels`` OLS ``cov_type="cluster"`` (small-sample factor
    G/(G-1) * (N-1)/(N-2)) with t inference on G-1 df.
    """
    g = resp.groupby(keys, sort=True, dropna=False)
    d = resp.assign(
        xc=resp["x"] - g["x"].transform("mean"),
        yc=resp["y"] - g["y"].transform("mean"),
    )
    d["xx"], d["xy"] = d["xc"] ** 2, d["xc"] * d["yc"]
    agg = d.groupby(keys, sort=True, dropna=False).agg(
        sxx=("xx", "sum"), sxy=("xy", "sum"), n=("y", "size"),
        n_prompts=("cluster", "nunique"), n_strengths=("x", "nunique"))
    with np.errstate(divide="ignore", invalid="ignore"):
        agg["slope"] = agg["sxy"] / agg["sxx"]
    d = d.join(agg["slope"], on=keys)
    d["resid"] = d["yc"] - d["slope"] * d["xc"]
    d["score"] = d["xc"] * d["resid"]
    d["rr"] = d["resid"] ** 2
    meat = (d.groupby([*keys, "cluster"], sort=True, dropna=False)["score"].sum() ** 2)
    agg["meat"] = meat.groupby(level=list(range(len(keys))), dropna=False).sum()
    # The meat is at most sxx * rss (Cauchy-Schwarz per prompt). Far below that, the per-prompt
    # sums cancel exactly (e.g. each MMLU question answered alike at every strength) and what
    # is left is round-off, which would give a tiny spurious SE: make it the exact zero.
    rss = d.groupby(keys, sort=True, dropna=False)["rr"].sum()
    agg.loc[agg["meat"] <= _ROUNDOFF**2 * agg["sxx"] * rss, "meat"] = 0.0
    G, N = agg["n_prompts"].astype(float), agg["n"].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = G / (G - 1) * (N - 1) / (N - 2)
        agg["se"] = np.sqrt(corr * agg["meat"]) / agg["sxx"]
        agg["df"] = G - 1
        tcrit = stats.t.ppf(0.5 + confidence / 2, agg["df"])
        agg["ci_low"] = agg["slope"] - tcrit * agg["se"]
        agg["ci_high"] = agg["slope"] + tcrit * agg["se"]
        agg["p"] = 2 * stats.t.sf(np.abs(agg["slope"] / agg["se"]), agg["df"])
    # SE 0: the metric does not vary between prompts at a strength (e.g. capability_nll, scored
    # on one fixed reference text): prompts are not its sampling unit, so there is no test.
    none = agg["se"] == 0
    agg.loc[none, ["ci_low", "ci_high", "p"]] = np.nan
    return agg.reset_index()


def _dersimonian_laird(y: np.ndarray, v: np.ndarray, confidence: float) -> dict[str, float]:
    """Random-effects mean with DerSimonian-Laird tau^2 (truncated at 0) and a t(k-1) interval.

    Written out because ``statsmodels.stats.meta_analysis.combine_effects(method_re="dl")``
    (0.14-0.15) does not truncate a negative tau^2 and then weights by ``1 / (v + tau2)``.
    """
    k = len(y)
    w = 1.0 / v
    q = float(np.sum(w * (y - np.sum(w * y) / w.sum()) ** 2))
    # c = sum w - sum w^2 / sum w, written with leave-one-out sums: the plain form cancels to
    # 0 when one weight dwarfs the rest.
    others = np.array([np.delete(w, i).sum() for i in range(k)])
    c = float(np.sum(w * others) / w.sum())
    tau2 = max(0.0, (q - (k - 1)) / c)
    w_re = 1.0 / (v + tau2)
    mean = float(np.sum(w_re * y) / w_re.sum())
    se = float(np.sqrt(1.0 / w_re.sum()))
    half = float(stats.t.ppf(0.5 + confidence / 2, k - 1)) * se
    return {"mean_slope": mean, "se": se, "ci_low": mean - half, "ci_high": mean + half,
            "tau2": tau2, "tau": float(np.sqrt(tau2)),
            "i2": max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0}


def _spread(slopes: pd.DataFrame, keys: list[str], confidence: float) -> pd.DataFrame:
    """Random-effects summary of per-query slopes (DerSimonian-Laird tau^2, t on k-1 df)."""
    rows = []
    for key, everything in slopes.groupby(keys, sort=True, dropna=False):
        g = everything[np.isfinite(everything["slope"]) & np.isfinite(everything["se"])
                       & (everything["se"] > 0)]
        row = dict(zip(keys, key, strict=True))
        k = len(g)
        row["n_queries"] = k
        row["note"] = _spread_note(everything, k)
        row["sd_slopes"] = float(g["slope"].std(ddof=1)) if k > 1 else np.nan
        if k >= 2:
            row.update(_dersimonian_laird(g["slope"].to_numpy(), g["se"].to_numpy() ** 2,
                                          confidence))
        else:
            row.update({c: np.nan for c in ("mean_slope", "se", "ci_low", "ci_high", "tau2",
                                            "tau", "i2")})
        flags = g["anti_steerable"]
        row["n_anti_steerable"] = pd.NA if flags.isna().all() else int(flags.fillna(False).sum())
        rows.append(row)
    cols = [*keys, "n_queries", "mean_slope", "se", "ci_low", "ci_high", "sd_slopes", "tau2",
            "tau", "i2", "n_anti_steerable", "note"]
    out = pd.DataFrame(rows, columns=cols)
    out["n_anti_steerable"] = out["n_anti_steerable"].astype("Int64")
    return out


def _spread_note(slopes: pd.DataFrame, n_usable: int) -> str:
    """Why a steerability row has fewer queries than slopes, or no spread at all."""
    parts = []
    finite = np.isfinite(slopes["slope"]) & np.isfinite(slopes["se"])
    no_se = int((finite & (slopes["se"] == 0)).sum())
    no_slope = int((~finite).sum())
    if no_se:
        parts.append(f"{no_se} of {len(slopes)} queries left out: their slope has standard "
                     "error 0 (e.g. each prompt scored alike at every strength)")
    if no_slope:
        parts.append(f"{no_slope} of {len(slopes)} queries left out: no finite slope or "
                     "standard error (one strength or one prompt)")
    if n_usable < 2:
        parts.append(f"{n_usable} usable query slope(s): the between-query spread needs two "
                     "or more, so it is NaN")
    return "; ".join(parts)


def _t_interval(x: np.ndarray, confidence: float) -> tuple[float, float, float]:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return np.nan, np.nan, np.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, np.nan, np.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return m, m - half, m + half


def _select(
    resp: pd.DataFrame,
    behavior: str,
    coherence: str | None,
    threshold: float,
    per_query: bool,
    confidence: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Choose a strength on half of each query's prompts, evaluate it on the other half."""
    pairs = resp[["query", "prompt"]].drop_duplicates().sort_values(["query", "prompt"])
    half = {}
    for q, g in pairs.groupby("query", sort=True):
        prompts = g["prompt"].to_numpy()
        order = rng.permutation(len(prompts))
        for rank, i in enumerate(order):
            half[(q, prompts[i])] = "selection" if rank < len(prompts) // 2 else "heldout"
    resp = resp.assign(half=[half[(q, p)] for q, p in zip(resp["query"], resp["prompt"],
                                                          strict=True)])
    metrics = [behavior] + ([coherence] if coherence is not None else [])
    unit_keys = ["model", "method"] + (["query"] if per_query else [])
    # In held-out evaluation the independent units are prompts (per query) or queries (pooled).
    cluster = "prompt" if per_query else "query"
    rows = []
    for key, g in resp[resp["metric"].isin(metrics)].groupby(unit_keys, sort=True):
        base = dict(zip(unit_keys, key, strict=True))
        sel = g[g["half"] == "selection"].groupby(["x", "metric"])["y"].mean().unstack("metric")
        note = ""
        eligible = sel
        if coherence is not None:
            if coherence not in sel:
                eligible = sel.iloc[0:0]
            else:
                eligible = sel[sel[coherence] >= threshold]
        if behavior not in sel or eligible.empty or eligible[behavior].isna().all():
            chosen = np.nan
            note = (f"no strength kept mean {coherence} >= {threshold} on the selection half"
                    if coherence is not None else "no behaviour scores on the selection half")
        else:
            best = eligible[behavior].max()
            chosen = float(eligible.index[eligible[behavior] == best].min())  # ties: weakest
        held = g[(g["half"] == "heldout") & (g["x"] == chosen)]
        for metric in metrics:
            h = held[held["metric"] == metric]
            units = h.groupby(cluster)["y"].mean().to_numpy()
            est, lo, hi = _t_interval(units, confidence)
            sel_value = (float(sel.loc[chosen, metric])
                         if np.isfinite(chosen) and metric in sel else np.nan)
            rows.append({
                **base, "metric": metric, "chosen_strength": chosen, "selection_mean": sel_value,
                "estimate": est, "ci_low": lo, "ci_high": hi,
                "n_selection_prompts": int(g.loc[g["half"] == "selection", "prompt"].nunique()),
                "n_heldout_prompts": int(g.loc[g["half"] == "heldout", "prompt"].nunique()),
                "note": note,
            })
    return pd.DataFrame(rows)


def dose_response(
    scores: pd.DataFrame,
    *,
    behavior: str = "behavior",
    coherence: str | None = "coherence",
    coherence_threshold: float = 4.0,
    per_query: bool = True,
    confidence: float = 0.95,
    seed: int | None = 0,
    value: str = "value",
    model: str = "model",
    method: str = "method",
    strength: str = "strength",
    clusters: Sequence[str] = ("query_id", "prompt_id"),
    sample: str | None = "sample",
    metric: str = "metric",
) -> DoseResponse:
    """Analyse a steering-strength sweep: slopes per query, their spread, and a held-out choice.

    Steering works differently for different concepts (queries): some respond strongly, some
    barely, some move the wrong way ("anti-steerable"). This fits a slope per query, summarises
    how much slopes vary, flags reliably negative behaviour slopes, and picks a strength on one
    half of the prompts so that its payoff can be judged honestly on the other half.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table. Only (model, method) pairs run at two or more finite strengths are
        analysed; rows with NaN strength (e.g. control, prompting) are ignored.
    behavior, coherence : str
        Metric names of the target behaviour and of coherence. ``coherence=None`` selects the
        strength on behaviour alone.
    coherence_threshold : float
        Minimum mean coherence (on the selection half) a strength needs to be chosen
        (default 4.0: "mostly coherent" on the 1-5 rubric).
    per_query : bool
        Choose a strength for each query (default) or one per model x method.
    confidence : float
        Confidence level of all intervals (default 0.95); anti-steerable flags use
        ``alpha = 1 - confidence``.
    seed : int, optional
        Seed of the random split of prompts into selection and held-out halves.
    value, model, method, strength, metric : str
        Column names.
    clusters : sequence of two str
        The query and prompt columns, in that order.
    sample : str or None
        Replicate-generation column (None when absent).

    Returns
    -------
    DoseResponse
        ``slopes`` (one row per model, method, metric, query):

        - ``model, method, metric, query_id``
        - ``slope``: OLS slope of the response-level value on strength (per unit strength)
        - ``se``: cluster-robust (CR1) standard error, clusters = prompts
        - ``df``: prompts - 1; ``ci_low``, ``ci_high``: t interval; ``p``: two-sided, slope = 0
        - ``p_holm``: Holm-adjusted over the queries of one model x method x metric
        - ``anti_steerable``: for the behaviour metric, slope < 0 with ``p_holm < 1 - confidence``
          (NA for other metrics)
        - ``n_prompts``, ``n_strengths``, ``n``: prompts, strengths, responses used

        ``steerability`` (one row per model, method, metric):

        - ``n_queries``: queries whose slope has a finite, positive standard error (the
          others are counted in ``note``); ``mean_slope``, ``se``, ``ci_low``, ``ci_high``:
          random-effects mean slope over them (DerSimonian-Laird, t interval on
          ``n_queries - 1`` df; NaN with fewer than two)
        - ``sd_slopes``: standard deviation of the estimated per-query slopes
        - ``tau2``, ``tau``: between-query variance (and SD) of true slopes, i.e. the
          steerability variance after removing estimation noise; ``i2``: its share of the
          total variation
        - ``n_anti_steerable``: queries flagged anti-steerable
        - ``note``: why queries were left out or the spread is NaN (empty when all were used)

        ``selection`` (one row per model, method, [query,] metric in {behaviour, coherence}):

        - ``chosen_strength``: the strength with the highest mean behaviour among those whose
          mean coherence on the selection half is at least ``coherence_threshold`` (ties: the
          weaker strength); NaN when none qualifies (see ``note``)
        - ``selection_mean``: the metric's mean at that strength on the selection half
          (optimistic: it was used to choose)
        - ``estimate``, ``ci_low``, ``ci_high``: its mean on the held-out half with a t
          interval over held-out prompts (per query) or over queries (pooled)
        - ``n_selection_prompts``, ``n_heldout_prompts``; ``note``: why a choice is missing

    Raises
    ------
    ValueError
        A column is missing, the behaviour metric is absent, or no (model, method) has two or
        more strengths.

    Notes
    -----
    Judge repeats are averaged per response first. A slope fitted to responses clusters by
    prompt (the same prompt at every strength), so its standard error is cluster-robust with
    the usual CR1 small-sample factor and t on (prompts - 1) df, which is what statsmodels'
    OLS with ``cov_type="cluster"`` gives (checked in the tests). The steerability summary
    treats per-query slopes as estimates with known variance and fits a random-effects
    meta-analysis (DerSimonian & Laird 1986, tau^2 truncated at zero, t interval on
    ``n_queries - 1`` df), so ``tau2`` is the random-slope variance across queries. A slope
    whose standard error is 0 (its per-prompt score sums cancel exactly, as when every
    prompt's metric is the same at all strengths; a value within round-off of 0 counts as 0)
    has no sampling variance to weight by, so it is left out of that summary and counted in
    ``note``. The prompt split is within each query, seeded.

    References
    ----------
    DerSimonian & Laird (1986). Meta-analysis in clinical trials. Controlled Clinical Trials
    7(3), 177-188. Tan et al. (2024). Analyzing the generalization and reliability of
    steering vectors.
    Braun et al. (2025). Understanding (un)reliability of steering vectors in language models.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from steerstats.stats import dose_response, simulate_crossed
    >>> rng = np.random.default_rng(4)
    >>> sweep = dict(n_queries=5, n_topic=0, n_common=12, n_repeats=1, sd_slope=0.4,
    ...              strengths=[0.0, 1.0, 2.0, 3.0], seed=rng)
    >>> scores = pd.concat([simulate_crossed({"caa": 3.0}, metric=m, slope=b, **sweep)
    ...                     for m, b in (("behavior", 0.3), ("coherence", -0.4))])
    >>> dr = dose_response(scores, coherence_threshold=2.5)
    >>> dr.slopes.loc[dr.slopes.metric == "behavior",
    ...               ["query_id", "slope", "ci_low", "ci_high", "anti_steerable"]].round(2)
       query_id  slope  ci_low  ci_high  anti_steerable
    0  query-00   0.41    0.20     0.63           False
    1  query-01   0.28    0.14     0.42           False
    2  query-02   0.86    0.61     1.12           False
    3  query-03  -0.39   -0.60    -0.18            True
    4  query-04   0.50    0.14     0.86           False
    >>> dr.steerability[["metric", "mean_slope", "ci_low", "ci_high", "tau"]].round(2)
          metric  mean_slope  ci_low  ci_high   tau
    0   behavior        0.33   -0.21     0.86  0.42
    1  coherence       -0.52   -0.91    -0.14  0.28
    >>> sel = dr.selection[dr.selection.metric == "behavior"]
    >>> sel[["query_id", "chosen_strength", "selection_mean", "estimate"]].round(2)
       query_id  chosen_strength  selection_mean  estimate
    0  query-00              2.0            3.69      3.80
    2  query-01              0.0            2.79      2.70
    4  query-02              3.0            6.99      5.83
    6  query-03              0.0            3.23      3.13
    8  query-04              2.0            2.69      1.50
    """
    check_confidence(confidence)
    names = (clusters,) if isinstance(clusters, str) else tuple(clusters)
    if len(names) != 2:
        raise ValueError(f"dose_response needs clusters=(query column, prompt column), got "
                         f"{names!r}")
    query, prompt = names
    metric_column = metric
    require_columns(scores, {"value": value, "model": model, "method": method,
                             "strength": strength, "clusters": query, "sample": sample,
                             "metric": metric_column})
    require_columns(scores, {"clusters": prompt})
    require_metric(scores, behavior, metric_column, role="behavior metric",
                   fix="pass behavior=...")
    if coherence is not None:
        require_metric(scores, coherence, metric_column, role="coherence metric",
                       fix="pass coherence=... or coherence=None")
    rows = scores[np.isfinite(pd.to_numeric(scores[strength], errors="coerce"))]
    n_str = rows.groupby([model, method])[strength].nunique()
    swept = n_str[n_str >= 2].index
    if len(swept) == 0:
        raise ValueError(
            f"no (model, method) was run at two or more finite strengths (column {strength!r}); "
            "dose_response needs a strength sweep"
        )
    rows = rows.set_index([model, method]).loc[swept].reset_index()
    keys = [c for c in (model, method, strength, query, prompt, sample, metric_column)
            if c is not None]
    resp = response_level(rows, keys, value=value)
    resp = resp[resp["n_ratings"] > 0]
    resp = pd.DataFrame({
        "model": resp[model].to_numpy(), "method": resp[method].to_numpy(),
        "metric": resp[metric_column].to_numpy(), "query": resp[query].to_numpy(),
        "prompt": resp[prompt].to_numpy(), "cluster": resp[prompt].to_numpy(),
        "x": resp[strength].to_numpy(dtype=float), "y": resp[value].to_numpy(dtype=float),
    })

    group = ["model", "method", "metric", "query"]
    slopes = _cluster_slopes(resp, group, confidence)
    slopes["p_holm"] = np.nan
    for _, idx in slopes.groupby(["model", "method", "metric"]).groups.items():
        p = slopes.loc[idx, "p"]
        ok = p.notna()
        if ok.any():
            slopes.loc[p[ok].index, "p_holm"] = multipletests(p[ok], method="holm")[1]
    is_behavior = slopes["metric"] == behavior
    anti = (slopes["slope"] < 0) & (slopes["p_holm"] < 1 - confidence)
    slopes["anti_steerable"] = pd.array(np.where(is_behavior, anti, pd.NA), dtype="boolean")
    slopes = slopes.rename(columns={"model": model, "method": method, "query": query,
                                    "metric": metric_column})
    slopes = slopes[[model, method, metric_column, query, "slope", "se", "df", "ci_low", "ci_high",
                     "p", "p_holm", "anti_steerable", "n_prompts", "n_strengths", "n"]]
    spread = _spread(slopes, [model, method, metric_column], confidence)
    selection = _select(resp, behavior, coherence, coherence_threshold, per_query, confidence,
                        np.random.default_rng(seed))
    selection = selection.rename(columns={"model": model, "method": method, "query": query,
                                          "metric": metric_column})
    return DoseResponse(slopes=slopes.reset_index(drop=True), steerability=spread,
                        selection=selection.reset_index(drop=True))
