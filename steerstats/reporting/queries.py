"""Per-query view: the paired effect of each arm on each query, as a sorted heatmap.

Steerability varies by query and some queries are anti-steerable (Braun et al. 2024; Tan et
al. 2024); a mean over queries hides both.
"""

from __future__ import annotations

import pandas as pd

from steerstats import fmt, plots
from steerstats.reporting._cells import _count_col, _display, _sorted, _start, _text
from steerstats.reporting.content import Figure, Section, Text
from steerstats.reporting.data import ReportData
from steerstats.reporting.escape import label, md

__all__ = ["per_query_section"]

METRICS = (("behavior", "behaviour"), ("coherence", "coherence"))


def per_query_section(data: ReportData) -> Section:
    """A heatmap of the paired effect per query x arm for behaviour (and coherence), sorted by
    effect, and the queries on which every arm lowered behaviour."""
    section, qe = _start(data, "queries", "Per query: where steering works and where it does not",
                         "query_effects", "per-query effects")
    if qe is None:
        return section
    qe = qe.copy()
    qe["arm"] = [fmt.arm(m, s) for m, s in zip(qe["method"], qe.get("strength", pd.Series(
        [float("nan")] * len(qe), index=qe.index)), strict=True)]
    baseline = md(qe["baseline"].iloc[0]) if "baseline" in qe else "the baseline"
    section.blocks.append(Text(
        f"Mean paired difference from {baseline} per query and arm (each arm's prompt means "
        "minus the baseline's on the same prompts; descriptive, without intervals). Rows and "
        "columns are sorted by their mean effect, the largest first."
    ))
    drawn = 0
    for metric, name in METRICS:
        rows = qe[(qe["metric"] == metric) & qe["diff"].notna()]
        if rows.empty:
            continue
        per_query = rows.groupby("query_id")["diff"].agg(["min", "max", "mean"])
        against = per_query[per_query["max"] < 0].sort_values("mean").index.tolist()
        if metric == "behavior":
            section.blocks.append(Text(
                f"{fmt.plural(len(per_query), 'query', 'queries')}; "
                + (f"on {fmt.plural(len(against), 'query', 'queries')} every arm lowered "
                   f"behaviour: {fmt.listing([md(q) for q in against])}." if against else
                   "on none did every arm lower behaviour.")
            ))
        shown = rows.assign(model=[label(m) for m in rows["model"]],
                            arm=[label(a) for a in rows["arm"]],
                            query=[label(q) for q in rows["query_id"]])
        section.blocks.append(Figure(
            plots.query_heatmap(shown), f"Paired {name} effect per query (rows) and arm "
            "(columns), one panel per model; blue: higher than the baseline, red: lower.",
            f"query_{metric}"))
        drawn += 1
    if not drawn:
        section.blocks.append(Text("No behaviour or coherence effect per query could be "
                                   "computed (no rated pairs with the baseline)."))
    order = {m: i for i, (m, _) in enumerate(METRICS)}
    qe["metric_order"] = [order.get(m, len(order)) for m in qe["metric"]]
    table = _sorted(qe, ["metric_order", "metric", "model", "diff"], [True, True, True, False])
    section.blocks.append(_display(table, [
        ("Model", _text("model")), ("Arm", _text("arm")), ("Query", _text("query_id")),
        ("Metric", _text("metric")),
        ("Effect", lambda r: fmt.num(r["diff"], fmt.metric_digits(r["metric"]))),
        ("Pairs", _count_col("n_pairs")),
    ], "Per-query effects, largest first within each metric and model."))
    return section
