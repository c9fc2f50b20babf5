"""Paired contrasts against a baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from steerstats.stats import example_scores, paired_contrasts, simulate_crossed

COLUMNS = [
    "model", "method", "strength", "metric", "baseline", "n_pairs", "n_queries", "diff", "se",
    "df", "ci_low", "ci_high", "p", "p_holm", "note", "dz", "auxiliary",
]


@pytest.fixture(scope="module")
def scores() -> pd.DataFrame:
    return example_scores(seed=0)


@pytest.fixture(scope="module")
def table(scores: pd.DataFrame) -> pd.DataFrame:
    return paired_contrasts(scores, "control", n_boot=500, seed=2)


def _cells(scores: pd.DataFrame) -> pd.Series:
    keys = ["model", "method", "metric", "query_id", "prompt_id", "sample"]
    resp = scores.groupby(keys)["value"].mean().dropna()
    return resp.groupby(["model", "method", "metric", "query_id", "prompt_id"]).mean()


def test_columns_rows_and_pairing(scores: pd.DataFrame, table: pd.DataFrame) -> None:
    assert table.columns.tolist() == COLUMNS
    assert len(table) == 2 * 2 * 3  # models x non-baseline methods x metrics
    assert set(table["baseline"]) == {"control"}
    # Reference: pandas merge of cell means on (model, metric, query, prompt).
    cells = _cells(scores).rename("v").reset_index()
    base = cells[cells["method"] == "control"].drop(columns="method")
    pairs = cells[cells["method"] != "control"].merge(
        base, on=["model", "metric", "query_id", "prompt_id"], suffixes=("", "_b")
    )
    pairs["d"] = pairs["v"] - pairs["v_b"]
    ref = pairs.groupby(["model", "method", "metric"])["d"].agg(
        diff="mean", n="size", dz=lambda d: d.mean() / d.std(ddof=1)
    )
    got = table.set_index(["model", "method", "metric"])
    np.testing.assert_allclose(got["diff"], ref["diff"].loc[got.index], rtol=1e-12)
    np.testing.assert_allclose(got["dz"], ref["dz"].loc[got.index], rtol=1e-10)
    assert got["n_pairs"].tolist() == ref["n"].loc[got.index].tolist()


def test_holm_matches_statsmodels_within_each_family(table: pd.DataFrame) -> None:
    # Reference: statsmodels.stats.multitest.multipletests(method="holm"), applied per family
    # (model x metric x baseline: the arms compared with that baseline).
    for _, fam in table.groupby(["model", "metric", "baseline"]):
        ref = multipletests(fam["p"].to_numpy(), method="holm")[1]
        np.testing.assert_allclose(fam["p_holm"], ref, rtol=1e-12)


def test_holm_family_does_not_depend_on_the_rest_of_the_table(
    scores: pd.DataFrame, table: pd.DataFrame
) -> None:
    alone = paired_contrasts(scores[scores["metric"] == "behavior"], "control", n_boot=500,
                             seed=2)
    both = table[table["metric"] == "behavior"]
    np.testing.assert_allclose(alone["p_holm"], both["p_holm"], rtol=1e-12)


def test_several_baselines_test_a_pair_once(scores: pd.DataFrame) -> None:
    out = paired_contrasts(scores, ["control", "prompt"], n_boot=200, seed=2)
    vs_prompt = out[out["baseline"] == "prompt"]
    assert set(vs_prompt["method"]) == {"steer"}  # prompt - control is tested once, vs control
    assert len(out) == 2 * 3 * 2 + 2 * 3


def test_auxiliary_metrics_are_flagged() -> None:
    sim = simulate_crossed(n_queries=6, n_topic=0, n_common=4, n_repeats=1, seed=1)
    sims = [sim.assign(metric=m) for m in ("behavior", "behavior_argmax", "coherence_ppl",
                                            "coherence_nll", "capability_nll")]
    out = paired_contrasts(pd.concat(sims), strength=None, n_boot=50)
    flags = out.groupby("metric")["auxiliary"].first().to_dict()
    assert flags == {"behavior": False, "behavior_argmax": True, "coherence_ppl": False,
                     "coherence_nll": True, "capability_nll": False}


def test_fewer_than_six_queries_withholds_inference() -> None:
    sim = simulate_crossed(n_queries=3, n_topic=2, n_common=2, n_repeats=1, seed=1)
    out = paired_contrasts(sim, strength=None, n_boot=50)
    assert out["diff"].notna().all()
    assert out[["ci_low", "ci_high", "p", "p_holm"]].isna().all().all()
    assert out["note"].str.startswith("too few queries: G = 3").all()
    asked = paired_contrasts(sim, strength=None, n_boot=50, min_queries=3)
    assert asked["ci_low"].notna().all() and (asked["note"] == "").all()


def test_p_agrees_with_default_interval(table: pd.DataFrame) -> None:
    excludes_zero = (table["ci_low"] > 0) | (table["ci_high"] < 0)
    assert ((table["p"] < 0.05) == excludes_zero).all()
    t = table["diff"] / table["se"]
    np.testing.assert_allclose(table["p"], 2 * sps.t.sf(np.abs(t), table["df"]))


def test_query_clustered_test_matches_paired_t_on_query_means() -> None:
    """Clustering by query alone, balanced: the default test is the paired t-test on query
    means. Reference: scipy.stats.ttest_rel on the 10 per-query means of each arm. Bootstrap
    SD with 40,000 replicates: ~0.4% Monte-Carlo error, hence the tolerances."""
    sim = simulate_crossed(
        {"control": 2.0, "steer": 2.3}, n_queries=10, n_topic=4, n_common=4, n_repeats=2,
        seed=11,
    )
    got = paired_contrasts(sim, strength=None, clusters=("query_id",), n_boot=40000, seed=0)
    qmeans = sim.groupby(["method", "query_id"])["value"].mean().unstack("query_id")
    ref = sps.ttest_rel(qmeans.loc["steer"], qmeans.loc["control"])
    ci = ref.confidence_interval(0.95)
    row = got.iloc[0]
    assert row["n_pairs"] == 10 and row["df"] == 9
    assert row["diff"] == pytest.approx(qmeans.loc["steer"].mean() - qmeans.loc["control"].mean())
    half = (ci.high - ci.low) / 2
    assert row["ci_low"] == pytest.approx(ci.low, abs=0.01 * half)
    assert row["ci_high"] == pytest.approx(ci.high, abs=0.01 * half)
    assert row["p"] == pytest.approx(ref.pvalue, rel=0.05)


def test_clustering_widens_intervals_versus_rows() -> None:
    """Query effects make row-level (Welch) intervals far too narrow; ours are wider."""
    sim = simulate_crossed(n_queries=8, n_topic=3, n_common=5, n_repeats=2, seed=4)
    got = paired_contrasts(sim, strength=None, n_boot=1000, seed=1).set_index("method")
    base = sim.loc[sim["method"] == "control", "value"]
    for m in ("prompt", "steer"):
        welch = sps.ttest_ind(sim.loc[sim["method"] == m, "value"], base, equal_var=False)
        ci = welch.confidence_interval(0.95)
        assert got.loc[m, "ci_high"] - got.loc[m, "ci_low"] > 1.5 * (ci.high - ci.low)


def test_strength_sweep_gives_one_row_per_strength() -> None:
    sweep = example_scores(seed=1, strengths=[0.5, 1.0, 2.0])
    got = paired_contrasts(sweep, n_boot=300, seed=0)
    steer = got[got["method"] == "steer"]
    assert sorted(steer["strength"].unique().tolist()) == [0.5, 1.0, 2.0]
    assert len(steer) == 2 * 3 * 3
    assert got.loc[got["method"] == "prompt", "strength"].isna().all()
    beh = steer[(steer["metric"] == "behavior") & (steer["model"] == "model-a")]
    assert beh["diff"].is_monotonic_increasing  # the simulated effect grows with strength


def test_baseline_errors(scores: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="baseline 'nope' is not a value of column 'method'"):
        paired_contrasts(scores, "nope")
    with pytest.raises(ValueError, match="nothing to contrast"):
        paired_contrasts(scores[scores["method"] == "control"], "control")
    two = pd.concat([scores, scores[scores["method"] == "control"].assign(strength=1.0)])
    with pytest.raises(ValueError, match="several values of 'strength'"):
        paired_contrasts(two, "control")
    with pytest.raises(ValueError, match="clusters="):
        paired_contrasts(scores.drop(columns="prompt_id"))
    with pytest.raises(ValueError, match="method="):
        paired_contrasts(scores.drop(columns="method"))


def test_other_baseline_and_missing_cells(scores: pd.DataFrame) -> None:
    got = paired_contrasts(scores, "prompt", n_boot=300, seed=0)
    assert set(got["method"]) == {"control", "steer"} and set(got["baseline"]) == {"prompt"}
    # No baseline rows for one model and metric: the contrast is kept, with no pairs.
    data = scores[~((scores["method"] == "control") & (scores["model"] == "model-b")
                    & (scores["metric"] == "coherence"))]
    got = paired_contrasts(data, n_boot=300, seed=0).set_index(["model", "method", "metric"])
    empty = got.loc[("model-b", "steer", "coherence")]
    assert empty["n_pairs"] == 0
    assert np.isnan(empty[["diff", "ci_low", "ci_high", "p", "p_holm", "dz"]].astype(float)).all()
    assert got["p_holm"].notna().sum() == len(got) - 2


def test_unparsed_values_are_not_paired(scores: pd.DataFrame) -> None:
    data = scores.copy()
    hit = (data["metric"] == "behavior") & (data["query_id"] == "be-funny") & (
        data["method"] == "steer"
    )
    data.loc[hit, "value"] = np.nan
    got = paired_contrasts(data, n_boot=200).set_index(["model", "method", "metric"])
    ref = paired_contrasts(scores, n_boot=200).set_index(["model", "method", "metric"])
    n_prompts = 3 + 4  # per query: 3 topic + 4 common
    key = ("model-a", "steer", "behavior")
    assert got.loc[key, "n_pairs"] == ref.loc[key, "n_pairs"] - n_prompts


def test_one_query_gives_differences_without_intervals(scores: pd.DataFrame) -> None:
    one = scores[scores["query_id"] == "be-concise"]
    with pytest.warns(RuntimeWarning, match="single level of \\['query_id'\\]"):
        got = paired_contrasts(one, n_boot=200)
    assert got["diff"].notna().all() and (got["n_pairs"] > 0).all()
    assert got[["ci_low", "ci_high", "p", "p_holm", "df"]].isna().all().all()
