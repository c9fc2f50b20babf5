"""MMLU accuracy: GEE pinned to R geepack, bootstrap rows, unparsed answers as an outcome."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steerstats.stats import accuracy_model, example_scores

REFERENCE = Path(__file__).parent / "reference"

# From Rscript tests/reference/gee_accuracy.R (R 4, geepack 1.3.9): geeglm(value ~ 0 + group,
# family = binomial, id = question, corstr = "exchangeable") on gee_accuracy.csv.
# group: (logit estimate, robust SE, prob, 95% low, 95% high)
GEEPACK = {
    ("model-a", "control"): (0.74357803419, 0.1606163097, 0.6777777778, 0.6055813153, 0.7423808809),
    ("model-a", "prompt"): (0.55810007116, 0.1388705748, 0.6360128195, 0.5709966821, 0.6964144263),
    ("model-a", "steer"): (0.07188903189, 0.1426472792, 0.5179645219, 0.4482622264, 0.5869746256),
    ("model-b", "control"): (1.38078773915, 0.2099471671, 0.7991174848, 0.7249797222, 0.8572061707),
    ("model-b", "prompt"): (1.51381061703, 0.2375833066, 0.8196252536, 0.7404206228, 0.8786241556),
    ("model-b", "steer"): (0.96607218063, 0.1760801349, 0.7243359082, 0.6504371855, 0.7877110311),
}
GEEPACK_ALPHA = 0.02118685439
GEEPACK_N = {("model-a", "control"): 180, ("model-a", "prompt"): 176, ("model-a", "steer"): 160,
             ("model-b", "control"): 179, ("model-b", "prompt"): 172, ("model-b", "steer"): 158}


@pytest.fixture(scope="module")
def reference_data() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "gee_accuracy.csv").assign(metric="accuracy", sample=0)


@pytest.fixture(scope="module")
def reference_table(reference_data: pd.DataFrame) -> pd.DataFrame:
    return accuracy_model(reference_data, strength=None, n_boot=500, seed=0)


def test_gee_matches_geepack(reference_table: pd.DataFrame) -> None:
    gee = reference_table[reference_table["estimator"] == "gee"].set_index(["model", "method"])
    assert len(gee) == 6
    for key, (_, _, prob, low, high) in GEEPACK.items():
        row = gee.loc[key]
        # geepack estimates the exchangeable correlation by its own estimating equation
        # (0.02119) and statsmodels by Liang-Zeger moments (0.02107): probabilities and limits
        # agree to ~1e-5; the tolerance 1e-4 leaves room for platform differences only.
        assert row["estimate"] == pytest.approx(prob, abs=1e-4)
        assert row["ci_low"] == pytest.approx(low, abs=1e-4)
        assert row["ci_high"] == pytest.approx(high, abs=1e-4)
        assert row["n"] == GEEPACK_N[key]
    assert reference_table.attrs["gee_correlation"] == pytest.approx(GEEPACK_ALPHA, rel=0.02)


def test_table_layout_and_unparsed_outcome(
    reference_data: pd.DataFrame, reference_table: pd.DataFrame
) -> None:
    assert reference_table.columns.tolist() == [
        "model", "method", "outcome", "estimator", "n", "estimate", "ci_low", "ci_high"
    ]
    assert len(reference_table) == 6 * 3
    first = reference_table.iloc[:3]
    assert first[["outcome", "estimator"]].values.tolist() == [
        ["accuracy", "gee"], ["accuracy", "bootstrap"], ["unparsed", "bootstrap"]
    ]
    boot = reference_table[reference_table["estimator"] == "bootstrap"]
    acc = boot[boot["outcome"] == "accuracy"].set_index(["model", "method"])
    bad = boot[boot["outcome"] == "unparsed"].set_index(["model", "method"])
    # Reference: plain pandas. Unparsed answers are left out of accuracy, not scored wrong.
    grouped = reference_data.groupby(["model", "method"])["value"]
    np.testing.assert_allclose(acc["estimate"], grouped.mean().loc[acc.index])
    np.testing.assert_allclose(bad["estimate"], grouped.apply(lambda v: v.isna().mean())
                               .loc[bad.index])
    assert (bad["n"] == 180).all()
    assert (acc["n"] + bad["estimate"] * bad["n"]).round().eq(180).all()
    assert ((boot["ci_low"] >= 0) & (boot["ci_high"] <= 1)).all()
    assert (boot["ci_low"] <= boot["estimate"]).all()
    assert (boot["estimate"] <= boot["ci_high"]).all()


def test_bootstrap_interval_is_wider_than_question_only_gee(reference_table: pd.DataFrame) -> None:
    """The bootstrap also resamples queries (6 here), so it is the more cautious interval."""
    t = reference_table[reference_table["outcome"] == "accuracy"]
    width = (t["ci_high"] - t["ci_low"]).to_numpy().reshape(-1, 2)  # (gee, bootstrap) pairs
    assert (width[:, 1] > width[:, 0]).all()


def test_all_correct_group_and_empty_group() -> None:
    scores = example_scores(seed=0, n_mmlu=12)
    acc = scores["metric"] == "accuracy"
    perfect = acc & (scores["model"] == "model-b") & (scores["method"] == "control")
    scores.loc[perfect & scores["value"].notna(), "value"] = 1.0
    silent = acc & (scores["model"] == "model-a") & (scores["method"] == "prompt")
    scores.loc[silent, "value"] = np.nan
    with pytest.warns(RuntimeWarning, match="all parsed answers correct or all wrong"):
        table = accuracy_model(scores, n_boot=300)
    t = table.set_index(["model", "method", "outcome", "estimator"])
    row = t.loc[("model-b", "control", "accuracy", "gee")]
    assert row["estimate"] == 1.0 and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
    empty = t.loc[("model-a", "prompt", "accuracy", "gee")]
    assert empty["n"] == 0 and np.isnan(empty["estimate"])
    assert t.loc[("model-a", "prompt", "unparsed", "bootstrap"), "estimate"] == 1.0
    others = t.xs(("accuracy", "gee"), level=("outcome", "estimator")).drop(
        index=[("model-b", "control"), ("model-a", "prompt")]
    )
    assert others["ci_low"].notna().all()


def test_input_errors() -> None:
    scores = example_scores(seed=0)
    with pytest.raises(ValueError, match="no rows with 'metric' == 'correct'"):
        accuracy_model(scores, outcome="correct")
    bad = scores.copy()
    bad.loc[bad["metric"] == "accuracy", "value"] = 0.5
    with pytest.raises(ValueError, match="must be 1 \\(correct\\), 0 \\(wrong\\) or NaN"):
        accuracy_model(bad)
    with pytest.raises(ValueError, match="question="):
        accuracy_model(scores, question="question_id")
    with pytest.raises(ValueError, match="n_boot"):
        accuracy_model(scores, n_boot=0)


def test_no_convergence_warning_on_regular_data() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = accuracy_model(example_scores(seed=2, n_mmlu=15), n_boot=200)
    assert table["estimate"].notna().all()
