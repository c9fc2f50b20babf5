"""Dose-response: slopes pinned to statsmodels' cluster-robust OLS, DL tau^2 by hand, selection."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from steerstats.stats import dose_response, simulate_crossed

dose_module = importlib.import_module("steerstats.stats.dose")


def _simulate(means: dict[str, float], metrics: dict[str, float], seed: int,
              **design: Any) -> pd.DataFrame:
    """One simulate_crossed table per metric (name: mean slope), effects drawn independently."""
    rng = np.random.default_rng(seed)
    return pd.concat([simulate_crossed(means, metric=m, slope=b, seed=rng, **design)
                      for m, b in metrics.items()], ignore_index=True)


def _sweep(seed: int = 0, *, n_queries: int = 4, n_prompts: int = 8,
           sd_slope: float = 0.3) -> pd.DataFrame:
    return _simulate({"caa": 3.0}, {"behavior": 0.4, "coherence": -0.3}, seed,
                     n_queries=n_queries, n_topic=0, n_common=n_prompts, n_repeats=2,
                     strengths=[0.0, 1.0, 2.0, 4.0], sd_slope=sd_slope)


def test_slope_and_cluster_se_match_statsmodels() -> None:
    scores = _sweep(seed=1)
    scores = scores.drop(index=scores.index[::7])  # unbalanced: some ratings absent
    dr = dose_response(scores)
    row = dr.slopes[(dr.slopes.metric == "behavior") & (dr.slopes.query_id == "query-02")].iloc[0]
    # Reference: statsmodels OLS of response-level means on strength, cluster-robust by prompt.
    d = scores[(scores.metric == "behavior") & (scores.query_id == "query-02")]
    resp = d.groupby(["strength", "prompt_id", "sample"], as_index=False)["value"].mean()
    ols = sm.OLS(resp["value"], sm.add_constant(resp["strength"])).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(resp["prompt_id"])[0]}, use_t=True)
    assert row["slope"] == pytest.approx(ols.params["strength"], rel=1e-12)
    assert row["se"] == pytest.approx(ols.bse["strength"], rel=1e-10)
    assert row["p"] == pytest.approx(ols.pvalues["strength"], rel=1e-8)
    lo, hi = ols.conf_int().loc["strength"]
    assert row["ci_low"] == pytest.approx(lo, rel=1e-10)
    assert row["ci_high"] == pytest.approx(hi, rel=1e-10)
    assert row["df"] == 7 and row["n_prompts"] == 8 and row["n_strengths"] == 4
    assert row["n"] == len(resp)


def test_steerability_is_dersimonian_laird() -> None:
    dr = dose_response(_sweep(seed=2, n_queries=6, sd_slope=0.4))
    s = dr.slopes[dr.slopes.metric == "behavior"]
    y, v = s["slope"].to_numpy(), s["se"].to_numpy() ** 2
    # DerSimonian & Laird (1986): Q = sum w (y - ybar_w)^2, tau2 = max(0, (Q - (k-1)) / c).
    w = 1 / v
    q = np.sum(w * (y - np.sum(w * y) / w.sum()) ** 2)
    tau2 = max(0.0, (q - (len(y) - 1)) / (w.sum() - np.sum(w**2) / w.sum()))
    w_re = 1 / (v + tau2)
    mean = np.sum(w_re * y) / w_re.sum()
    half = 2.5705818366147395 / np.sqrt(w_re.sum())  # scipy.stats.t.ppf(0.975, 5)
    row = dr.steerability.set_index("metric").loc["behavior"]
    assert row["tau2"] == pytest.approx(tau2, rel=1e-10)
    assert row["mean_slope"] == pytest.approx(mean, rel=1e-10)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(mean - half, rel=1e-9),
                                               pytest.approx(mean + half, rel=1e-9))
    assert row["sd_slopes"] == pytest.approx(np.std(y, ddof=1))
    assert row["n_queries"] == 6


def _constructed() -> pd.DataFrame:
    """Deterministic sweep: query 'up' rises 1/unit, 'down' falls 1/unit; coherence 5 - strength."""
    rows = []
    for q, sign in (("up", 1.0), ("down", -1.0), ("flat", 0.0)):
        for p in range(10):
            for s in (0.0, 1.0, 2.0, 3.0):
                noise = 0.1 * ((p * 7 + int(s) * 3) % 5 - 2)  # small, mean zero per strength
                base = {"model": "m", "method": "caa", "strength": s, "query_id": q,
                        "prompt_set": "open", "prompt_id": f"p{p}", "sample": 0, "rater": "j",
                        "repeat": 0, "key": f"{q}-{p}-{s}", "reason": ""}
                rows.append({**base, "metric": "behavior", "value": 3 + sign * s + noise})
                rows.append({**base, "metric": "coherence", "value": 5.0 - s + noise})
    return pd.DataFrame(rows)


def test_anti_steerable_and_held_out_selection() -> None:
    dr = dose_response(_constructed(), coherence_threshold=3.0)
    b = dr.slopes[dr.slopes.metric == "behavior"].set_index("query_id")
    assert bool(b.loc["down", "anti_steerable"]) and not bool(b.loc["up", "anti_steerable"])
    assert not bool(b.loc["flat", "anti_steerable"])
    assert dr.slopes.loc[dr.slopes.metric == "coherence", "anti_steerable"].isna().all()
    assert b.loc["up", "slope"] == pytest.approx(1.0, abs=0.05)
    assert dr.steerability.set_index("metric").loc["behavior", "n_anti_steerable"] == 1
    sel = dr.selection.set_index(["query_id", "metric"])
    # Coherence >= 3 allows strengths 0..2 (mean coherence 5, 4, 3): 'up' picks 2, 'down' 0.
    assert sel.loc[("up", "behavior"), "chosen_strength"] == 2.0
    assert sel.loc[("down", "behavior"), "chosen_strength"] == 0.0
    assert sel.loc[("up", "behavior"), "n_heldout_prompts"] == 5
    held = sel.loc[("up", "behavior")]
    assert held["ci_low"] < held["estimate"] < held["ci_high"]
    assert held["estimate"] == pytest.approx(5.0, abs=0.1)
    assert sel.loc[("up", "coherence"), "estimate"] == pytest.approx(3.0, abs=0.1)


def test_selection_with_no_eligible_strength_is_explicit() -> None:
    dr = dose_response(_constructed(), coherence_threshold=6.0)
    assert dr.selection["chosen_strength"].isna().all()
    assert dr.selection["note"].str.contains("no strength kept mean coherence >= 6.0").all()
    assert dr.selection["estimate"].isna().all()


def test_pooled_selection_and_seeded_split() -> None:
    scores = _sweep(seed=3)
    a = dose_response(scores, per_query=False, coherence_threshold=2.0, seed=5)
    b = dose_response(scores, per_query=False, coherence_threshold=2.0, seed=5)
    pd.testing.assert_frame_equal(a.selection, b.selection)
    assert "query_id" not in a.selection.columns and len(a.selection) == 2
    assert dose_response(scores, coherence=None).selection["metric"].tolist() == ["behavior"] * 4


def test_non_sweep_methods_are_ignored_and_errors() -> None:
    sweep = _sweep(seed=4)
    control = _simulate({"control": 3.0}, {"behavior": 0.0, "coherence": 0.0}, 9,
                        n_queries=4, n_topic=0, n_common=8, n_repeats=1)
    dr = dose_response(pd.concat([sweep, control], ignore_index=True))
    assert set(dr.slopes["method"]) == {"caa"}
    with pytest.raises(ValueError, match="two or more finite strengths"):
        dose_response(control)
    with pytest.raises(ValueError, match="behavior metric 'behavior' not found"):
        dose_response(sweep[sweep.metric == "coherence"])
    with pytest.raises(ValueError, match="coherence=None"):
        dose_response(sweep[sweep.metric == "behavior"])
    with pytest.raises(ValueError, match="'strength' not found; pass strength="):
        dose_response(sweep.drop(columns="strength"))


def test_single_prompt_gives_nan_interval_not_an_error() -> None:
    one = _sweep(seed=6, n_prompts=1)
    dr = dose_response(one, coherence=None)
    assert dr.slopes["ci_low"].isna().all() and dr.slopes["slope"].notna().all()



def test_tau2_is_truncated_at_zero_when_slopes_agree() -> None:
    # Identical true slopes (seed 2): Q < k - 1, so DL gives tau2 = 0 (statsmodels'
    # combine_effects would return a negative value) and the random-effects mean equals the
    # inverse-variance (fixed-effect) mean.
    dr = dose_response(_sweep(seed=2, n_queries=6, sd_slope=0.0), coherence=None)
    row = dr.steerability.set_index("metric").loc["behavior"]
    s = dr.slopes[dr.slopes.metric == "behavior"]
    w = 1 / s["se"] ** 2
    assert row["tau2"] == 0.0 and row["tau"] == 0.0 and row["i2"] == 0.0
    assert row["mean_slope"] == pytest.approx(np.sum(w * s["slope"]) / w.sum(), rel=1e-12)


def _mmlu_like(strengths: tuple[float, ...]) -> pd.DataFrame:
    """Two queries x 4 questions; under 'same' each question is answered alike at every strength
    (right on even questions, wrong on odd ones), under 'varies' answers change with strength."""
    rows = []
    for q in ("same", "varies"):
        for p in range(4):
            for i, s in enumerate(strengths):
                base = {"model": "m", "method": "caa", "strength": s, "query_id": q,
                        "prompt_set": "mmlu", "prompt_id": f"mmlu-{p:03d}", "sample": 0,
                        "rater": "auto", "repeat": 0, "key": f"{q}-{p}-{i}", "reason": ""}
                right = p % 2 == 0 if q == "same" else (p + i) % 3 == 0
                rows.append({**base, "metric": "accuracy", "value": float(right)})
                rows.append({**base, "metric": "behavior", "value": float(1 + (p * 3 + i) % 5)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("strengths", [(0.1, 0.2, 0.3), (1 / 3, 2 / 3, 1.1), (0.0, 0.1, 0.7)])
def test_one_usable_query_slope_gives_nan_spread_with_a_note(strengths: tuple[float, ...]) -> None:
    # Strengths such as 0.1, 0.2, 0.3 do not centre exactly in floating point, so the 'same'
    # query's score sums were ~1e-17 instead of 0: a spurious SE of ~1e-16 whose weight made
    # DerSimonian-Laird's c exactly 0 (ZeroDivisionError). That SE is exactly 0 now, the slope
    # is left out, and one usable slope leaves the spread undefined.
    dr = dose_response(_mmlu_like(strengths), coherence=None)
    acc = dr.slopes[dr.slopes.metric == "accuracy"].set_index("query_id")
    assert acc.loc["same", "slope"] == pytest.approx(0.0, abs=1e-12)
    assert acc.loc["same", "se"] == 0.0
    assert acc.loc["varies", "se"] > 0.01
    row = dr.steerability.set_index("metric").loc["accuracy"]
    assert row["n_queries"] == 1
    assert row[["mean_slope", "se", "ci_low", "ci_high", "sd_slopes", "tau2", "tau",
                "i2"]].isna().all()
    assert "1 of 2 queries left out: their slope has standard error 0" in row["note"]
    assert "the between-query spread needs two or more, so it is NaN" in row["note"]
    assert dr.steerability.set_index("metric").loc["behavior", "note"] == ""


def test_dersimonian_laird_with_one_weight_dwarfing_the_other() -> None:
    # Exact arithmetic (fractions) for y = (0, 10), v = (1e-16, 1): w = (1e16, 1),
    # c = 2 w1 w2 / (w1 + w2), Q = 100 w1 w2 / (w1 + w2), tau2 = (Q - 1) / c; the plain
    # sum w - sum w^2 / sum w form of c cancels to 0 in floating point.
    from fractions import Fraction

    v = (Fraction(1, 10**16), Fraction(1))
    w1, w2 = 1 / v[0], 1 / v[1]
    c = 2 * w1 * w2 / (w1 + w2)
    tau2 = (100 * w1 * w2 / (w1 + w2) - 1) / c
    wr1, wr2 = 1 / (v[0] + tau2), 1 / (v[1] + tau2)
    out = dose_module._dersimonian_laird(np.array([0.0, 10.0]), np.array([1e-16, 1.0]), 0.95)
    assert out["tau2"] == pytest.approx(float(tau2), rel=1e-12)
    assert out["mean_slope"] == pytest.approx(float(10 * wr2 / (wr1 + wr2)), rel=1e-12)


def test_a_metric_that_does_not_vary_between_prompts_has_no_test() -> None:
    """capability_nll is scored on one fixed text: the same at every prompt of a strength, so
    prompts are not its sampling unit: SE 0, and no p-value or interval (not p = 0)."""
    sweep = simulate_crossed({"control": 2.0, "steer": 2.0}, n_queries=4, n_topic=0,
                             n_common=5, n_repeats=1, strengths=[0.0, 1.0, 2.0], slope=0.5,
                             seed=2)
    cap = sweep.copy()
    cap["metric"] = "capability_nll"
    cap["value"] = 2.0 + 0.1 * cap["strength"] + 0.01 * cap["query_id"].str[-1].astype(int)
    dr = dose_response(pd.concat([sweep, cap]), coherence=None)
    rows = dr.slopes[dr.slopes["metric"] == "capability_nll"]
    assert (rows["se"] == 0).all() and rows["p"].isna().all() and rows["ci_low"].isna().all()
    assert rows["anti_steerable"].isna().all()
