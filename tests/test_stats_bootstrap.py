"""The two-way cluster bootstrap engine and ``summarize``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from steerstats.stats import (
    BootstrapResult,
    cluster_bootstrap,
    cluster_weights,
    example_scores,
    replicate_sums,
    simulate_crossed,
    summarize,
)


@pytest.fixture(scope="module")
def scores() -> pd.DataFrame:
    return example_scores(seed=0)


# --- engine -------------------------------------------------------------------------------


def test_cluster_weights_are_multinomial_counts() -> None:
    w_q, w_p = cluster_weights([7, 30], n_boot=20000, seed=3)
    assert w_q.shape == (20000, 7) and w_p.shape == (20000, 30)
    assert (w_q.sum(axis=1) == 7).all() and (w_p.sum(axis=1) == 30).all()
    assert np.all(w_q == np.round(w_q)) and w_q.min() >= 0
    # Multinomial(n, 1/n) moments: mean 1, variance 1 - 1/n, correlation -1/(n - 1).
    # Monte-Carlo SE with 20,000 draws: ~0.007 for the mean, ~0.01 for the variance.
    assert w_q.mean() == pytest.approx(1.0)
    assert w_q.var(axis=0).mean() == pytest.approx(1 - 1 / 7, abs=0.02)
    assert np.corrcoef(w_q[:, 0], w_q[:, 1])[0, 1] == pytest.approx(-1 / 6, abs=0.03)
    again = cluster_weights([7, 30], n_boot=20000, seed=3)
    assert np.array_equal(again[0], w_q) and np.array_equal(again[1], w_p)
    assert not np.array_equal(cluster_weights([7], 50, seed=4)[0], w_q[:50])


def test_replicate_sums_match_brute_force_row_expansion() -> None:
    """Each replicate equals the mean of the data with rows repeated by their weights."""
    rng = np.random.default_rng(1)
    n = 300
    frame = pd.DataFrame(
        {
            "g": rng.choice(["a", "b", "c"], n),
            "q": rng.integers(0, 5, n),
            "p": rng.integers(0, 9, n),
            "x": rng.normal(size=n),
        }
    )
    res = cluster_bootstrap(frame, "x", groups=["g"], clusters=("q", "p"), n_boot=25, seed=7)
    w_q, w_p = cluster_weights([5, 9], n_boot=25, seed=7)
    for b in range(25):
        weight = w_q[b, frame["q"].to_numpy()] * w_p[b, frame["p"].to_numpy()]
        expanded = frame.loc[frame.index.repeat(weight.astype(int))]
        want = expanded.groupby("g")["x"].mean().reindex(["a", "b", "c"])
        np.testing.assert_allclose(res.replicates[b], want.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(res.estimate, frame.groupby("g")["x"].mean().to_numpy())


def test_replicate_sums_three_factors_chunks_and_shape_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(2)
    cells = rng.random((2, 3, 4, 5, 2))
    weights = cluster_weights([3, 4, 5], n_boot=6, seed=0)
    got = replicate_sums(cells, weights)
    want = np.einsum("gijkc,bi,bj,bk->bgc", cells, *weights)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    monkeypatch.setattr("steerstats.stats.bootstrap._CHUNK_FLOATS", 50)  # 2 replicates a chunk
    np.testing.assert_allclose(replicate_sums(cells, weights), want, rtol=1e-12)
    with pytest.raises(ValueError, match="levels"):
        replicate_sums(cells, [weights[0], weights[0], weights[2]])
    with pytest.raises(ValueError, match="dimensions"):
        replicate_sums(cells[..., 0], weights)


def test_one_factor_t_interval_matches_cluster_level_t_test() -> None:
    """Balanced one-way clusters: bootstrap SD x sqrt(G/(G-1)) -> s/sqrt(G) of cluster means.

    Reference: scipy.stats.ttest_1samp on the 8 cluster means (the classical interval the
    default correction reproduces). Monte-Carlo error of a bootstrap SD with 40,000 replicates
    is ~0.4% relative, so limits agree to 1% of the half-width.
    """
    rng = np.random.default_rng(5)
    g, m = 8, 6
    frame = pd.DataFrame(
        {"q": np.repeat(np.arange(g), m), "x": np.repeat(rng.normal(0, 1, g), m)}
    )
    frame["x"] += rng.normal(0, 0.5, len(frame))
    res = cluster_bootstrap(frame, "x", clusters=("q",), n_boot=40000, seed=0)
    low, high = res.interval(0.95, "t")
    ref = sps.ttest_1samp(frame.groupby("q")["x"].mean(), 0.0).confidence_interval(0.95)
    half = (ref.high - ref.low) / 2
    assert res.df[0] == g - 1
    assert low[0] == pytest.approx(ref.low, abs=0.01 * half)
    assert high[0] == pytest.approx(ref.high, abs=0.01 * half)
    # The plain percentile interval is narrower: z instead of t_7 and divisor G instead of G-1.
    p_low, p_high = res.interval(0.95, "percentile")
    assert (p_high - p_low)[0] < 0.85 * (high - low)[0]


def test_expanded_percentile_uses_hesterberg_levels() -> None:
    """Quantile levels Phi(-sqrt(G/(G-1)) t_{G-1}): the resample::ExpandProbs definition."""
    rng = np.random.default_rng(0)
    reps = rng.normal(size=(100000, 1))
    res = BootstrapResult(
        groups=pd.DataFrame(index=range(1)),
        estimate=np.array([0.0]),
        replicates=reps,
        n_obs=np.array([100]),
        n_clusters=np.array([[10, 50]]),
        clusters=("query_id", "prompt_id"),
    )
    tail = sps.norm.sf(np.sqrt(10 / 9) * sps.t.ppf(0.975, 9))
    low, high = res.interval(0.95, "expanded")
    assert low[0] == pytest.approx(np.quantile(reps, tail))
    assert high[0] == pytest.approx(np.quantile(reps, 1 - tail))
    # For a normal bootstrap distribution, expanded and t intervals agree (MC error ~1%).
    t_low, t_high = res.interval(0.95, "t")
    assert high[0] == pytest.approx(t_high[0], rel=0.02)


# --- summarize ----------------------------------------------------------------------------


def test_summarize_counts_means_and_columns(scores: pd.DataFrame) -> None:
    table = summarize(scores, n_boot=300, seed=1)
    assert table.columns.tolist() == [
        "model", "method", "strength", "metric", "n", "n_missing", "n_queries", "mean",
        "ci_low", "ci_high", "ci_scale", "note",
    ]
    assert len(table) == 2 * 3 * 3
    for col in ("mean", "ci_low", "ci_high"):
        assert table[col].dtype == np.float64
    # Reference: plain pandas, repeats averaged per response first, NaN ratings left out.
    keys = ["model", "method", "metric", "query_id", "prompt_id", "sample"]
    per_response = scores.groupby(keys)["value"].mean().dropna()
    want = per_response.groupby(["model", "method", "metric"]).agg(["mean", "size"])
    got = table.set_index(["model", "method", "metric"])
    np.testing.assert_allclose(got["mean"], want["mean"].loc[got.index], rtol=1e-12)
    assert got["n"].tolist() == want["size"].loc[got.index].tolist()
    missing = scores["value"].isna().groupby([scores[c] for c in ("model", "method", "metric")])
    assert got["n_missing"].tolist() == missing.sum().loc[got.index].astype(int).tolist()
    assert int(table["n_missing"].sum()) == int(scores["value"].isna().sum())
    assert (table["ci_low"] < table["mean"]).all() and (table["mean"] < table["ci_high"]).all()


def test_summarize_is_reproducible_and_seeded(scores: pd.DataFrame) -> None:
    a = summarize(scores, n_boot=200, seed=3, ci_method="t")
    b = summarize(scores, n_boot=200, seed=3, ci_method="t")
    c = summarize(scores, n_boot=200, seed=4, ci_method="t")
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ci_low"], c["ci_low"])
    np.testing.assert_array_equal(a["mean"], c["mean"])
    # the default (moment) interval does not depend on the resampling at all
    pd.testing.assert_frame_equal(summarize(scores, n_boot=200, seed=3),
                                  summarize(scores, n_boot=200, seed=4))


def test_summarize_default_equals_engine_t_interval(scores: pd.DataFrame) -> None:
    beh = scores[(scores["metric"] == "behavior") & (scores["model"] == "model-a")]
    # An undeclared range (behavior's 1-5 switched off): the plain two-way t interval.
    table = summarize(beh, n_boot=500, seed=9, ranges={"behavior": (None, None)})
    keys = ["model", "method", "strength", "metric", "query_id", "prompt_id", "sample"]
    resp = beh.groupby(keys, dropna=False)["value"].mean().reset_index()
    res = cluster_bootstrap(resp, groups=["model", "method", "strength", "metric"],
                            n_boot=500, seed=9)
    low, high = res.interval(0.95, "twoway")
    np.testing.assert_allclose(table["ci_low"], low)
    np.testing.assert_allclose(table["ci_high"], high)


def test_ci_methods_and_confidence(scores: pd.DataFrame) -> None:
    beh = scores[scores["metric"] == "behavior"]
    wide = summarize(beh, n_boot=2000, seed=1, confidence=0.99)
    narrow = summarize(beh, n_boot=2000, seed=1, confidence=0.8)
    assert ((wide["ci_high"] - wide["ci_low"]) > (narrow["ci_high"] - narrow["ci_low"])).all()
    pct = summarize(beh, n_boot=2000, seed=1, ci_method="percentile")
    t = summarize(beh, n_boot=2000, seed=1)
    assert ((pct["ci_high"] - pct["ci_low"]) < (t["ci_high"] - t["ci_low"])).all()
    with pytest.warns(RuntimeWarning, match="expanded percentile"):
        summarize(beh, n_boot=300, seed=1, ci_method="expanded")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_boot": 1}, "n_boot"),
        ({"n_boot": 10.5}, "n_boot"),
        ({"confidence": 95}, "confidence"),
        ({"ci_method": "bca"}, "ci_method"),
        ({"clusters": ()}, "clusters"),
    ],
)
def test_bad_arguments_raise(scores: pd.DataFrame, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        summarize(scores, **kwargs)


@pytest.mark.parametrize(
    ("drop", "keyword"),
    [("model", "model="), ("metric", "metric="), ("value", "value="), ("sample", "sample="),
     ("strength", "strength="), ("query_id", "clusters=")],
)
def test_missing_column_names_the_keyword(scores: pd.DataFrame, drop: str, keyword: str) -> None:
    with pytest.raises(ValueError, match=keyword):
        summarize(scores.drop(columns=drop))


def test_renamed_columns_and_roles_turned_off(scores: pd.DataFrame) -> None:
    renamed = scores.rename(
        columns={"model": "llm", "query_id": "task", "prompt_id": "item", "value": "score"}
    ).drop(columns=["strength", "sample"])
    table = summarize(renamed, model="llm", value="score", clusters=("task", "item"),
                      strength=None, sample=None, n_boot=200, seed=1)
    ref = summarize(scores, strength=None, n_boot=200, seed=1)
    assert table.columns[0] == "llm"
    np.testing.assert_allclose(table["mean"], ref["mean"])
    np.testing.assert_allclose(table["ci_low"], ref["ci_low"])
    coherence = scores[(scores["metric"] == "coherence") & (scores["method"] == "steer")]
    overall = summarize(coherence, model=None, method=None, strength=None, n_boot=200)
    # With model turned off, both models' ratings of a (query, prompt) are one response.
    assert len(overall) == 1 and overall["n"].iloc[0] == 42
    assert overall["mean"].iloc[0] == pytest.approx(
        coherence.groupby(["query_id", "prompt_id"])["value"].mean().mean()
    )


def test_non_numeric_value_is_an_error(scores: pd.DataFrame) -> None:
    bad = scores.assign(value=scores["value"].astype(object))
    bad.loc[0, "value"] = "five"
    with pytest.raises(ValueError, match="'value' must be numeric"):
        summarize(bad)


# --- edge cases -----------------------------------------------------------------------------


def test_one_query_gives_means_with_nan_ci_and_a_warning(scores: pd.DataFrame) -> None:
    one = scores[scores["query_id"] == "be-funny"]
    with pytest.warns(RuntimeWarning, match="single level of \\['query_id'\\]"):
        table = summarize(one, n_boot=200)
    assert table["mean"].notna().all()
    assert table["ci_low"].isna().all() and table["ci_high"].isna().all()
    # Conditional on the one query, intervals over prompts are available on request.
    within = summarize(one, clusters=("prompt_id",), n_boot=200)
    assert within["ci_low"].notna().all()


def test_one_method_only(scores: pd.DataFrame) -> None:
    table = summarize(scores[scores["method"] == "steer"], n_boot=200)
    assert set(table["method"]) == {"steer"} and len(table) == 6
    assert table["ci_low"].notna().all()


def test_all_values_missing_for_a_cell(scores: pd.DataFrame) -> None:
    data = scores.copy()
    cell = (data["model"] == "model-a") & (data["method"] == "prompt") & (
        data["metric"] == "coherence"
    )
    data.loc[cell, "value"] = np.nan
    table = summarize(data, n_boot=200).set_index(["model", "method", "metric"])
    row = table.loc[("model-a", "prompt", "coherence")]
    assert row["n"] == 0 and row["n_missing"] == int(cell.sum())
    assert np.isnan(row["mean"]) and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
    assert table.drop(index=("model-a", "prompt", "coherence"))["ci_low"].notna().all()


def test_unbalanced_design(scores: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    data = scores.sample(frac=0.7, random_state=1)
    data = data[~((data["method"] == "steer") & (data["query_id"] == "be-formal"))]
    table = summarize(data, n_boot=300, seed=rng.integers(100), min_queries=5)
    keys = ["model", "method", "strength", "metric", "query_id", "prompt_id", "sample"]
    per_response = data.groupby(keys, dropna=False)["value"].mean().dropna()
    want = per_response.groupby(["model", "method", "metric"]).mean()
    got = table.set_index(["model", "method", "metric"])["mean"]
    np.testing.assert_allclose(got, want.loc[got.index])
    assert table["ci_low"].notna().all()


def test_group_seen_in_few_clusters_warns_about_empty_replicates() -> None:
    frame = pd.DataFrame(
        {
            "g": ["rare"] * 2 + ["common"] * 40,
            "q": [0, 1] + list(range(40)),
            "x": np.arange(42, dtype=float),
        }
    )
    with pytest.warns(RuntimeWarning, match="drew none of its clusters"):
        res = cluster_bootstrap(frame, "x", groups=["g"], clusters=("q",), n_boot=500)
    assert np.isnan(res.replicates[:, 1]).any()
    low, high = res.interval()
    assert np.isfinite(low).all() and np.isfinite(high).all()


def test_crossed_and_nested_prompts_counted_per_group() -> None:
    sim = simulate_crossed(n_queries=5, n_topic=2, n_common=3, n_repeats=1, seed=0)
    res = cluster_bootstrap(sim, groups=["method"], n_boot=50)
    # 5 queries; prompts: 5 x 2 nested + 3 shared = 13 per method.
    assert res.n_clusters.tolist() == [[5, 13]] * 3
    assert res.df.tolist() == [4.0] * 3


def test_twoway_variance_is_the_query_level_t_for_nested_prompts() -> None:
    """Prompts nested in queries: V_query + V_prompt - V_query x prompt = V_query, the
    query-level t. Reference: scipy.stats.ttest_1samp on the query means (balanced)."""
    sim = simulate_crossed(n_queries=9, n_topic=5, n_common=0, n_repeats=1, seed=2)
    got = summarize(sim, strength=None, ranges={"behavior": (None, None)}).set_index("method")
    qmeans = sim.groupby(["method", "query_id"])["value"].mean()
    for m in ("control", "prompt", "steer"):
        ci = sps.ttest_1samp(qmeans.loc[m], 0.0).confidence_interval(0.95)
        assert got.loc[m, "ci_low"] == pytest.approx(ci.low, rel=1e-10)
        assert got.loc[m, "ci_high"] == pytest.approx(ci.high, rel=1e-10)


def test_means_stay_in_the_metric_range() -> None:
    sim = simulate_crossed({"control": 1.1, "steer": 4.9}, n_queries=6, n_topic=2, n_common=3,
                           n_repeats=1, discrete=True, seed=1)
    got = summarize(sim, strength=None)
    assert (got["ci_low"] >= 1).all() and (got["ci_high"] <= 5).all()
    assert (got["ci_low"] <= got["mean"]).all() and (got["mean"] <= got["ci_high"]).all()
    assert set(got["ci_scale"]) == {"logit"}
    plain = summarize(sim, strength=None, ranges={"behavior": (None, None)})
    np.testing.assert_allclose(plain["mean"] - plain["ci_low"], plain["ci_high"] - plain["mean"])
    assert not np.allclose(plain["ci_low"], got["ci_low"])
    assert set(plain["ci_scale"]) == {"identity"}
    ppl = sim.assign(metric="coherence_ppl", value=sim["value"] + 0.2)
    got = summarize(ppl, strength=None)
    assert (got["ci_low"] >= 1).all() and set(got["ci_scale"]) == {"log"}


def test_fewer_than_six_queries_withholds_intervals() -> None:
    sim = simulate_crossed(n_queries=3, n_topic=2, n_common=2, n_repeats=1, seed=1)
    got = summarize(sim, strength=None)
    assert got["mean"].notna().all() and got[["ci_low", "ci_high"]].isna().all().all()
    assert got["note"].str.startswith("too few queries: G = 3").all()
    assert summarize(sim, strength=None, min_queries=3)["ci_low"].notna().all()
