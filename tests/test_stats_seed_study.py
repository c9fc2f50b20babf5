"""A realistic check on the seed study's published rows (../shared/seed-study; see its README).

The directory sits in the shared folder beside the repository (see tests/_shared.py), or is
given by STEERSTATS_SEED_STUDY; the tests skip, saying so, when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _shared import shared_path
from scipy import stats as sps

from steerstats.stats import accuracy_model, paired_contrasts, summarize


def _seed_study() -> Path | None:
    env = os.environ.get("STEERSTATS_SEED_STUDY")
    if env:
        return Path(env) if (Path(env) / "results").is_dir() else None
    results = shared_path("seed-study", "results")
    return results.parent if results is not None and results.is_dir() else None


SEED = _seed_study()
pytestmark = pytest.mark.skipif(
    SEED is None,
    reason="seed-study data not found (expected ../shared/seed-study beside the repository, "
    "or set STEERSTATS_SEED_STUDY)",
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _tidy(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Seed-study rows to the tidy scores form; a behaviour of 0 is an unparsed judge answer."""
    base = pd.DataFrame(
        {
            "model": "llama-3.1-8b",
            "method": frame["steering_method"],
            "strength": np.nan,
            "query_id": frame["query"].map(_slug),
            "prompt_id": frame["user_prompt"].map(
                lambda t: hashlib.sha256(t.encode()).hexdigest()[:12]
            ),
            "sample": 0,
        }
    )
    parts = []
    for m in metrics:
        value = frame[m].astype(float).where(frame[m] != 0)
        parts.append(base.assign(metric=m, rater="gpt-4o-mini", repeat=0, value=value))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def open_scores() -> pd.DataFrame:
    assert SEED is not None
    raw = pd.read_csv(SEED / "results" / "open_prompts_llama-3.1-8b.csv")
    return _tidy(raw, ["behavior", "coherence"])


def test_open_prompts_summary(open_scores: pd.DataFrame) -> None:
    table = summarize(open_scores, n_boot=1000, seed=0)
    assert len(table) == 5 * 2
    ref = open_scores.groupby(["method", "metric"])["value"].agg(["mean", "count"])
    got = table.set_index(["method", "metric"])
    np.testing.assert_allclose(got["mean"], ref["mean"].loc[got.index], rtol=1e-12)
    assert got["n"].tolist() == ref["count"].loc[got.index].tolist()
    assert table[["ci_low", "ci_high"]].notna().all().all()


def test_open_prompts_contrasts_are_wider_than_the_seed_studys_row_tests(
    open_scores: pd.DataFrame,
) -> None:
    """The seed study ran unpaired t-tests on rows; with 10 queries our intervals are wider."""
    table = paired_contrasts(open_scores, "Control", n_boot=1000, seed=0)
    assert (table["df"] == 9).all()  # 10 queries, clustered
    assert (table["n_pairs"] <= 300).all() and (table["n_pairs"] >= 280).all()
    beh = open_scores[open_scores["metric"] == "behavior"]
    control = beh.loc[beh["method"] == "Control", "value"].dropna()
    for _, row in table[table["metric"] == "behavior"].iterrows():
        arm = beh.loc[beh["method"] == row["method"], "value"].dropna()
        ci = sps.ttest_ind(arm, control, equal_var=False).confidence_interval(0.95)
        assert row["ci_high"] - row["ci_low"] > ci.high - ci.low


def test_mmlu_partial_zero_behaviour_is_unparsed_and_accuracy_from_answer_tags() -> None:
    assert SEED is not None
    raw = pd.read_csv(SEED / "results" / "mmlu_llama-3.1-8b_partial.csv")
    scores = _tidy(raw, ["behavior"])
    table = summarize(scores, n_boot=500, seed=0).set_index("method")
    zeros = (raw["behavior"] == 0).groupby(raw["steering_method"]).sum()
    assert table["n_missing"].to_dict() == zeros.to_dict()
    assert table["n_missing"].sum() == 132  # the README's trap: 0 is not a score

    # Correctness from the <answer> tag against the answer key; no readable tag -> NaN. About
    # 60% of the snapshot's rows ask one of the 171 keyed questions; the rest (other question
    # samples for some queries) have no key here and are left out.
    design = json.loads((SEED / "design" / "steering_queries_mmlu.json").read_text())
    key = {
        p: a for q in design for p, a in zip(q["topic_specific_prompts"], q["answers"], strict=True)
    }
    raw = raw[raw["user_prompt"].isin(key)].reset_index(drop=True)
    assert len(raw) > 700
    given = raw["response"].str.extract(r"<answer>\s*([A-J])\s*</answer>", expand=False)
    truth = raw["user_prompt"].map(key)
    correct = (given == truth).astype(float).where(given.notna())
    acc = _tidy(raw.assign(accuracy=correct), ["accuracy"])
    acc["value"] = correct.to_numpy()  # _tidy reads 0 as unparsed; here 0 means wrong
    out = accuracy_model(acc, n_boot=500, seed=0)
    unparsed = out[out["outcome"] == "unparsed"].set_index("method")["estimate"]
    want = given.isna().groupby(raw["steering_method"]).mean()
    np.testing.assert_allclose(unparsed.loc[want.index], want)
    gee = out[out["estimator"] == "gee"].set_index("method")
    assert gee["estimate"].between(0, 1).all() and gee["ci_low"].notna().all()
