"""Chart builders: they draw the columns they are given and refuse tables without them."""

from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd
import pytest
import report_tables

from steerstats import plots


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return report_tables.tables()


def _data_values(chart: plots.AnyChart) -> list[dict[str, object]]:
    spec = chart.to_dict()
    return next(iter(spec["datasets"].values()))


BUILDERS = [
    (plots.means_forest, "summary"),
    (plots.contrasts_forest, "contrasts"),
    (plots.variance_components_bars, "variance_components"),
    (plots.reliability_forest, "reliability"),
    (plots.tradeoff_scatter, "tradeoff"),
    (plots.dose_response_curves, "dose_curves"),
    (plots.parse_failure_bars, "parse_failures"),
]


@pytest.mark.parametrize(("builder", "name"), BUILDERS, ids=[n for _, n in BUILDERS])
def test_builders_draw_the_table_unchanged(builder, name, tables) -> None:  # type: ignore[no-untyped-def]
    table = tables[name]
    before = table.copy()
    chart = builder(table)
    assert isinstance(chart, alt.TopLevelMixin)
    spec = json.loads(chart.to_json())  # validates against the Vega-Lite schema
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    pd.testing.assert_frame_equal(table, before)  # the caller's table is not modified
    drawn = pd.DataFrame(_data_values(chart))
    for column in ("ci_low", "ci_high"):
        if column in table:
            np.testing.assert_allclose(np.sort(drawn[column].to_numpy(float)),
                                       np.sort(table[column].to_numpy(float)))


@pytest.mark.parametrize(("builder", "name"), BUILDERS, ids=[n for _, n in BUILDERS])
def test_missing_column_is_named(builder, name, tables) -> None:  # type: ignore[no-untyped-def]
    table = tables[name].drop(columns=["model"] if "model" in tables[name] else ["metric"])
    with pytest.raises(ValueError, match=r"column\(s\) '(model|metric)' not found"):
        builder(table)


def test_contrast_marks_follow_holm_p(tables) -> None:  # type: ignore[no-untyped-def]
    contrasts = tables["contrasts"].copy()
    contrasts["p_holm"] = [0.0004, 0.2] + [0.5] * (len(contrasts) - 2)
    drawn = pd.DataFrame(_data_values(plots.contrasts_forest(contrasts)))
    assert drawn["holm"].tolist()[:2] == ["p_holm < 0.001", "p_holm = 0.200"]
    assert drawn["significant"].tolist() == [True] + [False] * (len(contrasts) - 1)


def test_tradeoff_drops_a_cost_without_values(tables) -> None:  # type: ignore[no-untyped-def]
    both = plots.tradeoff_scatter(tables["tradeoff"])
    assert isinstance(both, alt.HConcatChart) and len(both.hconcat) == 2
    no_acc = tables["tradeoff"].assign(accuracy_loss=np.nan)
    assert isinstance(plots.tradeoff_scatter(no_acc), alt.LayerChart)
    with pytest.raises(ValueError, match="none of the cost columns"):
        plots.tradeoff_scatter(no_acc.assign(coherence_loss=np.nan))


def test_empty_table_is_an_error() -> None:
    empty = pd.DataFrame(columns=["model", "method", "metric", "rate"])
    with pytest.raises(ValueError, match="empty"):
        plots.parse_failure_bars(empty)


def test_tradeoff_figure_labels_do_not_overlap() -> None:
    """Crowded points (the demo's arms near the origin) get labels that overlap neither each
    other nor a point."""
    rng = np.random.default_rng(3)
    points = pd.DataFrame({"x": rng.normal(0, 0.05, 12), "y": rng.normal(0, 0.05, 12),
                           "label": [f"caa @ {i}" for i in range(12)]})
    domain = (-1.0, 1.0)
    placed = plots.place_labels(points, "x", "y", "label", width=450, height=340,
                                x_domain=domain, y_domain=domain)

    def px(vx: float, vy: float) -> tuple[float, float]:
        return (vx + 1) / 2 * 450, 340 - (vy + 1) / 2 * 340

    boxes = []
    for (_, p), (_, q) in zip(points.iterrows(), placed.iterrows(), strict=True):
        left, mid = px(q["label_x"], q["label_y"])
        boxes.append((left, mid - 6.5, left + 6.0 * len(p["label"]) + 4, mid + 6.5))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
        for _, p in points.iterrows():
            cx, cy = px(p["x"], p["y"])
            assert not (a[0] < cx + 6 and cx - 6 < a[2] and a[1] < cy + 6 and cy - 6 < a[3])


def test_tradeoff_figure_without_any_cost_draws_the_gain(tables) -> None:  # type: ignore[no-untyped-def]
    tr = tables["tradeoff"].assign(coherence_loss=np.nan, accuracy_loss=np.nan,
                                   label=lambda t: t["method"])
    chart = plots.tradeoff_figure(tr, costs=[("coherence_loss", "coherence loss"),
                                             ("accuracy_loss", "accuracy loss")])
    json.loads(chart.to_json())


def test_reliability_whiskers_stay_inside_the_plot(tables) -> None:  # type: ignore[no-untyped-def]
    """The reliability axis is fixed at [-0.2, 1]; an interval beyond it is clipped rather than
    drawn across the axis labels."""
    spec = plots.reliability_forest(tables["reliability"]).to_dict()
    layers = spec["spec"]["layer"]
    rules = [layer["mark"] for layer in layers if layer["mark"]["type"] == "rule"]
    assert rules and all(mark.get("clip") is True for mark in rules)
