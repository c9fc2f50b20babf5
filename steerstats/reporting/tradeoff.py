"""The finding first, then the trade-off and dose-response sections that detail it.

``finding_section`` opens the report: two or three sentences generated from the analysis
tables, the full-width trade-off figure (behaviour gained against each cost) and the
dose-response panel. The later sections give the tables behind them.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from steerstats import fmt, plots
from steerstats.reporting._cells import (
    ALPHA,
    Column,
    _ci_col,
    _col,
    _display,
    _missing,
    _ms,
    _notes,
    _p_col,
    _sorted,
    _start,
    _text,
    _with_arms,
)
from steerstats.reporting.content import Block, Figure, Section, Text
from steerstats.reporting.data import ReportData
from steerstats.reporting.escape import label, md

__all__ = ["dose_response_section", "finding_section", "tradeoff_section"]

COSTS = (("coherence_loss", "coherence loss"), ("accuracy_loss", "accuracy loss"))
FEW_QUERIES = 6


def _costs(tr: pd.DataFrame) -> list[tuple[str, str]]:
    return [(c, t) for c, t in COSTS if c in tr and tr[c].notna().any()]


def _labelled(tr: pd.DataFrame) -> pd.DataFrame:
    out = _with_arms(tr)
    out["label"] = [label(m) for m in out["method"]]
    out["model"] = [label(m) for m in out["model"]]
    return out


def _tradeoff_figure(tr: pd.DataFrame) -> Block:
    """The trade-off figure, or one line saying why there is none."""
    if "behavior_gain" not in tr or tr["behavior_gain"].isna().all():
        return Text("No behaviour gain could be estimated (no behaviour scores paired with the "
                    "baseline), so there is no trade-off to draw.")
    costs = _costs(tr)
    caption = ("Behaviour gained against "
               + (" and ".join(t for _, t in costs) if costs else "nothing: no cost metric "
                  "(coherence or accuracy) was scored")
               + " relative to the baseline (black square at the origin), with 95% joint-"
                 "bootstrap intervals both ways; large filled points are on the Pareto front.")
    return Figure(plots.tradeoff_figure(_labelled(tr), costs=costs), caption, "tradeoff",
                  wide=True)


def _dose_curves(data: ReportData) -> tuple[pd.DataFrame | None, str]:
    """The sweep's means per strength with the baseline's mean added at strength 0 (unless the
    sweep has its own 0), and a note on what was added."""
    curves = data.get("dose_curves")
    if curves is None:
        return None, ""
    curves = curves.copy()
    summary = data.get("summary")
    tr = data.get("tradeoff")
    baseline = str(tr["baseline"].iloc[0]) if tr is not None and "baseline" in tr else "control"
    if summary is None or baseline not in set(summary["method"].astype(str)):
        return curves, (f"No {md(baseline)} arm was scored, so the curves start at the lowest "
                        "strength swept.")
    base = summary[summary["method"].astype(str) == baseline]
    added = []
    for (model, method), rows in curves.groupby(["model", "method"], sort=False):
        if (rows["strength"].astype(float) == 0).any():
            continue
        zero = base[base["model"] == model].assign(method=method, strength=0.0)
        added.append(zero[[c for c in curves.columns if c in zero]])
    if added:
        curves = pd.concat([curves, *added], ignore_index=True)
    return curves, f"Strength 0 is the {md(baseline)} arm's mean."


def _dose_figure(data: ReportData) -> list[Block]:
    curves, note = _dose_curves(data)
    if curves is None:
        return []
    curves = curves[curves["mean"].notna()]
    if curves.empty:
        return [Text("No mean could be computed at any strength of the sweep.")]
    curves = curves.assign(model=[label(m) for m in curves["model"]],
                           method=[label(m) for m in curves["method"]],
                           metric=[label(m) for m in curves["metric"]])
    return [Figure(plots.dose_panel(curves), "Each metric against steering strength with 95% "
                   "cluster-bootstrap bands, one panel per model. " + note.replace("\\", ""),
                   "dose", wide=True)]


# ------------------------------------------------------------------------------------ finding


def _pareto_sentence(tr: pd.DataFrame) -> str:
    parts = []
    for model, rows in tr.groupby("model", sort=True):
        front = rows[rows["pareto"].fillna(False).astype(bool)]["method"].tolist()
        parts.append(f"{fmt.listing(_ms(front))} ({md(model)})" if front
                     else f"none ({md(model)})")
    return ("Pareto-optimal arms (no other arm, the baseline included, is as good on behaviour "
            "and every cost and better on one): " + "; ".join(parts) + ".")


def _largest_gain_sentence(tr: pd.DataFrame) -> str | None:
    rows = tr[tr["behavior_gain"].notna()]
    if rows.empty:
        return None
    best = rows.loc[rows["behavior_gain"].idxmax()]
    base = md(best["baseline"]) if "baseline" in best else "the baseline"
    text = (f"The largest behaviour gain over {base} is {md(best['method'])} on "
            f"{md(best['model'])}: {_signed_ci(best, 'behavior_gain', 2)} points")
    costs = [f"{title} {_signed_ci(best, cost, 3 if cost.startswith('accuracy') else 2)}"
             for cost, title in _costs(tr) if pd.notna(best.get(cost))]
    return text + (", at a " + " and an ".join(costs) if costs else
                   "; no cost metric was scored, so what it costs is unknown") + "."


def _signed_ci(row: pd.Series, name: str, digits: int) -> str:
    return fmt.est_ci(row[name], row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high"), digits)


def _contrast_sentence(data: ReportData) -> str | None:
    """Without a trade-off table: the largest behaviour contrast, or the highest mean."""
    contrasts = data.get("contrasts")
    if contrasts is not None and "metric" in contrasts:
        rows = _with_arms(contrasts)
        rows = rows[(rows["metric"] == "behavior") & rows["diff"].notna()]
        if len(rows):
            best = rows.loc[rows["diff"].idxmax()]
            return (f"The largest behaviour difference is {md(best['method'])} − "
                    f"{md(best['baseline'])} on {md(best['model'])}: "
                    f"{fmt.est_ci(best['diff'], best['ci_low'], best['ci_high'])} points.")
    summary = data.get("summary")
    if summary is not None:
        rows = _with_arms(summary)
        rows = rows[rows["mean"].notna()]
        if len(rows):
            metric = "behavior" if (rows["metric"] == "behavior").any() else rows["metric"].iloc[0]
            rows = rows[rows["metric"] == metric]
            best = rows.loc[rows["mean"].idxmax()]
            return (f"The highest mean {md(metric)} is {md(best['method'])} on "
                    f"{md(best['model'])}: "
                    f"{fmt.est_ci(best['mean'], best['ci_low'], best['ci_high'], fmt.metric_digits(metric))}.")  # noqa: E501
    return None


_LIMITS = {
    "contrasts": "what steering changes against an unsteered or prompted baseline (no "
                 "baseline arm beside another arm)",
    "tradeoff": "what steering costs against a baseline",
    "reliability": "how consistently the judge scores a response (each was judged once)",
    "dose_curves": "how the effects change with strength (one strength per method)",
    "mixed_model": "how the variance splits between queries, prompts and residual",
}


def _limits_sentence(data: ReportData) -> str:
    limits = []
    design = data.get("design")
    if design is not None and "n_queries" in design and design["n_queries"].notna().any():
        n = int(design["n_queries"].max())
        if n < FEW_QUERIES:
            limits.append("whether the effects hold beyond these "
                          f"{fmt.plural(n, 'query', 'queries')} (fewer than {FEW_QUERIES}: "
                          "intervals over queries are unreliable)")
    skipped = data.tables.get("skipped")
    if skipped is not None and not skipped.empty:
        for name in skipped["analysis"].astype(str):
            if name in _LIMITS and _LIMITS[name] not in limits:
                limits.append(_LIMITS[name])
    tr = data.get("tradeoff")
    if tr is not None and not _costs(tr):
        limits.append("what steering costs in coherence or capability (no cost metric scored)")
    if not limits:
        return ("The design cannot tell how these arms do on queries and prompts unlike the "
                "ones sampled, nor judge-independent quality beyond the judges used.")
    return "The design cannot tell " + "; nor ".join(limits) + "."


def finding_section(data: ReportData) -> Section:
    """The finding first: sentences from the analysis, the trade-off figure, the dose panel."""
    section = Section("finding", "The finding")
    tr = data.get("tradeoff")
    sentences = []
    if tr is not None and "behavior_gain" in tr:
        tr = _with_arms(tr)
        sentences.append(_pareto_sentence(tr))
        gain = _largest_gain_sentence(tr)
        if gain:
            sentences.append(gain)
    else:
        found = _contrast_sentence(data)
        if found:
            sentences.append(found)
    sentences.append(_limits_sentence(data))
    section.blocks.append(Text(" ".join(sentences)))
    if tr is not None:
        section.blocks.append(_tradeoff_figure(tr))
    section.blocks.extend(_dose_figure(data))
    return section


# ---------------------------------------------------------------------------------- trade-off


def tradeoff_section(data: ReportData, *, figure: bool = True) -> Section:
    """Behaviour gain against coherence and accuracy loss, with the Pareto front (the figure
    itself opens the report; ``figure=False`` leaves it out here)."""
    section, tr = _start(data, "tradeoff", "Trade-off: behaviour gained against what it costs",
                         "tradeoff", "trade-off estimates")
    if tr is None:
        return section
    tr = _sorted(_with_arms(tr), ["model", "behavior_gain"], [True, False])
    baseline = ", ".join(_ms(sorted(tr["baseline"].astype(str).unique()))) \
        if "baseline" in tr else ""
    lines = []
    for model, rows in tr.groupby("model", sort=True):
        front = rows[rows["pareto"].fillna(False).astype(bool)]["method"].tolist()
        line = f"- {md(model)}: on the Pareto front: {fmt.listing(_ms(front))}."
        if rows["p_good_trade"].notna().any():
            best = rows.loc[rows["p_good_trade"].idxmax()]
            line += (f" Highest probability of a good trade: {md(best['method'])} "
                     f"({fmt.num(best['p_good_trade'])}).")
        lines.append(line)
    margins = tr.iloc[0]
    section.blocks.append(Text(
        f"Gains and losses relative to {baseline or 'the baseline'}, each with an interval from "
        "one joint bootstrap so they can be compared; a method is on the Pareto front when no "
        "other arm of the same model (the baseline included) is at least as good on every "
        "estimate and better on one. A *good trade* is a behaviour gain above 0 with a "
        f"coherence loss below {fmt.num(margins.get('margin_coherence'))} points and an "
        f"accuracy loss below {fmt.num(margins.get('margin_accuracy'))}; P(good trade) is the "
        "share of bootstrap replicates in which it holds."
        + ("" if figure else " The figure is at the top of the report.")
        + "\n\n" + "\n".join(lines)
    ))
    notes = _notes(tr, "trade-off")
    if notes:
        section.blocks.append(notes)
    if figure:
        section.blocks.append(_tradeoff_figure(tr))
    columns: list[Column] = [
        ("Model", _text("model")), ("Method", _text("method")),
        ("Behaviour gain [95% CI]", _joint_col("behavior_gain")),
    ]
    for cost, title in _costs(tr):
        columns.append((f"{title.capitalize()} [95% CI]", _joint_col(cost)))
    columns.append(("Pareto front", lambda r: "yes" if r["pareto"] is True or
                    str(r["pareto"]) == "True" else "no"))
    columns.append(("P(good trade)", _col("p_good_trade")))
    section.blocks.append(_display(tr, columns, "Sorted by behaviour gain within each model."))
    return section


def _joint_col(name: str) -> Callable[[pd.Series], str]:
    digits = 3 if name.startswith("accuracy") else 2
    return lambda r: fmt.est_ci(r.get(name), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high"),
                                digits)


# ------------------------------------------------------------------------------ dose-response


def dose_response_section(data: ReportData, *, figure: bool = True) -> Section:
    """Per-query slopes on strength, their spread, anti-steerable queries, and a strength
    chosen on half the prompts and checked on the other half (the panel of means per strength
    opens the report; ``figure=False`` leaves it out here)."""
    section = Section("dose", "Dose-response over steering strength")
    curves = data.get("dose_curves")
    slopes = data.get("dose_response")
    spread = data.get("steerability")
    selection = data.get("dose_selection")
    if curves is None and slopes is None:
        section.blocks.append(_missing(data, "dose_curves", "strength sweep"))
        return section
    section.blocks.append(Text(
        "How each metric changes with steering strength where a sweep was collected: means "
        "per strength (cluster-bootstrap intervals), per-query slopes (cluster-robust by "
        "prompt), their spread across queries (random-effects), and queries whose behaviour "
        "slope is reliably negative (anti-steerable, Holm-adjusted across queries)."
        + ("" if figure else " The panel of means per strength is at the top of the report.")
    ))
    if figure:
        section.blocks.extend(_dose_figure(data))
    if spread is not None:
        lines = []
        for _, r in spread.iterrows():
            line = (f"- {md(r['metric'])}, {md(r['method'])} on {md(r['model'])}: mean slope "
                    f"per unit strength {fmt.est_ci(r['mean_slope'], r['ci_low'], r['ci_high'])}"
                    f" over {fmt.plural(r['n_queries'], 'query', 'queries')}; between-query SD "
                    f"of true slopes {fmt.num(r['tau'])}")
            if pd.notna(r.get("n_anti_steerable")):
                anti: list[object] = []
                if slopes is not None:
                    hit = slopes[(slopes["model"] == r["model"]) & (slopes["method"] ==
                                 r["method"]) & (slopes["metric"] == r["metric"])]
                    anti = hit[hit["anti_steerable"].astype("boolean").fillna(False)][
                        "query_id"].tolist()
                line += (f"; anti-steerable: {fmt.count(r['n_anti_steerable'])}"
                         + (f" ({fmt.listing(_ms(anti))})" if anti else ""))
            if pd.notna(r.get("note")) and r.get("note"):
                line += f" ({md(r['note'])})"
            lines.append(line + ".")
        section.blocks.append(Text("\n".join(lines)))
    if selection is not None:
        chosen = selection[selection["metric"] == "behavior"] if "metric" in selection \
            else selection
        section.blocks.append(Text(
            "Strength chosen on a random half of the prompts (best behaviour with coherence at "
            "or above the threshold) and its behaviour on the other half; the held-out estimate "
            "is the honest one, the selection mean is optimistic."
        ))
        section.blocks.append(_display(chosen, [
            ("Model", _text("model")), ("Method", _text("method")),
            *([("Query", _text("query_id"))] if "query_id" in chosen else []),
            ("Chosen strength", lambda r: "none" if pd.isna(r["chosen_strength"])
             else f"{float(r['chosen_strength']):g}"),
            ("Selection mean", _col("selection_mean")),
            ("Held-out mean [95% CI]", _ci_col("estimate")),
            ("Note", _text("note")),
        ]))
    if slopes is not None:
        slopes = _sorted(slopes, ["metric", "model", "method", "slope"],
                         [True, True, True, True])
        section.blocks.append(_display(slopes, [
            ("Model", _text("model")), ("Method", _text("method")), ("Metric", _text("metric")),
            ("Query", _text("query_id")), ("Slope [95% CI]", _ci_col("slope", 3)),
            ("Holm p", _p_col("p_holm")),
            ("Anti-steerable", lambda r: "yes" if r["anti_steerable"] is True or
             str(r["anti_steerable"]) == "True" else ""),
        ], f"Per-query slopes of each metric on strength, lowest first; anti-steerable: "
           f"behaviour slope below 0 with Holm p < {ALPHA}."))
    return section
