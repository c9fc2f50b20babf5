"""Paired contrasts of each method against a baseline, with cluster-bootstrap CIs and tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._data import group_index, require_clusters, require_columns, response_level
from .bootstrap import (
    CIMethod,
    check_bootstrap_args,
    cluster_bootstrap,
    warn_few_clusters,
)

__all__ = ["paired_contrasts"]


@dataclass(frozen=True)
class PairedData:
    """Matched (method, baseline) differences, one row per pair, and every contrast's key.

    ``pairs`` has the contrast columns (model, metric, method, strength as kept), the cluster
    columns, ``value`` (the method's cell mean), ``baseline_value`` and ``diff``.
    ``contrasts`` lists every (model, metric, method, strength) in the data other than the
    baseline, including ones with no matched pair, so none silently disappears.
    """

    pairs: pd.DataFrame
    contrasts: pd.DataFrame
    contrast_cols: list[str]


def paired_cells(
    scores: pd.DataFrame,
    baseline: str,
    *,
    model: str | None,
    method: str,
    strength: str | None,
    metric: str | None,
    value: str,
    clusters: Sequence[str],
    sample: str | None,
) -> PairedData:
    """Average ratings to cells (model, method, strength, metric, clusters), pair with baseline.

    Ratings of a response are averaged first, then responses (samples) within a cell; cells
    without any parsed rating are not paired. The baseline must have a single strength.
    """
    names = require_clusters(scores, clusters)
    require_columns(
        scores,
        {"model": model, "method": method, "strength": strength, "metric": metric,
         "value": value, "sample": sample},
    )
    if scores.empty:
        raise ValueError("scores has no rows: nothing to contrast")
    methods = pd.unique(scores[method])
    if baseline not in set(methods):
        raise ValueError(
            f"baseline {baseline!r} is not a value of column {method!r} (methods present: "
            f"{', '.join(map(str, methods))}); pass baseline=... naming one of them"
        )
    if len(methods) < 2:
        raise ValueError(
            f"only the baseline method {baseline!r} is present: there is nothing to contrast"
        )
    if strength is not None:
        base_strengths = scores.loc[scores[method] == baseline, strength]
        if base_strengths.nunique(dropna=False) > 1:
            raise ValueError(
                f"baseline {baseline!r} has several values of {strength!r} "
                f"({sorted(base_strengths.unique().tolist())}); keep one (filter the rows) "
                "so every contrast has one reference"
            )
    outer = [c for c in (model, metric) if c is not None]
    arm = [method, *([strength] if strength is not None else [])]
    contrast_cols = [*outer, *arm]
    keys = [*contrast_cols, *names, *([sample] if sample is not None else [])]
    responses = response_level(scores, keys, value=value)
    responses = responses[np.isfinite(responses[value].to_numpy())]
    cells = (
        responses.groupby([*contrast_cols, *names], sort=True, dropna=False, observed=True)[value]
        .mean()
        .reset_index()
    )
    is_base = (cells[method] == baseline).to_numpy()
    base = cells.loc[is_base, [*outer, *names, value]].rename(columns={value: "baseline_value"})
    others = cells.loc[~is_base]
    pairs = others.merge(base, on=[*outer, *names], how="inner", validate="many_to_one")
    pairs["diff"] = pairs[value] - pairs["baseline_value"]
    all_arms = scores.loc[scores[method] != baseline, contrast_cols]
    _, contrasts = group_index(all_arms, contrast_cols)
    return PairedData(pairs=pairs, contrasts=contrasts, contrast_cols=contrast_cols)


def paired_contrasts(
    scores: pd.DataFrame,
    baseline: str = "control",
    *,
    model: str | None = "model",
    method: str = "method",
    strength: str | None = "strength",
    metric: str | None = "metric",
    value: str = "value",
    clusters: Sequence[str] = ("query_id", "prompt_id"),
    sample: str | None = "sample",
    n_boot: int = 2000,
    confidence: float = 0.95,
    ci_method: CIMethod = "t",
    seed: int | None = 0,
) -> pd.DataFrame:
    """Each method minus the baseline, paired on model, query and prompt, per metric.

    For every model x metric x method (x strength) the difference is the mean over matched
    (query, prompt) cells of ``method - baseline``, each cell averaged over samples and judge
    repeats first. Its CI and p-value come from the two-way cluster bootstrap of
    :func:`steerstats.stats.summarize`, so they respect clustering by query and by prompt.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table, one row per rating.
    baseline : str
        The reference method (a value of the ``method`` column), e.g. ``"control"`` or
        ``"prompt"``. It must have a single strength (usually NaN).
    model, strength, metric : str or None
        Columns; ``None`` leaves a role out.
    method : str
        Column naming the method.
    value : str
        Column of ratings (NaN = unparsed, excluded).
    clusters : sequence of str
        Cluster factors: pairs are matched on them (with model and metric) and the bootstrap
        resamples them.
    sample : str or None
        Replicate-generation column (averaged within a cell).
    n_boot, confidence, ci_method, seed
        As in :func:`steerstats.stats.summarize`.

    Returns
    -------
    pandas.DataFrame
        One row per contrast, sorted by model, metric, method, strength:

        - ``model``, ``metric``, ``method``, ``strength`` (the contrasted arm; NaN strength for
          strength-less methods)
        - ``baseline``: the reference method
        - ``n_pairs``: matched (query, prompt) cells with a parsed value for both arms
        - ``diff``: mean of ``method - baseline`` over the pairs
        - ``se``: bootstrap standard error of ``diff``, times ``sqrt(G/(G-1))``
        - ``df``: ``G - 1``, ``G`` being the smallest number of queries or prompts in the pairs
        - ``ci_low``, ``ci_high``: confidence limits of ``diff`` (method per ``ci_method``)
        - ``p``: two-sided p-value of ``diff = 0`` from ``diff / se`` on ``t_df``
        - ``p_holm``: ``p`` adjusted by Holm's method across all contrasts in the table
        - ``dz``: paired effect size, mean over SD (ddof=1) of the pair differences

        A contrast with no matched pair (e.g. the baseline is missing for that model or
        metric, or every value is unparsed) is kept with ``n_pairs = 0`` and NaN statistics.

    Notes
    -----
    **Pairing.** A pair is one (model, metric, query, prompt) cell observed for both the method
    and the baseline; cells missing on either side are left out (``n_pairs`` says how many
    remain). Each pair counts equally.

    **Strength sweeps.** Each strength of a method is its own contrast (its own row, with the
    ``strength`` column saying which), all against the single baseline; they are all in the
    Holm family.

    **Tests.** ``p`` uses the same standard error and degrees of freedom as the default
    ``"t"`` interval (see :func:`steerstats.stats.summarize`, Notes), so ``p < 1 - confidence``
    exactly when that interval excludes 0; with ``ci_method="expanded"`` or ``"percentile"``
    the interval changes but ``p`` does not. Because queries are resampled and ``df`` counts
    queries, the test has the power of a test on ``G`` queries, not on thousands of rows.

    **Effect size.** ``dz`` (Cohen's d for paired data) is ``diff / SD(differences)`` over the
    pairs; it describes pair-level consistency, not between-query generalisation.

    References
    ----------
    Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scandinavian
    Journal of Statistics 6(2), 65-70.

    Cohen, J. (1988). Statistical Power Analysis for the Behavioral Sciences (2nd ed.), Ch. 2.

    Examples
    --------
    >>> from steerstats.stats import example_scores, paired_contrasts
    >>> scores = example_scores(seed=0)
    >>> table = paired_contrasts(scores, baseline="control", n_boot=1000, seed=1)
    >>> table.columns.tolist()  # doctest: +NORMALIZE_WHITESPACE
    ['model', 'method', 'strength', 'metric', 'baseline', 'n_pairs', 'diff', 'se', 'df',
     'ci_low', 'ci_high', 'p', 'p_holm', 'dz']
    >>> cols = ["model", "method", "metric", "n_pairs", "diff", "ci_low", "ci_high", "p_holm"]
    >>> print(table.loc[table["model"] == "model-a", cols].round(3).to_string(index=False))
      model method    metric  n_pairs   diff  ci_low  ci_high  p_holm
    model-a prompt  accuracy       46 -0.130  -0.572    0.311   1.000
    model-a  steer  accuracy       42 -0.262  -0.673    0.149   0.974
    model-a prompt  behavior       42  1.310   0.206    2.413   0.256
    model-a  steer  behavior       42  1.512   0.722    2.302   0.048
    model-a prompt coherence       42 -0.298  -0.861    0.266   1.000
    model-a  steer coherence       42 -0.786  -1.498   -0.074   0.291
    """
    check_bootstrap_args(n_boot, confidence, ci_method)
    paired = paired_cells(
        scores, baseline, model=model, method=method, strength=strength, metric=metric,
        value=value, clusters=clusters, sample=sample,
    )
    pairs, cols = paired.pairs, paired.contrast_cols
    names = require_clusters(scores, clusters)
    frame = pd.concat([paired.contrasts.assign(diff=np.nan), pairs[[*cols, *names, "diff"]]])
    # The key rows (NaN diff) make every contrast a group; they have no clusters to resample.
    frame[list(names)] = frame[list(names)].fillna("")
    result = cluster_bootstrap(
        frame, "diff", groups=cols, clusters=names, n_boot=n_boot, seed=seed
    )
    warn_few_clusters(result)
    low, high = result.interval(confidence, ci_method)
    _, p = result.t_test(0.0)
    out = result.groups.copy()
    out["baseline"] = baseline
    out["n_pairs"] = result.n_obs.astype(np.int64)
    out["diff"] = result.estimate
    out["se"] = result.se()
    out["df"] = result.df
    out["ci_low"] = low
    out["ci_high"] = high
    out["p"] = p
    out["p_holm"] = _holm(p)
    codes, pair_keys = group_index(pairs, cols)
    d = pairs["diff"].to_numpy(float)
    k = len(pair_keys)
    n = np.bincount(codes, minlength=k).astype(float)
    sums = np.bincount(codes, weights=d, minlength=k)
    sq = np.bincount(codes, weights=d * d, minlength=k)
    dz_frame = pair_keys.assign(dz=_dz(sums, sq, n))
    out = out.merge(dz_frame, on=cols, how="left")
    lead = [c for c in (model, method, strength, metric) if c is not None]
    return out[[*lead, *[c for c in out.columns if c not in lead]]].reset_index(drop=True)


def _dz(sums: np.ndarray, sq: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = sums / n
        var = (sq - n * mean**2) / (n - 1.0)
        sd = np.sqrt(np.clip(var, 0.0, None))
        dz = mean / sd
    return np.where(n >= 2, dz, np.nan)


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values over the finite entries; NaN stays NaN.

    pingouin's implementation: statsmodels' ``multipletests(method="holm")`` runs a full
    ``gc.collect()`` per call, which costs a tenth of a second in a large session.
    """
    from pingouin import multicomp

    if not np.isfinite(p).any():
        return np.full(p.shape, np.nan)
    return np.asarray(multicomp(p, method="holm")[1], dtype=float)
