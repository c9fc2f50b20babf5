"""Trade-off table: joint bootstrap of gain and losses, Pareto flags, good-trade probability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steerstats.stats import cluster_bootstrap, example_scores, paired_contrasts, tradeoff
from steerstats.stats.contrasts import paired_cells
from steerstats.stats.tradeoff import _pareto


@pytest.fixture(scope="module")
def scores() -> pd.DataFrame:
    return example_scores(seed=0, strengths=[0.5, 1.0, 2.0])


@pytest.fixture(scope="module")
def table(scores: pd.DataFrame) -> pd.DataFrame:
    return tradeoff(scores, "control", n_boot=400, seed=5)


def test_columns_and_rows(table: pd.DataFrame) -> None:
    assert table.columns.tolist()[:4] == ["model", "method", "strength", "baseline"]
    for label in ("behavior_gain", "coherence_loss", "accuracy_loss"):
        for suffix in ("", "_ci_low", "_ci_high"):
            assert table[label + suffix].dtype == np.float64
    assert {"pareto", "p_good_trade", "margin_coherence", "margin_accuracy",
            "n_pairs_behavior", "n_pairs_coherence", "n_pairs_accuracy"} <= set(table.columns)
    assert len(table) == 2 * 4  # models x (prompt + steer at 3 strengths)


def test_gains_equal_paired_contrasts_with_the_same_replicates(
    scores: pd.DataFrame, table: pd.DataFrame
) -> None:
    con = paired_contrasts(scores, "control", n_boot=400, seed=5)
    con = con.set_index(["model", "method", "strength", "metric"])
    # The headline accuracy loss counts an unparsed answer as not correct (0).
    acc = scores["metric"] == "accuracy"
    zeroed = scores.assign(value=scores["value"].where(~acc, scores["value"].fillna(0.0)))
    con0 = paired_contrasts(zeroed, "control", n_boot=400, seed=5)
    con0 = con0.set_index(["model", "method", "strength", "metric"])
    unparsed = scores[acc].assign(value=scores.loc[acc, "value"].isna().astype(float))
    con_u = paired_contrasts(unparsed, "control", n_boot=400, seed=5)
    con_u = con_u.set_index(["model", "method", "strength", "metric"])
    t = table.set_index(["model", "method", "strength"])
    for metric, label, sign, ref in (
        ("behavior", "behavior_gain", 1, con), ("coherence", "coherence_loss", -1, con),
        ("accuracy", "accuracy_loss", -1, con0), ("accuracy", "accuracy_loss_parsed", -1, con),
        ("accuracy", "unparsed_rate_diff", 1, con_u),
    ):
        c = ref.xs(metric, level="metric").loc[t.index]
        np.testing.assert_allclose(t[label], sign * c["diff"], rtol=1e-12)
        lo, hi = (c["ci_low"], c["ci_high"]) if sign > 0 else (-c["ci_high"], -c["ci_low"])
        np.testing.assert_allclose(t[f"{label}_ci_low"], lo, rtol=1e-12)
        np.testing.assert_allclose(t[f"{label}_ci_high"], hi, rtol=1e-12)
        if label in ("behavior_gain", "coherence_loss", "accuracy_loss"):
            assert t[f"n_pairs_{metric}"].tolist() == c["n_pairs"].tolist()


def test_good_trade_probability_from_joint_replicates(
    scores: pd.DataFrame, table: pd.DataFrame
) -> None:
    """Recompute from one joint bootstrap of all pair differences (independent bookkeeping);
    accuracy with unparsed answers counted as not correct, as the headline is."""
    acc = scores["metric"] == "accuracy"
    zeroed = scores.assign(value=scores["value"].where(~acc, scores["value"].fillna(0.0)))
    paired = paired_cells(
        zeroed, "control", model="model", method="method", strength="strength",
        metric="metric", value="value", clusters=("query_id", "prompt_id"), sample="sample",
    )
    res = cluster_bootstrap(paired.pairs, "diff", groups=paired.contrast_cols, n_boot=400, seed=5)
    keys = res.groups
    for _, row in table.iterrows():
        def reps(metric: str, row: pd.Series = row) -> np.ndarray:
            hit = (keys["model"] == row["model"]) & (keys["method"] == row["method"]) & (
                keys["metric"] == metric
            ) & ((keys["strength"] == row["strength"]) | (
                keys["strength"].isna() & pd.isna(row["strength"])))
            return res.replicates[:, np.flatnonzero(hit.to_numpy())[0]]

        gain, coh, acc = reps("behavior"), -reps("coherence"), -reps("accuracy")
        ok = np.isfinite(gain) & np.isfinite(coh) & np.isfinite(acc)
        good = (gain > 0) & (coh < 0.5) & (acc < 0.05)
        assert row["p_good_trade"] == pytest.approx(good[ok].mean())
    assert table["p_good_trade"].between(0, 1).all()


def test_margins_change_the_probability(scores: pd.DataFrame, table: pd.DataFrame) -> None:
    loose = tradeoff(scores, margin={"coherence": 10, "accuracy": 1}, n_boot=400, seed=5)
    assert (loose["p_good_trade"] >= table["p_good_trade"]).all()
    assert (loose["margin_coherence"] == 10).all() and (loose["margin_accuracy"] == 1).all()
    with pytest.raises(ValueError, match="margin keys"):
        tradeoff(scores, margin={"fluency": 0.1})


def test_pareto_front_by_hand() -> None:
    # (gain, coherence loss, accuracy loss) for four arms of one model; baseline = origin.
    point = np.array(
        [
            [1.0, 0.2, 0.0],  # A: front
            [0.8, 0.3, 0.1],  # B: dominated by A
            [2.0, 1.0, 0.2],  # C: front (largest gain)
            [-0.1, 0.1, 0.0],  # D: dominated by the baseline (no gain, some loss)
        ]
    )
    flags = _pareto(point, pd.DataFrame({"model": ["m"] * 4}))
    assert flags.tolist() == [True, False, True, False]
    # Other models do not compete; a missing cost is compared on what is available.
    point2 = np.vstack([point, [[0.5, np.nan, 0.0]]])
    flags2 = _pareto(point2, pd.DataFrame({"model": ["m"] * 4 + ["n"]}))
    assert flags2.tolist() == [True, False, True, False, True]


def test_pareto_flags_in_table(table: pd.DataFrame) -> None:
    a = table[table["model"] == "model-a"].set_index(["method", "strength"])
    # In this simulation strength 0.5 gains less than prompting at a larger cost.
    assert not a.loc[("steer", 0.5), "pareto"]
    assert a.loc[("steer", 2.0), "pareto"]  # the largest behaviour gain is never dominated


def test_absent_metric_is_nan(scores: pd.DataFrame) -> None:
    no_acc = tradeoff(scores[scores["metric"] != "accuracy"], n_boot=200)
    assert no_acc["accuracy_loss"].isna().all() and no_acc["accuracy_loss_ci_low"].isna().all()
    assert (no_acc["n_pairs_accuracy"] == 0).all()
    assert no_acc["behavior_gain"].notna().all() and no_acc["p_good_trade"].notna().all()
    only_acc = tradeoff(scores[scores["metric"] == "accuracy"], n_boot=200)
    assert only_acc["behavior_gain"].isna().all() and only_acc["p_good_trade"].isna().all()
    assert only_acc["accuracy_loss"].notna().all()
    with pytest.raises(ValueError, match="none of the metrics"):
        tradeoff(scores.assign(metric="fluency"))
    renamed = scores.replace({"metric": {"behavior": "funny"}})
    got = tradeoff(renamed, behavior="funny", n_boot=200)
    assert got["behavior_gain"].notna().all()
