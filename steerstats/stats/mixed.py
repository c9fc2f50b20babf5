"""Crossed linear mixed model for a (model x method) design over shared queries and prompts.

``value ~ method * model`` with crossed random intercepts chosen from the design (query, prompt,
query x method within each model, and shared generations), fitted by REML on response-level
means, with Satterthwaite degrees of freedom computed exactly as lmerTest does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse, stats
from threadpoolctl import threadpool_limits

from steerstats.errors import PrerequisiteError
from steerstats.stats._data import (
    check_confidence,
    require_columns,
    require_metric,
    response_level,
)
from steerstats.stats._mixed_design import (
    _Design,
    build_design,
    formula_term,
    r_term,
    random_terms,
    term_codes,
    term_column,
)
from steerstats.stats.contrasts import holm_by_family

__all__ = ["ConvergenceError", "MixedModelResult", "mixed_model"]

Engine = Literal["numpy", "statsmodels", "lme4"]
DdfMethod = Literal["satterthwaite", "query"]

class ConvergenceError(RuntimeError):
    """The optimiser did not converge; no estimates are returned from a failed fit."""


# --------------------------------------------------------------------------------------------
# REML by penalised least squares on cross-products (lme4's formulation, Bates et al. 2015)


# Levels of the eliminated factor above which its cross-products are kept sparse.
_SPARSE_FROM = 2000


class _Reml:
    """REML criterion of the crossed model as a function of relative SDs ``theta``.

    lme4's formulation: with ``Lambda = diag(theta)`` expanded over levels and
    ``A = Lambda Z'Z Lambda + I``, the penalised RSS and
    ``RX'RX = X'X - X'Z Lambda A^-1 Lambda Z'X``
    follow from quadratic forms in ``A^-1``. Only cross-products of X, Z and y are used, and the
    factor with most levels is eliminated first: its block of ``Z'Z`` is diagonal (each row has
    one level of it), so only the Schur complement of the other factors is factorised. A fit
    costs O(q_rest^3) per evaluation whatever the number of rows.
    """

    def __init__(self, design: _Design) -> None:
        self.d = design
        starts = np.cumsum([0, *design.sizes])
        big = int(np.argmax(design.sizes))
        self.big = np.arange(starts[big], starts[big + 1])
        self.rest = np.setdiff1d(np.arange(starts[-1]), self.big)
        ztz = design.ZtZ
        self.diag_bb = ztz.diagonal()[self.big]
        rows_b = ztz[self.big]
        # Each level of the eliminated factor meets a few levels of the others. A generation
        # term makes that factor as long as the data, where a dense block cost minutes per fit;
        # at a few hundred levels dense products are faster.
        block = rows_b[:, self.rest]
        self.ztz_br = sparse.csr_matrix(block) if len(self.big) > _SPARSE_FROM else block.toarray()
        self.ztz_rr = ztz[self.rest][:, self.rest].toarray()
        ztw = np.column_stack([design.ZtX, design.Zty])
        self.ztw_b, self.ztw_r = ztw[self.big], ztw[self.rest]

    def _solve(self, theta: np.ndarray) -> tuple[float, float, float, np.ndarray, np.ndarray]:
        d = self.d
        lam = np.repeat(np.asarray(theta, dtype=float), d.sizes)
        lam_b, lam_r = lam[self.big], lam[self.rest]
        D = lam_b**2 * self.diag_bb + 1.0
        # B = Lambda_b Z_b'Z_r Lambda_r, kept implicit: B' D^-1 B and B' D^-1 W_b.
        Zbr, ZbrT = self.ztz_br, self.ztz_br.T
        w = (lam_b**2 / D)[:, None]
        BtDB = ZbrT @ (Zbr.multiply(w) if sparse.issparse(Zbr) else Zbr * w)
        S = lam_r[:, None] * self.ztz_rr * lam_r[None, :]
        S[np.diag_indices_from(S)] += 1.0
        S -= lam_r[:, None] * (BtDB.toarray() if sparse.issparse(BtDB) else BtDB) * lam_r[None, :]
        Ls = linalg.cholesky(S, lower=True, check_finite=False)
        W_b = lam_b[:, None] * self.ztw_b
        W_r = lam_r[:, None] * self.ztw_r
        BtW = lam_r[:, None] * (ZbrT @ (lam_b[:, None] * W_b / D[:, None]))
        T = linalg.solve_triangular(Ls, W_r - BtW, lower=True, check_finite=False)
        G = W_b.T @ (W_b / D[:, None]) + T.T @ T  # [Lambda Z'X, Lambda Z'y]' A^-1 [...]
        p = d.p
        RX = linalg.cholesky(d.XtX - G[:p, :p], lower=True, check_finite=False)
        c2 = linalg.solve_triangular(RX, d.Xty - G[:p, p], lower=True, check_finite=False)
        pwrss = d.yty - G[p, p] - c2 @ c2
        beta = linalg.solve_triangular(RX.T, c2, lower=False, check_finite=False)
        ldL2 = float(np.sum(np.log(D))) + 2.0 * float(np.sum(np.log(np.diag(Ls))))
        ldRX2 = 2.0 * float(np.sum(np.log(np.diag(RX))))
        return ldL2, ldRX2, float(pwrss), beta, RX

    def profiled(self, theta: np.ndarray) -> float:
        """REML deviance profiled over beta and sigma (what the optimiser minimises); infinite
        where the factorisation fails (large theta on tiny designs), so the search turns back."""
        try:
            ldL2, ldRX2, pwrss, _, _ = self._solve(theta)
        except np.linalg.LinAlgError:
            return np.inf
        dof = self.d.n - self.d.p
        if not pwrss > 0:
            return np.inf
        return ldL2 + ldRX2 + dof * (1.0 + np.log(2.0 * np.pi * pwrss / dof))

    def deviance_vp(self, varpar: np.ndarray) -> float:
        """REML deviance at ``(theta..., sigma)`` (lmerTest's ``devfun_vp``)."""
        ldL2, ldRX2, pwrss, _, _ = self._solve(varpar[:-1])
        sigma2 = varpar[-1] ** 2
        return ldL2 + ldRX2 + pwrss / sigma2 + (self.d.n - self.d.p) * np.log(2 * np.pi * sigma2)

    def covbeta(self, varpar: np.ndarray) -> np.ndarray:
        """``sigma^2 (RX'RX)^-1`` at ``(theta..., sigma)`` (lmerTest's ``get_covbeta``)."""
        *_, RX = self._solve(varpar[:-1])
        RXi = linalg.solve_triangular(RX, np.eye(self.d.p), lower=True, check_finite=False)
        return varpar[-1] ** 2 * (RXi.T @ RXi)

    def estimates(self, theta: np.ndarray) -> tuple[np.ndarray, float]:
        """beta and sigma at ``theta`` (REML: sigma^2 = penalised RSS / (n - p))."""
        _, _, pwrss, beta, _ = self._solve(theta)
        return beta, float(np.sqrt(pwrss / (self.d.n - self.d.p)))


def _hessian(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """Central-difference Hessian with one Richardson step (enough for a smooth deviance)."""

    def once(h: np.ndarray) -> np.ndarray:
        k = len(x)
        H = np.empty((k, k))
        f0 = f(x)
        for i in range(k):
            ei = np.zeros(k)
            ei[i] = h[i]
            H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / h[i] ** 2
            for j in range(i):
                ej = np.zeros(k)
                ej[j] = h[j]
                H[i, j] = H[j, i] = (
                    f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)
                ) / (4 * h[i] * h[j])
        return H

    h = 1e-3 * np.maximum(np.abs(x), 0.1)
    return (4 * once(h / 2) - once(h)) / 3


def _jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """Jacobian of a matrix-valued ``f`` by Richardson-extrapolated central differences."""
    h0 = 1e-3 * np.maximum(np.abs(x), 0.1)
    out = []
    for i in range(len(x)):

        def diff(h: float, i: int = i) -> np.ndarray:
            e = np.zeros(len(x))
            e[i] = h
            return (f(x + e) - f(x - e)) / (2 * h)

        out.append((4 * diff(h0[i] / 2) - diff(h0[i])) / 3)
    return np.stack(out)


@dataclass
class _Fit:
    beta: np.ndarray
    vcov: np.ndarray
    theta: np.ndarray
    sigma: float
    vcov_varpar: np.ndarray
    jac: np.ndarray  # (len(varpar), p, p)
    reml_criterion: float
    messages: list[str] = field(default_factory=list)


def _satterthwaite_parts(
    reml: _Reml, theta: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """lmerTest's ``vcov_varpar`` (2 H^-1 over positive eigenvalues) and ``Jac_list``."""
    varpar = np.append(theta, sigma)
    H = _hessian(reml.deviance_vp, varpar)
    vals, vecs = np.linalg.eigh((H + H.T) / 2)
    pos = vals > 1e-8
    h_inv = (vecs[:, pos] / vals[pos]) @ vecs[:, pos].T
    return 2.0 * h_inv, _jacobian(reml.covbeta, varpar)


# Nelder-Mead's stop on the REML deviance's spread over the simplex. An absolute 1e-10 sits at
# float resolution on deviances of ~5e4 (24k responses), so the simplex ran to its evaluation
# limit; lme4's Nelder_Mead stops at FtolAbs = 1e-5.
_FATOL = 1e-7


def _fit_numpy(design: _Design, maxiter: int, satterthwaite: bool = True) -> _Fit:
    reml = _Reml(design)
    k = len(design.sizes)
    theta, best = np.ones(k), np.inf
    # A quasi-Newton pass (finite-difference gradients) brings theta near the optimum in a few
    # dozen evaluations; bounded Nelder-Mead (derivative-free, as lme4's default optimiser is)
    # then polishes from a small simplex around it, restarted from its own answer until a
    # restart no longer improves: a simplex can collapse early.
    with np.errstate(all="ignore"):
        pre = optimize.minimize(reml.profiled, x0=theta, method="L-BFGS-B",
                                bounds=[(0.0, None)] * k, options={"maxiter": maxiter})
    if np.isfinite(pre.fun):
        theta = pre.x
    for _ in range(5):
        step = np.maximum(0.05 * theta, 1e-3)
        res = optimize.minimize(
            reml.profiled,
            x0=theta,
            method="Nelder-Mead",
            bounds=[(0.0, None)] * k,
            options={"xatol": 1e-8, "fatol": _FATOL, "maxiter": maxiter, "maxfev": 4 * maxiter,
                     "initial_simplex": np.vstack([theta, theta + np.diag(step)])},
        )
        if not res.success or not np.isfinite(res.fun):
            raise ConvergenceError(
                f"REML optimisation did not converge in {maxiter} iterations: {res.message} "
                "No estimates were returned; raise maxiter=..., or check the design (each "
                "query, prompt and method needs several observations; a residual of about zero, "
                "as when one reply shared by several queries gets the same deterministic score "
                "for each, leaves the model unidentified - lme4 warns the same)."
            )
        improved = best - res.fun
        theta, best = res.x, min(best, res.fun)
        if improved < 1e-8:
            break
    else:
        raise ConvergenceError(
            "REML optimisation kept improving after 5 restarts; no estimates were returned."
        )
    theta = np.where(theta < 1e-6, 0.0, theta)
    beta, sigma = reml.estimates(theta)
    vcov = reml.covbeta(np.append(theta, sigma))
    if not satterthwaite:  # variance components only (reliability's ICCs)
        empty = np.zeros((0, 0))
        return _Fit(beta, vcov, theta, sigma, empty, empty, reml.profiled(theta))
    vcov_varpar, jac = _satterthwaite_parts(reml, theta, sigma)
    return _Fit(beta, vcov, theta, sigma, vcov_varpar, jac, reml.profiled(theta))


def _fit_statsmodels(design: _Design, maxiter: int) -> _Fit:
    from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    # Crossed effects in statsmodels: one all-encompassing group, each factor a variance component.
    mats, names, colnames, start = [], [], [], 0
    dense = design.Z.toarray()
    for name, size in zip(design.groups, design.sizes, strict=True):
        mats.append([dense[:, start : start + size]])
        names.append(name)
        colnames.append([[f"{name}{i}" for i in range(size)]])
        start += size
    model = MixedLM(
        design.y,
        design.X,
        groups=np.zeros(design.n),
        exog_re=np.zeros((design.n, 0)),
        exog_vc=VCSpec(names, colnames, mats),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        result = model.fit(reml=True, method=["lbfgs"], maxiter=maxiter)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    failed = [m for m in messages if "boundary" not in m.lower()]
    if not result.converged or any("failed" in m.lower() for m in failed):
        raise ConvergenceError(
            "statsmodels MixedLM did not converge: "
            + ("; ".join(failed) or "converged=False")
            + ". No estimates were returned; raise maxiter=... or use engine='numpy'."
        )
    sigma = float(np.sqrt(result.scale))
    theta = np.sqrt(np.maximum(np.asarray(result.vcomp, dtype=float), 0.0)) / sigma
    reml = _Reml(design)
    vcov_varpar, jac = _satterthwaite_parts(reml, theta, sigma)
    beta = np.asarray(result.fe_params, dtype=float)
    vcov = reml.covbeta(np.append(theta, sigma))
    return _Fit(beta, vcov, theta, sigma, vcov_varpar, jac, -2.0 * float(result.llf), messages)


_LME4_SCRIPT = r"""
for (pkg in c("lme4", "lmerTest", "jsonlite")) {
  if (!requireNamespace(pkg, quietly = TRUE)) {
    cat(sprintf("missing R package: %s\n", pkg), file = stderr())
    quit(status = 3)
  }
}
suppressPackageStartupMessages({library(lme4); library(lmerTest)})
args <- commandArgs(trailingOnly = TRUE)
spec <- jsonlite::fromJSON(args[2])
d <- read.csv(args[1], colClasses = "character")
d$value <- as.numeric(d$value)
d$method <- factor(d$method, levels = spec$method_levels)
d$model <- factor(d$model, levels = spec$model_levels)
rhs <- paste(spec$r_terms, collapse = " + ")
fixed <- if (length(spec$model_levels) > 1) "value ~ method * model" else "value ~ method"
ctrl <- lmerControl(optCtrl = list(maxfun = spec$maxiter))
m <- lmerTest::lmer(as.formula(paste(fixed, "+", rhs)), data = d, REML = TRUE, control = ctrl)
conv <- m@optinfo$conv
out <- list(
  terms = names(fixef(m)), beta = unname(fixef(m)), vcov = unname(as.matrix(vcov(m))),
  theta_names = names(getME(m, "theta")), theta = unname(getME(m, "theta")),
  sigma = sigma(m), vcov_varpar = m@vcov_varpar,
  jac = lapply(m@Jac_list, function(x) unname(x)), reml = unname(REMLcrit(m)),
  opt_code = if (is.null(conv$opt)) 0 else conv$opt,
  messages = c(as.character(unlist(conv$lme4$messages)), as.character(unlist(m@optinfo$warnings)))
)
writeLines(jsonlite::toJSON(out, digits = NA, auto_unbox = FALSE), args[3])
"""


def _fit_lme4(design: _Design, data: pd.DataFrame, maxiter: int) -> _Fit:
    rscript = shutil.which("Rscript")
    fix = (
        "Install R with lme4, lmerTest and jsonlite (Debian: apt-get install r-base-core "
        "r-cran-lme4 r-cran-lmertest r-cran-jsonlite), or use engine='numpy'."
    )
    if rscript is None:
        raise PrerequisiteError(f"engine='lme4' needs Rscript on PATH, which was not found. {fix}")
    with tempfile.TemporaryDirectory(prefix="steerstats-lme4-") as tmp:
        csv, spec, out, script = (
            os.path.join(tmp, f) for f in ("d.csv", "s.json", "o.json", "f.R"))
        columns = list(dict.fromkeys(term_column(g) for g in design.groups))
        data[["method", "model", "value", *columns]].to_csv(csv, index=False)
        with open(spec, "w") as fh:
            json.dump({"method_levels": design.method_levels, "model_levels": design.model_levels,
                       "maxiter": maxiter, "r_terms": [r_term(g) for g in design.groups]}, fh)
        with open(script, "w") as fh:
            fh.write(_LME4_SCRIPT)
        proc = subprocess.run([rscript, "--vanilla", script, csv, spec, out],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 3:
            raise PrerequisiteError(f"engine='lme4': {proc.stderr.strip()}. {fix}")
        if proc.returncode != 0:
            raise RuntimeError(f"Rscript failed (exit {proc.returncode}): {proc.stderr.strip()}")
        with open(out) as fh:
            res = json.load(fh)
    messages = [str(m) for m in res["messages"]]
    failed = [m for m in messages if "singular" not in m.lower()]
    if res["opt_code"][0] != 0 or failed:
        raise ConvergenceError(
            "lme4 did not converge: " + ("; ".join(failed) or f"optimiser code {res['opt_code']}")
            + ". No estimates were returned."
        )
    if len(res["beta"]) != design.p:
        raise RuntimeError(f"lme4 returned {len(res['beta'])} fixed effects, expected {design.p}")
    # lme4 orders random-effect terms by number of levels; map back to the design's order.
    r_names = [n.split(".")[0] for n in res["theta_names"]]
    order = [r_names.index(term_column(g)) for g in design.groups]
    vp_order = order + [len(order)]
    vcov_varpar = np.asarray(res["vcov_varpar"], dtype=float).reshape(len(vp_order), -1)
    jac = np.asarray(res["jac"], dtype=float)
    return _Fit(
        beta=np.asarray(res["beta"], dtype=float),
        vcov=np.asarray(res["vcov"], dtype=float),
        theta=np.asarray(res["theta"], dtype=float)[order],
        sigma=float(res["sigma"][0]),
        vcov_varpar=vcov_varpar[np.ix_(vp_order, vp_order)],
        jac=jac[vp_order],
        reml_criterion=float(res["reml"][0]),
        messages=messages,
    )


# --------------------------------------------------------------------------------------------
# Result


@dataclass
class MixedModelResult:
    """A fitted crossed mixed model: tables of fixed effects, variance components and EMMs.

    Attributes
    ----------
    metric : str
        The metric analysed.
    engine : str
        ``"numpy"``, ``"statsmodels"`` or ``"lme4"``.
    ddf : str
        How degrees of freedom were computed: ``"satterthwaite"`` or ``"query"``.
    fixed : pandas.DataFrame
        One row per fixed-effect coefficient (treatment coding, R's column order):
        ``term, estimate, se, df, t, p, ci_low, ci_high``.
    variance_components : pandas.DataFrame
        ``group`` (query, prompt, query:method, residual), ``variance``, ``sd``, ``n_levels``
        (NaN for residual).
    emm : pandas.DataFrame
        Estimated marginal (cell) means, one row per model x method: ``model, method, estimate,
        se, df, ci_low, ci_high, n`` (responses in the cell).
    n_obs : int
        Response-level rows used in the fit.
    n_missing : int
        Responses left out because every rating of them was missing (NaN).
    singular : bool
        True when a variance component is estimated as exactly zero (a boundary fit).
    structure : str
        The model formula fitted, e.g. ``value ~ method + (1 | query) + (1 | prompt) +
        (1 | query:method)``.
    reml_criterion : float
        REML deviance at the optimum (comparable with lme4's ``REMLcrit``).
    """

    metric: str
    engine: str
    ddf: str
    confidence: float
    fixed: pd.DataFrame
    variance_components: pd.DataFrame
    emm: pd.DataFrame
    n_obs: int
    n_missing: int
    singular: bool
    reml_criterion: float
    structure: str
    _design: _Design = field(repr=False)
    _fit: _Fit = field(repr=False)
    _names: dict[str, str | None] = field(repr=False, default_factory=dict)

    def _df(self, L: np.ndarray) -> np.ndarray:
        """Denominator df for each row of ``L`` (Satterthwaite, or queries - 1)."""
        if self.ddf == "query":
            return np.full(len(L), float(self._design.n_queries - 1))
        fit = self._fit
        var = np.einsum("ij,jk,ik->i", L, fit.vcov, L)
        grad = np.einsum("ij,vjk,ik->iv", L, fit.jac, L)
        denom = np.einsum("iv,vw,iw->i", grad, fit.vcov_varpar, grad)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, 2.0 * var**2 / denom, np.inf)

    def _estimates(self, L: np.ndarray) -> pd.DataFrame:
        fit = self._fit
        est = L @ fit.beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", L, fit.vcov, L))
        df = self._df(L)
        tcrit = stats.t.ppf(0.5 + self.confidence / 2, df)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = est / se
        return pd.DataFrame(
            {
                "estimate": est,
                "se": se,
                "df": df,
                "t": t,
                "p": 2.0 * stats.t.sf(np.abs(t), df),
                "ci_low": est - tcrit * se,
                "ci_high": est + tcrit * se,
            }
        )

    def contrasts(
        self,
        baseline: str | Sequence[str] | None = None,
        *,
        factor: Literal["method", "model"] = "method",
    ) -> pd.DataFrame:
        """Differences between levels of ``factor`` within each level of the other factor.

        Parameters
        ----------
        baseline : str or sequence of str, optional
            Compare every level with this one (e.g. ``"control"``), or with each of several
            (``["control", "prompt"]``: a pair is tested once, so against ``"prompt"`` the
            earlier baseline is not compared again). ``None`` (default): all pairs of levels.
        factor : {"method", "model"}
            Which factor's levels are compared; the other one is held fixed.

        Returns
        -------
        pandas.DataFrame
            One row per contrast: the held-fixed factor's column (``model`` or ``method``, under
            the caller's column name), the compared level (column named after ``factor``),
            ``baseline`` (the level subtracted), ``estimate`` (level minus baseline), ``se``,
            ``df``, ``t``, ``p`` (two-sided t-test with ``df``), ``p_holm`` (Holm-adjusted within
            the family: one level of the held-fixed factor x baseline, as
            :func:`steerstats.stats.paired_contrasts` does per model x metric x baseline),
            ``ci_low``, ``ci_high`` (unadjusted, at the fit's ``confidence``).
        """
        if factor not in ("method", "model"):
            raise ValueError(f"factor must be 'method' or 'model', got {factor!r}")
        d = self._design
        levels = d.method_levels if factor == "method" else d.model_levels
        fixed_levels = d.model_levels if factor == "method" else d.method_levels
        other = "model" if factor == "method" else "method"
        bases = [baseline] if isinstance(baseline, str) else (
            None if baseline is None else list(baseline))
        for b in bases or []:
            if b not in levels:
                raise ValueError(f"baseline {b!r} is not a {factor}; choose one of {levels}")
        if len(levels) < 2:
            raise ValueError(f"only one {factor} ({levels[0]!r}) was fitted: nothing to contrast")
        pairs = (
            [(a, b) for k, b in enumerate(bases) for a in levels
             if a != b and a not in bases[:k]]
            if bases is not None
            else [(a, b) for i, b in enumerate(levels) for a in levels[i + 1 :]]
        )
        rows, vecs = [], []
        for g in fixed_levels:
            for a, b in pairs:
                cell = (lambda lv, g=g: d.cell_vector(g, lv)) if factor == "method" else (
                    lambda lv, g=g: d.cell_vector(lv, g))
                vecs.append(cell(a) - cell(b))
                rows.append({other: g, factor: a, "baseline": b})
        out = pd.concat([pd.DataFrame(rows), self._estimates(np.array(vecs))], axis=1)
        family = [other] + (["baseline"] if bases is not None else [])
        out.insert(out.columns.get_loc("p") + 1, "p_holm", holm_by_family(out, family))
        names = {k: v for k, v in self._names.items() if k in out.columns}
        if names.get("model", "model") is None:
            out = out.drop(columns="model")
        return out.rename(columns={k: v for k, v in names.items() if v is not None})


# --------------------------------------------------------------------------------------------
# Public entry point


def mixed_model(
    scores: pd.DataFrame,
    name: str,
    *,
    engine: Engine = "numpy",
    ddf: DdfMethod = "satterthwaite",
    random: str | Sequence[str] = "auto",
    heteroscedastic: bool = False,
    reference: str | None = None,
    confidence: float = 0.95,
    maxiter: int = 1000,
    value: str = "value",
    model: str | None = "model",
    method: str = "method",
    strength: str | None = "strength",
    metric: str = "metric",
    clusters: Sequence[str] = ("query_id", "prompt_id"),
    sample: str | None = "sample",
    generation: str | None = "key",
) -> MixedModelResult:
    """Fit ``value ~ method * model`` with crossed random intercepts chosen from the design.

    Every model x method is run on the same queries and prompts, so observations share query
    and prompt effects; query x method terms let each method work better on some queries
    than others (separately on each model), and a generation term counts a reply reused across
    queries once. Intervals and tests therefore generalise to new queries and prompts like
    these, with degrees of freedom that respect how few queries there are.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table (one row per rating), see ``steerstats.schema.SCORE_COLUMNS``.
    name : str
        The metric to model (rows where ``scores[metric] == name``).
    engine : {"numpy", "statsmodels", "lme4"}
        ``"numpy"`` (default): REML by lme4's penalised-least-squares formulation on
        cross-product matrices, fast at any size. ``"statsmodels"``: ``MixedLM`` with one
        all-encompassing group and a variance component per factor (exact, but slow beyond a
        few thousand rows). ``"lme4"``: the same model through ``Rscript`` with lme4 and
        lmerTest (needs R on PATH).
    ddf : {"satterthwaite", "query"}
        Denominator degrees of freedom for t-based tests and intervals: Satterthwaite's
        approximation exactly as lmerTest computes it (default), or ``n_queries - 1`` for
        every estimate (a conservative query-level choice).
    reference : str, optional
        Reference method for the treatment coding of ``fixed`` (default ``"control"`` if
        present, else the first method in sorted order). EMMs and contrasts do not depend on it.
    confidence : float
        Confidence level of the intervals (default 0.95).
    maxiter : int
        Optimiser iteration limit; hitting it raises ``ConvergenceError``.
    random : "auto" or sequence of str
        Random-intercept terms. ``"auto"`` (default) chooses them from the design:
        ``query``, ``prompt``, then ``query:method`` with one model or ``query:model`` and
        ``query:model:method`` with several (a method's query-specific advantage may differ by
        model), plus ``generation`` when one generation is scored for several queries (a
        control reply reused across queries). Or name the terms, from ``query``, ``prompt``,
        ``query:method``, ``query:model``, ``query:model:method``, ``generation``.
    heteroscedastic : bool
        Give each method its own query x method variance (default False: one variance pooled
        over methods): the ``query:method`` or ``query:model:method`` term is split into one
        term per method, ``query:method[steer]`` etc., lme4's
        ``(0 + dummy(method, "steer") | query:method)``. A method whose effect varies much
        from query to query then gets a wider interval than a stable one; each variance rests
        on the queries (x models) alone, so use it with enough queries (say 10 or more).
    value, method, metric : str
        Columns of the ratings, the method, and the metric names.
    model, strength, sample, generation : str or None
        Columns; ``None`` means the role is absent (``model=None``: one model).
        ``generation`` (default ``"key"``, used only when the column exists) identifies one
        reply, so replies reused across queries are recognised.
    clusters : sequence of two str
        The query and prompt columns, in that order.

    Returns
    -------
    MixedModelResult
        With ``fixed`` (term, estimate, se, df, t, p, ci_low, ci_high), ``variance_components``
        (group, variance, sd, n_levels, at_boundary), ``emm`` (model, method, estimate, se,
        df, ci_low, ci_high, n; under the caller's column names), ``structure`` (the formula
        fitted), ``singular`` and ``contrasts(baseline=None, factor="method")``.

    Raises
    ------
    ValueError
        A column is missing, the metric is absent, a method has several strengths, a factor
        has fewer than two levels, or a model x method cell has no non-missing value.
    ConvergenceError
        The optimiser failed; estimates from a failed fit are never returned.
    steerstats.errors.PrerequisiteError
        ``engine="lme4"`` without Rscript, lme4, lmerTest or jsonlite.

    Notes
    -----
    Judge repeats (and raters) are averaged per response first: a response is one
    (model, method, strength, query, prompt, sample); a response whose ratings are all
    missing is left out and counted in ``n_missing``. On a balanced design with the same
    number of repeats per response this gives the same fixed effects as modelling the
    repeats, with far fewer rows.

    **Random effects from the design** (``random="auto"``). With one model the model is
    ``value ~ method + (1 | query) + (1 | prompt) + (1 | query:method)``. With several models
    each model has its own query effects and query x method effects,
    ``value ~ method * model + (1 | query) + (1 | prompt) + (1 | query:model)
    + (1 | query:model:method)``: a single ``query:method`` term would assume a method's
    query-specific advantage is the same on every model, which understates the SE of a
    within-model contrast when the models differ (an audit found coverage 0.855 for nominal
    0.95). When the ``generation`` column shows one reply scored for several queries (a
    control reply reused across queries, as the collector does), ``(1 | generation)`` is
    added so that reply's own noise counts once, not once per query. ``structure`` says which
    formula was fitted; ``singular`` flags a boundary fit (a variance estimated at exactly 0,
    ``at_boundary`` in ``variance_components``), where that term's df and SEs rest on the
    boundary and a simpler structure fits as well. Each structure is checked against lme4
    (``tests/reference/mixed_design_lme4.R``).

    **Method-specific variances** (``heteroscedastic=True``). The pooled query x method
    variance gives every method's EMM and contrast the same query-dependent spread; when one
    method's effect varies far more across queries than another's (steering often does), the
    variable method's intervals are too narrow and the stable one's too wide. The option fits
    one variance per method instead, ``(0 + dummy(method, "steer") | query:method)`` for each
    method (``query:model:method`` with several models), checked against lme4
    (``tests/reference/mixed_hetero_lme4.R``). Each variance rests on the queries alone: with
    6 queries and control replies reused across queries it makes the control means
    under-cover (0.59-0.79 in ``benchmarks/coverage.py``'s ``seed_like_G6``).

    **Measured coverage** (``benchmarks/coverage.py --mixed``; nominal 95%, Monte-Carlo SE in
    ``benchmarks/results/coverage.json``). Where the model matches the design (one or two
    models, 10% missing, prompt noise dominant) EMMs cover 0.934-0.972 and within-model
    contrasts 0.938-0.965 with widths 0.94-1.06 x the query-level t (200 data sets each). It
    under-covers where the design departs from it: with a high-variance method the pooled
    variance leaves that method's mean at 0.895 (0.95 with ``heteroscedastic=True``); with
    control replies reused across queries means cover 0.875 (MC SE 0.026; the non-shared
    arms' 0.84-0.87) and contrasts 0.94; on seed-like designs the high-variance arms' means cover
    0.78-0.89 (control means 1.0). ``summarize`` and ``paired_contrasts`` cover 0.93-0.97 on all:
    report them, and use the mixed model for variance components and as a cross-check.

    The ``"numpy"`` engine minimises lme4's profiled
    REML criterion over the relative standard deviations ``theta`` (bounded Nelder-Mead,
    restarted until it stops improving), using only ``X'X``, ``Z'X``, ``Z'Z``, ``X'y``, ``Z'y``
    and ``y'y``, and eliminating the factor with most levels (usually prompts) first, since its
    block of ``Z'Z`` is diagonal; its cost grows with the number of random-effect levels, not
    rows, and it is exact for unbalanced data too. 23,940 response-level rows (14 queries x
    171 prompts x 5 methods x 2 models) take 0.7-1.6 s (by machine load) and 240 MB
    (``benchmarks/stats_speed_mixed.py``); statsmodels' one-group ``MixedLM`` needs minutes
    there, because it works with the dense n x q random-effects matrix.

    Degrees of freedom: with 10-20 queries, normal (z) intervals are too narrow, so tests
    use t distributions. ``ddf="satterthwaite"`` (default) follows lmerTest (Kuznetsova et
    al. 2017): the Hessian of the REML deviance in ``(theta, sigma)`` gives their asymptotic
    covariance, and the Jacobian of ``cov(beta)`` gives the gradient of each contrast's
    variance. A method contrast then gets about (queries - 1) x (methods - 1) df, since the
    query:method variance is pooled over methods (``ddf="query"`` is the cautious choice when
    methods differ much in how query-dependent they are), and a paired two-method contrast on a
    balanced design is exactly the t-test on query-level differences with ``n_queries - 1`` df.
    ``ddf="query"`` uses ``n_queries - 1`` for everything, a conservative choice when the
    pooling assumption is doubtful. The ``"numpy"`` and ``"statsmodels"`` engines compute the
    Satterthwaite ingredients with the same code; ``"lme4"`` takes them from lmerTest. Checked
    against R lme4 1.1-31 / lmerTest 3.1-3 (``tests/reference/mixed_lme4.R``) and statsmodels
    ``MixedLM``.

    References
    ----------
    Bates, Maechler, Bolker & Walker (2015). Fitting linear mixed-effects models using lme4.
    Journal of Statistical Software 67(1). Kuznetsova, Brockhoff & Christensen (2017).
    lmerTest package: tests in linear mixed effects models. JSS 82(13).

    Examples
    --------
    >>> from steerstats.stats import mixed_model, simulate_crossed
    >>> scores = simulate_crossed({"control": 3.0, "prompt": 3.3, "steer": 3.8}, n_queries=8,
    ...                           n_topic=2, n_common=6, n_repeats=2, seed=1)
    >>> fit = mixed_model(scores, "behavior")
    >>> fit.variance_components.round(2)
              group  variance    sd  n_levels  at_boundary
    0         query      0.05  0.23       8.0        False
    1        prompt      0.22  0.47      22.0        False
    2  query:method      0.13  0.36      24.0        False
    3      residual      0.70  0.83       NaN        False
    >>> fit.emm[["method", "estimate", "ci_low", "ci_high"]].round(2)
        method  estimate  ci_low  ci_high
    0  control      2.95    2.51     3.39
    1   prompt      3.09    2.65     3.54
    2    steer      3.64    3.20     4.09
    >>> fit.contrasts("control")[["method", "estimate", "df", "p_holm"]].round(3)
       method  estimate    df  p_holm
    0  prompt     0.143  14.0   0.551
    1   steer     0.693  14.0   0.021
    """
    if engine not in ("numpy", "statsmodels", "lme4"):
        raise ValueError(f"engine must be 'numpy', 'statsmodels' or 'lme4', got {engine!r}")
    if ddf not in ("satterthwaite", "query"):
        raise ValueError(f"ddf must be 'satterthwaite' or 'query', got {ddf!r}")
    check_confidence(confidence)
    query, prompt = _query_prompt(clusters)
    if generation is not None and generation not in scores.columns:
        generation = None  # optional role: data without generation keys
    require_columns(
        scores,
        {"value": value, "model": model, "method": method, "clusters": query,
         "sample": sample, "strength": strength, "metric": metric},
    )
    require_columns(scores, {"clusters": prompt})
    require_metric(scores, name, metric)
    rows = scores[scores[metric] == name]
    arm = [c for c in (model, method) if c is not None]
    if strength is not None:
        n_str = rows.groupby(arm)[strength].nunique(dropna=True)
        several = n_str[n_str > 1]
        if not several.empty:
            raise ValueError(
                f"{dict(zip(arm, np.atleast_1d(several.index[0]), strict=True))} has "
                f"{several.iloc[0]} strengths; mixed_model compares methods at one strength "
                f"each: filter {strength!r} to one value per method, or use dose_response() "
                "for a strength sweep"
            )
    keys = [c for c in (model, method, strength, query, prompt, sample, generation)
            if c is not None]
    resp = response_level(rows, keys, value=value)
    n_missing = int((resp["n_ratings"] == 0).sum())
    # Levels come from every response, so a cell whose values are all missing is reported.
    method_levels = sorted(resp[method].astype(str).unique())
    model_levels = sorted(resp[model].astype(str).unique()) if model is not None else ["all"]
    resp = resp[resp["n_ratings"] > 0]
    data = pd.DataFrame(
        {
            "model": resp[model].astype(str).to_numpy() if model is not None else "all",
            "method": resp[method].astype(str).to_numpy(),
            "query": resp[query].astype(str).to_numpy(),
            "prompt": resp[prompt].astype(str).to_numpy(),
            "value": resp[value].to_numpy(dtype=float),
        }
    )
    if generation is not None:
        data["generation"] = resp[generation].astype(str).to_numpy()
    for kw, col, what in ((query, "query", "query"), (prompt, "prompt", "prompt"),
                          (method, "method", "method")):
        levels = data[col].unique()
        if len(levels) < 2:
            raise ValueError(
                f"mixed_model needs at least 2 levels of {what} (column {kw!r}) with non-missing "
                f"values, got {list(levels)}; with a single {what} its variance cannot be "
                "separated from the others: use summarize() or paired_contrasts() instead"
            )
    ref = reference
    if ref is None and "control" in method_levels:
        ref = "control"
    if ref is not None:
        if ref not in method_levels:
            raise ValueError(
                f"reference {ref!r} is not a method in the data; choose one of {method_levels}")
        method_levels.remove(ref)
        method_levels.insert(0, ref)
    groups = random_terms(random, data, len(model_levels), heteroscedastic, method_levels)
    for term in groups:
        data[term_column(term)] = term_codes(data, term)
    counts = data.groupby(["model", "method"]).size()
    full = pd.MultiIndex.from_product([model_levels, method_levels], names=["model", "method"])
    empty = [f"model={a!r}, method={b!r}" for a, b in full if (a, b) not in counts.index]
    if empty:
        raise ValueError(
            "no non-missing values for " + "; ".join(empty) + f" (metric {name!r}); the "
            "model x method cell means cannot be estimated: drop that method or model first"
        )
    design = build_design(data, method_levels, model_levels, groups)
    # The matrices are small (one row/column per random-effect level): BLAS threads only add
    # overhead, many-fold on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        if engine == "numpy":
            fit = _fit_numpy(design, maxiter)
        elif engine == "statsmodels":
            fit = _fit_statsmodels(design, maxiter)
        else:
            fit = _fit_lme4(design, data, maxiter)

    variances = np.append(fit.theta**2 * fit.sigma**2, fit.sigma**2)
    vc = pd.DataFrame(
        {
            "group": [*groups, "residual"],
            "variance": variances,
            "sd": np.sqrt(variances),
            "n_levels": [*map(float, design.sizes), np.nan],
            "at_boundary": [*(fit.theta == 0.0), False],
        }
    )
    fixed_part = "value ~ method * model" if len(model_levels) > 1 else "value ~ method"
    result = MixedModelResult(
        metric=name,
        engine=engine,
        ddf=ddf,
        confidence=confidence,
        fixed=pd.DataFrame(),
        variance_components=vc,
        emm=pd.DataFrame(),
        n_obs=design.n,
        n_missing=n_missing,
        singular=bool(np.any(fit.theta == 0.0)),
        reml_criterion=fit.reml_criterion,
        structure=" + ".join([fixed_part, *map(formula_term, groups)]),
        _design=design,
        _fit=fit,
        _names={"model": model, "method": method},
    )
    result.fixed = pd.concat(
        [pd.DataFrame({"term": design.terms}), result._estimates(np.eye(design.p))], axis=1
    )
    cells = [(a, b) for a in model_levels for b in method_levels]
    emm = result._estimates(np.array([design.cell_vector(a, b) for a, b in cells]))
    emm = emm.drop(columns=["t", "p"])
    emm.insert(0, method, [b for _, b in cells])
    if model is not None:
        emm.insert(0, model, [a for a, _ in cells])
    emm["n"] = [int(counts[(a, b)]) for a, b in cells]
    result.emm = emm
    return result


def _query_prompt(clusters: Sequence[str]) -> tuple[str, str]:
    names = (clusters,) if isinstance(clusters, str) else tuple(clusters)
    if len(names) != 2:
        raise ValueError(
            f"mixed_model needs clusters=(query column, prompt column), got {names!r}")
    return names[0], names[1]
