"""Altair chart builders for the analysis tables (as pingouin's plots return an ``ax``).

Each builder takes a table produced by ``steerstats.stats`` (or
``steerstats.analysis.describe``), checks the columns it draws, and returns an Altair chart.
Nothing here computes a statistic: estimates, intervals, p-values and Pareto flags come from
the table; the builders only arrange them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import altair as alt
import pandas as pd

__all__ = [
    "AnyChart",
    "contrasts_forest",
    "decision_study_curve",
    "dose_response_curves",
    "means_forest",
    "parse_failure_bars",
    "reliability_forest",
    "tradeoff_scatter",
    "variance_components_bars",
]

AnyChart = alt.Chart | alt.LayerChart | alt.FacetChart | alt.HConcatChart | alt.VConcatChart

_PANEL_WIDTH = 360
_ROW_HEIGHT = 16
# A band scale on the categorical axis lets yOffset place one row per model inside a category.
_BAND = alt.Scale(type="band", paddingInner=0.2)
_HEADER = alt.Header(labelOrient="top", labelAnchor="start", labelFontWeight="bold",
                     labelFontSize=12)


def _model_colour(legend: bool = True) -> alt.Color:
    """Models by colour, with the legend below the chart (or none)."""
    return alt.Color("model:N", legend=alt.Legend(orient="bottom") if legend else None)


def _zero(axis: str) -> alt.Chart:
    """A dashed reference line at 0 across ``axis`` ("x" or "y")."""
    return alt.Chart().mark_rule(color="#888", strokeDash=[3, 3]).encode(**{axis: alt.datum(0)})


def _ci_rule(base: alt.Chart, title: str, scale: alt.Scale | None = None) -> alt.Chart:
    """The ci_low-ci_high interval of each row as a horizontal rule, clipped to the plot so a
    whisker beyond a fixed domain never runs across the axis labels."""
    x = alt.X("ci_low:Q", title=title, scale=alt.Undefined if scale is None else scale)
    return base.mark_rule(clip=True).encode(x=x, x2="ci_high:Q")


def _metric_rows(
    layers: Sequence[alt.Chart], data: pd.DataFrame, title: str | alt.TitleParams,
    **resolve: Literal["independent", "shared"],
) -> AnyChart:
    """``layers`` drawn from ``data`` in one panel per metric, stacked, a row per category."""
    return (
        alt.layer(*layers, data=data)
        .properties(width=_PANEL_WIDTH, height=alt.Step(_ROW_HEIGHT))
        .facet(row=alt.Row("metric:N", title=None, header=_HEADER))
        .resolve_scale(**resolve)
        .properties(title=title)
    )


def _check(table: pd.DataFrame, columns: Sequence[str], builder: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{builder}() needs a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{builder}(): column(s) {', '.join(map(repr, missing))} not found "
            f"(present: {', '.join(map(str, table.columns))}); pass the table it documents "
            "or rename the columns"
        )
    if table.empty:
        raise ValueError(f"{builder}(): the table is empty; there is nothing to draw")
    return table.copy()


def means_forest(
    summary: pd.DataFrame,
    *,
    estimate: str = "mean",
    title: str = "Means with 95% CIs",
) -> AnyChart:
    """Forest plot of per model x method x metric means with their intervals.

    One panel per metric (own x scale: 1-5 ratings and 0-1 accuracy differ), methods on the
    y axis, models by colour. Columns: model, method, metric, ``estimate``, ci_low, ci_high.
    """
    data = _check(summary, ["model", "method", "metric", estimate, "ci_low", "ci_high"],
                  "means_forest")
    base = alt.Chart().encode(
        y=alt.Y("method:N", title=None, scale=_BAND),
        yOffset=alt.YOffset("model:N"),
        color=_model_colour(),
    )
    rules = _ci_rule(base, "mean (95% CI)", alt.Scale(zero=False))
    points = base.mark_point(filled=True, size=50).encode(
        x=f"{estimate}:Q",
        tooltip=["model", "method", "metric", estimate, "ci_low", "ci_high"],
    )
    return _metric_rows([rules, points], data, title, x="independent", y="independent")


def contrasts_forest(
    contrasts: pd.DataFrame,
    *,
    estimate: str = "diff",
    p_adjusted: str = "p_holm",
    alpha: float = 0.05,
    title: str = "Paired differences from the baseline (95% CIs)",
) -> AnyChart:
    """Forest plot of paired contrasts, marking those with Holm-adjusted p below ``alpha``.

    Filled points: adjusted p < ``alpha``; hollow: not. The adjusted p is printed beside each
    interval. Columns: model, metric, method, baseline, ``estimate``, ci_low, ci_high,
    ``p_adjusted``.
    """
    data = _check(
        contrasts,
        ["model", "metric", "method", "baseline", estimate, "ci_low", "ci_high", p_adjusted],
        "contrasts_forest",
    )
    data["comparison"] = data["method"].astype(str) + " − " + data["baseline"].astype(str)
    data["holm"] = [
        "p_holm < 0.001" if p < 0.001 else f"p_holm = {p:.3f}" for p in data[p_adjusted]
    ]
    data["significant"] = data[p_adjusted] < alpha
    base = alt.Chart().encode(
        y=alt.Y("comparison:N", title=None, scale=_BAND),
        yOffset=alt.YOffset("model:N"),
        color=_model_colour(),
    )
    rules = _ci_rule(base, "difference (95% CI)")
    points = base.mark_point(size=60, strokeWidth=2).encode(
        x=f"{estimate}:Q",
        fill=alt.condition("datum.significant", _model_colour(legend=False),
                            alt.value("white")),
        tooltip=["model", "metric", "comparison", estimate, "ci_low", "ci_high", p_adjusted],
    )
    labels = base.mark_text(align="left", dx=6, fontSize=9, color="#333").encode(
        x="ci_high:Q", text="holm:N"
    )
    subtitle = f"filled: Holm-adjusted p < {alpha}; hollow: not"
    return _metric_rows([_zero("x"), rules, points, labels], data,
                        alt.TitleParams(title, subtitle=subtitle), x="independent",
                        y="independent")


def variance_components_bars(
    components: pd.DataFrame,
    *,
    variance: str = "variance",
    title: str = "Variance components",
) -> AnyChart:
    """Bars of each random-effect variance (query, prompt, query:method, residual) per metric.

    Columns: metric, group, ``variance``; a ``model`` column, if present, colours the bars.
    """
    data = _check(components, ["metric", "group", variance], "variance_components_bars")
    encode: dict[str, object] = {
        "y": alt.Y("group:N", title=None, sort=None),
        "x": alt.X(f"{variance}:Q", title="variance"),
        "tooltip": [c for c in ["model", "metric", "group", variance] if c in data],
    }
    if "model" in data:
        encode["color"] = _model_colour()
        encode["yOffset"] = alt.YOffset("model:N")
    bars = alt.Chart().mark_bar().encode(**encode)  # type: ignore[arg-type]
    return _metric_rows([bars], data, title, x="independent")


def reliability_forest(
    reliability: pd.DataFrame,
    *,
    estimate: str = "estimate",
    title: str = "Judge reliability (95% CIs)",
) -> AnyChart:
    """Each reliability statistic (ICCs, Krippendorff's alphas, agreement) with its interval.

    Columns: metric, statistic, ``estimate``, ci_low, ci_high; a ``method`` column, if present,
    colours the points (reliability per method).
    """
    data = _check(reliability, ["metric", "statistic", estimate, "ci_low", "ci_high"],
                  "reliability_forest")
    colour = "method" if "method" in data and data["method"].notna().any() else None
    enc: dict[str, object] = {"y": alt.Y("statistic:N", title=None, sort=None, scale=_BAND)}
    if colour:
        data[colour] = data[colour].fillna("all methods")
        enc["color"] = alt.Color(f"{colour}:N", legend=alt.Legend(orient="bottom"))
        enc["yOffset"] = alt.YOffset(f"{colour}:N")
    base = alt.Chart().encode(**enc)  # type: ignore[arg-type]
    rules = _ci_rule(base, "estimate (95% CI)", alt.Scale(domain=[-0.2, 1]))
    points = base.mark_point(filled=True, size=50, clip=True).encode(
        x=f"{estimate}:Q",
        tooltip=[c for c in ["metric", "method", "statistic", estimate, "ci_low", "ci_high"]
                 if c in data],
    )
    return _metric_rows([rules, points], data, title, y="independent")


def _tradeoff_panel(
    data: pd.DataFrame, gain: str, cost: str, cost_title: str, pareto: str
) -> AnyChart:
    base = alt.Chart(data).encode(color=_model_colour())
    xerr = base.mark_rule(opacity=0.6).encode(
        x=alt.X(f"{cost}_ci_low:Q", title=cost_title), x2=f"{cost}_ci_high:Q",
        y=alt.Y(f"{gain}:Q", title="behaviour gain"),
    )
    yerr = base.mark_rule(opacity=0.6).encode(
        x=f"{cost}:Q", y=f"{gain}_ci_low:Q", y2=f"{gain}_ci_high:Q",
    )
    points = base.mark_point(strokeWidth=2).encode(
        x=f"{cost}:Q",
        y=f"{gain}:Q",
        size=alt.condition(f"datum['{pareto}']", alt.value(140), alt.value(50)),
        fill=alt.condition(f"datum['{pareto}']", _model_colour(legend=False),
                            alt.value("white")),
        tooltip=["model", "method", gain, f"{gain}_ci_low", f"{gain}_ci_high", cost,
                 f"{cost}_ci_low", f"{cost}_ci_high", pareto],
    )
    labels = base.mark_text(align="left", dx=8, dy=-6, fontSize=10).encode(
        x=f"{cost}:Q", y=f"{gain}:Q", text="method:N"
    )
    return alt.layer(_zero("x"), _zero("y"), xerr, yerr, points, labels,
                     width=_PANEL_WIDTH, height=280)


def tradeoff_scatter(
    tradeoff: pd.DataFrame,
    *,
    gain: str = "behavior_gain",
    costs: Sequence[tuple[str, str]] = (
        ("coherence_loss", "coherence loss"),
        ("accuracy_loss", "accuracy loss"),
    ),
    pareto: str = "pareto",
    title: str = "Behaviour gain against its costs (joint bootstrap 95% CIs)",
) -> AnyChart:
    """Behaviour gain against each cost with both intervals; Pareto-front methods filled.

    Columns: model, method, ``gain`` and each cost, each with ``<name>_ci_low`` and
    ``<name>_ci_high``, and the boolean ``pareto``. A cost whose column is absent or all
    missing (no MMLU data, say) gets no panel.
    """
    needed = ["model", "method", pareto, gain, f"{gain}_ci_low", f"{gain}_ci_high"]
    data = _check(tradeoff, needed, "tradeoff_scatter")
    data[pareto] = data[pareto].astype(bool)
    panels = []
    for cost, cost_title in costs:
        cols = [cost, f"{cost}_ci_low", f"{cost}_ci_high"]
        if not all(c in data for c in cols):
            continue
        sub = data[data[cost].notna() & data[gain].notna()]
        if sub.empty:
            continue
        panels.append(_tradeoff_panel(sub, gain, cost, cost_title, pareto))
    if not panels:
        names = ", ".join(c for c, _ in costs)
        raise ValueError(f"tradeoff_scatter(): none of the cost columns ({names}) has values")
    chart = panels[0] if len(panels) == 1 else alt.hconcat(*panels)
    return chart.properties(title=alt.TitleParams(
        title, subtitle="large filled points: on the Pareto front; hollow: dominated"))


def dose_response_curves(
    curves: pd.DataFrame,
    *,
    x: str = "strength",
    estimate: str = "mean",
    by: str | None = None,
    title: str = "Dose-response: metric against steering strength (95% CIs)",
) -> AnyChart:
    """Metric against steering strength: a line and interval band per method (or per ``by``).

    Columns: model, method, metric, ``x``, ``estimate``, ci_low, ci_high. With ``by`` (e.g.
    ``"query_id"``), lines are coloured by that column and panels split by method.
    """
    needed = ["model", "method", "metric", x, estimate, "ci_low", "ci_high"]
    data = _check(curves, needed + ([by] if by else []), "dose_response_curves")
    colour = by or "method"
    base = alt.Chart().encode(
        x=alt.X(f"{x}:Q", title="steering strength"),
        color=alt.Color(f"{colour}:N", legend=alt.Legend(orient="bottom", columns=4)),
    )
    band = base.mark_area(opacity=0.15).encode(y=alt.Y("ci_low:Q", title="mean (95% CI)"),
                                                y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y=f"{estimate}:Q",
        tooltip=[c for c in ["model", "method", by, "metric", x, estimate, "ci_low", "ci_high"]
                 if c],
    )
    layered = alt.layer(band, line, data=data).properties(width=260, height=180)
    column = "method" if by else "model"
    return (
        layered.facet(
            row=alt.Row("metric:N", title=None, header=_HEADER),
            column=alt.Column(f"{column}:N", title=None),
        )
        .resolve_scale(y="independent")
        .properties(title=title)
    )


def parse_failure_bars(
    failures: pd.DataFrame,
    *,
    rate: str = "rate",
    title: str = "Share of ratings that could not be parsed",
) -> AnyChart:
    """Bars of the unparsed share per model x method, one panel per metric.

    Columns: model, method, metric, ``rate`` (0-1); n_unparsed and n_ratings, if present, go
    into the tooltip.
    """
    data = _check(failures, ["model", "method", "metric", rate], "parse_failure_bars")
    tooltip = [c for c in ["model", "method", "metric", "n_unparsed", "n_ratings", rate]
               if c in data]
    bars = alt.Chart().mark_bar().encode(
        y=alt.Y("method:N", title=None, scale=_BAND),
        yOffset=alt.YOffset("model:N"),
        x=alt.X(f"{rate}:Q", title="unparsed share", axis=alt.Axis(format="%"),
                scale=alt.Scale(domainMin=0)),
        color=_model_colour(),
        tooltip=tooltip,
    )
    return _metric_rows([bars], data, title, x="independent")


# ------------------------------------------------------------------ the report's lead figures

_WIDE = 1000


def _extent(values: Sequence[float], pad: float = 0.08) -> tuple[float, float]:
    """A domain covering ``values`` and 0, padded on both sides."""
    finite = [float(v) for v in values if pd.notna(v)] + [0.0]
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return lo - pad * span, hi + pad * span


def place_labels(
    points: pd.DataFrame, x: str, y: str, text: str, *, width: float, height: float,
    x_domain: tuple[float, float], y_domain: tuple[float, float], char_px: float = 6.0,
) -> pd.DataFrame:
    """Positions for the ``text`` label of each point that overlap no other label or point.

    Greedy, in pixel space: each label tries positions around its point, nearest first, and
    takes the first free one inside the plot. Returns ``label_x``, ``label_y`` (data units, the
    label's left end, vertically centred) and ``moved`` (True when a leader line helps).
    """
    def px(vx: float, vy: float) -> tuple[float, float]:
        return ((vx - x_domain[0]) / (x_domain[1] - x_domain[0]) * width,
                height - (vy - y_domain[0]) / (y_domain[1] - y_domain[0]) * height)

    def data(ix: float, iy: float) -> tuple[float, float]:
        return (x_domain[0] + ix / width * (x_domain[1] - x_domain[0]),
                y_domain[0] + (height - iy) / height * (y_domain[1] - y_domain[0]))

    def hit(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    centres = [px(float(vx), float(vy)) for vx, vy in zip(points[x], points[y], strict=True)]
    taken: list[tuple[float, float, float, float]] = [
        (cx - 6, cy - 6, cx + 6, cy + 6) for cx, cy in centres]
    order = sorted(range(len(points)), key=lambda i: centres[i][1])
    out_x, out_y, moved = [0.0] * len(points), [0.0] * len(points), [False] * len(points)
    for i in order:
        cx, cy = centres[i]
        w, h = char_px * len(str(points[text].iloc[i])) + 4, 13.0
        best = None
        for step in range(1, 12):
            d = 8.0 * step
            for dx, dy in ((d, -d / 2), (d, d / 2), (-d - w, -d / 2), (-d - w, d / 2),
                           (-w / 2, -d - h / 2), (-w / 2, d + h / 2), (d, 0.0), (-d - w, 0.0)):
                box = (cx + dx, cy + dy - h / 2, cx + dx + w, cy + dy + h / 2)
                inside = box[0] >= 0 and box[2] <= width + 40 and box[1] >= -4 and \
                    box[3] <= height + 4
                if inside and not any(hit(box, t) for t in taken):
                    best = (box, step > 1)
                    break
            if best:
                break
        if best is None:  # crowded: keep the nearest spot; the table lists every arm
            best = ((cx + 8, cy - 6.5, cx + 8 + w, cy + 6.5), False)
        box, far = best
        taken.append(box)
        lx, ly = data(box[0], (box[1] + box[3]) / 2)
        out_x[i], out_y[i], moved[i] = lx, ly, far
    return pd.DataFrame({"label_x": out_x, "label_y": out_y, "moved": moved},
                        index=points.index)


def tradeoff_figure(
    tradeoff: pd.DataFrame,
    *,
    costs: Sequence[tuple[str, str]],
    gain: str = "behavior_gain",
    pareto: str = "pareto",
    baseline: str = "baseline",
    width: int = _WIDE,
) -> AnyChart:
    """The report's lead figure: behaviour gained against each cost, one panel per cost.

    One point per arm (``label`` column: the arm's name, e.g. "caa @ 4"), intervals both ways,
    the baseline at the origin, Pareto-front arms filled; labels placed so they do not overlap.
    Columns: model, label, ``gain`` and each cost with ``_ci_low``/``_ci_high``, ``pareto``.
    Costs without values are left out; with none, behaviour gain is drawn alone per arm.
    """
    data = _check(tradeoff, ["model", "label", pareto, gain, f"{gain}_ci_low",
                             f"{gain}_ci_high"], "tradeoff_figure")
    data[pareto] = data[pareto].fillna(False).astype(bool)
    present = [(c, t) for c, t in costs
               if all(k in data for k in (c, f"{c}_ci_low", f"{c}_ci_high"))
               and (data[c].notna() & data[gain].notna()).any()]
    colour = _model_colour()
    if not present:
        rows = data[data[gain].notna()]
        if rows.empty:
            raise ValueError("tradeoff_figure(): no arm has a behaviour gain to draw")
        base = alt.Chart(rows).encode(y=alt.Y("label:N", title=None, sort="-x"),
                                      yOffset=alt.YOffset("model:N"), color=colour)
        return alt.layer(
            _zero("x"),
            base.mark_rule().encode(x=alt.X(f"{gain}_ci_low:Q", title="behaviour gain"),
                                    x2=f"{gain}_ci_high:Q"),
            base.mark_point(filled=True, size=60).encode(x=f"{gain}:Q"),
        ).properties(width=width, height=alt.Step(18))
    panel_w = int((width - 60 * (len(present) - 1)) / len(present))
    height = 340
    panels = []
    for cost, cost_title in present:
        sub = data[data[cost].notna() & data[gain].notna()].copy()
        origin = pd.DataFrame({"model": [""], "label": [f"{data[baseline].iloc[0]} (baseline)"
                                                       if baseline in data else "baseline"],
                               cost: [0.0], gain: [0.0]})
        xd = _extent([*sub[f"{cost}_ci_low"], *sub[f"{cost}_ci_high"]])
        yd = _extent([*sub[f"{gain}_ci_low"], *sub[f"{gain}_ci_high"]])
        everyone = pd.concat([sub[["model", "label", cost, gain]], origin], ignore_index=True)
        placed = place_labels(everyone, cost, gain, "label", width=panel_w, height=height,
                              x_domain=xd, y_domain=yd)
        everyone = everyone.join(placed)
        xs = alt.Scale(domain=list(xd), nice=False, zero=False)
        ys = alt.Scale(domain=list(yd), nice=False, zero=False)
        base = alt.Chart(sub).encode(color=colour)
        xerr = base.mark_rule(opacity=0.55).encode(
            x=alt.X(f"{cost}_ci_low:Q", title=f"{cost_title} (positive = worse)", scale=xs),
            x2=f"{cost}_ci_high:Q", y=alt.Y(f"{gain}:Q", title="behaviour gain", scale=ys))
        yerr = base.mark_rule(opacity=0.55).encode(
            x=alt.X(f"{cost}:Q", scale=xs), y=alt.Y(f"{gain}_ci_low:Q", scale=ys),
            y2=f"{gain}_ci_high:Q")
        points = base.mark_point(strokeWidth=2).encode(
            x=alt.X(f"{cost}:Q", scale=xs), y=alt.Y(f"{gain}:Q", scale=ys),
            size=alt.condition(f"datum['{pareto}']", alt.value(150), alt.value(60)),
            fill=alt.condition(f"datum['{pareto}']", _model_colour(legend=False),
                               alt.value("white")))
        origin_mark = alt.Chart(origin).mark_square(size=90, color="#222").encode(
            x=alt.X(f"{cost}:Q", scale=xs), y=alt.Y(f"{gain}:Q", scale=ys))
        lab = alt.Chart(everyone)
        leaders = lab.transform_filter("datum.moved").mark_rule(
            color="#999", strokeWidth=0.7).encode(
            x=alt.X(f"{cost}:Q", scale=xs), y=alt.Y(f"{gain}:Q", scale=ys),
            x2="label_x:Q", y2="label_y:Q")
        texts = lab.mark_text(align="left", baseline="middle", fontSize=11, limit=300,
                              color="#222").encode(
            x=alt.X("label_x:Q", scale=xs), y=alt.Y("label_y:Q", scale=ys), text="label:N")
        panels.append(alt.layer(_zero("x"), _zero("y"), xerr, yerr, leaders, points,
                                origin_mark, texts).properties(width=panel_w, height=height))
    chart = panels[0] if len(panels) == 1 else alt.hconcat(*panels, spacing=50)
    return chart.resolve_scale(color="shared")


def dose_panel(curves: pd.DataFrame, *, width: int = _WIDE) -> AnyChart:
    """Each metric against steering strength, one panel per model (and per scale: 1-5 ratings
    and 0-1 accuracy apart), lines per metric (dash per method), intervals as bands.

    Columns: model, method, metric, strength, mean, ci_low, ci_high; a strength-0 row per
    metric is the baseline's mean (the caller adds it).
    """
    data = _check(curves, ["model", "method", "metric", "strength", "mean", "ci_low",
                           "ci_high"], "dose_panel")
    data["scale"] = ["accuracy (0-1)" if m == "accuracy" else "ratings" for m in data["metric"]]
    models = data["model"].nunique()
    metrics = sorted(data["metric"].astype(str).unique())
    palette = {"behavior": "#1f77b4", "coherence": "#d62728", "accuracy": "#2ca02c"}
    others = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    colours = [palette.get(m) or others[i % len(others)] for i, m in enumerate(metrics)]
    several = data["method"].nunique() > 1
    panel_w = max(220, int((width - 40 * (models - 1)) / models))
    base = alt.Chart().encode(
        x=alt.X("strength:Q", title="steering strength (0 = baseline)"),
        color=alt.Color("metric:N", scale=alt.Scale(domain=metrics, range=colours),
                        legend=alt.Legend(orient="bottom")),
        detail="method:N",
    )
    band = base.mark_area(opacity=0.15).encode(y=alt.Y("ci_low:Q", title="mean (95% CI)"),
                                                y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y="mean:Q",
        strokeDash=alt.StrokeDash("method:N", legend=alt.Legend(orient="bottom")
                                  if several else None),
    )
    return (
        alt.layer(band, line, data=data).properties(width=panel_w, height=200)
        .facet(column=alt.Column("model:N", title=None, header=_HEADER),
               row=alt.Row("scale:N", title=None, header=_HEADER,
                           sort=["ratings", "accuracy (0-1)"]))
        .resolve_scale(y="independent")
    )


def query_heatmap(effects: pd.DataFrame, *, value: str = "diff") -> AnyChart:
    """Paired effect per query (rows) x arm (columns), one panel per model; rows and columns
    sorted by their mean effect, the value printed in each cell.

    Columns: model, arm, query, ``value``.
    """
    data = _check(effects, ["model", "arm", "query", value], "query_heatmap")
    rows = data.groupby("query")[value].mean().sort_values(ascending=False).index.tolist()
    cols = data.groupby("arm")[value].mean().sort_values(ascending=False).index.tolist()
    bound = float(data[value].abs().max()) if data[value].notna().any() else 1.0
    bound = bound or 1.0
    data["cell"] = [("" if pd.isna(v) else f"{v:+.2f}") for v in data[value]]
    base = alt.Chart().encode(
        x=alt.X("arm:N", sort=cols, title=None, axis=alt.Axis(labelAngle=-30, labelLimit=160)),
        y=alt.Y("query:N", sort=rows, title=None, axis=alt.Axis(labelLimit=220)),
    )
    cells = base.mark_rect().encode(color=alt.Color(
        f"{value}:Q", title="paired effect",
        scale=alt.Scale(scheme="redblue", domain=[-bound, bound]),
        legend=alt.Legend(orient="right")))
    text = base.mark_text(fontSize=10).encode(text="cell:N")
    return (alt.layer(cells, text, data=data)
            .properties(width=alt.Step(64), height=alt.Step(20))
            .facet(column=alt.Column("model:N", title=None, header=_HEADER)))


# Dash patterns of the decision-study lines, by repeats per judge in increasing order.
_DASHES = ([1, 0], [8, 4], [2, 3], [10, 3, 2, 3], [4, 4])
DASH_NAMES = ("solid", "dashed", "dotted", "dash-dotted", "short-dashed")


def decision_study_curve(grid: pd.DataFrame, *, target: float = 0.8) -> AnyChart:
    """G and Phi of the mean of n judges x n repeats against the number of judgings per
    response (judges x repeats), a line per repeats-per-judge (solid, dashed, dotted, ... as
    ``DASH_NAMES``, in increasing order), a panel per metric; the collected design ringed,
    ``target`` as a grey dashed line.

    Columns: metric, n_raters, n_repeats, g, phi, collected (``stats.decision_study``).
    """
    data = _check(grid, ["metric", "n_raters", "n_repeats", "g", "phi", "collected"],
                  "decision_study_curve")
    long = data.melt(id_vars=["metric", "n_raters", "n_repeats", "collected"],
                     value_vars=["g", "phi"], var_name="coefficient", value_name="value")
    long["coefficient"] = long["coefficient"].map({"g": "G (relative)", "phi": "Phi (absolute)"})
    long["judgings"] = long["n_raters"] * long["n_repeats"]
    long["repeats"] = [f"{int(k)} repeat{'s' if k != 1 else ''} per judge"
                       for k in long["n_repeats"]]
    order = list(dict.fromkeys(long.sort_values("n_repeats")["repeats"]))
    dashes = [_DASHES[i % len(_DASHES)] for i in range(len(order))]
    x = alt.X("judgings:Q", title="judgings per response (judges x repeats)",
              scale=alt.Scale(zero=False), axis=alt.Axis(tickMinStep=1, format="d"))
    y = alt.Y("value:Q", title="coefficient", scale=alt.Scale(domain=[0, 1]))
    line = alt.Chart().mark_line(point=True, clip=True).encode(
        x=x, y=y, color=alt.Color("coefficient:N", title=None,
                                  legend=alt.Legend(orient="bottom", symbolType="stroke")),
        # Vega draws no symbol for a dash legend beside a colour legend: the caption names
        # the dashes instead (DASH_NAMES, in order of repeats).
        strokeDash=alt.StrokeDash("repeats:N", sort=order, legend=None,
                                  scale=alt.Scale(domain=order, range=dashes)),
        detail="repeats:N",
        tooltip=["metric", "coefficient", "n_raters", "n_repeats", "value"],
    )
    ring = alt.Chart().transform_filter(alt.datum.collected).mark_point(
        size=160, color="black", strokeWidth=1.5, clip=True).encode(x=x, y=y)
    rule = alt.Chart().mark_rule(color="#aaa", strokeWidth=1.5).encode(y=alt.datum(target))
    return (
        alt.layer(rule, line, ring, data=long).properties(width=_PANEL_WIDTH, height=220)
        .facet(facet=alt.Facet("metric:N", title=None, header=_HEADER), columns=2)
    )
