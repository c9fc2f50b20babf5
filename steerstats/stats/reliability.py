"""Judge reliability from repeated ratings: ICCs, Krippendorff's alpha and agreement rates."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import krippendorff
import numpy as np
import pandas as pd
from scipy import sparse

from steerstats.stats._data import numeric_values, require_columns, require_metric

__all__ = ["reliability"]

_GENERATION = ("model", "method", "strength", "query_id", "prompt_id", "sample")
_ICC_LABELS = {
    "ICC(1,1)": "ICC1", "ICC(A,1)": "ICC2", "ICC(C,1)": "ICC3",
    "ICC(1,k)": "ICC1k", "ICC(A,k)": "ICC2k", "ICC(C,k)": "ICC3k",
}
_ALPHA_LEVELS: tuple[Literal["ordinal", "interval", "nominal"], ...] = (
    "ordinal", "interval", "nominal")
STATISTICS: tuple[str, ...] = (
    "ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k",
    "ICC1_complete", "ICC2_complete", "ICC3_complete", "ICC1k_complete", "ICC2k_complete",
    "ICC3k_complete",
    "alpha_ordinal", "alpha_interval", "alpha_nominal",
    "exact_agreement", "within_one_agreement",
)
_OUT_COLUMNS = ["metric", "statistic", "estimate", "ci_low", "ci_high", "ci_method", "n_targets",
                "n_ratings", "n_occasions", "n_targets_dropped", "note"]


def _as_list(x: str | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


@contextmanager
def _pingouin_unrounded() -> Iterator[None]:
    """pingouin rounds CI95 to two decimals by default (``pingouin.options``); not here."""
    import pingouin

    saved = dict(pingouin.options)
    try:
        pingouin.options.clear()
        pingouin.options["round"] = None
        yield
    finally:
        pingouin.options.clear()
        pingouin.options.update(saved)


def _icc_reml_rows(wide: np.ndarray, confidence: float = 0.95) -> list[dict[str, object]]:
    """ICC1..ICC3k from all ratings: REML variance components of
    ``rating ~ 1 + (1 | target) + (1 | occasion)``, turned into mean squares and ICCs with their
    F-based intervals exactly as psych's ``ICC(x, missing = FALSE, lmer = TRUE)`` does."""
    from scipy.stats import f as fdist

    from .mixed import _Design, _fit_numpy

    n_obs, nj = wide.shape
    t_idx, o_idx = np.nonzero(np.isfinite(wide))
    n_rat = len(t_idx)
    base = {"ci_method": "F (REML)", "n_targets": int(len(np.unique(t_idx))),
            "n_ratings": n_rat, "n_occasions": nj,
            "n_targets_dropped": int(n_obs - len(np.unique(t_idx))), "note": ""}
    labels = ["ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"]
    y = wide[t_idx, o_idx]
    if n_obs < 2 or nj < 2 or n_rat < 3 or np.ptp(y) == 0:
        return [{"statistic": s, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, **base}
                for s in labels]
    rows = np.arange(n_rat)
    z = sparse.hstack([
        sparse.csr_matrix((np.ones(n_rat), (rows, t_idx)), shape=(n_rat, n_obs)),
        sparse.csr_matrix((np.ones(n_rat), (rows, o_idx)), shape=(n_rat, nj)),
    ]).tocsr()
    design = _Design(y=y, X=np.ones((n_rat, 1)), terms=["(Intercept)"], Z=z,
                     groups=["target", "occasion"], sizes=[n_obs, nj], method_levels=[""],
                     model_levels=[""], n_queries=n_obs)
    fit = _fit_numpy(design, 1000, satterthwaite=False)
    var_id, var_items = fit.theta**2 * fit.sigma**2
    mse = fit.sigma**2
    msb, msj, msw = nj * var_id + mse, n_obs * var_items + mse, mse + var_items
    icc = [(msb - msw) / (msb + (nj - 1) * msw),
           (msb - mse) / (msb + (nj - 1) * mse + nj * (msj - mse) / n_obs),
           (msb - mse) / (msb + (nj - 1) * mse),
           (msb - msw) / msb,
           (msb - mse) / (msb + (msj - mse) / n_obs),
           (msb - mse) / msb]
    a = 1.0 - confidence
    f11, df11n, df11d = msb / msw, n_obs - 1, n_obs * (nj - 1)
    f31, df21n, df21d = msb / mse, n_obs - 1, (n_obs - 1) * (nj - 1)
    f1l, f1u = f11 / fdist.ppf(1 - a / 2, df11n, df11d), f11 * fdist.ppf(1 - a / 2, df11d, df11n)
    f3l, f3u = f31 / fdist.ppf(1 - a / 2, df21n, df21d), f31 * fdist.ppf(1 - a / 2, df21d, df21n)
    icc2, fj = icc[1], msj / mse
    vn = (nj - 1) * (n_obs - 1) * (nj * icc2 * fj + n_obs * (1 + (nj - 1) * icc2)
                                   - nj * icc2) ** 2
    vd = (n_obs - 1) * nj**2 * icc2**2 * fj**2 + (n_obs * (1 + (nj - 1) * icc2)
                                                 - nj * icc2) ** 2
    v = vn / vd
    g_u, g_l = fdist.ppf(1 - a / 2, n_obs - 1, v), fdist.ppf(1 - a / 2, v, n_obs - 1)
    denom = nj * msj + (nj * n_obs - nj - n_obs) * mse
    l2 = n_obs * (msb - g_u * mse) / (g_u * denom + n_obs * msb)
    u2 = n_obs * (g_l * msb - mse) / (denom + n_obs * g_l * msb)
    bounds = [((f1l - 1) / (f1l + nj - 1), (f1u - 1) / (f1u + nj - 1)),
              (l2, u2),
              ((f3l - 1) / (f3l + nj - 1), (f3u - 1) / (f3u + nj - 1)),
              (1 - 1 / f1l, 1 - 1 / f1u),
              (l2 * nj / (1 + l2 * (nj - 1)), u2 * nj / (1 + u2 * (nj - 1))),
              (1 - 1 / f3l, 1 - 1 / f3u)]
    return [{"statistic": s, "estimate": float(e), "ci_low": float(lo), "ci_high": float(hi),
             **base} for s, e, (lo, hi) in zip(labels, icc, bounds, strict=True)]


def _icc_rows(wide: np.ndarray) -> list[dict[str, object]]:
    """ICC1..ICC3k on the complete targets (rows without a missing occasion), via pingouin,
    labelled ``*_complete``."""
    return [{**r, "statistic": f"{r['statistic']}_complete"} for r in _icc_complete(wide)]


def _icc_complete(wide: np.ndarray) -> list[dict[str, object]]:
    k = wide.shape[1]
    complete = wide[~np.isnan(wide).any(axis=1)]
    n = len(complete)
    dropped = int(len(wide) - n)
    base = {"ci_method": "F", "n_targets": n, "n_ratings": n * k, "n_occasions": k,
            "n_targets_dropped": dropped, "note": ""}
    if n < 2 or k < 2 or np.ptp(complete) == 0:
        # Not estimable: fewer than two complete targets, one occasion, or no variation.
        return [{"statistic": s, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, **base}
                for s in _ICC_LABELS.values()]
    import pingouin  # imported here: it takes seconds, and only ICCs need it

    long = pd.DataFrame(
        {
            "target": np.repeat(np.arange(n), k),
            "occasion": np.tile(np.arange(k), n),
            "rating": complete.ravel(),
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"), _pingouin_unrounded(), \
            warnings.catch_warnings():
        # pingouin 0.5-0.7 calls DataFrame.dropna(inplace=True), deprecated in pandas 3.
        warnings.filterwarnings("ignore", message="The inplace keyword", module="pingouin")
        icc = pingouin.intraclass_corr(long, targets="target", raters="occasion", ratings="rating")
    rows = []
    for _, r in icc.iterrows():
        lo, hi = (float(v) for v in r["CI95"])
        rows.append({"statistic": _ICC_LABELS[r["Type"]], "estimate": float(r["ICC"]),
                     "ci_low": lo, "ci_high": hi, **base})
    return rows


def _value_counts(wide: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-target counts of each distinct value (targets x values) and the sorted values."""
    domain = np.unique(wide[~np.isnan(wide)])
    counts = np.stack([(wide == v).sum(axis=1) for v in domain], axis=1).astype(float)
    return counts, domain


def _alpha_from_coincidences(o: np.ndarray, domain: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's alpha from coincidence matrices ``o`` (..., V, V), one per replicate."""
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    if level == "nominal":
        delta = np.broadcast_to(1.0 - np.eye(len(domain)), o.shape)
    elif level == "interval":
        delta = np.broadcast_to((domain[:, None] - domain[None, :]) ** 2, o.shape)
    elif level == "ordinal":
        # delta_ck = (sum of n_g for g from c to k, minus (n_c + n_k) / 2)^2
        cum = np.cumsum(n_c, axis=-1)
        lo = np.minimum.outer(np.arange(len(domain)), np.arange(len(domain)))
        hi = np.maximum.outer(np.arange(len(domain)), np.arange(len(domain)))
        between = cum[..., hi] - np.where(lo > 0, cum[..., np.maximum(lo - 1, 0)], 0.0)
        delta = (between - (n_c[..., :, None] + n_c[..., None, :]) / 2) ** 2
    else:  # pragma: no cover - levels are fixed above
        raise ValueError(level)
    d_o = (o * delta).sum(axis=(-2, -1))
    d_e = (n_c[..., :, None] * n_c[..., None, :] * delta).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (n - 1) * d_o / d_e


def _bootstrap_weights(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each target appears in each resample (n_boot x n_units)."""
    idx = rng.integers(0, n_units, size=(n_boot, n_units))
    flat = idx + n_units * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_units).reshape(n_boot, n_units)


def _ordered_pair_counts(pairable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per target: ordered pairs of distinct ratings, and those within one point of each other
    (O(targets x occasions^2), whatever the number of distinct values)."""
    pairs = np.zeros(len(pairable))
    within = np.zeros(len(pairable))
    k = pairable.shape[1]
    for i in range(k):
        for j in range(i + 1, k):
            both = np.isfinite(pairable[:, i]) & np.isfinite(pairable[:, j])
            pairs += 2 * both
            with np.errstate(invalid="ignore"):
                within += 2 * (both & (np.abs(pairable[:, i] - pairable[:, j]) <= 1.0))
    return pairs, within


def _interval_parts(pairable: np.ndarray) -> np.ndarray:
    """Per-target sums for interval alpha (targets x 4): ``a_u``, ``m_u``, ``S1_u``, ``S2_u``.

    With values centred, ``a_u = 2 (m_u S2_u - S1_u^2) / (m_u - 1)`` is the target's
    coincidence-weighted squared disagreement, so ``alpha = 1 - (n - 1) sum a_u /
    (2 (n T2 - T1^2))`` with ``n, T1, T2`` the sums of ``m_u, S1_u, S2_u`` (Krippendorff 2011,
    interval metric, expanded): memory O(targets), not O(targets x values^2), and a resample's
    alpha is the same formula on weighted sums.
    """
    finite = np.isfinite(pairable)
    centred = np.where(finite, pairable - np.nanmean(pairable), 0.0)
    m = finite.sum(axis=1).astype(float)
    s1 = centred.sum(axis=1)
    s2 = (centred**2).sum(axis=1)
    a = 2.0 * (m * s2 - s1**2) / (m - 1.0)
    return np.column_stack([a, m, s1, s2])


def _interval_alpha(sums: np.ndarray) -> np.ndarray:
    """Interval alpha from (weighted) sums of :func:`_interval_parts` (..., 4)."""
    a, n, t1, t2 = (sums[..., i] for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (n - 1.0) * a / (2.0 * (n * t2 - t1**2))


def _pairwise_rows(
    wide: np.ndarray, n_boot: int, rng: np.random.Generator
) -> list[dict[str, object]]:
    """Krippendorff's alpha (3 levels) and agreement rates, with a bootstrap over targets."""
    m = (~np.isnan(wide)).sum(axis=1)
    pairable = wide[m >= 2]
    n_units = len(pairable)
    base = {"ci_method": "bootstrap", "n_targets": n_units,
            "n_ratings": int(m[m >= 2].sum()), "n_occasions": wide.shape[1],
            "n_targets_dropped": int(len(wide) - n_units), "note": ""}
    stats_names = [f"alpha_{lv}" for lv in _ALPHA_LEVELS] + ["exact_agreement",
                                                                "within_one_agreement"]
    values = pairable[np.isfinite(pairable)]
    categorical = ("alpha_ordinal", "alpha_nominal", "exact_agreement")
    skip_note = ""
    if len(values) and not np.all(values == np.round(values)):
        # Continuous scores (e.g. a judge's expected score): every value is its own category,
        # so exact agreement and nominal alpha are 0 by construction and ordinal alpha ranks
        # noise; they are not computed.
        skip_note = (f"not computed: scores are not integers ({len(np.unique(values))} distinct "
                     "values), so they are not categories; see alpha_interval")
    if n_units == 0:
        return [{"statistic": s, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, **base}
                for s in stats_names]
    # Interval alpha and agreement within one point from per-target sums and pairs (any data);
    # the categorical statistics from per-target value counts (integer scores only).
    sums = _interval_parts(pairable)
    pairs_u, within_u = _ordered_pair_counts(pairable)
    one_value = np.ptp(values) == 0
    estimates: dict[str, float] = {
        "alpha_interval": np.nan if one_value else float(_interval_alpha(sums.sum(axis=0))),
        "within_one_agreement": within_u.sum() / pairs_u.sum(),
    }
    levels: list[Literal["ordinal", "nominal"]] = [] if skip_note else ["ordinal", "nominal"]
    if levels:
        counts, domain = _value_counts(pairable)
        exact_u = (counts * (counts - 1)).sum(axis=1)  # ordered pairs of equal ratings
        for lv in levels:
            estimates[f"alpha_{lv}"] = np.nan if len(domain) < 2 else float(krippendorff.alpha(
                value_counts=counts, value_domain=domain, level_of_measurement=lv))
        estimates["exact_agreement"] = exact_u.sum() / pairs_u.sum()
        flat = _coincidences(pairable, domain)
    boot: dict[str, list[np.ndarray]] = {s: [] for s in stats_names}
    width = len(domain) ** 2 if levels else 1
    chunk = max(1, min(n_boot, 4_000_000 // max(n_units, width, 1)))
    for start in range(0, n_boot, chunk):
        w = _bootstrap_weights(n_units, min(chunk, n_boot - start), rng).astype(float)
        boot["alpha_interval"].append(np.full(len(w), np.nan) if one_value
                                      else _interval_alpha(w @ sums))
        with np.errstate(divide="ignore", invalid="ignore"):
            boot["within_one_agreement"].append((w @ within_u) / (w @ pairs_u))
        if not levels:
            continue
        o = np.asarray((flat.T @ w.T).T).reshape(len(w), len(domain), len(domain))
        for lv in levels:
            boot[f"alpha_{lv}"].append(_alpha_from_coincidences(o, domain, lv) if len(domain) > 1
                                       else np.full(len(w), np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            boot["exact_agreement"].append((w @ exact_u) / (w @ pairs_u))
    rows = []
    for s in stats_names:
        if skip_note and s in categorical:
            rows.append({"statistic": s, "estimate": np.nan, "ci_low": np.nan,
                         "ci_high": np.nan, **base, "note": skip_note})
            continue
        dist = np.concatenate(boot[s])
        dist = dist[np.isfinite(dist)]
        lo, hi = (np.quantile(dist, [0.025, 0.975]) if len(dist) else (np.nan, np.nan))
        rows.append({"statistic": s, "estimate": float(estimates[s]), "ci_low": float(lo),
                     "ci_high": float(hi), **base})
    return rows


def _coincidences(pairable: np.ndarray, domain: np.ndarray) -> sparse.csr_matrix:
    """Per-target coincidences ``n_uc (n_uk - [c == k]) / (m_u - 1)`` (Krippendorff 2011,
    eq. 2) as a sparse targets x values^2 matrix: a target has at most occasions^2 entries."""
    n_units, k = pairable.shape
    code = np.searchsorted(domain, np.where(np.isfinite(pairable), pairable, domain[0]))
    m = np.isfinite(pairable).sum(axis=1)
    rows, cols, vals = [], [], []
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            both = np.isfinite(pairable[:, i]) & np.isfinite(pairable[:, j])
            rows.append(np.nonzero(both)[0])
            cols.append(code[both, i] * len(domain) + code[both, j])
            vals.append(1.0 / (m[both] - 1.0))
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_units, len(domain) ** 2))


def reliability(
    scores: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    *,
    metrics: str | Sequence[str] | None = None,
    targets: str | Sequence[str] | None = None,
    occasions: Sequence[str] = ("rater", "repeat"),
    n_boot: int = 1000,
    seed: int | None = 0,
    value: str = "value",
    metric: str = "metric",
) -> pd.DataFrame:
    """How consistently judges score the same generation: ICCs, Krippendorff's alpha, agreement.

    A generation judged several times (repeats of one judge, or several judges) is a target;
    each (rater, repeat) is a rating occasion. Reliability bounds how much any comparison of
    judge scores can be trusted, so it is reported per metric and, on request, per method.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table (one row per rating), see ``steerstats.schema.SCORE_COLUMNS``.
    by : str or list of str, optional
        Columns to split by before computing (e.g. ``"method"`` or ``["model", "method"]``).
    metrics : str or list of str, optional
        Metrics to analyse. Default: every metric with at least two rating occasions (a metric
        rated once per generation, such as MMLU correctness, is skipped with a warning; asking
        for it explicitly is an error).
    targets : str or list of str, optional
        Column(s) identifying a generation. Default ``"key"`` when present, else
        (model, method, strength, query_id, prompt_id, sample).
    occasions : list of str
        Columns identifying a rating occasion; default (rater, repeat).
    n_boot : int
        Bootstrap resamples of targets for the alpha and agreement intervals (default 1000).
    seed : int, optional
        Seed of the bootstrap (default 0, so tables are reproducible; ``None`` for fresh draws).
    value, metric : str
        Column names of the rating and the metric (the output keeps the metric column's name).

    Returns
    -------
    pandas.DataFrame
        One row per (``by`` columns, metric, statistic), statistics in this order: ICC1, ICC2,
        ICC3, ICC1k, ICC2k, ICC3k (from all ratings), the same six with ``_complete`` (complete
        targets only), alpha_ordinal, alpha_interval, alpha_nominal, exact_agreement,
        within_one_agreement. Columns:

        - the ``by`` columns, if any
        - ``metric``
        - ``statistic``: the label above
        - ``estimate``: the statistic (NaN when not estimable, e.g. fewer than two complete
          targets, or a single distinct value for alpha)
        - ``ci_low``, ``ci_high``: 95% interval (F-distribution for ICCs; percentile bootstrap
          over targets for the others)
        - ``ci_method``: ``"F (REML)"``, ``"F"`` or ``"bootstrap"``
        - ``n_targets``: targets used (complete targets for ICCs; targets with at least two
          ratings for the others)
        - ``n_ratings``: non-missing ratings used
        - ``n_occasions``: rating occasions (k) present in the group
        - ``n_targets_dropped``: targets left out (``_complete`` ICCs: any missing rating;
          ICCs: no rating at all; others: fewer than two ratings)
        - ``note``: why a statistic is not computed (e.g. nominal/ordinal alpha and exact
          agreement on non-integer scores), else empty

    Raises
    ------
    ValueError
        A column is missing, a requested metric is absent or has a single rating occasion, no
        metric has repeated ratings, or a target has two ratings for the same occasion.

    Notes
    -----
    Ratings are arranged as targets x occasions. Missing ratings (NaN: unparsed judge answers)
    are never dropped silently. ICC1..ICC3k use every rating: REML variance components of
    ``rating ~ 1 + (1 | target) + (1 | occasion)`` (the engine of
    :func:`steerstats.stats.mixed_model`) turned into mean squares, ICCs and F-based intervals
    exactly as psych's ``ICC(x, missing = FALSE, lmer = TRUE)`` (Revelle; pinned in
    ``tests/reference/icc_psych_lmer.R``); dropping incomplete targets biases ICC1 when poor
    responses are unparsed more often. The ``_complete`` ICCs are the classical ANOVA ones on
    complete targets (targets with a missing occasion counted in ``n_targets_dropped``), kept
    for comparison; on complete data the two agree. Krippendorff's alpha uses all pairable
    ratings natively. Scores that are not integers (e.g. a local judge's expected score) are
    not categories: every value would be its own, so exact agreement and nominal alpha would
    be 0 by construction and their bootstrap intervals could exclude their own estimates; those
    and ordinal alpha are reported as NaN with a ``note``.

    ICCs follow Shrout & Fleiss (1979) as computed by ``pingouin.intraclass_corr``: ICC1
    one-way random, ICC2 two-way random absolute agreement, ICC3 two-way mixed consistency;
    the ``k`` forms are the reliability of the mean of the k occasions. With repeats of one
    judge, ICC2/ICC3 treat repeat index as the "rater"; ICC1 is the natural choice when the
    repeat order carries no meaning. Their 95% intervals are pingouin's F-based ones.

    Alpha (Krippendorff 2011): ordinal and nominal by the ``krippendorff`` package (rank
    distances weighted by marginal frequencies; mismatch); interval (squared differences) from
    per-target sums of the ratings and their squares, which equals the package's value (to
    1e-10 in the tests) in memory proportional to the ratings, where coincidence matrices of
    continuous scores (every value distinct) would need targets x values^2. Agreement rates
    are over all ordered pairs of ratings of the same target: ``exact_agreement`` the share of
    equal pairs, ``within_one_agreement`` the share differing by at most 1 (one scale point).
    Their intervals resample targets with replacement (``n_boot`` times); each resample's
    alpha is computed from resampled sums or (sparse) coincidence matrices, which gives the
    package's value on the same data (checked in the tests).

    References
    ----------
    Shrout & Fleiss (1979). Intraclass correlations: uses in assessing rater reliability.
    Psychological Bulletin 86(2), 420-428. Krippendorff (2011). Computing Krippendorff's
    alpha-reliability. Annenberg School for Communication, University of Pennsylvania.

    Examples
    --------
    >>> from steerstats.stats import reliability, simulate_crossed
    >>> scores = simulate_crossed(n_queries=6, n_topic=0, n_common=10, n_repeats=3,
    ...                           discrete=True, seed=2)
    >>> rel = reliability(scores, n_boot=200)
    >>> rel[["statistic", "estimate", "ci_low", "ci_high", "n_targets"]].round(2)
                   statistic  estimate  ci_low  ci_high  n_targets
    0                   ICC1      0.83    0.79     0.87        180
    1                   ICC2      0.83    0.79     0.87        180
    2                   ICC3      0.83    0.79     0.87        180
    3                  ICC1k      0.94    0.92     0.95        180
    4                  ICC2k      0.94    0.92     0.95        180
    5                  ICC3k      0.94    0.92     0.95        180
    6          ICC1_complete      0.83    0.79     0.87        180
    7          ICC2_complete      0.83    0.79     0.87        180
    8          ICC3_complete      0.83    0.79     0.87        180
    9         ICC1k_complete      0.94    0.92     0.95        180
    10        ICC2k_complete      0.94    0.92     0.95        180
    11        ICC3k_complete      0.94    0.92     0.95        180
    12         alpha_ordinal      0.82    0.76     0.86        180
    13        alpha_interval      0.83    0.78     0.87        180
    14         alpha_nominal      0.47    0.41     0.55        180
    15       exact_agreement      0.59    0.54     0.64        180
    16  within_one_agreement      0.95    0.93     0.97        180
    """
    metric_col = metric
    by_cols = _as_list(by)
    occ_cols = list(occasions)
    if targets is None:
        target_cols = ["key"] if "key" in scores.columns else list(_GENERATION)
    else:
        target_cols = _as_list(targets)
    require_columns(scores, {"value": value, "metric": metric_col})
    for kw, cols in (("by", by_cols), ("targets", target_cols), ("occasions", occ_cols)):
        for col in cols:
            require_columns(scores, {kw: col})
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")

    data = scores[by_cols + target_cols + occ_cols + [metric_col]].copy()
    data["_value"] = numeric_values(scores, value).to_numpy()
    dup = data.duplicated(subset=[metric_col, *target_cols, *occ_cols], keep=False)
    if dup.any():
        example = data.loc[dup, target_cols + occ_cols].iloc[0].to_dict()
        raise ValueError(
            f"{int(dup.sum())} rows repeat the same target and occasion (e.g. {example}); each "
            f"(targets={target_cols}, occasions={occ_cols}) should be rated once: pass "
            "targets=... / occasions=... that identify a rating uniquely"
        )

    present = list(pd.unique(data[metric_col].dropna()))
    occ_per_metric = data.groupby(metric_col)[occ_cols].apply(
        lambda g: len(g.drop_duplicates()))
    if metrics is None:
        chosen = [m for m in present if occ_per_metric[m] >= 2]
        single = [m for m in present if occ_per_metric[m] < 2]
        if not chosen:
            raise ValueError(
                f"no metric has repeated ratings (two or more {tuple(occ_cols)} occasions per "
                f"target): {present}; reliability needs judge repeats or several judges"
            )
        if single:
            warnings.warn(f"reliability: skipping metrics rated once per generation: {single}",
                          UserWarning, stacklevel=2)
    else:
        chosen = _as_list(metrics)
        for m in chosen:
            require_metric(data, m, metric_col)
            if occ_per_metric[m] < 2:
                raise ValueError(f"metric {m!r} has a single rating occasion; reliability needs "
                                 "judge repeats or several judges")

    rng = np.random.default_rng(seed)
    out = []
    groups = data.groupby(by_cols, sort=True, dropna=False) if by_cols else [((), data)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        for name in chosen:
            g = group[group[metric_col] == name]
            if g.empty:
                continue
            t_code = g.groupby(target_cols, sort=True, dropna=False).ngroup().to_numpy()
            o_code = g.groupby(occ_cols, sort=True, dropna=False).ngroup().to_numpy()
            arr = np.full((t_code.max() + 1, o_code.max() + 1), np.nan)
            arr[t_code, o_code] = g["_value"].to_numpy()
            for row in _icc_reml_rows(arr) + _icc_rows(arr) + _pairwise_rows(arr, n_boot, rng):
                out.append({**dict(zip(by_cols, key, strict=True)), "metric": name, **row})
    table = pd.DataFrame(out, columns=by_cols + _OUT_COLUMNS)
    order = {s: i for i, s in enumerate(STATISTICS)}
    table["_o"] = table["statistic"].map(order)
    table = table.sort_values([*by_cols, "metric", "_o"], kind="stable").drop(columns="_o")
    return table.reset_index(drop=True).rename(columns={"metric": metric_col})
