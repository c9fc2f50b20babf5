"""judge_validity: correlations of a judge with a reference metric, pinned to scipy, with a
query-clustered bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import steerstats.stats as st


def scores(n_queries: int = 12, per_query: int = 6, seed: int = 0) -> pd.DataFrame:
    """Two arms; the judge (two repeats) tracks the reference with noise and ties."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in ("control", "caa"):
        for q in range(n_queries):
            shift = rng.normal()
            for p in range(per_query):
                ref = float(np.clip(0.4 * shift + rng.normal(0, 0.5), -1, 1))
                key = {"model": "m", "method": method, "strength": 0.5 if method == "caa"
                       else np.nan, "query_id": f"q{q}", "prompt_set": "open",
                       "prompt_id": f"p{p}", "sample": 0}
                rows.append({**key, "metric": "sentiment", "repeat": 0, "value": ref})
                for r in range(2):
                    judged = float(np.clip(np.round(3 + 2 * ref + rng.normal(0, 0.8)), 1, 5))
                    rows.append({**key, "metric": "behavior", "repeat": r, "value": judged})
    return pd.DataFrame(rows)


def test_point_estimates_and_p_values_are_scipys():
    data = scores()
    out = st.judge_validity(data, judge="behavior", reference="sentiment", n_boot=200)
    wide = data.pivot_table(index=["method", "query_id", "prompt_id"], columns="metric",
                            values="value", aggfunc="mean").reset_index()
    for method, part in [*wide.groupby("method"), ("all", wide)]:
        for name, fn in (("spearman", sps.spearmanr), ("pearson", sps.pearsonr)):
            ref = fn(part["behavior"], part["sentiment"])
            row = out[(out["method"] == method) & (out["statistic"] == name)].iloc[0]
            assert row["estimate"] == pytest.approx(ref.statistic, abs=1e-12)
            assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
            assert row["n_responses"] == len(part) and row["n_queries"] == 12
            assert row["ci_low"] < row["estimate"] < row["ci_high"]
    assert len(out) == 6 and set(out["judge"]) == {"behavior"}


def test_weighted_ranks_equal_scipys_ranks_of_the_written_out_resample():
    from steerstats.stats.validity import _weighted_pearson, _weighted_ranks

    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=9).astype(float)  # many ties
    y = rng.normal(size=9)
    w = rng.integers(0, 3, size=(5, 9)).astype(float)
    ranks = _weighted_ranks(x, w)
    for b in range(5):
        idx = np.repeat(np.arange(9), w[b].astype(int))
        expected = sps.rankdata(x[idx])
        assert np.allclose(ranks[b][idx], expected)
        rho = _weighted_pearson(ranks[b:b + 1], _weighted_ranks(y, w)[b:b + 1], w[b:b + 1])[0]
        assert rho == pytest.approx(sps.spearmanr(x[idx], y[idx]).statistic, abs=1e-12)


def test_one_response_per_query_matches_scipys_paired_bootstrap():
    """With one response per query the cluster bootstrap is the ordinary paired bootstrap:
    its percentile interval matches scipy.stats.bootstrap's within Monte-Carlo error (4000
    replicates each; the limits' MC standard error is about 0.01 here, tolerance 0.04)."""
    data = scores(n_queries=60, per_query=1, seed=5)
    data = data[data["method"] == "control"]
    out = st.judge_validity(data, n_boot=4000, seed=1)
    wide = data.pivot_table(index="query_id", columns="metric", values="value", aggfunc="mean")
    for name in ("pearson", "spearman"):
        fn = sps.pearsonr if name == "pearson" else sps.spearmanr
        ref = sps.bootstrap((wide["behavior"].to_numpy(), wide["sentiment"].to_numpy()),
                            lambda a, b, fn=fn: fn(a, b).statistic, paired=True,
                            vectorized=False,
                            n_resamples=4000, method="percentile", random_state=2)
        row = out[(out["method"] == "all") & (out["statistic"] == name)].iloc[0]
        assert row["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.04)
        assert row["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.04)


def test_resampling_is_by_query():
    """Writing each response out three times (same query) changes neither the estimate nor,
    with the same seed, the interval: the bootstrap draws queries, not rows."""
    data = scores(n_queries=10, per_query=3)
    tripled = pd.concat([data.assign(prompt_id=data["prompt_id"] + f"-{k}") for k in range(3)])
    a = st.judge_validity(data, n_boot=500, seed=4)
    b = st.judge_validity(tripled, n_boot=500, seed=4)
    cols = ["estimate", "ci_low", "ci_high"]
    assert np.allclose(a[cols].to_numpy(float), b[cols].to_numpy(float))
    assert (b["n_responses"] == 3 * a["n_responses"]).all()


def test_errors_and_degenerate_groups():
    data = scores(n_queries=4, per_query=2)
    with pytest.raises(ValueError, match="reference metric 'coherence' not found"):
        st.judge_validity(data, reference="coherence")
    with pytest.raises(ValueError, match="must be different"):
        st.judge_validity(data, judge="sentiment")
    flat = data.copy()
    flat.loc[flat["metric"] == "sentiment", "value"] = 0.0
    out = st.judge_validity(flat, n_boot=50)
    assert out["estimate"].isna().all() and out["note"].str.contains("constant").all()
    few = st.judge_validity(data, n_boot=50)
    assert few["note"].str.contains("only 4 queries").all()
