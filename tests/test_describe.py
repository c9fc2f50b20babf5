"""Descriptive tables: counts checked by hand on the small design in report_tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import report_tables

from steerstats.analysis import describe


@pytest.fixture(scope="module")
def tidy() -> tuple[pd.DataFrame, pd.DataFrame]:
    return report_tables.tidy()


def test_design_counts_failures_and_absent_cells(tidy) -> None:  # type: ignore[no-untyped-def]
    gens, scores = tidy
    # Drop one control response on m-small: that cell is then absent for control only.
    gone = (gens.method == "control") & (gens.model == "m-small") & (gens.prompt_id == "common-00")
    gone &= gens.query_id == "be-rude"
    table = describe.design_table(scores, gens[~gone])
    rows = table.set_index(["model", "method", "prompt_set"])
    row = rows.loc[("m-small", "control", "open")]
    assert row["n_absent"] == 1 and row["n_responses"] == 4 * 5 - 1
    caa = rows.loc[("m-large", "caa", "open")].set_index("strength")
    # 4 queries x 5 prompts at each of 2 strengths (floats, a row each); the strength-2
    # response to common-04 failed per query.
    assert list(caa.index) == [1.0, 2.0] and caa["n_responses"].tolist() == [20, 20]
    assert caa["n_failed"].tolist() == [0, 4]
    assert (caa["n_queries"] == 4).all() and (caa["n_prompts"] == 5).all()
    assert table["n_absent"].sum() == 1


def test_design_from_scores_alone(tidy) -> None:  # type: ignore[no-untyped-def]
    _, scores = tidy
    table = describe.design_table(scores)
    assert table["n_failed"].isna().all()
    caa = table.set_index(["model", "method", "prompt_set"]).loc[("m-large", "caa", "open")]
    caa = caa.set_index("strength")
    assert caa["n_responses"].tolist() == [20, 16]  # the 4 failed generations have no scores
    assert caa["n_absent"].tolist() == [0, 4]  # ... so those cells are absent at strength 2


def test_parse_failures_rates_and_reasons() -> None:
    scores = pd.DataFrame({
        "model": "m", "method": ["a", "a", "a", "a", "b"], "metric": "behavior",
        "value": [1.0, np.nan, np.nan, 3.0, np.nan],
        "reason": ["", "unparsed: no tag", "unparsed: no tag", "", None],
    })
    table = describe.parse_failures(scores).set_index("method")
    assert table.loc["a", "n_unparsed"] == 2 and table.loc["a", "rate"] == 0.5
    assert table.loc["a", "reasons"] == "unparsed: no tag (2)"
    assert table.loc["b", "reasons"] == "no reason recorded (1)" and table.loc["b", "rate"] == 1.0


def test_judging_table(tidy) -> None:  # type: ignore[no-untyped-def]
    _, scores = tidy
    table = describe.judging_table(scores).set_index("metric")
    assert table.loc["behavior", "n_repeats"] == 2 and table.loc["accuracy", "n_repeats"] == 1
    assert table.loc["behavior", "n_ratings"] == 2 * table.loc["behavior", "n_responses"]
    assert table.loc["accuracy", "n_missing"] == scores[
        (scores.metric == "accuracy")]["value"].isna().sum()
