"""Generalizability study of a judge panel: REML variance components, G and Phi, D study.

How much of a judged score is the response (what we want), the judge (offsets, and judges
ranking responses differently) and noise (a judge's disagreement with itself); and how many
judges x repeats it takes for the mean to reach a given reliability.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize

from steerstats.stats._data import require_columns
from steerstats.stats._panel import as_list, judged_items, panel_metrics, prepare_panel

__all__ = ["decision_study", "g_study", "simulate_panel"]

COMPONENTS = ("response", "rater", "response:rater", "residual")
_D_COMPONENTS = ("response", "rater", "repeat", "response:rater", "response:repeat",
                 "rater:repeat", "residual")
_G_EXTRA = ("share", "n_levels", "n_responses", "n_raters", "n_repeats", "n_ratings",
            "n_dropped", "reml_criterion", "singular", "confounded")


# ---------------------------------------------------------------------------------------------
# Generalizability study: REML variance components of response x rater (repeats within cells)


class _PanelReml:
    """REML for ``y = mu + response + rater + response:rater + e`` (lme4's PLS formulation).

    With ``Lambda = diag(theta)`` and ``A = Lambda Z'Z Lambda + I`` as in Bates et al. (2015),
    the cell (response:rater) block of ``A`` is diagonal, and after eliminating it the response
    block is diagonal too (a cell belongs to one response and one rater), so only the raters'
    small block is factorised: each evaluation costs O(rows), whatever the number of responses.
    """

    def __init__(self, y: np.ndarray, resp: np.ndarray, rat: np.ndarray) -> None:
        self.n = len(y)
        cell_code, cells = pd.factorize(pd.MultiIndex.from_arrays([resp, rat]), sort=True)
        self.n_p, self.n_r = int(resp.max()) + 1, int(rat.max()) + 1
        self.cell_p = np.asarray(cells.get_level_values(0), dtype=np.intp)
        self.cell_r = np.asarray(cells.get_level_values(1), dtype=np.intp)
        k = len(cells)
        self.n_c = np.bincount(cell_code, minlength=k).astype(float)
        w = np.column_stack([np.ones(self.n), y])  # [X | y], X the intercept
        self.w_c = np.stack([np.bincount(cell_code, weights=w[:, j], minlength=k)
                             for j in range(2)], axis=1)
        self.w_p = np.stack([np.bincount(resp, weights=w[:, j], minlength=self.n_p)
                             for j in range(2)], axis=1)
        self.w_r = np.stack([np.bincount(rat, weights=w[:, j], minlength=self.n_r)
                             for j in range(2)], axis=1)
        self.n_pp = np.bincount(resp, minlength=self.n_p).astype(float)
        self.n_rr = np.bincount(rat, minlength=self.n_r).astype(float)
        self.wtw = w.T @ w

    def _solve(self, theta: np.ndarray) -> tuple[float, float, float, float]:
        """log det A, log det RX'RX, penalised RSS and the intercept at ``theta``."""
        t_p, t_r, t_c = (float(t) for t in theta)
        n_c, cp, cr = self.n_c, self.cell_p, self.cell_r
        d_c = t_c**2 * n_c + 1.0
        # Eliminate cells: Schur complement over responses (diagonal), raters (diagonal) and
        # their cross block, whose (p, r) entry is t_p t_r n_c / d_c for the cell (p, r).
        shrink = t_c**2 * n_c**2 / d_c
        d_p = t_p**2 * (self.n_pp - np.bincount(cp, weights=shrink, minlength=self.n_p)) + 1.0
        s_rr = np.diag(t_r**2 * (self.n_rr - np.bincount(cr, weights=shrink, minlength=self.n_r))
                       + 1.0)
        cross = t_p * t_r * n_c / d_c  # entries of S_pr at (cp, cr)
        b_c = t_c * self.w_c
        b_p = t_p * self.w_p - _sum_by(cp, (t_p * t_c * n_c / d_c)[:, None] * b_c, self.n_p)
        b_r = t_r * self.w_r - _sum_by(cr, (t_r * t_c * n_c / d_c)[:, None] * b_c, self.n_r)
        g = b_c.T @ (b_c / d_c[:, None]) + b_p.T @ (b_p / d_p[:, None])
        # Eliminate responses: S_rr - S_rp diag(1/d_p) S_pr, and carry b_r along.
        s_pr = np.zeros((self.n_p, self.n_r))
        s_pr[cp, cr] = cross
        s_rr = s_rr - s_pr.T @ (s_pr / d_p[:, None])
        b_r = b_r - s_pr.T @ (b_p / d_p[:, None])
        chol = np.linalg.cholesky(s_rr)
        z = np.linalg.solve(chol, b_r)
        g = g + z.T @ z
        ld_a = float(np.log(d_c).sum() + np.log(d_p).sum() + 2 * np.log(np.diag(chol)).sum())
        rx2 = self.wtw[0, 0] - g[0, 0]
        c = (self.wtw[0, 1] - g[0, 1]) / np.sqrt(rx2)
        pwrss = self.wtw[1, 1] - g[1, 1] - c * c
        return ld_a, float(np.log(rx2)), float(pwrss), float(c / np.sqrt(rx2))

    def deviance(self, theta: np.ndarray) -> float:
        """REML deviance profiled over the intercept and sigma (lme4's ``REMLcrit``)."""
        ld_a, ld_x, pwrss, _ = self._solve(theta)
        dof = self.n - 1
        if not pwrss > 0:
            return np.inf
        return ld_a + ld_x + dof * (1.0 + np.log(2.0 * np.pi * pwrss / dof))

    def _minimise(self, start: np.ndarray, free: np.ndarray, maxiter: int) -> np.ndarray:
        """Minimise the deviance over the ``free`` thetas (others 0): Powell, then a bounded
        Nelder-Mead polish, restarted until a restart stops improving (a bounded simplex alone
        can stall on a boundary)."""

        def f(x: np.ndarray) -> float:
            theta = np.zeros(3)
            theta[free] = x
            return self.deviance(theta)

        x, best = start[free], np.inf
        nm = {"xatol": 1e-7, "fatol": 1e-8, "maxiter": maxiter, "maxfev": 4 * maxiter}
        for _ in range(4):
            for method, options in (("Nelder-Mead", nm), ("Powell", {"maxiter": maxiter})):
                res = optimize.minimize(f, x, method=method, bounds=[(0.0, None)] * len(x),
                                        options=options)
                if not np.isfinite(res.fun):
                    raise RuntimeError(f"REML optimisation failed: {res.message}")
                if res.fun <= f(x):
                    x = np.asarray(res.x, dtype=float)
            improved = best - f(x)
            best = min(best, f(x))
            if improved < 1e-6:
                break
        theta = np.zeros(3)
        theta[free] = x
        return theta

    def fit(self, maxiter: int) -> tuple[np.ndarray, float, float]:
        """(variances of response, rater, response:rater, residual), intercept, criterion.

        A small relative SD is tried at exactly 0 (the others re-optimised) and kept there when
        the criterion is no worse, so boundary estimates are 0 as in lme4.
        """
        start = np.ones(3)
        free = np.ones(3, dtype=bool)
        if self.n_c.max() < 2:  # one rating per cell: response:rater is the residual
            free[2] = start[2] = 0.0
        theta = self._minimise(start, free, maxiter)
        for i in np.argsort(theta):
            if theta[i] == 0 or theta[i] > 0.05:
                continue
            free = theta > 0
            free[i] = False
            trial = self._minimise(theta, free, maxiter) if free.any() else np.zeros(3)
            if self.deviance(trial) <= self.deviance(theta) + 1e-9:
                theta = trial
        _, _, pwrss, mu = self._solve(theta)
        sigma2 = pwrss / (self.n - 1)
        return np.append(theta**2 * sigma2, sigma2), mu, self.deviance(theta)


def _sum_by(codes: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.bincount(codes, weights=values[:, j], minlength=size)
                     for j in range(values.shape[1])], axis=1)


def g_study(
    scores: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    *,
    metrics: str | Sequence[str] | None = None,
    targets: str | Sequence[str] | None = None,
    rater: str = "rater",
    repeat: str = "repeat",
    value: str = "value",
    metric: str = "metric",
    maxiter: int = 4000,
) -> pd.DataFrame:
    """Generalizability study: how a score's variance splits into response, judge and error.

    Fits ``value ~ 1 + (1|response) + (1|rater) + (1|response:rater)`` by REML per metric:
    the response (universe-score) variance, the judges' systematic offsets, the judge x
    response interaction (judges ranking responses differently) and the residual (a judge's
    disagreement with itself across repeats, which are nested in response x judge).
    :func:`decision_study` turns the table into G and Phi coefficients.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table, one row per rating.
    by : str or list of str, optional
        Columns to split by first (e.g. ``"method"``).
    metrics : str or list of str, optional
        Metrics to analyse; default every metric rated by two or more judges (computed
        metrics, rater ``"auto"``, are left out).
    targets : str or list of str, optional
        Columns identifying a judged response (default as in :func:`rater_reliability`).
    rater, repeat : str
        Columns naming the judge and the repeat index.
    value, metric : str
        Column names of the rating and the metric.
    maxiter : int
        Iterations of each Nelder-Mead run of the REML optimiser.

    Returns
    -------
    pandas.DataFrame
        Four rows per (``by``, metric), components in the order response, rater,
        response:rater, residual:

        - the ``by`` columns, ``metric``, ``component``
        - ``variance``: REML estimate (0 at the boundary, as in lme4)
        - ``share``: the component's share of the sum of the four
        - ``n_levels``: levels of the component (responses, judges, response x judge cells
          with a rating; ratings for the residual)
        - ``n_responses``, ``n_raters``: responses and judges in the fit
        - ``n_repeats``: mean parsed ratings per response x judge cell (the design's repeats)
        - ``n_ratings``: parsed ratings fitted; ``n_dropped``: NaN ratings left out
        - ``reml_criterion``: lme4's ``REMLcrit`` at the optimum
        - ``singular``: some component other than the residual is estimated at 0
        - ``confounded``: every response x judge cell has one rating (one repeat), so the
          judge x response interaction and a judge's disagreement with itself cannot be told
          apart: ``response:rater`` holds both and ``residual`` is NaN

    Raises
    ------
    ValueError
        A column is missing, or no metric (or a requested one) has two judges.

    Notes
    -----
    The design is response x judge with repeats nested in each cell, so effects of the repeat
    index itself (a shared seed) are part of the residual. Unbalanced data (unparsed ratings,
    judges that skipped responses) are fitted as they are: REML uses every parsed rating. With
    two or three judges the judge variance rests on one or two degrees of freedom: read it as
    an order of magnitude, and see :func:`rater_bias` for each judge's offset with a CI.

    The REML criterion is lme4's penalised least-squares one (Bates et al. 2015), the same as
    :func:`steerstats.stats.mixed_model` uses, with the nested structure of this design
    exploited so that a fit costs O(ratings). Checked against
    ``lme4::lmer(value ~ 1 + (1|response) + (1|rater) + (1|response:rater))`` in the tests
    (``tests/reference/raters_lme4.R``).

    References
    ----------
    Brennan, R. L. (2001). Generalizability Theory. Springer. Bates, D., Maechler, M.,
    Bolker, B., Walker, S. (2015). Fitting linear mixed-effects models using lme4. Journal of
    Statistical Software 67(1).

    Examples
    --------
    >>> from steerstats.stats import g_study, simulate_panel
    >>> panel = simulate_panel(n_responses=80, n_raters=3, offsets=(0, 0.5, -0.3), seed=0)
    >>> g_study(panel)[["component", "variance", "share"]].round(2)
            component  variance  share
    0        response      1.02   0.66
    1           rater      0.15   0.10
    2  response:rater      0.12   0.08
    3        residual      0.25   0.17
    """
    by_cols = as_list(by)
    target_cols = judged_items(scores, targets)
    data = prepare_panel(scores, by_cols, target_cols, rater, [repeat], value, metric)
    chosen = panel_metrics(data, metrics, rater, metric, "a generalizability study")
    rows: list[dict[str, object]] = []
    groups = data.groupby(by_cols, sort=True, dropna=False) if by_cols else [((), data)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        for name in chosen:
            g = group[group[metric] == name]
            ok = np.isfinite(g["_value"].to_numpy(float))
            g = g[ok]
            n_dropped = int((~ok).sum())
            if g[rater].nunique() < 2 or len(g) < 4:
                continue
            resp = g.groupby(target_cols, sort=True, dropna=False).ngroup().to_numpy(np.intp)
            rat = pd.factorize(g[rater], sort=True)[0].astype(np.intp)
            reml = _PanelReml(g["_value"].to_numpy(float), resp, rat)
            variances, _, crit = reml.fit(maxiter)
            confounded = bool(reml.n_c.max() < 2)
            if confounded:  # the residual is response:rater (+ error), nothing beside it
                variances = np.array([variances[0], variances[1], variances[3], np.nan])
            total = float(np.nansum(variances))
            n_cells = len(reml.n_c)
            levels = [reml.n_p, reml.n_r, n_cells, reml.n]
            singular = bool((variances[:2] == 0).any() or (variances[2] == 0 and not confounded))
            for comp, var, lev in zip(COMPONENTS, variances, levels, strict=True):
                rows.append({
                    **dict(zip(by_cols, key, strict=True)), "metric": name,
                    "component": comp, "variance": float(var),
                    "share": float(var / total) if total > 0 else np.nan, "n_levels": lev,
                    "n_responses": reml.n_p, "n_raters": reml.n_r,
                    "n_repeats": reml.n / n_cells, "n_ratings": reml.n, "n_dropped": n_dropped,
                    "reml_criterion": crit, "singular": singular, "confounded": confounded,
                })
    return pd.DataFrame(rows, columns=[*by_cols, "metric", "component", "variance", *_G_EXTRA])


def decision_study(
    components: pd.DataFrame,
    n_raters: Sequence[int] = (1, 2, 3, 4, 5),
    n_repeats: Sequence[int] = (1, 2, 3),
    *,
    component: str = "component",
    variance: str = "variance",
) -> pd.DataFrame:
    """Decision study: G and Phi of the mean of ``n_raters`` judges x ``n_repeats`` repeats.

    Parameters
    ----------
    components : pandas.DataFrame
        Variance components, one row per component, e.g. the output of :func:`g_study`.
        Components are named ``response`` (the object of measurement), ``rater``, ``repeat``,
        ``response:rater``, ``response:repeat``, ``rater:repeat`` and ``residual``; absent
        ones (and NaN variances) count as 0 (``g_study``'s design nests repeats in response x
        rater, so the ``repeat`` terms are part of its residual). Columns other than ``component``,
        ``variance`` and ``g_study``'s count columns identify groups (e.g. ``metric``).
    n_raters, n_repeats : sequence of int
        The grid of judges and repeats per judge to evaluate.
    component, variance : str
        Column names of the component and its variance.

    Returns
    -------
    pandas.DataFrame
        One row per group x ``n_raters`` x ``n_repeats``:

        - the group columns
        - ``n_raters``, ``n_repeats``: the decision study's design
        - ``collected``: whether it is the design collected (when ``components`` has
          ``g_study``'s ``n_raters`` and ``n_repeats``; repeats rounded)
        - ``universe``: response (universe-score) variance
        - ``relative_error``: error variance for ranking responses (delta)
        - ``absolute_error``: error variance for the score itself (Delta), adding the judges'
          and repeats' main effects
        - ``g``: generalizability coefficient ``universe / (universe + relative_error)``
        - ``phi``: dependability coefficient ``universe / (universe + absolute_error)``

    Notes
    -----
    For a two-facet random design with judges (r) and repeats (k), Brennan (2001, ch. 4):
    ``delta = s2(pr)/n_r + s2(pk)/n_k + s2(prk,e)/(n_r n_k)`` and
    ``Delta = delta + s2(r)/n_r + s2(k)/n_k + s2(rk)/(n_r n_k)``. G (relative) is what a
    comparison of responses or methods needs; Phi (absolute) what a score on the rubric's own
    scale needs: a judge offset lowers Phi but not G. Checked against Brennan's (2001)
    Synthetic Data Set No. 3 (p x i x o) in the tests.

    Examples
    --------
    >>> import pandas as pd
    >>> from steerstats.stats import decision_study
    >>> vc = pd.DataFrame({"component": ["response", "rater", "response:rater", "residual"],
    ...                    "variance": [1.0, 0.25, 0.25, 0.5]})
    >>> decision_study(vc, n_raters=[1, 2], n_repeats=[1, 2])[["n_raters", "n_repeats", "g",
    ...                                                         "phi"]].round(3)
       n_raters  n_repeats      g    phi
    0         1          1  0.571  0.500
    1         1          2  0.667  0.571
    2         2          1  0.727  0.667
    3         2          2  0.800  0.727
    """
    require_columns(components, {"component": component, "variance": variance})
    unknown = sorted(set(components[component].astype(str)) - set(_D_COMPONENTS))
    if unknown:
        raise ValueError(f"unknown variance component(s) {unknown}; expected names among "
                         f"{list(_D_COMPONENTS)}")
    grid = [(int(r), int(k)) for r in n_raters for k in n_repeats]
    if not grid or min(min(g) for g in grid) < 1:
        raise ValueError("n_raters and n_repeats must be non-empty lists of integers >= 1")
    skip = {component, variance, *_G_EXTRA}
    group_cols = [c for c in components.columns if c not in skip]
    rows = []
    groups = (components.groupby(group_cols, sort=False, dropna=False) if group_cols
              else [((), components)])
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        dup = g[component].duplicated()
        if dup.any():
            raise ValueError(f"component {g[component][dup].iloc[0]!r} appears twice in one "
                             f"group {dict(zip(group_cols, key, strict=True))}")
        s = dict.fromkeys(_D_COMPONENTS, 0.0)
        s.update(zip(g[component].astype(str), g[variance].astype(float).fillna(0.0),
                     strict=True))
        observed = None
        if {"n_raters", "n_repeats"} <= set(g.columns):
            observed = (int(g["n_raters"].iloc[0]), int(round(float(g["n_repeats"].iloc[0]))))
        for r, k in grid:
            rel = s["response:rater"] / r + s["response:repeat"] / k + s["residual"] / (r * k)
            abs_err = rel + s["rater"] / r + s["repeat"] / k + s["rater:repeat"] / (r * k)
            uni = s["response"]
            rows.append({
                **dict(zip(group_cols, key, strict=True)), "n_raters": r, "n_repeats": k,
                "collected": observed == (r, k), "universe": uni, "relative_error": rel,
                "absolute_error": abs_err,
                "g": uni / (uni + rel) if uni + rel > 0 else np.nan,
                "phi": uni / (uni + abs_err) if uni + abs_err > 0 else np.nan,
            })
    return pd.DataFrame(rows, columns=[*group_cols, "n_raters", "n_repeats", "collected",
                                       "universe", "relative_error", "absolute_error", "g",
                                       "phi"])


# ---------------------------------------------------------------------------------------------
# A simulated judge panel with known components (examples, tests)


def simulate_panel(
    n_responses: int = 60,
    n_raters: int = 2,
    n_repeats: int = 2,
    *,
    n_queries: int = 12,
    var_query: float = 0.3,
    var_response: float = 0.7,
    var_response_rater: float = 0.15,
    var_residual: float = 0.25,
    offsets: Sequence[float] | None = None,
    metric: str = "behavior",
    seed: int | None = 0,
) -> pd.DataFrame:
    """A tidy scores table from a judge panel with known variance components and offsets.

    ``value = 3 + query + response + offset[judge] + response:judge + error``, responses spread
    evenly over ``n_queries`` queries (so the universe-score variance is ``var_query +
    var_response``), ``n_repeats`` independent errors per response x judge. Judges are named
    ``judge-0``, ``judge-1``, ...; ``offsets`` default to 0 for every judge. The columns are
    the scores table's (model, method, strength, query_id, prompt_set, prompt_id, sample,
    metric, rater, repeat, value, reason, key), one method ``"control"``.

    Examples
    --------
    >>> from steerstats.stats import simulate_panel
    >>> simulate_panel(n_responses=4, n_raters=2, n_repeats=2, seed=0).shape
    (16, 13)
    """
    if n_responses < 1 or n_raters < 1 or n_repeats < 1 or n_queries < 1:
        raise ValueError("n_responses, n_raters, n_repeats and n_queries must be >= 1")
    offs = np.zeros(n_raters) if offsets is None else np.asarray(offsets, dtype=float)
    if offs.shape != (n_raters,):
        raise ValueError(f"offsets needs one value per judge ({n_raters}), got {list(offs)}")
    for name, v in (("var_query", var_query), ("var_response", var_response),
                    ("var_response_rater", var_response_rater), ("var_residual", var_residual)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    rng = np.random.default_rng(seed)
    query = np.arange(n_responses) % n_queries
    u_q = rng.normal(0, np.sqrt(var_query), n_queries)
    u_p = rng.normal(0, np.sqrt(var_response), n_responses)
    u_pr = rng.normal(0, np.sqrt(var_response_rater), (n_responses, n_raters))
    e = rng.normal(0, np.sqrt(var_residual), (n_responses, n_raters, n_repeats))
    grid = np.meshgrid(np.arange(n_responses), np.arange(n_raters), np.arange(n_repeats),
                       indexing="ij")
    p, r, k = (g.ravel() for g in grid)
    value = 3.0 + u_q[query[p]] + u_p[p] + offs[r] + u_pr[p, r] + e[p, r, k]
    return pd.DataFrame({
        "model": "sim", "method": "control", "strength": np.nan,
        "query_id": [f"q{query[i]:02d}" for i in p], "prompt_set": "open",
        "prompt_id": [f"p{i:04d}" for i in p], "sample": 0, "metric": metric,
        "rater": [f"judge-{j}" for j in r], "repeat": k, "value": value, "reason": np.nan,
        "key": [f"g{i:04d}" for i in p],
    })
