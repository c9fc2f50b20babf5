"""One vocabulary for column roles: the same keywords everywhere, None for an absent role,
outputs under the caller's names, and as_scores for a table with other names."""

from __future__ import annotations

import pandas as pd
import pytest

from steerstats.stats import (
    as_scores,
    dose_response,
    mixed_model,
    paired_contrasts,
    reliability,
    simulate_crossed,
    summarize,
    tradeoff,
)

RENAME = {"model": "llm", "method": "arm", "metric": "measure", "value": "score",
          "query_id": "concept", "prompt_id": "item", "sample": "draw", "key": "gen"}


@pytest.fixture(scope="module")
def theirs() -> pd.DataFrame:
    sim = simulate_crossed(n_queries=6, n_topic=2, n_common=3, n_repeats=2, seed=1)
    return sim.rename(columns=RENAME).drop(columns="strength")


def test_same_keywords_everywhere_and_outputs_keep_the_callers_names(theirs) -> None:  # type: ignore[no-untyped-def]
    roles = dict(model="llm", method="arm", metric="measure", value="score",
                 clusters=("concept", "item"), sample="draw", strength=None)
    s = summarize(theirs, **roles)
    c = paired_contrasts(theirs, **roles)
    t = tradeoff(theirs, **roles)
    m = mixed_model(theirs, "behavior", generation="gen", **roles)
    for table in (s, c, t, m.emm, m.contrasts("control")):
        assert "arm" in table.columns and "method" not in table.columns
        assert "llm" in table.columns and "model" not in table.columns
    assert "measure" in s.columns and "measure" in c.columns
    r = reliability(theirs, metric="measure", value="score", targets="gen")
    assert "measure" in r.columns


def test_model_none_works(theirs) -> None:  # type: ignore[no-untyped-def]
    roles = dict(model=None, method="arm", metric="measure", value="score",
                 clusters=("concept", "item"), sample="draw", strength=None)
    for table in (summarize(theirs, **roles), paired_contrasts(theirs, **roles),
                  tradeoff(theirs, **roles)):
        assert "llm" not in table.columns and len(table)
    assert "llm" not in mixed_model(theirs, "behavior", **roles).emm


def test_as_scores_gives_the_tidy_names(theirs) -> None:  # type: ignore[no-untyped-def]
    tidy = as_scores(theirs, model="llm", method="arm", metric="measure", value="score",
                     query="concept", prompt="item", sample="draw", generation="gen",
                     strength=None)
    ref = summarize(theirs, model="llm", method="arm", metric="measure", value="score",
                    clusters=("concept", "item"), sample="draw", strength=None)
    got = summarize(tidy)
    pd.testing.assert_series_equal(got["mean"], ref["mean"])
    assert paired_contrasts(tidy)["diff"].notna().all()
    sweep = simulate_crossed(n_queries=4, n_topic=0, n_common=4, n_repeats=1,
                             strengths=[0.0, 1.0], seed=2).rename(columns=RENAME)
    dr = dose_response(sweep, coherence=None, model="llm", method="arm", metric="measure",
                       value="score", clusters=("concept", "item"), sample="draw")
    assert "measure" in dr.slopes.columns and "concept" in dr.slopes.columns
    with pytest.raises(ValueError, match="unknown role"):
        as_scores(theirs, colour="arm")
    with pytest.raises(ValueError, match="role 'method'"):
        as_scores(theirs.drop(columns="arm"))
