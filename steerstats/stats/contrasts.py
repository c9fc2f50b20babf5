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
from .ranges import MIN_QUERIES, too_few_note

__all__ = ["holm_by_family", "is_auxiliary", "paired_contrasts"]

# Metrics that restate another metric (the local judge's argmax score beside its expected
# score; a mean token loss beside its perplexity): reported, but each in a Holm family of its
# own and flagged ``auxiliary`` so a report keeps them out of the headline.
AUXILIARY_SUFFIXES = ("_argmax",)
TWIN_SUFFIXES = {"_nll": "_ppl"}


def is_auxiliary(name: str, present: Sequence[str] = ()) -> bool:
    """True for an auxiliary metric: ``*_argmax``, or ``*_nll`` whose ``*_ppl`` twin is present.

    Examples
    --------
    >>> from steerstats.stats import is_auxiliary
    >>> is_auxiliary("behavior_argmax"), is_auxiliary("coherence_nll", ["coherence_ppl"])
    (True, True)
    >>> is_auxiliary("capability_nll", ["coherence_ppl"]), is_auxiliary("behavior")
    (False, False)
    """
    if name.endswith(AUXILIARY_SUFFIXES):
        return True
    for suffix, twin in TWIN_SUFFIXES.items():
        if name.endswith(suffix) and name[: -len(suffix)] + twin in set(present):
            return True
    return False


def holm_by_family(table: pd.DataFrame, family: Sequence[str], p: str = "p") -> np.ndarray:
    """Holm-adjusted ``p`` within each family (rows sharing the ``family`` columns).

    The family is one model x metric x baseline: the arms (and strengths) compared with that
    baseline. It does not depend on what else is in the table, so a contrast's ``p_holm`` is
    the same whichever other models or metrics are analysed with it. NaN p-values (withheld or
    not estimable) are left out of their family and stay NaN.
    """
    out = np.full(len(table), np.nan)
    pv = table[p].to_numpy(dtype=float)
    codes, _ = group_index(table, list(family))
    for g in np.unique(codes):
        rows = np.flatnonzero((codes == g) & np.isfinite(pv))
        if len(rows):
            out[rows] = _holm(pv[rows])
    return out


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
    baseline: str | Sequence[str] = "control",
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
    ci_method: CIMethod = "twoway",
    seed: int | None = 0,
    min_queries: int = MIN_QUERIES,
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
    baseline : str or sequence of str
        The reference method (a value of the ``method`` column), e.g. ``"control"``, or several
        (``["control", "prompt"]``): then a pair is tested once, so against ``"prompt"`` the
        earlier baseline ``"control"`` is not an arm. Each must have a single strength.
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
        - ``n_queries``: queries in the pairs
        - ``se``: two-way cluster-robust SE of ``diff`` (default; see
          :func:`steerstats.stats.summarize`), or the corrected bootstrap SE
        - ``df``: ``G - 1``, ``G`` being the smallest number of queries or prompts in the pairs
        - ``ci_low``, ``ci_high``: confidence limits of ``diff`` (method per ``ci_method``)
        - ``p``: two-sided p-value of ``diff = 0`` from ``diff / se`` on ``t_df``
        - ``p_holm``: ``p`` adjusted by Holm's method within its family: one model x metric x
          baseline, over the arms (and strengths) compared with that baseline
          (:func:`holm_by_family`), so it does not depend on what else is in the table
        - ``note``: ``"too few queries: G = 3 ..."`` where inference is withheld (fewer than
          ``min_queries`` queries: ``ci_low``, ``ci_high``, ``p``, ``p_holm`` are NaN)
        - ``auxiliary``: True for a metric that restates another (:func:`is_auxiliary`:
          ``*_argmax``, or ``*_nll`` beside its ``*_ppl`` twin); report it outside the headline
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
    ['model', 'method', 'strength', 'metric', 'baseline', 'n_pairs', 'n_queries', 'diff', 'se',
     'df', 'ci_low', 'ci_high', 'p', 'p_holm', 'note', 'dz', 'auxiliary']
    >>> cols = ["model", "method", "metric", "n_pairs", "diff", "ci_low", "ci_high", "p_holm"]
    >>> print(table.loc[table["model"] == "model-a", cols].round(3).to_string(index=False))
      model method    metric  n_pairs   diff  ci_low  ci_high  p_holm
    model-a prompt  accuracy       46 -0.130  -0.266    0.005   0.057
    model-a  steer  accuracy       42 -0.262  -0.472   -0.051   0.048
    model-a prompt  behavior       42  1.310   0.386    2.233   0.015
    model-a  steer  behavior       42  1.512   0.900    2.124   0.003
    model-a prompt coherence       42 -0.298  -0.598    0.003   0.052
    model-a  steer coherence       42 -0.786  -1.150   -0.422   0.005
    """
    check_bootstrap_args(n_boot, confidence, ci_method)
    bases = [baseline] if isinstance(baseline, str) else list(baseline)
    if not bases:
        raise ValueError("baseline must name at least one method, e.g. baseline='control'")
    parts = []
    for k, base in enumerate(bases):
        # A pair is tested once: against a later baseline, the earlier baselines are not arms.
        rows = scores if method is None or k == 0 else scores[~scores[method].isin(bases[:k])]
        parts.append(_contrasts_one(
            rows, base, model=model, method=method, strength=strength, metric=metric,
            value=value, clusters=clusters, sample=sample, n_boot=n_boot,
            confidence=confidence, ci_method=ci_method, seed=seed, min_queries=min_queries))
    out = pd.concat(parts, ignore_index=True)
    family = [c for c in (model, metric) if c is not None] + ["baseline"]
    out.insert(out.columns.get_loc("p") + 1, "p_holm", holm_by_family(out, family))
    present = [str(m) for m in pd.unique(scores[metric])] if metric is not None else []
    out["auxiliary"] = (
        [is_auxiliary(str(m), present) for m in out[metric]] if metric is not None else False)
    return out


def _contrasts_one(
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
    n_boot: int,
    confidence: float,
    ci_method: CIMethod,
    seed: int | None,
    min_queries: int,
) -> pd.DataFrame:
    """paired_contrasts against one baseline, without the Holm column."""
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
    _, p = result.t_test(0.0, method=ci_method)
    n_queries = result.n_clusters[:, 0]
    note = too_few_note(n_queries, min_queries)
    few = note != ""
    low[few], high[few], p[few] = np.nan, np.nan, np.nan
    out = result.groups.copy()
    out["baseline"] = baseline
    out["n_pairs"] = result.n_obs.astype(np.int64)
    out["n_queries"] = n_queries.astype(np.int64)
    out["diff"] = result.estimate
    out["se"] = result.se(method="twoway" if ci_method == "twoway" else "t")
    out["df"] = result.df
    out["ci_low"] = low
    out["ci_high"] = high
    out["p"] = p
    out["note"] = note
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
