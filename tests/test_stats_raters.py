"""Judges as raters (steerstats.stats.raters): reliability by facet, G study, bias, robustness.

Reference numbers: lme4 (tests/reference/raters_lme4.R -> raters_lme4.csv), Brennan (2001)
for the G/Phi arithmetic, Bland & Altman (1986) for the limits of agreement, and a seeded
simulation of a judge panel with known components for recovery.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import steerstats.stats as st

REF = Path(__file__).parent / "reference"


def _reference_data(dataset: str) -> pd.DataFrame:
    d = pd.read_csv(REF / "raters_data.csv")
    d = d[d["dataset"] == dataset].drop(columns="dataset")
    return d.assign(metric="behavior")


@pytest.mark.parametrize("dataset", ["unbalanced", "two_judges"])
def test_g_study_variance_components_match_lme4(dataset: str) -> None:
    # lme4 1.1-31: lmer(value ~ 1 + (1|response) + (1|rater) + (1|response:rater), REML),
    # tests/reference/raters_lme4.R. Unparsed ratings (NaN) are dropped as lme4 drops NA rows.
    ref = pd.read_csv(REF / "raters_lme4.csv")
    ref = ref[ref["dataset"] == dataset].set_index("component")
    data = _reference_data(dataset)
    vc = st.g_study(data, targets=["key", "query_id"]).set_index("component")
    assert list(vc.index) == ["response", "rater", "response:rater", "residual"]
    for comp in vc.index:
        # lme4's bobyqa and our Nelder-Mead stop at slightly different points of a flat
        # optimum: agreement to 2e-5 absolute in each variance.
        assert vc.loc[comp, "variance"] == pytest.approx(ref.loc[comp, "variance"], abs=2e-5)
    assert vc["reml_criterion"].iloc[0] == pytest.approx(ref["reml_criterion"].iloc[0], abs=1e-6)
    assert vc["n_ratings"].iloc[0] == ref["n"].iloc[0]
    assert vc["n_dropped"].iloc[0] == data["value"].isna().sum()
    assert not vc["singular"].iloc[0]
    assert vc["share"].sum() == pytest.approx(1.0)


def test_g_study_boundary_is_zero_and_flagged_singular() -> None:
    # Every judge gives each response the same score on every repeat: no residual beyond a
    # tiny jitter, and judges that agree exactly up to an offset: response:rater variance 0.
    rng = np.random.default_rng(0)
    truth = rng.normal(3, 1, 30)
    rows = [{"key": f"g{p}", "query_id": f"q{p % 6}", "rater": f"j{r}", "repeat": k,
             "metric": "behavior", "value": truth[p] + 0.3 * r + rng.normal(0, 0.1)}
            for p in range(30) for r in range(2) for k in range(2)]
    vc = st.g_study(pd.DataFrame(rows)).set_index("component")
    assert vc.loc["response:rater", "variance"] == 0.0
    assert bool(vc["singular"].iloc[0])


def test_decision_study_reproduces_brennan_2001_synthetic_data_set_3() -> None:
    # Brennan, R. L. (2001). Generalizability Theory. Springer. Synthetic Data Set No. 3:
    # a p x i x o random design (10 persons, 4 items, 2 occasions). Published G study
    # variance components (ch. 3): p .5528, i .4417, o .0074, pi .5750, po .1009, io .1565,
    # pio,e .9352; D study with n'_i = 4, n'_o = 2 (ch. 4): E rho^2 = .64, Phi = .55.
    # (The same values are the expected ones in the GeneralizIT package's test suite,
    # tests/fixtures/design3_fixtures.py.) Items play our judges, occasions our repeats.
    vc = pd.DataFrame({
        "component": ["response", "rater", "repeat", "response:rater", "response:repeat",
                      "rater:repeat", "residual"],
        "variance": [0.5528, 0.4417, 0.0074, 0.5750, 0.1009, 0.1565, 0.9352],
    })
    d = st.decision_study(vc, n_raters=[4], n_repeats=[2]).iloc[0]
    assert round(d["g"], 2) == 0.64
    assert round(d["phi"], 2) == 0.55
    # The arithmetic behind the rounded figures: delta = .5750/4 + .1009/2 + .9352/8;
    # Delta = delta + .4417/4 + .0074/2 + .1565/8.
    delta = 0.5750 / 4 + 0.1009 / 2 + 0.9352 / 8
    big_delta = delta + 0.4417 / 4 + 0.0074 / 2 + 0.1565 / 8
    assert d["relative_error"] == pytest.approx(delta, abs=1e-12)
    assert d["absolute_error"] == pytest.approx(big_delta, abs=1e-12)
    assert d["g"] == pytest.approx(0.5528 / (0.5528 + delta), abs=1e-12)


def test_decision_study_grid_marks_the_collected_design_and_rises_with_judgings() -> None:
    panel = st.simulate_panel(n_responses=60, n_raters=3, n_repeats=2, seed=4)
    grid = st.decision_study(st.g_study(panel), n_raters=[1, 2, 3, 6], n_repeats=[1, 2, 4])
    assert grid["collected"].sum() == 1
    row = grid[grid["collected"]].iloc[0]
    assert (row["n_raters"], row["n_repeats"]) == (3, 2)
    for _, g in grid.groupby("n_repeats"):
        assert np.all(np.diff(g["g"].to_numpy()) > 0) and np.all(np.diff(g["phi"]) > 0)
    assert (grid["phi"] <= grid["g"] + 1e-12).all()
    with pytest.raises(ValueError, match="unknown variance component"):
        st.decision_study(pd.DataFrame({"component": ["person"], "variance": [1.0]}))


def test_simulated_panel_recovers_components_and_offsets() -> None:
    # 3 judges x 2 repeats, judge-2 rates 0.5 higher; true components: response (query +
    # response) 0.3 + 0.7 = 1.0, response:rater 0.15, residual 0.25; the judges' offsets
    # (0, 0, 0.5) have variance 1/12 (ddof 1), judge-2's offset from the panel mean is 1/3,
    # judge-2 minus judge-0 is 0.5. R = 60 data sets (seeds 0..59); each mean estimate must be
    # within 3 Monte-Carlo SEs (SD / sqrt(R)) of the truth. Observed MC SEs (and mean - truth):
    # response 0.032 (-0.015), rater 0.0036 (+0.002), response:rater 0.0050 (+0.004),
    # residual 0.0032 (-0.001), offset 0.0073 (+0.002), bias 0.014 (-0.003). About 20 s.
    truth = {"response": 1.0, "rater": 1 / 12, "response:rater": 0.15, "residual": 0.25}
    n_rep = 60
    est: dict[str, list[float]] = {k: [] for k in [*truth, "offset", "bias"]}
    for seed in range(n_rep):
        panel = st.simulate_panel(n_responses=60, n_raters=3, n_repeats=2, n_queries=60,
                                  offsets=(0.0, 0.0, 0.5), seed=seed)
        vc = st.g_study(panel).set_index("component")["variance"]
        for k in truth:
            est[k].append(float(vc[k]))
        bias = st.rater_bias(panel, n_boot=20).set_index("rater")
        est["offset"].append(float(bias.loc["judge-2", "offset"]))
        ba = st.bland_altman(panel, "judge-2", "judge-0", n_boot=20)
        est["bias"].append(float(ba["bias"].iloc[0]))
    for k, t in {**truth, "offset": 1 / 3, "bias": 0.5}.items():
        x = np.asarray(est[k])
        mc_se = x.std(ddof=1) / np.sqrt(n_rep)
        assert abs(x.mean() - t) < 3 * mc_se, (k, x.mean(), t, mc_se)


def test_rater_reliability_separates_test_retest_from_inter_rater() -> None:
    # Two judges that agree with themselves (tiny residual) but rank responses differently
    # (large response x judge variance): high test-retest, low inter-rater.
    panel = st.simulate_panel(n_responses=60, n_raters=2, n_repeats=2, var_query=0.0,
                              var_response=0.5, var_response_rater=1.0, var_residual=0.05,
                              seed=2)
    rel = st.rater_reliability(panel, n_boot=50)
    icc = rel[rel["statistic"] == "ICC1"]
    icc = icc.set_index(icc["facet"] + "/" + icc["rater"].fillna(""))
    # Population ICC1: test-retest (0.5 + 1.0) / 1.55 = 0.97; inter-rater (of judge means,
    # residual 0.05 / 2) 0.5 / (0.5 + 1.0 + 0.025) = 0.33.
    assert icc.loc["test-retest/judge-0", "estimate"] > 0.9
    assert icc.loc["test-retest/judge-1", "estimate"] > 0.9
    assert icc.loc["inter-rater/", "estimate"] < 0.55
    assert set(rel["n_raters"]) == {1, 2}
    # Continuous scores: ICCs, interval alpha and within-one agreement; the statistics that
    # count exact matches are NaN with a note. (REML ICCs from every rating, and the
    # complete-case ones as `reliability` reports them.)
    iccs = {"ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"}
    done = rel[rel["estimate"].notna()]
    assert set(done["statistic"]) == (iccs | {f"{s}_complete" for s in iccs}
                                      | {"alpha_interval", "within_one_agreement"})
    skipped = rel[rel["statistic"].isin(["alpha_ordinal", "alpha_nominal", "exact_agreement"])]
    assert skipped["estimate"].isna().all()
    assert skipped["note"].str.startswith("not computed").all()
    assert not rel["integer_scores"].any()
    # ...and they are reliability()'s ICCs (judge-1's repeats as occasions).
    direct = st.reliability(panel[panel["rater"] == "judge-1"], occasions=("repeat",),
                            targets=["key", "query_id"], n_boot=2)
    mine = rel[(rel["facet"] == "test-retest") & (rel["rater"] == "judge-1")]
    mine = mine[mine["statistic"].str.startswith("ICC")]
    direct = direct[direct["statistic"].str.startswith("ICC")]
    np.testing.assert_allclose(mine["estimate"], direct["estimate"], rtol=1e-12)


def test_rater_reliability_keeps_alpha_for_integer_scores_and_matches_reliability() -> None:
    panel = st.simulate_panel(n_responses=40, n_raters=2, n_repeats=2, seed=3)
    panel["value"] = panel["value"].round().clip(1, 5)
    rel = st.rater_reliability(panel, n_boot=100, seed=1)
    tr = rel[(rel["facet"] == "test-retest") & (rel["rater"] == "judge-0")]
    assert "alpha_ordinal" in set(tr["statistic"]) and tr["integer_scores"].all()
    # Test-retest of judge-0 is reliability() on judge-0's ratings with repeats as occasions.
    direct = st.reliability(panel[panel["rater"] == "judge-0"], occasions=("repeat",),
                            targets=["key", "query_id"], n_boot=100, seed=1)
    merged = tr.merge(direct, on="statistic", suffixes=("", "_direct"))
    np.testing.assert_allclose(merged["estimate"], merged["estimate_direct"], rtol=1e-12)
    # Inter-rater averages repeats: x.5 means are not integers, so only interval alpha there.
    inter = rel[rel["facet"] == "inter-rater"].set_index("statistic")
    assert not inter["integer_scores"].any()
    assert np.isfinite(inter.loc["alpha_interval", "estimate"])
    assert np.isnan(inter.loc[["alpha_ordinal", "alpha_nominal"], "estimate"]).all()


def test_repeats_can_be_treated_as_raters_and_single_judging_is_an_error() -> None:
    # The demo's local judge: one rater id, each repeat a different rubric wording.
    panel = st.simulate_panel(n_responses=30, n_raters=1, n_repeats=2, seed=5)
    panel["wording"] = "w" + panel["repeat"].astype(str)
    rel = st.rater_reliability(panel, rater="wording", repeat="repeat", n_boot=20)
    assert set(rel["facet"]) == {"inter-rater"}
    vc = st.g_study(panel, rater="wording")
    assert vc["n_raters"].iloc[0] == 2
    once = panel[panel["repeat"] == 0]
    with pytest.raises(ValueError, match="repeated judge .* or two judges"):
        st.rater_reliability(once)
    with pytest.raises(ValueError, match="two or more judges"):
        st.g_study(panel)
    with pytest.raises(ValueError, match="column 'judge' not found"):
        st.rater_bias(panel, rater="judge")


def test_rater_bias_offsets_sum_to_zero_over_complete_responses() -> None:
    panel = st.simulate_panel(n_responses=50, n_raters=3, n_repeats=2,
                              offsets=(0.0, 0.5, -0.2), seed=7)
    panel.loc[(panel["rater"] == "judge-1") & (panel["key"] == "g0003"), "value"] = np.nan
    bias = st.rater_bias(panel, n_boot=200)
    assert bias["offset"].sum() == pytest.approx(0.0, abs=1e-12)
    assert (bias["n_responses"] == 49).all()  # g0003 lacks judge-1's parsed scores
    assert (bias["ci_low"] < bias["offset"]).all() and (bias["offset"] < bias["ci_high"]).all()
    # Offsets by hand: judge mean over repeats minus the response's panel mean, averaged.
    p = panel[panel["key"] != "g0003"]
    jm = p.groupby(["key", "rater"])["value"].mean().unstack()
    expected = (jm.sub(jm.mean(axis=1), axis=0)).mean()
    np.testing.assert_allclose(bias.set_index("rater")["offset"], expected, atol=1e-12)
    per_method = st.rater_bias(panel, "method", n_boot=50)
    assert list(per_method.columns[:3]) == ["method", "metric", "rater"]


def test_bland_altman_reproduces_the_1986_peak_flow_example() -> None:
    # Bland & Altman (1986), The Lancet 327, 307-310, Table 1: peak expiratory flow rate
    # (l/min) of 17 subjects, first measurement with the Wright and the mini Wright meter.
    # Published: mean difference -2.1, SD 38.8, limits d - 2s = -79.7 and d + 2s = 75.5.
    wright = [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427]
    mini = [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451]
    rows = [{"key": f"s{i}", "query_id": f"s{i}", "metric": "pefr", "rater": r, "repeat": 0,
             "value": v} for r, vals in (("wright", wright), ("mini", mini))
            for i, v in enumerate(vals)]
    two_sd = 2 * sps.norm.cdf(2) - 1  # the paper's limits use 2 SD
    ba = st.bland_altman(pd.DataFrame(rows), "wright", "mini", agreement=two_sd, n_boot=500)
    r = ba.iloc[0]
    assert round(r["bias"], 1) == -2.1 and round(r["sd"], 1) == 38.8
    # The paper computes the limits from the rounded d and s: -2.1 -/+ 2 x 38.8.
    assert r["loa_low"] == pytest.approx(-79.7, abs=0.1)
    assert r["loa_high"] == pytest.approx(75.5, abs=0.1)
    assert r["n_responses"] == 17
    assert r["loa_low_ci_low"] < r["loa_low"] < r["loa_low_ci_high"]
    assert r["bias_ci_low"] < r["bias"] < r["bias_ci_high"]


def _two_judge_study(seed: int, second_offset: float, flip: bool) -> pd.DataFrame:
    """Two methods, 10 queries x 6 prompts, two judges; ``flip`` makes judge-b see no effect."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(10):
        for p in range(6):
            for method, effect in (("control", 0.0), ("steer", 0.8)):
                base = 3 + rng.normal(0, 0.3) + effect
                for judge, off in (("a", 0.0), ("b", second_offset)):
                    for k in range(2):
                        v = base + off + rng.normal(0, 0.3) - (effect if flip and judge == "b"
                                                                else 0.0)
                        rows.append({"model": "m", "method": method, "strength": np.nan,
                                     "query_id": f"q{q}", "prompt_id": f"p{q}-{p}",
                                     "sample": 0, "metric": "behavior", "rater": judge,
                                     "repeat": k, "value": v})
                rows.append({"model": "m", "method": method, "strength": np.nan,
                             "query_id": f"q{q}", "prompt_id": f"p{q}-{p}", "sample": 0,
                             "metric": "coherence", "rater": "a", "repeat": 0,
                             "value": 4 + rng.normal(0, 0.3)})
    return pd.DataFrame(rows)


def test_judge_robustness_says_whether_each_conclusion_holds_under_every_judge() -> None:
    agree = _two_judge_study(0, second_offset=0.5, flip=False)
    con = st.judge_contrasts(agree, "control", n_boot=500, seed=1)
    assert set(con["metric"]) == {"behavior"}  # coherence has one judge
    assert set(con["rater"].dropna()) == {"a", "b"} and (con["judge"] == "pooled").sum() == 1
    rob = st.judge_robustness(con)
    row = rob.iloc[0]
    assert row["conclusion"] == "higher" and bool(row["holds_under_every_judge"])
    assert row["n_judges"] == 2 and "a: higher" in row["judges"]
    # The pooled contrast is paired_contrasts on all ratings (judges averaged per response).
    pooled = st.paired_contrasts(agree, "control", n_boot=500, seed=1)
    beh = pooled[pooled["metric"] == "behavior"].iloc[0]
    assert row["diff"] == pytest.approx(beh["diff"]) and row["p_holm"] == pytest.approx(
        beh["p_holm"])

    split = _two_judge_study(0, second_offset=0.0, flip=True)
    rob2 = st.judge_robustness(st.judge_contrasts(split, "control", n_boot=500, seed=1))
    r2 = rob2.iloc[0]
    assert not bool(r2["holds_under_every_judge"])
    # judge-b's true effect is 0: whatever its test says, it does not say "higher"
    assert "a: higher" in r2["judges"] and "b: higher" not in r2["judges"]
    with pytest.raises(ValueError, match="two or more judges"):
        st.judge_contrasts(split[split["rater"] == "a"], "control", n_boot=100)


@pytest.mark.parametrize("name", ["steerstats.stats.raters", "steerstats.stats.gstudy"])
def test_examples_run(name: str) -> None:
    import doctest
    import importlib

    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_one_repeat_confounds_interaction_and_residual_and_the_d_study_says_so() -> None:
    # One rating per response x judge: lme4 could not tell (1|response:rater) from the
    # residual either. The fit puts both in response:rater; the D study then gains nothing
    # from repeats (conservative: it cannot know how much they would help).
    panel = st.simulate_panel(n_responses=60, n_raters=3, n_repeats=1, seed=8)
    vc = st.g_study(panel).set_index("component")
    assert bool(vc["confounded"].iloc[0]) and np.isnan(vc.loc["residual", "variance"])
    # Truth: response:rater 0.15 + residual 0.25 = 0.40.
    assert vc.loc["response:rater", "variance"] == pytest.approx(0.40, abs=0.12)
    grid = st.decision_study(st.g_study(panel), n_raters=[2], n_repeats=[1, 3])
    assert grid["g"].iloc[0] == pytest.approx(grid["g"].iloc[1])


def test_g_study_names_each_metric_so_the_decision_study_runs_on_two_metrics() -> None:
    # Found by running analyze on the demo (two metrics, two raters): g_study wrote the
    # column's name ("metric") in every row, so decision_study saw each component twice.
    both = pd.concat([st.simulate_panel(n_responses=30, seed=1, metric="behavior"),
                      st.simulate_panel(n_responses=30, seed=2, metric="coherence")],
                     ignore_index=True)
    g = st.g_study(both)
    assert sorted(g["metric"].unique()) == ["behavior", "coherence"]
    d = st.decision_study(g, n_raters=[1, 2], n_repeats=[1, 2])
    assert sorted(d["metric"].unique()) == ["behavior", "coherence"] and len(d) == 8
