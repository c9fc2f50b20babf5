"""The quick summary table `make demo` prints: means and counts by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from steerstats.analysis.summary import summary_table


def test_summary_means_counts_and_order():
    scores = pd.DataFrame(
        {
            "model": ["m"] * 7,
            "method": ["control", "control", "caa", "caa", "caa", "control", "caa"],
            "strength": [math.nan, math.nan, 0.5, 0.5, 0.25, math.nan, 0.25],
            "metric": [
                "behavior",
                "behavior",
                "behavior",
                "behavior",
                "behavior",
                "ppl",
                "behavior",
            ],
            "value": [2.0, 4.0, 1.0, math.nan, 5.0, 7.5, 3.0],
        }
    )
    out = summary_table(scores)
    assert list(out.columns) == ["model", "method", "strength", "metric", "mean", "n", "n_missing"]
    # control first (first seen), its metrics in order of appearance; caa strengths ascending
    assert out[["method", "metric"]].values.tolist() == [
        ["control", "behavior"],
        ["control", "ppl"],
        ["caa", "behavior"],
        ["caa", "behavior"],
    ]
    assert out["strength"].iloc[2:].tolist() == [0.25, 0.5]
    assert out["mean"].tolist() == [3.0, 7.5, 4.0, 1.0]  # (2+4)/2, 7.5, (5+3)/2, 1 (NaN left out)
    assert out["n"].tolist() == [2, 1, 2, 1]
    assert out["n_missing"].tolist() == [0, 0, 0, 1]


def test_summary_names_a_missing_column():
    with pytest.raises(ValueError, match="column 'metric' not found"):
        summary_table(pd.DataFrame({"model": [], "method": [], "strength": [], "value": []}))
