"""The simulators: simulate_crossed's design, keys and known truth (example_scores: doctests)."""

from __future__ import annotations

import numpy as np
import pytest

from steerstats.schema import SCORE_COLUMNS
from steerstats.stats import simulate_crossed

NO_NOISE = dict(sd_query=0.0, sd_prompt=0.0, sd_query_method=0.0, sd_response=0.0,
                sd_repeat=0.0)


def test_without_noise_values_are_the_means_shifts_and_doses() -> None:
    sim = simulate_crossed({"control": 2.0, "steer": 3.0}, model={"a": 0.0, "b": 0.5},
                           strengths=[0.0, 2.0], slope=0.25, n_queries=2, n_topic=1,
                           n_common=2, n_samples=2, n_repeats=2, **NO_NOISE)
    assert list(sim.columns) == list(SCORE_COLUMNS)
    assert len(sim) == 2 * 2 * 2 * 2 * 3 * 2 * 2  # models, methods, strengths, queries, ...
    expected = (sim["method"].map({"control": 2.0, "steer": 3.0})
                + sim["model"].map({"a": 0.0, "b": 0.5}) + 0.25 * sim["strength"])
    np.testing.assert_allclose(sim["value"], expected, rtol=0, atol=1e-12)
    # Ordered by model, method, strength, query, prompt (topic first), sample, repeat.
    first = sim.iloc[:12]
    assert first["prompt_id"].tolist()[::4] == ["query-00/topic-00", "common-00", "common-01"]
    assert first["sample"].tolist()[:4] == [0, 0, 1, 1]
    assert first["repeat"].tolist()[:4] == [0, 1, 0, 1]


def test_keys_identify_responses_across_repeats_and_metrics() -> None:
    rng = np.random.default_rng(3)
    both = [simulate_crossed(n_queries=2, n_topic=0, n_common=3, n_samples=2, n_repeats=3,
                             metric=m, seed=rng) for m in ("behavior", "coherence")]
    sim = both[0]
    assert sim.groupby("key")["repeat"].nunique().eq(3).all()
    assert sim["key"].nunique() == 3 * 2 * 3 * 2  # methods x queries x prompts x samples
    assert (both[0]["key"] == both[1]["key"]).all()
    assert not np.allclose(both[0]["value"], both[1]["value"])  # independent draws


def test_per_query_slopes_and_discrete_scale() -> None:
    sim = simulate_crossed({"caa": 3.0}, strengths=[0.0, 1.0], slope=0.5, sd_slope=0.4,
                           n_queries=6, n_topic=0, n_common=1, n_repeats=1, seed=1,
                           **NO_NOISE)
    wide = sim.pivot_table(index="query_id", columns="strength", values="value")
    slopes = wide[1.0] - wide[0.0]
    assert slopes.std() > 0.1 and (wide[0.0] == 3.0).all()
    rounded = simulate_crossed(n_queries=3, n_topic=0, n_common=4, discrete=True, seed=2,
                               sd_response=3.0)
    assert set(rounded["value"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert rounded["value"].min() == 1.0 and rounded["value"].max() == 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_topic": 0, "n_common": 0}, "some prompts"),
        ({"means": {}}, "at least one method"),
        ({"model": {}}, "one model"),
        ({"strengths": [0.0, float("nan")]}, "strengths must be finite"),
    ],
)
def test_bad_designs_are_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_crossed(**kwargs)  # type: ignore[arg-type]


def test_default_stream_is_unchanged() -> None:
    # Pinned before simulate_crossed gained models, sweeps and samples (benchmarks/coverage.py
    # and its recorded results depend on this stream).
    sim = simulate_crossed(n_queries=4, n_topic=2, n_common=3, seed=0)
    assert sim["value"].iloc[:3].tolist() == pytest.approx([1.424596, 0.400013, 1.621870],
                                                           abs=1e-6)
