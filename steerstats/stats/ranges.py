"""The range a metric's values can take, and intervals for means that stay inside it.

A judge score lies on its rubric's scale (1-5), a proportion in [0, 1], a perplexity or a
negative log-likelihood above 0. A mean's symmetric interval can leave that range when queries
are few or the mean sits near an end; here the interval is built on a transformed scale and
mapped back, so it never does.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

__all__ = ["METRIC_RANGES", "MIN_QUERIES", "bounded_interval", "metric_range", "too_few_note"]

FloatArray = npt.NDArray[np.float64]
Range = tuple[float | None, float | None]

# Ranges of the metrics steerstats' own judges produce, by name; a metric whose name ends in
# one of the suffixes below gets that range. Callers (and imports) pass ranges= for others.
METRIC_RANGES: dict[str, Range] = {
    "behavior": (1.0, 5.0),
    "coherence": (1.0, 5.0),
    "accuracy": (0.0, 1.0),
}
_SUFFIX_RANGES: dict[str, Range] = {
    "_argmax": (1.0, 5.0),  # the local judge's most likely rubric score
    "_ppl": (1.0, None),  # perplexity >= 1
    "_nll": (0.0, None),  # mean token loss in nats >= 0
}

# Below this many queries an interval or p-value rests on too few clusters to be trusted
# (the audit: 34-98% of intervals left the metric's range at G <= 5); it is withheld unless
# asked for with min_queries=.
MIN_QUERIES = 6


def metric_range(name: str, ranges: Mapping[str, Range] | None = None) -> Range:
    """(low, high) bound of a metric's values; ``None`` for an open end.

    ``ranges`` (the caller's declarations) wins over :data:`METRIC_RANGES`, then a known
    suffix (``_argmax`` 1-5, ``_ppl`` >= 1, ``_nll`` >= 0); otherwise unbounded.

    Examples
    --------
    >>> from steerstats.stats import metric_range
    >>> metric_range("coherence"), metric_range("coherence_ppl"), metric_range("length")
    ((1.0, 5.0), (1.0, None), (None, None))
    """
    if ranges is not None and name in ranges:
        low, high = ranges[name]
        return (None if low is None else float(low), None if high is None else float(high))
    if name in METRIC_RANGES:
        return METRIC_RANGES[name]
    for suffix, rng in _SUFFIX_RANGES.items():
        if name.endswith(suffix):
            return rng
    return (None, None)


def bounded_interval(
    estimate: FloatArray,
    se: FloatArray,
    df: FloatArray,
    confidence: float,
    low: float | None,
    high: float | None,
) -> tuple[FloatArray, FloatArray]:
    """t interval for a mean computed on a scale where the range is unbounded, mapped back.

    Two finite ends: the logit of ``(m - low) / (high - low)``; one end: the log of the
    distance to it; none: the plain ``estimate +/- t * se``. The SE is carried over by the delta
    method (``se / |g'(m)|``). The interval is no longer symmetric, shrinks towards the end
    the mean is close to, and always lies inside the range; a mean on the end itself (every
    value at the bound) gets the one-sided interval from the bound to the plain upper (or
    lower) limit, clipped to the range.
    """
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(se, dtype=float)
    tcrit = sps.t.ppf(0.5 + confidence / 2.0, np.where(np.isfinite(df), df, 1.0))
    tcrit = np.where(np.isfinite(df), tcrit, np.nan)
    plain_lo, plain_hi = est - tcrit * se, est + tcrit * se
    lo_b = -np.inf if low is None else low
    hi_b = np.inf if high is None else high
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if low is not None and high is not None:
            width = high - low
            p = (est - low) / width
            g = np.log(p / (1.0 - p))
            gse = se / (width * p * (1.0 - p))
            lo = low + width / (1.0 + np.exp(-(g - tcrit * gse)))
            hi = low + width / (1.0 + np.exp(-(g + tcrit * gse)))
        elif low is not None:
            g, gse = np.log(est - low), se / (est - low)
            lo, hi = low + np.exp(g - tcrit * gse), low + np.exp(g + tcrit * gse)
        elif high is not None:
            g, gse = np.log(high - est), se / (high - est)
            lo, hi = high - np.exp(g + tcrit * gse), high - np.exp(g - tcrit * gse)
        else:
            return plain_lo, plain_hi
    inside = (est > lo_b) & (est < hi_b)
    lo = np.where(inside, lo, np.clip(plain_lo, lo_b, hi_b))
    hi = np.where(inside, hi, np.clip(plain_hi, lo_b, hi_b))
    # A zero SE gives the point interval either way.
    lo = np.where(se == 0, est, lo)
    hi = np.where(se == 0, est, hi)
    ok = np.isfinite(est) & np.isfinite(se) & np.isfinite(tcrit)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def too_few_note(n_queries: npt.ArrayLike, min_queries: int) -> npt.NDArray[np.object_]:
    """``"too few queries: G = 3 ..."`` where fewer than ``min_queries`` queries, else ``""``."""
    return np.array(
        [f"too few queries: G = {int(g)} (interval and p withheld below {min_queries}; "
         "pass min_queries= to compute them, and see stats.power for the queries needed)"
         if g < min_queries else "" for g in np.atleast_1d(np.asarray(n_queries))],
        dtype=object,
    )
