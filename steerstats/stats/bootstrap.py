"""Two-way (crossed) cluster bootstrap: the resampling engine and ``summarize``.

Scores are clustered by query and by prompt at once, and prompts may be shared by queries
(common prompts, MMLU questions) or nested in one query (topic prompts). Resampling rows, or
one factor only, understates the uncertainty of a mean over "new queries and prompts like
these". The engine here draws independent multinomial weights for the levels of every cluster
factor and gives each observation the product of its levels' weights (the pigeonhole bootstrap
of Owen 2007, in the product-weight form of Owen & Eckles 2012), which treats crossed and
nested prompts alike. Replicates are computed as weighted sums over a small dense table of
(group x query x prompt) cell sums, never by copying rows, so thousands of replicates on tens
of thousands of rows take well under a second.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as sps
from threadpoolctl import ThreadpoolController

from ._data import (
    check_confidence,
    group_index,
    numeric_values,
    require_clusters,
    require_columns,
    response_level,
)
from .ranges import MIN_QUERIES, Range, bounded_interval, metric_range, too_few_note

__all__ = [
    "BootstrapResult",
    "cluster_bootstrap",
    "cluster_weights",
    "multiway_variance",
    "replicate_sums",
    "summarize",
]

CIMethod = Literal["twoway", "t", "expanded", "percentile"]
CI_METHODS: tuple[str, ...] = ("twoway", "t", "expanded", "percentile")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

# A warning when more than this share of replicates left a group with no observations at all
# (its clusters all drew weight zero), so its replicate mean is undefined and is dropped.
_EMPTY_REPLICATE_WARN = 0.05
_CHUNK_FLOATS = 4_000_000


def check_bootstrap_args(n_boot: int, confidence: float, ci_method: str) -> None:
    """Validate the resampling keywords shared by every bootstrap-based function."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2 (2000 is the default), got {n_boot!r}")
    check_confidence(confidence)
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {CI_METHODS}, got {ci_method!r}")


def cluster_weights(
    n_levels: Sequence[int],
    n_boot: int,
    seed: int | np.random.Generator | None = 0,
) -> list[FloatArray]:
    """Draw bootstrap weights: for each cluster factor, multinomial counts over its levels.

    Entry ``[b, j]`` of the array for a factor with ``L`` levels is how many times level ``j``
    was drawn in replicate ``b`` when ``L`` levels are drawn with replacement (each row sums to
    ``L``). An observation's weight in replicate ``b`` is the product of its levels' entries.

    Parameters
    ----------
    n_levels : sequence of int
        Number of levels of each cluster factor (e.g. ``[14, 171]`` for queries and prompts).
    n_boot : int
        Number of replicates.
    seed : int, numpy.random.Generator or None
        Seed (or generator) for reproducible draws.

    Returns
    -------
    list of numpy.ndarray
        One float array of shape ``(n_boot, n_levels[i])`` per factor.

    Examples
    --------
    >>> from steerstats.stats import cluster_weights
    >>> w_query, w_prompt = cluster_weights([3, 5], n_boot=4, seed=0)
    >>> w_query.shape, w_prompt.shape
    ((4, 3), (4, 5))
    >>> w_prompt.sum(axis=1).tolist()
    [5.0, 5.0, 5.0, 5.0]
    """
    rng = np.random.default_rng(seed)
    out = []
    for n in n_levels:
        if n < 1:
            raise ValueError(f"every cluster factor needs at least one level, got {n}")
        # Draw n level indices per replicate and count them: multinomial(n, 1/n each), but
        # far faster than Generator.multinomial's per-level binomial chain.
        draws = rng.integers(0, n, size=(n_boot, n)) + np.arange(n_boot)[:, None] * n
        counts = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)
        out.append(counts.astype(np.float64))
    return out


def replicate_sums(cells: FloatArray, weights: Sequence[FloatArray]) -> FloatArray:
    """Weighted sums of per-cell statistics for every bootstrap replicate at once.

    Parameters
    ----------
    cells : numpy.ndarray
        Shape ``(n_groups, L_1, ..., L_f, n_stats)``: for each group and each combination of
        cluster levels, the sum of each statistic over the observations in that cell (e.g.
        sum of values and count of observations, giving a weighted mean as their ratio).
    weights : sequence of numpy.ndarray
        ``f`` arrays of shape ``(n_boot, L_i)``, as from :func:`cluster_weights`.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_boot, n_groups, n_stats)``:
        ``sum over cells of cells[g, l_1..l_f, k] * prod_i weights[i][b, l_i]``.

    Notes
    -----
    The largest factor is contracted first with one matrix product; the others with batched
    matrix products on the (small) remainder, all on one BLAS thread. Any statistic that is
    a ratio or other smooth function of weighted sums (means, proportions, slopes) can be
    bootstrapped from the result.

    Examples
    --------
    >>> import numpy as np
    >>> from steerstats.stats import replicate_sums
    >>> cells = np.ones((1, 2, 3, 1))  # one group, 2 x 3 cells, one statistic
    >>> w = [np.array([[2.0, 0.0]]), np.array([[1.0, 1.0, 1.0]])]
    >>> replicate_sums(cells, w)[0, 0, 0]
    np.float64(6.0)
    """
    n_factors = len(weights)
    if cells.ndim != n_factors + 2:
        raise ValueError(
            f"cells has {cells.ndim} dimensions; expected groups + {n_factors} factors + stats"
        )
    for i, w in enumerate(weights):
        if w.shape[1] != cells.shape[i + 1]:
            raise ValueError(
                f"weights[{i}] has {w.shape[1]} levels but cells has {cells.shape[i + 1]}"
            )
    n_boot = weights[0].shape[0]
    order = sorted(range(n_factors), key=lambda i: cells.shape[i + 1])
    x = np.transpose(cells, (0, *[i + 1 for i in order], n_factors + 1))
    ws = [weights[i] for i in order]
    x = np.moveaxis(x, -2, 0)
    rest = x.shape[1:]
    x2 = x.reshape(x.shape[0], -1)
    out = np.empty((n_boot, cells.shape[0], cells.shape[-1]))
    # Replicates in chunks, so the (chunk x groups x other levels x stats) intermediate stays
    # near _CHUNK_FLOATS floats (~32 MB) however many groups and levels there are.
    step = max(1, _CHUNK_FLOATS // max(1, x2.shape[1]))
    with _single_thread_blas():
        for start in range(0, n_boot, step):
            stop = min(n_boot, start + step)
            y = (ws[-1][start:stop] @ x2).reshape((stop - start, *rest))
            for w in reversed(ws[:-1]):
                # (b, ..., L, K) contracted with (b, L) over L, as one batched matrix product.
                lead = y.shape[1:-2]
                n_lev, n_stat = y.shape[-2], y.shape[-1]
                flat = np.moveaxis(y, -2, -1).reshape(stop - start, -1, n_lev)
                y = np.matmul(flat, w[start:stop, :, None]).reshape((stop - start, *lead, n_stat))
            out[start:stop] = y
    return out


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _single_thread_blas() -> contextlib.AbstractContextManager[object]:
    """Run BLAS on one thread: these products are small and memory-bound, and on a shared
    2-core machine OpenBLAS threads cost more in wake-up and contention than they save
    (measured: 0.1 ms vs 24 ms for a 400 x 35 x 60 product under load)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimates and bootstrap replicates of one weighted mean per group.

    Attributes
    ----------
    groups : pandas.DataFrame
        One row per group: the grouping columns (no columns for a single ungrouped mean).
    estimate : numpy.ndarray
        Shape ``(n_groups,)``: the mean of the observations in each group (NaN if none).
    replicates : numpy.ndarray
        Shape ``(n_boot, n_groups)``: the mean in each replicate (NaN where every cluster of
        the group drew weight zero).
    n_obs : numpy.ndarray
        Shape ``(n_groups,)``: observations (non-missing values) per group.
    n_clusters : numpy.ndarray
        Shape ``(n_groups, n_factors)``: distinct levels of each cluster factor in each group.
    clusters : tuple of str
        The cluster factors, in the column order of ``n_clusters``.
    twoway_var : numpy.ndarray
        Shape ``(n_groups,)``: the multi-way cluster-robust (moment) variance of each mean,
        see :func:`multiway_variance`; NaN where a factor has fewer than two levels (``None``:
        not computed, and the bootstrap SE stands in).
    """

    groups: pd.DataFrame
    estimate: FloatArray
    replicates: FloatArray
    n_obs: IntArray
    n_clusters: IntArray
    clusters: tuple[str, ...]
    twoway_var: FloatArray | None = None

    @property
    def df(self) -> FloatArray:
        """Degrees of freedom ``G - 1``, with ``G`` the group's smallest cluster count.

        NaN where a cluster factor has fewer than two levels: its variation cannot be estimated.
        """
        g = self.n_clusters.min(axis=1).astype(float) if self.n_clusters.size else np.array([])
        return np.where(g >= 2, g - 1.0, np.nan)

    def se(self, *, corrected: bool = True, method: CIMethod = "twoway") -> FloatArray:
        """Standard error per group: the two-way moment SE (default), or the bootstrap SE.

        ``method="twoway"``: ``sqrt(twoway_var)`` (small-sample factors included). Otherwise the
        SD of the finite replicates; with ``corrected`` (default) multiplied by
        ``sqrt(G / (G - 1))``, ``G`` being the smallest cluster count of the group, undoing the
        plug-in (divide-by-``G``) variance of resampling few clusters; NaN where ``G < 2``.
        """
        if method == "twoway" and self.twoway_var is not None:
            se = np.sqrt(self.twoway_var)
            return np.asarray(np.where(np.isfinite(self.df), se, np.nan), dtype=np.float64)
        finite = np.isfinite(self.replicates)
        n_ok = finite.sum(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sd = np.where(n_ok >= 2, np.nanstd(self.replicates, axis=0, ddof=1), np.nan)
        sd = np.where(np.isfinite(self.estimate), sd, np.nan)
        if not corrected:
            return np.asarray(sd, dtype=np.float64)
        df = self.df
        return np.asarray(sd * np.sqrt((df + 1.0) / df), dtype=np.float64)

    def interval(
        self, confidence: float = 0.95, method: CIMethod = "twoway"
    ) -> tuple[FloatArray, FloatArray]:
        """Lower and upper confidence limits per group (see :func:`summarize`, Notes)."""
        check_bootstrap_args(2, confidence, method)
        alpha = 1.0 - confidence
        n_groups = self.estimate.shape[0]
        low = np.full(n_groups, np.nan)
        high = np.full(n_groups, np.nan)
        df = self.df
        usable = np.isfinite(df) & np.isfinite(self.estimate)
        if method in ("t", "twoway"):
            se = self.se(method=method)
            half = sps.t.ppf(1.0 - alpha / 2.0, np.where(usable, df, 1.0)) * se
            low = np.where(usable, self.estimate - half, np.nan)
            high = np.where(usable, self.estimate + half, np.nan)
            return low, high
        for d in np.unique(df[usable]):
            cols = np.flatnonzero(usable & (df == d))
            if method == "expanded":
                z = np.sqrt((d + 1.0) / d) * sps.t.ppf(1.0 - alpha / 2.0, d)
                tail = float(sps.norm.sf(z))
                n_min = int(np.isfinite(self.replicates[:, cols]).sum(axis=0).min())
                if tail * n_min < 5:
                    warnings.warn(
                        f"expanded percentile interval with {int(d) + 1} clusters needs the "
                        f"{tail:.2g} quantile, which {n_min} replicates resolve poorly; raise "
                        "n_boot or use ci_method='t'",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            else:
                tail = alpha / 2.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                q = np.nanquantile(self.replicates[:, cols], [tail, 1.0 - tail], axis=0)
            low[cols], high[cols] = q[0], q[1]
        return low, high

    def t_test(
        self, null: float = 0.0, method: CIMethod = "twoway"
    ) -> tuple[FloatArray, FloatArray]:
        """t statistic ``(estimate - null) / se`` and two-sided p-value on ``df`` per group.

        ``se`` is the two-way moment SE for ``method="twoway"`` (default), else the corrected
        bootstrap SE. A zero standard error gives p = 1 when the estimate equals ``null``,
        else p = 0.
        """
        se = self.se(method="twoway" if method == "twoway" else "t")
        diff = self.estimate - null
        df = self.df
        with np.errstate(divide="ignore", invalid="ignore"):
            tstat = diff / se
        p = 2.0 * sps.t.sf(np.abs(tstat), np.where(np.isfinite(df), df, 1.0))
        p = np.where(se == 0, np.where(diff == 0, 1.0, 0.0), p)
        p = np.where(np.isfinite(df) & np.isfinite(diff), p, np.nan)
        return np.asarray(tstat, dtype=np.float64), np.asarray(p, dtype=np.float64)


def cluster_bootstrap(
    data: pd.DataFrame,
    value: str = "value",
    *,
    groups: Sequence[str] = (),
    clusters: Sequence[str] = ("query_id", "prompt_id"),
    n_boot: int = 2000,
    seed: int | np.random.Generator | None = 0,
) -> BootstrapResult:
    """Multi-way cluster bootstrap of the mean of ``value`` within each group, jointly.

    Every row is one observation (a response, or a matched pair's difference); rows whose value
    is NaN are left out. All groups share the same replicate weights, so statistics that
    combine groups (differences, joint probabilities) are bootstrapped jointly.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation.
    value : str
        Numeric column to average.
    groups : sequence of str
        Columns defining the groups (NaN keys form their own group); empty for one mean.
    clusters : sequence of str
        Cluster factors resampled independently, crossed or nested (default query and prompt).
    n_boot : int
        Number of replicates.
    seed : int, numpy.random.Generator or None
        Seed of the replicate weights.

    Returns
    -------
    BootstrapResult
        Estimates, replicates and cluster counts per group; ``.interval()``, ``.se()`` and
        ``.t_test()`` turn them into intervals and tests.

    Examples
    --------
    >>> from steerstats.stats import cluster_bootstrap, example_scores
    >>> scores = example_scores(seed=0)
    >>> beh = scores[scores["metric"] == "behavior"]
    >>> res = cluster_bootstrap(beh, groups=["method"], n_boot=500, seed=1)
    >>> res.groups["method"].tolist()
    ['control', 'prompt', 'steer']
    >>> res.replicates.shape
    (500, 3)
    >>> res.n_clusters.tolist()  # queries, prompts
    [[6, 22], [6, 22], [6, 22]]
    """
    names = require_clusters(data, clusters)
    require_columns(data, {"value": value})
    for g in groups:
        require_columns(data, {"groups": g})
    check_bootstrap_args(n_boot, 0.95, "t")
    vals = numeric_values(data, value).to_numpy()
    codes, keys = group_index(data, groups)
    n_groups = len(keys)
    ok = np.isfinite(vals)
    level_codes = []
    n_levels = []
    for c in names:
        col = data[c]
        if col[ok].isna().any():
            raise ValueError(
                f"cluster column {c!r} has missing values in rows with a value; fill or drop them"
            )
        lc, uniques = pd.factorize(col[ok], sort=True)
        level_codes.append(lc.astype(np.intp))
        n_levels.append(max(len(uniques), 1))
    shape = (n_groups, *n_levels)
    stats = np.column_stack([vals[ok], np.ones(int(ok.sum()))])
    flat = np.ravel_multi_index((codes[ok], *level_codes), shape) if ok.any() else np.array([], int)
    size = int(np.prod(shape))
    cells = np.stack(
        [np.bincount(flat, weights=stats[:, k], minlength=size) for k in range(2)], axis=-1
    ).reshape((*shape, 2)).astype(np.float64)
    totals = cells.sum(axis=tuple(range(1, len(names) + 1)))
    estimate = _ratio(totals[:, 0], totals[:, 1])
    counts = cells[..., 1]
    n_clusters = np.empty((n_groups, len(names)), dtype=np.intp)
    for i in range(len(names)):
        other = tuple(j + 1 for j in range(len(names)) if j != i)
        per_level = counts.sum(axis=other) if other else counts
        n_clusters[:, i] = (per_level > 0).sum(axis=1)
    twoway_var = multiway_variance(cells, estimate)
    weights = cluster_weights(n_levels, n_boot, seed)
    sums = replicate_sums(cells, weights)
    replicates = _ratio(sums[..., 0], sums[..., 1])
    has_data = np.isfinite(estimate)
    if has_data.any():
        empty = np.isnan(replicates[:, has_data]).mean(axis=0)
        if empty.max() > _EMPTY_REPLICATE_WARN:
            warnings.warn(
                f"in up to {empty.max():.0%} of replicates a group drew none of its clusters "
                "(it is observed in few of them); those replicates are left out of its interval",
                RuntimeWarning,
                stacklevel=2,
            )
    return BootstrapResult(
        groups=keys,
        estimate=estimate,
        replicates=replicates,
        n_obs=totals[:, 1].astype(np.intp),
        n_clusters=n_clusters,
        clusters=names,
        twoway_var=twoway_var,
    )


def multiway_variance(cells: FloatArray, estimate: FloatArray) -> FloatArray:
    """Multi-way cluster-robust variance of each group's mean, from per-cell sums and counts.

    Parameters
    ----------
    cells : numpy.ndarray
        Shape ``(n_groups, L_1, ..., L_f, 2)``: per group and combination of cluster levels,
        the sum of the values and the number of observations.
    estimate : numpy.ndarray
        Shape ``(n_groups,)``: each group's mean (sum over count).

    Returns
    -------
    numpy.ndarray
        Shape ``(n_groups,)``. For every non-empty set ``S`` of cluster factors, ``V_S`` is the
        cluster-robust variance of the mean with clusters the combinations of the levels of
        ``S``: ``c_S * sum_c (sum_{i in c} (y_i - mean))^2 / N^2`` with the small-sample factor
        ``c_S = G_S / (G_S - 1)`` (``G_S`` non-empty clusters). The result is the
        inclusion-exclusion sum ``V = sum_S (-1)^(|S|+1) V_S`` (for queries and prompts:
        ``V_query + V_prompt - V_query x prompt``), which counts each variance component once,
        where resampling both factors counts the residual three times (Owen 2007). If that sum
        is not positive, the largest one-way ``V_S`` is used. For prompts nested in queries
        ``V_prompt = V_query x prompt`` and ``V`` is the one-way query variance: the
        query-level t's.

    References
    ----------
    Cameron, A. C., Gelbach, J. B. & Miller, D. L. (2011). Robust inference with multiway
    clustering. Journal of Business & Economic Statistics 29(2), 238-249.
    """
    n_groups = cells.shape[0]
    n_factors = cells.ndim - 2
    counts = cells[..., 1]
    n = counts.reshape(n_groups, -1).sum(axis=1)
    est = np.nan_to_num(estimate)
    resid = cells[..., 0] - est.reshape((n_groups,) + (1,) * n_factors) * counts
    total = np.zeros(n_groups)
    one_way = np.zeros(n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r in range(1, n_factors + 1):
            for subset in itertools.combinations(range(n_factors), r):
                other = tuple(j + 1 for j in range(n_factors) if j not in subset)
                rs = resid.sum(axis=other) if other else resid
                cs = counts.sum(axis=other) if other else counts
                g = (cs > 0).reshape(n_groups, -1).sum(axis=1).astype(float)
                v = (rs**2).reshape(n_groups, -1).sum(axis=1) / n**2 * g / (g - 1.0)
                total += (-1.0) ** (r + 1) * v
                if r == 1:
                    one_way = np.fmax(one_way, v)
        out = np.where(total > 0, total, one_way)
    return np.asarray(np.where(np.isfinite(estimate) & (n > 0), out, np.nan), dtype=np.float64)


def warn_few_clusters(result: BootstrapResult, stacklevel: int = 3) -> None:
    """Warn when some group has a cluster factor with a single level (its CI is NaN)."""
    has = result.n_obs > 0
    if not has.any():
        return
    few = result.n_clusters[has] < 2
    names = [c for i, c in enumerate(result.clusters) if bool(few[:, i].any())]
    if names:
        warnings.warn(
            f"some estimates rest on a single level of {names}: variation between "
            f"{names} cannot be estimated, so their CIs are NaN. To get intervals conditional "
            f"on that level, pass clusters= without {names}",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def grouping_columns(**columns: str | None) -> list[str]:
    """The grouping roles the caller kept (``None`` turns a role off), in order."""
    return [c for c in columns.values() if c is not None]


def summarize(
    scores: pd.DataFrame,
    *,
    model: str | None = "model",
    method: str | None = "method",
    strength: str | None = "strength",
    metric: str | None = "metric",
    value: str = "value",
    clusters: Sequence[str] = ("query_id", "prompt_id"),
    sample: str | None = "sample",
    n_boot: int = 2000,
    confidence: float = 0.95,
    ci_method: CIMethod = "twoway",
    seed: int | None = 0,
    ranges: Mapping[str, Range] | None = None,
    min_queries: int = MIN_QUERIES,
) -> pd.DataFrame:
    """Mean of every metric per model and method, with a two-way cluster-robust CI.

    Ratings of the same response (judge repeats, and several raters if present) are averaged
    first, so each response counts once; unparsed ratings (NaN) are left out and counted.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table (``steerstats.schema.SCORE_COLUMNS``), one row per rating.
    model, method, strength, metric : str or None
        Grouping columns; ``None`` leaves a role out (e.g. data without a strength sweep can
        pass ``strength=None``): the column need not exist, and ratings that differ only in it
        are averaged as ratings of one response. NaN strength (strength-less methods) is a
        level of its own.
    value : str
        Column of ratings (float; NaN = unparsed).
    clusters : sequence of str
        Cluster factors resampled by the bootstrap, default queries and prompts.
    sample : str or None
        Replicate-generation column; with the groups and clusters it identifies a response.
    n_boot : int
        Bootstrap replicates (default 2000).
    confidence : float
        Confidence level of the interval.
    ci_method : {"twoway", "t", "expanded", "percentile"}
        The interval (see Notes); ``"twoway"`` is the default.
    seed : int or None
        Seed of the bootstrap (default 0: reproducible).
    ranges : mapping of str to (low, high), optional
        Declared range per metric name (``None`` for an open end); default
        :data:`steerstats.stats.METRIC_RANGES` and the suffix rules of ``metric_range``.
    min_queries : int
        Fewest queries for which intervals are computed (default 6).

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted by the grouping columns:

        - the grouping columns (``model``, ``method``, ``strength``, ``metric`` unless turned off)
        - ``n``: responses with at least one parsed rating (the units averaged)
        - ``n_missing``: ratings that are NaN (unparsed), excluded from the mean
        - ``mean``: mean over responses of the per-response mean rating
        - ``n_queries``: queries (levels of the first cluster factor) in the group
        - ``ci_low``, ``ci_high``: confidence limits (NaN when ``n`` is 0, when the group has
          a single query or a single prompt: between-cluster variation is then not estimable,
          and a warning says so, or with fewer than ``min_queries`` queries, see ``note``)
        - ``ci_scale``: ``"logit"``, ``"log"`` or ``"identity"``: where the interval was built
        - ``note``: why inference is withheld (``"too few queries: G = 3 ..."``), else empty

    Notes
    -----
    **Resampling.** Each replicate draws the queries with replacement and, independently, the
    prompts (multinomial counts per level); a response's weight is the product of its query's
    and its prompt's counts, and the replicate mean is the weighted mean of responses. This is
    the pigeonhole bootstrap for crossed random effects (Owen 2007), in the product-weight form
    that also covers prompts nested in a query (Owen & Eckles 2012). It is conservative for
    the variance of a crossed mean (see below). All groups share the replicate weights.

    **Default interval (``ci_method="twoway"``).** ``mean +/- t_{G-1} * SE`` with the two-way
    cluster-robust moment variance ``V_query + V_prompt - V_query x prompt``
    (:func:`multiway_variance`; Cameron, Gelbach & Miller 2011), each term with its
    ``G/(G-1)`` factor, on ``G - 1`` degrees of freedom, ``G`` the number of queries (the
    smallest cluster count). It counts each variance component once, where the pigeonhole
    bootstrap counts the residual about three times (Owen 2007); with prompts nested in
    queries it is exactly the query-level t on per-query means. It needs no resampling, so it
    does not depend on ``seed``. ``"t"`` is the previous default: the pigeonhole bootstrap SE
    times ``sqrt(G/(G-1))`` on ``G - 1`` df (Cameron, Gelbach & Miller 2008), conservative;
    ``"expanded"`` is Hesterberg's (2015) expanded percentile interval and ``"percentile"``
    the plain one, both from the replicates.

    **The metric's range.** With ``"twoway"`` or ``"t"``, the interval of a mean whose metric
    has a declared range (:func:`steerstats.stats.metric_range`: rubric scores 1-5, accuracy
    0-1, perplexity >= 1, ``*_nll`` >= 0; ``ranges=`` declares others) is computed on the logit
    scale of ``(m - low) / (high - low)`` (two ends) or the log of the distance to the bound
    (one end), the SE carried by the delta method, and mapped back
    (:func:`steerstats.stats.bounded_interval`): it never leaves the range. ``ci_scale`` says
    which scale was used. If the data hold values outside the declared range, a warning says so
    and that metric's interval stays on the identity scale.

    **Too few queries.** With fewer than ``min_queries`` (default 6) queries in a group, the
    interval is withheld (NaN) and ``note`` says ``"too few queries: G = 3 ..."``: an audit
    found 34-98% of such intervals leaving the metric's range. Pass ``min_queries=2`` to
    compute them anyway; :func:`steerstats.stats.mde` tells how many queries a design needs.

    **Measured coverage** (``benchmarks/coverage.py``, results in
    ``benchmarks/results/coverage.json``; 200 data sets per design, Monte-Carlo SE
    0.005-0.013): on designs like the study's own (nested + shared prompts, several models,
    reused control replies, heteroscedastic query x method effects, 10% missing, 1-5 scores;
    G = 14 and 6), nominal 0.95 intervals for means cover 0.930-0.970 and for paired
    differences 0.938-0.960 (the previous pigeonhole default: 0.948-0.980 and 0.956-0.995).
    They are 0.99-1.02x the width of the query-level t where that t is valid (covers >= 0.93);
    where it is not (control replies reused across queries, shared-prompt noise: it covers
    0.82-0.93) they are up to 1.29x as wide and cover 0.930-0.962.

    **Unparsed ratings** are never scored as a number: they are left out of ``mean`` and
    counted in ``n_missing``; a response all of whose ratings are unparsed is not in ``n``.

    **0/1 metrics.** For a metric such as MMLU ``accuracy`` (1 correct, 0 wrong) the mean is
    a proportion, but the default interval is still a symmetric t interval on a mean, so
    ``ci_high`` can exceed 1 and ``ci_low`` fall below 0 (the control accuracy in the example
    reaches 1.03); the numbers are reported as computed, not clipped. For proportions use
    :func:`steerstats.stats.accuracy_model`: a binomial GEE whose interval stays within
    [0, 1], the same two-way bootstrap clipped to [0, 1], and the unparsed-answer rate as an
    outcome of its own.

    References
    ----------
    Owen, A. B. (2007). The pigeonhole bootstrap. Annals of Applied Statistics 1(2), 386-411.

    Cameron, A. C., Gelbach, J. B. & Miller, D. L. (2011). Robust inference with multiway
    clustering. Journal of Business & Economic Statistics 29(2), 238-249.

    Owen, A. B. & Eckles, D. (2012). Bootstrapping data arrays of arbitrary order. Annals of
    Applied Statistics 6(3), 895-927.

    Cameron, A. C., Gelbach, J. B. & Miller, D. L. (2008). Bootstrap-based improvements for
    inference with clustered errors. Review of Economics and Statistics 90(3), 414-427.

    Cameron, A. C. & Miller, D. L. (2015). A practitioner's guide to cluster-robust inference.
    Journal of Human Resources 50(2), 317-372.

    Hesterberg, T. C. (2015). What teachers should know about the bootstrap: resampling in the
    undergraduate statistics curriculum. The American Statistician 69(4), 371-386.

    Examples
    --------
    >>> from steerstats.stats import example_scores, summarize
    >>> scores = example_scores(seed=0)
    >>> table = summarize(scores, strength=None, n_boot=1000, seed=1)
    >>> table.columns.tolist()  # doctest: +NORMALIZE_WHITESPACE
    ['model', 'method', 'metric', 'n', 'n_missing', 'n_queries', 'mean', 'ci_low', 'ci_high',
     'ci_scale', 'note']
    >>> cols = ["model", "method", "metric", "n", "mean", "ci_low", "ci_high", "ci_scale"]
    >>> print(table.loc[table["model"] == "model-a", cols].round(2).to_string(index=False))
      model  method    metric  n  mean  ci_low  ci_high ci_scale
    model-a control  accuracy 47  0.70    0.47     0.86    logit
    model-a control  behavior 42  1.56    1.20     2.34    logit
    model-a control coherence 42  4.51    4.11     4.75    logit
    model-a  prompt  accuracy 47  0.57    0.40     0.74    logit
    model-a  prompt  behavior 42  2.87    2.00     3.79    logit
    model-a  prompt coherence 42  4.21    3.68     4.57    logit
    model-a   steer  accuracy 43  0.44    0.22     0.69    logit
    model-a   steer  behavior 42  3.07    2.27     3.85    logit
    model-a   steer coherence 42  3.73    3.19     4.16    logit

    The example has 6 queries, so ``G - 1 = 5`` degrees of freedom and wide intervals.
    """
    check_bootstrap_args(n_boot, confidence, ci_method)
    names = require_clusters(scores, clusters)
    group_cols = grouping_columns(model=model, method=method, strength=strength, metric=metric)
    require_columns(
        scores,
        {"model": model, "method": method, "strength": strength, "metric": metric,
         "value": value, "sample": sample},
    )
    keys = [*group_cols, *names, *([sample] if sample is not None else [])]
    responses = response_level(scores, keys, value=value)
    result = cluster_bootstrap(
        responses, value, groups=group_cols, clusters=names, n_boot=n_boot, seed=seed
    )
    warn_few_clusters(result)
    codes, _ = group_index(responses, group_cols)
    n_missing = np.bincount(
        codes, weights=responses["n_missing"].to_numpy(float), minlength=len(result.groups)
    )
    low, high = result.interval(confidence, ci_method)
    scale = np.full(len(result.groups), "identity", dtype=object)
    if metric is not None and ci_method in ("twoway", "t"):
        vals = responses[value].to_numpy(float)
        finite = np.isfinite(vals)
        lo_obs = pd.Series(vals[finite]).groupby(codes[finite]).min()
        hi_obs = pd.Series(vals[finite]).groupby(codes[finite]).max()
        lo_obs = lo_obs.reindex(range(len(result.groups))).to_numpy()
        hi_obs = hi_obs.reindex(range(len(result.groups))).to_numpy()
        se = result.se(method=ci_method)
        names_col = result.groups[metric].astype(str).to_numpy()
        for name in pd.unique(names_col):
            bound_lo, bound_hi = metric_range(name, ranges)
            if bound_lo is None and bound_hi is None:
                continue
            sel = names_col == name
            outside = sel & ((lo_obs < (bound_lo if bound_lo is not None else -np.inf))
                             | (hi_obs > (bound_hi if bound_hi is not None else np.inf)))
            if outside.any():
                warnings.warn(
                    f"metric {name!r} has values outside its declared range "
                    f"[{bound_lo}, {bound_hi}]; its intervals are not range-respecting: pass "
                    f"ranges={{{name!r}: (low, high)}} with the metric's true range",
                    RuntimeWarning, stacklevel=2,
                )
                sel &= ~outside
            if not sel.any():
                continue
            lo_i, hi_i = bounded_interval(result.estimate[sel], se[sel], result.df[sel],
                                          confidence, bound_lo, bound_hi)
            low[sel], high[sel] = lo_i, hi_i
            scale[sel] = "logit" if bound_lo is not None and bound_hi is not None else "log"
    n_queries = result.n_clusters[:, 0]
    note = too_few_note(n_queries, min_queries)
    few = note != ""
    low[few], high[few] = np.nan, np.nan
    out = result.groups.copy()
    out["n"] = result.n_obs.astype(np.int64)
    out["n_missing"] = n_missing.astype(np.int64)
    out["n_queries"] = n_queries.astype(np.int64)
    out["mean"] = result.estimate
    out["ci_low"] = low
    out["ci_high"] = high
    out["ci_scale"] = scale
    out["note"] = note
    return out.reset_index(drop=True)
