"""Power and minimum detectable effect of a paired method contrast, by simulation.

The design: two methods (a baseline and a treatment) run on the same ``n_queries`` queries x
``n_prompts`` prompts, ``n_repeats`` responses per cell, analysed by the paired query-level
t-test that the crossed mixed model reduces to for one contrast on a balanced design.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

__all__ = ["mde", "power"]

_COMPONENTS = ("query", "prompt", "query:method", "residual")
_FOLD = {"query:model": "query", "query:model:method": "query:method",
         "generation": "residual"}
_ALIASES = {"query_method": "query:method", "query_id": "query", "prompt_id": "prompt",
            "residuals": "residual", "Residual": "residual"}


def _components(variance_components: pd.DataFrame | Mapping[str, float]) -> dict[str, float]:
    """Validate the variance components; accepts mixed_model's table or a plain mapping."""
    if isinstance(variance_components, pd.DataFrame):
        for col in ("group", "variance"):
            if col not in variance_components.columns:
                raise ValueError(
                    f"variance_components table needs columns 'group' and 'variance' (as "
                    f"mixed_model(...).variance_components has); column {col!r} not found"
                )
        raw = dict(zip(variance_components["group"].astype(str),
                       variance_components["variance"], strict=True))
    elif isinstance(variance_components, Mapping):
        raw = dict(variance_components)
    else:
        raise TypeError("variance_components must be a DataFrame (group, variance) or a dict, "
                        f"got {type(variance_components).__name__}")
    comp: dict[str, Any] = {}
    for k, v in raw.items():
        name = _ALIASES.get(str(k), str(k))
        # Terms of mixed_model's richer structures, folded into the four a paired design of
        # one model needs: within a model, query:model adds to the query effect and
        # query:model:method is the query x method effect; a generation's own noise
        # (a reply reused across queries) behaves as residual noise of a response.
        name = _FOLD.get(name, name)
        comp[name] = (float(comp[name]) + float(v)) if name in comp else v  # type: ignore[arg-type]
    missing = [c for c in _COMPONENTS if c not in comp]
    if missing:
        raise ValueError(f"variance components {missing} missing; need {list(_COMPONENTS)} "
                         f"(got {sorted(map(str, raw))})")
    out = {}
    for c in _COMPONENTS:
        try:
            v = float(comp[c])
        except (TypeError, ValueError):
            raise ValueError(
                f"variance component {c!r} must be a number, got {comp[c]!r}") from None
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"variance component {c!r} must be a finite number >= 0, got {v}")
        out[c] = v
    if out["query:method"] == 0 and out["residual"] == 0:
        raise ValueError("query:method and residual variances are both 0: a paired contrast "
                         "would have no noise at all; check the variance components")
    return out


def _floats(v: float | Sequence[float]) -> list[float]:
    return [float(v)] if isinstance(v, int | float | np.number) else [float(x) for x in v]


def _designs(n_queries: int | Sequence[int], n_prompts: int | Sequence[int],
             n_repeats: int | Sequence[int]) -> list[tuple[int, int, int]]:
    """Every combination of the design sizes, each checked."""
    out = []
    for q, p, r in itertools.product(_floats(n_queries), _floats(n_prompts), _floats(n_repeats)):
        _check_design(q, p, r)
        out.append((int(q), int(p), int(r)))
    return out


def _check_design(n_queries: float, n_prompts: float, n_repeats: float) -> None:
    for name, v in (("n_queries", n_queries), ("n_prompts", n_prompts), ("n_repeats", n_repeats)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    if n_queries < 2:
        raise ValueError(f"n_queries must be at least 2 for a query-level t-test, got {n_queries}")


def _sd_diff(comp: dict[str, float], n_prompts: int, n_repeats: int) -> float:
    """SD of one query's mean difference (treatment - baseline) under the crossed model."""
    return float(np.sqrt(2 * comp["query:method"] + 2 * comp["residual"] / (n_prompts * n_repeats)))


def _simulate_diffs(comp: dict[str, float], n_queries: int, n_prompts: int, n_repeats: int,
                    n_sims: int, rng: np.random.Generator) -> np.ndarray:
    """Per-query mean differences with zero effect, drawn from the crossed model (n_sims x Q).

    Cell means are drawn at their exact distribution: query and prompt effects are shared by
    both methods (prompts crossed with queries), the query:method effect is per cell, and the
    residual mean over ``n_prompts * n_repeats`` responses has variance residual / (P * R).
    """
    q = rng.normal(0.0, np.sqrt(comp["query"]), (n_sims, n_queries, 1))
    p_bar = rng.normal(0.0, np.sqrt(comp["prompt"] / n_prompts), (n_sims, 1, 1))
    qm = rng.normal(0.0, np.sqrt(comp["query:method"]), (n_sims, n_queries, 2))
    e_bar = rng.normal(0.0, np.sqrt(comp["residual"] / (n_prompts * n_repeats)),
                       (n_sims, n_queries, 2))
    cells = q + p_bar + qm + e_bar
    return cells[:, :, 1] - cells[:, :, 0]


def _analytic_power(effect: float, sd: float, n_queries: int, alpha: float) -> float:
    df = n_queries - 1
    ncp = abs(effect) / (sd / np.sqrt(n_queries))
    tcrit = stats.t.ppf(1 - alpha / 2, df)
    # The far (wrong-sign) tail is below alpha / 2 and shrinks with ncp; scipy's nct returns
    # NaN where it underflows.
    wrong_sign = float(stats.nct.cdf(-tcrit, df, ncp))
    return float(stats.nct.sf(tcrit, df, ncp)) + (wrong_sign if np.isfinite(wrong_sign) else 0.0)


def _thresholds(diffs: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Effects above ``hi`` (or below ``lo``) make each simulated study significant.

    With the noise held fixed, a study's t statistic is (effect + mean) / (sd / sqrt(Q)), and
    its sd does not depend on the effect; so each simulation rejects exactly when the effect
    is outside (lo, hi). This gives the whole simulated power curve at once.
    """
    n_queries = diffs.shape[1]
    m = diffs.mean(axis=1)
    se = diffs.std(axis=1, ddof=1) / np.sqrt(n_queries)
    tcrit = stats.t.ppf(1 - alpha / 2, n_queries - 1)
    return -tcrit * se - m, tcrit * se - m


def _wilson(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def power(
    variance_components: pd.DataFrame | Mapping[str, float],
    n_queries: int | Sequence[int],
    n_prompts: int | Sequence[int],
    n_repeats: int | Sequence[int] = 1,
    effect: float | Sequence[float] = 0.3,
    *,
    alpha: float = 0.05,
    n_sims: int = 10_000,
    seed: int | None = 0,
) -> pd.DataFrame:
    """Probability that a design detects a method difference, simulated from variance components.

    Parameters
    ----------
    variance_components : pandas.DataFrame or dict
        ``mixed_model(...).variance_components`` (columns ``group``, ``variance``) or a dict
        with keys ``query``, ``prompt``, ``query:method``, ``residual`` (variances on the
        metric's scale; the residual is per response).
    n_queries, n_prompts, n_repeats : int or list of int
        Queries, prompts per query (shared by both methods) and responses per query x prompt
        x method cell. Lists give one row per combination.
    effect : float or list of float
        True difference between the two methods, on the metric's scale.
    alpha : float
        Two-sided significance level (default 0.05).
    n_sims : int
        Simulated studies per row (default 10,000; Monte-Carlo SE of a power near 0.8 is
        then 0.004).
    seed : int, optional
        Seed (default 0). The same noise draws are reused for every effect of a design.

    Returns
    -------
    pandas.DataFrame
        One row per (n_queries, n_prompts, n_repeats, effect):

        - ``n_queries``, ``n_prompts``, ``n_repeats``, ``effect``
        - ``power``: share of simulated studies whose paired query-level t-test rejects
        - ``mc_se``: its Monte-Carlo standard error, sqrt(power (1 - power) / n_sims)
        - ``ci_low``, ``ci_high``: 95% Wilson interval for the power (Monte-Carlo error)
        - ``power_analytic``: the same from the noncentral t distribution
        - ``sd_diff``: SD of one query's mean difference between the methods
        - ``n_sims``, ``alpha``

    Notes
    -----
    The test is the one steerstats recommends for a method contrast: average each query's
    responses per method, take the treatment - baseline difference per query, and run a
    one-sample t-test with ``n_queries - 1`` df. On a balanced design this is exactly the
    crossed mixed model's Satterthwaite t-test for the contrast (see ``mixed_model``). Each
    simulated study draws query, prompt, query:method and residual effects from the crossed
    model; the paired design cancels query and prompt main effects, so power depends on
    ``2 var(query:method) + 2 var(residual) / (n_prompts * n_repeats)`` and on
    ``n_queries``: more prompts cannot make up for too few queries when the query:method
    variance is large. A mixed model fitted to more than two methods pools the query:method
    variance over methods and tests with more df, so for such an analysis this power is
    slightly conservative. Prompts nested in queries (topic prompts) cancel the same way.

    Examples
    --------
    >>> from steerstats.stats import power
    >>> vc = {"query": 0.25, "prompt": 0.10, "query:method": 0.03, "residual": 0.55}
    >>> power(vc, n_queries=[8, 14], n_prompts=30, effect=0.3)[
    ...     ["n_queries", "power", "mc_se", "power_analytic"]].round(3)
       n_queries  power  mc_se  power_analytic
    0          8  0.645  0.005           0.650
    1         14  0.917  0.003           0.915
    """
    comp = _components(variance_components)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if n_sims < 10:
        raise ValueError(f"n_sims must be at least 10, got {n_sims}")
    rng = np.random.default_rng(seed)
    rows = []
    for nq, npr, nr in _designs(n_queries, n_prompts, n_repeats):
        lo, hi = _thresholds(_simulate_diffs(comp, nq, npr, nr, n_sims, rng), alpha)
        sd = _sd_diff(comp, npr, nr)
        for eff in _floats(effect):
            p = float(np.mean((eff > hi) | (eff < lo)))
            ci = _wilson(p, n_sims)
            rows.append({"n_queries": nq, "n_prompts": npr, "n_repeats": nr, "effect": eff,
                         "power": p, "mc_se": float(np.sqrt(p * (1 - p) / n_sims)),
                         "ci_low": ci[0], "ci_high": ci[1],
                         "power_analytic": _analytic_power(eff, sd, nq, alpha), "sd_diff": sd,
                         "n_sims": n_sims, "alpha": alpha})
    return pd.DataFrame(rows)


def mde(
    variance_components: pd.DataFrame | Mapping[str, float],
    n_queries: int | Sequence[int],
    n_prompts: int | Sequence[int],
    n_repeats: int | Sequence[int] = 1,
    *,
    power: float = 0.8,
    alpha: float = 0.05,
    n_sims: int = 10_000,
    seed: int | None = 0,
) -> pd.DataFrame:
    """Minimum detectable effect: the smallest method difference a design detects with ``power``.

    Parameters
    ----------
    variance_components : pandas.DataFrame or dict
        As for :func:`power`.
    n_queries, n_prompts, n_repeats : int or list of int
        The design(s); lists give one row per combination.
    power : float
        Target power (default 0.8).
    alpha : float
        Two-sided significance level (default 0.05).
    n_sims : int
        Simulated studies per design (default 10,000).
    seed : int, optional
        Seed (default 0).

    Returns
    -------
    pandas.DataFrame
        One row per design:

        - ``n_queries``, ``n_prompts``, ``n_repeats``, ``power`` (the target)
        - ``mde``: smallest positive effect whose simulated power reaches the target
        - ``mc_se``: Monte-Carlo SE of ``mde`` (delta method: the power's Monte-Carlo SE
          divided by the slope of the power curve at ``mde``)
        - ``ci_low``, ``ci_high``: ``mde`` +/- 1.96 ``mc_se``
        - ``mde_analytic``: the same from the noncentral t distribution
        - ``sd_diff``: SD of one query's mean difference between the methods
        - ``n_sims``, ``alpha``

    Notes
    -----
    Every simulated study's noise is drawn once; a study rejects exactly when the effect is
    outside an interval fixed by its noise (see :func:`power`), so the simulated power curve
    is known at every effect and the MDE is found without re-simulating. The test is the paired
    query-level t-test described in :func:`power`.

    Examples
    --------
    >>> from steerstats.stats import mde
    >>> vc = {"query": 0.25, "prompt": 0.10, "query:method": 0.03, "residual": 0.55}
    >>> mde(vc, n_queries=14, n_prompts=[10, 30, 171])[
    ...     ["n_prompts", "mde", "mc_se", "mde_analytic"]].round(3)
       n_prompts    mde  mc_se  mde_analytic
    0         10  0.335  0.002         0.334
    1         30  0.252  0.001         0.252
    2        171  0.210  0.001         0.209
    """
    comp = _components(variance_components)
    if not 0 < power < 1:
        raise ValueError(f"power must be between 0 and 1, got {power}")
    if not 0 < alpha < power:
        raise ValueError(f"alpha must be between 0 and power ({power}), got {alpha}")
    if n_sims < 10:
        raise ValueError(f"n_sims must be at least 10, got {n_sims}")
    rng = np.random.default_rng(seed)
    rows = []
    for nq, npr, nr in _designs(n_queries, n_prompts, n_repeats):
        lo, hi = _thresholds(_simulate_diffs(comp, nq, npr, nr, n_sims, rng), alpha)
        sd = _sd_diff(comp, npr, nr)

        # The simulated power curve is a step function rising at each study's upper threshold:
        # just above hs[i], studies 0..i reject upwards, plus those whose lower threshold is
        # still above the effect.
        hs, ls = np.sort(hi), np.sort(lo)
        curve = (np.arange(1, n_sims + 1) + n_sims - np.searchsorted(ls, hs, side="right")) / n_sims
        ok = np.flatnonzero((hs > 0) & (curve >= power))
        if len(ok) == 0:
            raise ValueError(f"no effect reaches power {power} with n_sims={n_sims}; raise n_sims")
        found = float(hs[ok[0]])
        upper = sd / np.sqrt(nq)
        while _analytic_power(upper, sd, nq, alpha) < power:
            upper *= 2
        analytic = optimize.brentq(
            lambda e, sd=sd, nq=nq: _analytic_power(e, sd, nq, alpha) - power,
            0.0, upper, xtol=1e-12)
        h = 1e-4 * max(found, 1e-6)
        slope = (_analytic_power(found + h, sd, nq, alpha)
                 - _analytic_power(found - h, sd, nq, alpha)) / (2 * h)
        se = float(np.sqrt(power * (1 - power) / n_sims) / slope)
        rows.append({"n_queries": nq, "n_prompts": npr, "n_repeats": nr, "power": power,
                     "mde": found, "mc_se": se, "ci_low": found - 1.959963984540054 * se,
                     "ci_high": found + 1.959963984540054 * se, "mde_analytic": float(analytic),
                     "sd_diff": sd, "n_sims": n_sims, "alpha": alpha})
    return pd.DataFrame(rows)
