"""Binary MMLU correctness: accuracy per model and method by GEE and by cluster bootstrap."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ._data import group_index, numeric_values, require_clusters, require_columns, response_level
from .bootstrap import (
    CIMethod,
    check_bootstrap_args,
    cluster_bootstrap,
    grouping_columns,
    warn_few_clusters,
)

__all__ = ["accuracy_model"]

_OUT_COLUMNS = ["outcome", "estimator", "n", "estimate", "ci_low", "ci_high"]


def accuracy_model(
    scores: pd.DataFrame,
    *,
    outcome: str = "accuracy",
    model: str | None = "model",
    method: str | None = "method",
    strength: str | None = "strength",
    metric: str | None = "metric",
    value: str = "value",
    question: str = "prompt_id",
    clusters: Sequence[str] = ("query_id", "prompt_id"),
    sample: str | None = "sample",
    n_boot: int = 2000,
    confidence: float = 0.95,
    ci_method: CIMethod = "t",
    seed: int | None = 0,
) -> pd.DataFrame:
    """Accuracy (probability correct) per model and method, and the unparsed-answer rate.

    Rows of ``scores`` whose ``metric`` is ``outcome`` hold 1 (correct), 0 (wrong) or NaN (no
    readable answer). Accuracy is estimated among parsed answers by a binomial GEE with an
    exchangeable working correlation clustered by question, and by the two-way cluster
    bootstrap; the share of unparsed answers is a separate outcome, never counted as wrong.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table, one row per rating.
    outcome : str
        The metric holding correctness (default ``"accuracy"``).
    model, method, strength : str or None
        Grouping columns; ``None`` leaves a role out.
    metric : str or None
        Column with the metric name; ``None`` if every row is a correctness score.
    value : str
        Column with the 1/0/NaN value.
    question : str
        Column identifying the question: the GEE's cluster.
    clusters : sequence of str
        Cluster factors of the bootstrap (default queries and questions).
    sample : str or None
        Replicate-generation column; with groups and clusters it identifies a response.
    n_boot, confidence, ci_method, seed
        As in :func:`steerstats.stats.summarize`.

    Returns
    -------
    pandas.DataFrame
        One row per group (model, method, strength as kept) x estimate, three per group:

        - the grouping columns
        - ``outcome``: ``"accuracy"`` (share correct among parsed answers) or ``"unparsed"``
          (share of responses without a readable answer)
        - ``estimator``: ``"gee"`` or ``"bootstrap"`` (accuracy has both; unparsed has the
          bootstrap)
        - ``n``: responses in the denominator (parsed ones for accuracy, all for unparsed)
        - ``estimate``: the probability
        - ``ci_low``, ``ci_high``: confidence limits (GEE: Wald interval on the logit scale,
          back-transformed; bootstrap: per ``ci_method``, clipped to [0, 1])

        ``attrs["gee_correlation"]`` holds the estimated exchangeable working correlation.

    Notes
    -----
    **GEE.** ``value ~ 0 + group`` (one logit per model x method x strength) is fitted with
    ``statsmodels.GEE`` (binomial family, logit link, exchangeable working correlation, robust
    sandwich covariance), clustered by ``question``: answers to the same question are
    correlated across methods, models and queries, as they are in an MMLU design where every
    query reuses the same questions. Repeated ratings of one response are averaged first. The
    estimates match R's ``geepack::geeglm(value ~ 0 + group, family = binomial, id = question,
    corstr = "exchangeable")`` to about three decimals (``tests/reference/gee_accuracy.R``):
    the two packages estimate the working correlation by different equations. A group whose
    parsed answers are all correct or all wrong has no finite logit: its GEE row reports the
    observed proportion with NaN limits (a warning says so) and it is left out of the fit.
    Convergence failures raise ``RuntimeError``. Two caveats: with an exchangeable working
    correlation the GEE estimate is a cluster-weighted accuracy (questions with more parsed
    answers weigh differently), not exactly the plain proportion; and it clusters by question
    only, so its interval ignores between-query variation and is narrower than the two-way
    bootstrap's. Read the ``bootstrap`` rows for inference that generalises to new queries;
    the GEE rows are a model-based check.

    **Bootstrap.** Both outcomes also get the two-way (query x question) cluster bootstrap of
    :func:`steerstats.stats.summarize`, which accounts for queries as well as questions. Its
    limits are clipped to [0, 1], the range of a probability, which leaves coverage unchanged.
    With no unparsed answers at all in a group the unparsed rate is 0 with a zero-width
    interval: the data carry no information about how rare such answers are.

    References
    ----------
    Liang, K.-Y. & Zeger, S. L. (1986). Longitudinal data analysis using generalized linear
    models. Biometrika 73(1), 13-22.

    Halekoh, U., Hojsgaard, S. & Yan, J. (2006). The R package geepack for generalized
    estimating equations. Journal of Statistical Software 15(2).

    Examples
    --------
    >>> from steerstats.stats import accuracy_model, example_scores
    >>> scores = example_scores(seed=0, n_mmlu=20)
    >>> table = accuracy_model(scores, strength=None, n_boot=1000, seed=1)
    >>> table.columns.tolist()
    ['model', 'method', 'outcome', 'estimator', 'n', 'estimate', 'ci_low', 'ci_high']
    >>> print(table[table["model"] == "model-a"].round(3).to_string(index=False))
      model  method  outcome estimator   n  estimate  ci_low  ci_high
    model-a control accuracy       gee 118     0.670   0.563    0.761
    model-a control accuracy bootstrap 118     0.669   0.462    0.877
    model-a control unparsed bootstrap 120     0.017   0.000    0.067
    model-a  prompt accuracy       gee 115     0.645   0.563    0.719
    model-a  prompt accuracy bootstrap 115     0.643   0.346    0.941
    model-a  prompt unparsed bootstrap 120     0.042   0.000    0.125
    model-a   steer accuracy       gee  98     0.580   0.475    0.678
    model-a   steer accuracy bootstrap  98     0.582   0.367    0.796
    model-a   steer unparsed bootstrap 120     0.183   0.034    0.333

    The GEE interval is narrower: it treats questions as the only clusters, while the
    bootstrap also resamples the 6 queries.
    """
    check_bootstrap_args(n_boot, confidence, ci_method)
    names = require_clusters(scores, clusters)
    group_cols = grouping_columns(model=model, method=method, strength=strength)
    require_columns(
        scores,
        {"model": model, "method": method, "strength": strength, "metric": metric,
         "value": value, "question": question, "sample": sample},
    )
    rows = scores if metric is None else scores[scores[metric] == outcome]
    if rows.empty:
        if metric is None:
            raise ValueError("scores has no rows")
        present = ", ".join(map(str, pd.unique(scores[metric])))
        raise ValueError(
            f"no rows with {metric!r} == {outcome!r} (metrics present: {present}); pass "
            "outcome=... naming the correctness metric"
        )
    raw = numeric_values(rows, value).to_numpy()
    bad = np.isfinite(raw) & (raw != 0.0) & (raw != 1.0)
    if bad.any():
        raise ValueError(
            f"column {value!r} for metric {outcome!r} must be 1 (correct), 0 (wrong) or NaN "
            f"(unparsed); found {sorted(set(raw[bad].tolist()))[:5]}"
        )
    extra = [question, *([sample] if sample is not None else [])]
    keys = list(dict.fromkeys([*group_cols, *names, *extra]))
    responses = response_level(rows, keys, value=value)
    responses["unparsed"] = (responses["n_ratings"] == 0).astype(float)

    acc_boot = cluster_bootstrap(
        responses, value, groups=group_cols, clusters=names, n_boot=n_boot, seed=seed
    )
    warn_few_clusters(acc_boot)
    bad_boot = cluster_bootstrap(
        responses, "unparsed", groups=group_cols, clusters=names, n_boot=n_boot, seed=seed
    )
    keys_frame = acc_boot.groups
    gee_est, gee_low, gee_high, n_parsed, rho = _gee(
        responses, value, group_cols, question, len(keys_frame), confidence
    )

    parts = []
    for label, estimator, n, est, low, high in (
        ("accuracy", "gee", n_parsed, gee_est, gee_low, gee_high),
        ("accuracy", "bootstrap", acc_boot.n_obs, acc_boot.estimate,
         *acc_boot.interval(confidence, ci_method)),
        ("unparsed", "bootstrap", bad_boot.n_obs, bad_boot.estimate,
         *bad_boot.interval(confidence, ci_method)),
    ):
        if estimator == "bootstrap":
            low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
        part = keys_frame.copy()
        part["outcome"] = label
        part["estimator"] = estimator
        part["n"] = np.asarray(n, dtype=np.int64)
        part["estimate"] = est
        part["ci_low"] = low
        part["ci_high"] = high
        part["_order"] = np.arange(len(part))
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out = out.sort_values(["_order", "outcome", "estimator"], ascending=[True, True, False])
    out = out.drop(columns="_order").reset_index(drop=True)
    out.attrs["gee_correlation"] = rho
    return out[[*group_cols, *_OUT_COLUMNS]]


def _gee(
    responses: pd.DataFrame,
    value: str,
    group_cols: list[str],
    question: str,
    n_groups: int,
    confidence: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Cell-means binomial GEE; per group: probability, limits, parsed n; and the correlation."""
    import statsmodels.api as sm  # slow to import: only when a GEE is fitted
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, IterationLimitWarning

    codes, _ = group_index(responses, group_cols)
    y = responses[value].to_numpy(float)
    ok = np.isfinite(y)
    n = np.bincount(codes[ok], minlength=n_groups)
    hits = np.bincount(codes[ok], weights=y[ok], minlength=n_groups)
    est = np.full(n_groups, np.nan)
    low = np.full(n_groups, np.nan)
    high = np.full(n_groups, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        prop = hits / n
    boundary = (n > 0) & ((hits == 0) | (hits == n))
    est[boundary] = prop[boundary]
    if boundary.any():
        warnings.warn(
            f"{int(boundary.sum())} group(s) have all parsed answers correct or all wrong: the "
            "GEE logit is infinite there, so their GEE rows give the observed proportion with "
            "NaN limits; use the bootstrap rows",
            RuntimeWarning,
            stacklevel=3,
        )
    fit_groups = np.flatnonzero((n > 0) & ~boundary)
    rho = float("nan")
    if fit_groups.size == 0:
        return est, low, high, n, rho
    use = ok & np.isin(codes, fit_groups)
    qcodes, quniq = pd.factorize(responses.loc[use, question], sort=True)
    if len(quniq) < 2:
        est[fit_groups] = prop[fit_groups]
        warnings.warn(
            f"only one value of {question!r}: the GEE's cluster-robust standard errors need "
            "at least two questions, so its limits are NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        return est, low, high, n, rho
    col = np.searchsorted(fit_groups, codes[use])
    exog = np.zeros((int(use.sum()), fit_groups.size))
    exog[np.arange(exog.shape[0]), col] = 1.0
    model = sm.GEE(
        y[use],
        exog,
        groups=qcodes,
        family=sm.families.Binomial(),
        cov_struct=sm.cov_struct.Exchangeable(),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = model.fit(maxiter=100)
    failed = [
        w for w in caught if issubclass(w.category, ConvergenceWarning | IterationLimitWarning)
    ]
    if failed:
        raise RuntimeError(f"accuracy GEE did not converge: {failed[0].message}")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    z = sps.norm.ppf(0.5 + confidence / 2.0)
    beta = np.asarray(result.params, dtype=float)
    se = np.asarray(result.bse, dtype=float)
    est[fit_groups] = _expit(beta)
    low[fit_groups] = _expit(beta - z * se)
    high[fit_groups] = _expit(beta + z * se)
    rho = float(np.asarray(result.cov_struct.dep_params))
    return est, low, high, n, rho


def _expit(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=float)
