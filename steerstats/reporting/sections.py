"""The report's sections, each built from the analysis tables and nothing else.

Every number in a section's text is read from a table and formatted here; none is typed in.
A section whose analysis did not apply says why (the reason recorded by ``analyze``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from steerstats import fmt, plots
from steerstats.reporting.content import Figure, Section, Table, Text
from steerstats.reporting.data import ReportData

__all__ = [
    "SECTIONS",
    "build_sections",
    "contrasts_section",
    "design_section",
    "dose_response_section",
    "means_section",
    "methods_appendix",
    "mixed_model_section",
    "parse_failures_section",
    "power_section",
    "reliability_section",
    "tradeoff_section",
]

ALPHA = 0.05

Column = tuple[str, Callable[[pd.Series], str]]


def _display(table: pd.DataFrame, columns: Sequence[Column], caption: str = "") -> Table:
    """A Table of formatted strings: one (header, row -> text) pair per column."""
    rows = [{header: f(row) for header, f in columns} for _, row in table.iterrows()]
    return Table(pd.DataFrame(rows, columns=[h for h, _ in columns]), caption)


def _with_arms(table: pd.DataFrame) -> pd.DataFrame:
    """A copy whose ``method`` column carries the strength too, for charts and tables."""
    out = table.copy()
    if "strength" in out and out["strength"].notna().any():
        out["method"] = [fmt.arm(m, s) for m, s in zip(out["method"], out["strength"],
                                                      strict=True)]
    return out


def _missing(data: ReportData, name: str, what: str) -> Text:
    reason = data.skipped(name)
    if reason:
        return Text(f"Not computed: {reason}.")
    return Text(f"The analysis tables hold no {what} (table `{name}` is absent or empty).")


def _start(
    data: ReportData, section_id: str, title: str, name: str, what: str
) -> tuple[Section, pd.DataFrame | None]:
    """A new section and table ``name``; without the table, the section already says why."""
    section = Section(section_id, title)
    table = data.get(name)
    if table is None:
        section.blocks.append(_missing(data, name, what))
    return section, table


def _col(name: str, digits: int = 2) -> Callable[[pd.Series], str]:
    return lambda r: fmt.num(r[name], digits)


def _count_col(name: str) -> Callable[[pd.Series], str]:
    return lambda r: fmt.count(r[name])


def _ci_col(est: str, digits: int = 2) -> Callable[[pd.Series], str]:
    return lambda r: fmt.est_ci(r[est], r["ci_low"], r["ci_high"], digits)


def _metric_ci_col(est: str) -> Callable[[pd.Series], str]:
    """Estimate [CI] with the row's metric's digits (3 for accuracy, else 2)."""
    return lambda r: fmt.est_ci(r[est], r["ci_low"], r["ci_high"], _digits(r["metric"]))


def _p_col(name: str) -> Callable[[pd.Series], str]:
    return lambda r: fmt.pval(r[name])


def _text(name: str) -> Callable[[pd.Series], str]:
    return lambda r: "" if pd.isna(r[name]) else str(r[name])


_digits = fmt.metric_digits


# ------------------------------------------------------------------------------------ design


def design_section(data: ReportData) -> Section:
    """Models, methods, queries, prompts, samples, judging, and what failed or is absent."""
    section, design = _start(data, "design", "Design", "design", "design summary")
    judging = data.get("judging")
    if design is None:
        return section
    models = sorted(design["model"].astype(str).unique())
    methods = []
    for method, rows in design.groupby("method", sort=False):
        strengths = [f"{s:g}" for s in sorted(rows["strength"].dropna().unique())]
        methods.append(f"{method} (strengths {', '.join(strengths)})" if strengths else str(method))
    lines = [
        f"- **Models** ({len(models)}): {fmt.listing(models)}.",
        f"- **Methods** ({len(methods)}): {fmt.listing(methods)}.",
    ]
    for prompt_set, rows in design.groupby("prompt_set", sort=True):
        lines.append(
            f"- **{prompt_set} prompts**: {fmt.plural(rows['n_queries'].max(), 'query', 'queries')}"
            f", {fmt.plural(rows['n_prompts'].max(), 'distinct prompt')}, "
            f"{fmt.plural(rows['n_samples'].max(), 'sample')} per prompt; "
            f"{fmt.count(rows['n_responses'].sum())} responses in all."
        )
    if judging is not None:
        for _, r in judging.iterrows():
            lines.append(
                f"- **{r['metric']}** rated by `{r['rater']}`: "
                f"{fmt.plural(r['n_repeats'], 'judging')} per response, "
                f"{fmt.count(r['n_ratings'])} ratings of {fmt.count(r['n_responses'])} responses, "
                f"{fmt.count(r['n_missing'])} without a usable value."
            )
    failed = design["n_failed"]
    if failed.notna().any():
        total = failed.sum()
        lines.append(
            f"- **Failed generations**: {fmt.count(total)} (an error was recorded, no response "
            "was scored)." if total else "- **Failed generations**: none."
        )
    else:
        lines.append("- **Failed generations**: not known (no generation records were read).")
    absent = design[design["n_absent"] > 0]
    if len(absent):
        parts = [f"{r['method']} on {r['model']} ({r['prompt_set']}): {fmt.count(r['n_absent'])}"
                 for _, r in absent.iterrows()]
        lines.append(
            "- **Absent cells** (query x prompt x sample combinations that another method of "
            f"the same model has): {'; '.join(parts)}."
        )
    else:
        lines.append("- **Absent cells**: none; every method covers the same query x prompt x "
                     "sample cells.")
    section.blocks.append(Text("\n".join(lines)))
    provenance = _provenance(data)
    if provenance:
        section.blocks.append(Text(provenance))
    section.blocks.append(_display(design, [
        ("Model", _text("model")), ("Method", _text("method")),
        ("Prompt set", _text("prompt_set")),
        ("Strength", lambda r: "" if pd.isna(r["strength"]) else f"{r['strength']:g}"),
        ("Queries", _count_col("n_queries")), ("Prompts", _count_col("n_prompts")),
        ("Samples", _count_col("n_samples")), ("Responses", _count_col("n_responses")),
        ("Failed", _count_col("n_failed")), ("Absent", _count_col("n_absent")),
    ], "What was collected, per model, method, strength and prompt set."))
    return section


def _provenance(data: ReportData) -> str:
    m = data.manifest
    parts = []
    if m.get("steerstats_version"):
        parts.append(f"steerstats {m['steerstats_version']}")
    if m.get("created_at"):
        parts.append(f"created {m['created_at']}")
    digest = m.get("experiment_digest")
    if digest:
        parts.append(f"experiment digest `{str(digest)[:12]}`")
    source = m.get("import") or m.get("source")
    if isinstance(source, dict) and source.get("format"):
        parts.append(f"imported from {source['format']}")
    elif isinstance(source, str):
        parts.append(f"imported from {source}")
    return ("Results: " + "; ".join(parts) + ".") if parts else ""


# ------------------------------------------------------------------------------------- means


def means_section(data: ReportData) -> Section:
    """Per model x method x metric means with cluster-bootstrap intervals (a forest plot)."""
    section, summary = _start(data, "means", "Means with 95% confidence intervals", "summary",
                              "means")
    if summary is None:
        return section
    table = _with_arms(summary)
    section.blocks.append(Text(
        "Each response's judge repeats are averaged first; the interval comes from a bootstrap "
        "that resamples queries and prompts (not rows), so it describes new queries and prompts "
        "like these."
    ))
    lines = []
    for (model, metric), rows in table.groupby(["model", "metric"], sort=True):
        rows = rows[rows["mean"].notna()]
        if len(rows) < 2:
            continue
        hi = rows.loc[rows["mean"].idxmax()]
        lo = rows.loc[rows["mean"].idxmin()]
        d = _digits(metric)
        lines.append(
            f"- {metric}, {model}: highest {hi['method']} "
            f"{fmt.est_ci(hi['mean'], hi['ci_low'], hi['ci_high'], d)}, lowest {lo['method']} "
            f"{fmt.est_ci(lo['mean'], lo['ci_low'], lo['ci_high'], d)}."
        )
    if lines:
        section.blocks.append(Text("\n".join(lines)))
    section.blocks.append(Figure(plots.means_forest(table), "Means per model, method and metric "
                                 "with 95% cluster-bootstrap intervals.", "means_forest"))
    section.blocks.append(_display(table, [
        ("Model", _text("model")), ("Method", _text("method")), ("Metric", _text("metric")),
        ("Responses", _count_col("n")), ("Unparsed ratings", _count_col("n_missing")),
        ("Mean [95% CI]", _metric_ci_col("mean")),
    ]))
    return section


# --------------------------------------------------------------------------------- contrasts


def contrasts_section(data: ReportData) -> Section:
    """Paired differences from each baseline with Holm-adjusted p-values."""
    section, contrasts = _start(data, "contrasts", "Paired contrasts", "contrasts",
                                "paired contrasts")
    if contrasts is None:
        return section
    table = _with_arms(contrasts)
    table = table[table["n_pairs"] > 0]
    baselines = sorted(table["baseline"].astype(str).unique())
    significant = table[table["p_holm"] < ALPHA]
    intro = (
        f"Each method minus the baseline ({fmt.listing(baselines)}), paired on model, query and "
        "prompt; p-values and intervals respect clustering by query and prompt, and p-values "
        "are Holm-adjusted across the contrasts against the same baseline. "
        f"{fmt.count(len(significant))} of {fmt.count(len(table))} contrasts have a "
        f"Holm-adjusted p below {ALPHA}"
    )
    if len(significant):
        items = [
            f"- {r['method']} − {r['baseline']} on {r['metric']} ({r['model']}): "
            f"{fmt.est_ci(r['diff'], r['ci_low'], r['ci_high'], _digits(r['metric']))}, "
            f"Holm p {_p_phrase(r['p_holm'])}, $d_z$ = {fmt.num(r['dz'])}"
            for _, r in significant.iterrows()
        ]
        section.blocks.append(Text(intro + ":\n\n" + "\n".join(items)))
    else:
        section.blocks.append(Text(intro + "."))
    if len(table):
        section.blocks.append(Figure(plots.contrasts_forest(table), "Paired differences with "
                                     "95% intervals; filled points have Holm-adjusted p < "
                                     f"{ALPHA}.", "contrasts_forest"))
    section.blocks.append(_display(table, [
        ("Model", _text("model")), ("Metric", _text("metric")), ("Method", _text("method")),
        ("Baseline", _text("baseline")), ("Pairs", _count_col("n_pairs")),
        ("Difference [95% CI]", _metric_ci_col("diff")),
        ("p", _p_col("p")), ("Holm p", _p_col("p_holm")),
        ("d_z", _col("dz")),
    ]))
    return section


def _p_phrase(p: object) -> str:
    text = fmt.pval(p)
    return text if text.startswith("<") else f"= {text}"


# ------------------------------------------------------------------------------ mixed model


def mixed_model_section(data: ReportData) -> Section:
    """Variance components and estimated marginal means of the crossed mixed model."""
    section = Section("mixed", "Mixed-effects model: variance components and marginal means")
    vc = data.get("variance_components")
    emm = data.get("emm")
    if vc is None and emm is None:
        section.blocks.append(_missing(data, "mixed_model", "mixed-model results"))
    if vc is not None:
        section.blocks.append(Text(
            "Per metric, `value ~ method * model` with crossed random intercepts for query and "
            "prompt and a query x method term, fitted on response-level means. Share of the "
            "variance at each level:"
        ))
        vc = vc.copy()
        vc["share"] = vc["variance"] / vc.groupby("metric")["variance"].transform("sum")
        lines = []
        for metric, rows in vc.groupby("metric", sort=True):
            parts = [f"{r['group']} {fmt.pct(r['share'])} (SD {fmt.num(r['sd'])})"
                     for _, r in rows.iterrows()]
            lines.append(f"- {metric}: {'; '.join(parts)}.")
        section.blocks.append(Text("\n".join(lines)))
        section.blocks.append(Figure(plots.variance_components_bars(vc), "Variance of each "
                                     "random effect and the residual, per metric.",
                                     "variance_components"))
        section.blocks.append(_display(vc, [
            ("Metric", _text("metric")), ("Level", _text("group")),
            ("Variance", _col("variance", 3)), ("SD", _col("sd", 3)),
            ("Share", lambda r: fmt.pct(r["share"])), ("Levels", _count_col("n_levels")),
        ]))
    if emm is not None:
        section.blocks.append(Text(
            "Estimated marginal means (model x method cells) with 95% intervals on "
            "Satterthwaite degrees of freedom:"
        ))
        section.blocks.append(_display(emm, [
            ("Metric", _text("metric")), ("Model", _text("model")), ("Method", _text("method")),
            ("Estimate [95% CI]", _metric_ci_col("estimate")),
            ("df", _col("df", 1)), ("Responses", _count_col("n")),
        ]))
    mixed_contrasts = data.get("mixed_contrasts")
    if mixed_contrasts is not None:
        section.blocks.append(Text("Model-based contrasts against the baseline:"))
        section.blocks.append(_display(mixed_contrasts, [
            ("Metric", _text("metric")), ("Model", _text("model")), ("Method", _text("method")),
            ("Baseline", _text("baseline")),
            ("Difference [95% CI]", _metric_ci_col("estimate")),
            ("df", _col("df", 1)), ("Holm p", _p_col("p_holm")),
        ]))
    accuracy = data.get("accuracy")
    if accuracy is not None:
        section.blocks.extend(_accuracy_blocks(_with_arms(accuracy)))
    return section


def _accuracy_blocks(acc: pd.DataFrame) -> list[Text | Table | Figure]:
    gee = acc[(acc["outcome"] == "accuracy") & (acc["estimator"] == "gee")]
    unparsed = acc[acc["outcome"] == "unparsed"]
    boot = acc[(acc["outcome"] == "accuracy") & (acc["estimator"] == "bootstrap")]
    merged = gee.merge(boot, on=["model", "method"], suffixes=("", "_boot"), how="outer")
    merged = merged.merge(unparsed, on=["model", "method"], suffixes=("", "_unparsed"),
                          how="left")
    blocks: list[Text | Table | Figure] = [Text(
        "MMLU accuracy among parsed answers: a binomial GEE clustered by question and the "
        "two-way cluster bootstrap. Answers without a readable `<answer>` tag are their own "
        "outcome (the unparsed rate), not counted as wrong."
    )]
    blocks.append(_display(merged, [
        ("Model", _text("model")), ("Method", _text("method")),
        ("Parsed answers", _count_col("n")),
        ("Accuracy, GEE [95% CI]", lambda r: fmt.est_ci(r["estimate"], r["ci_low"],
                                                        r["ci_high"], 3)),
        ("Accuracy, bootstrap [95% CI]", lambda r: fmt.est_ci(
            r["estimate_boot"], r["ci_low_boot"], r["ci_high_boot"], 3)),
        ("Unparsed [95% CI]", lambda r: fmt.est_ci(
            r["estimate_unparsed"], r["ci_low_unparsed"], r["ci_high_unparsed"], 3)),
    ]))
    return blocks


# ------------------------------------------------------------------------------ reliability

_STATISTIC_NAMES = {
    "ICC1": "ICC(1,1)", "ICC2": "ICC(2,1)", "ICC3": "ICC(3,1)",
    "ICC1k": "ICC(1,k)", "ICC2k": "ICC(2,k)", "ICC3k": "ICC(3,k)",
    "alpha_ordinal": "Krippendorff's alpha (ordinal)",
    "alpha_interval": "Krippendorff's alpha (interval)",
    "alpha_nominal": "Krippendorff's alpha (nominal)",
    "exact_agreement": "exact agreement", "within_one_agreement": "agreement within one point",
}
_HEADLINE = ("ICC2", "ICC2k", "alpha_ordinal", "exact_agreement")


def reliability_section(data: ReportData) -> Section:
    """Agreement of repeated judgings: ICCs, Krippendorff's alpha and agreement rates."""
    section, rel = _start(data, "reliability", "Judge reliability", "reliability",
                          "reliability estimates")
    if rel is None:
        return section
    overall = rel[rel["method"].isna()] if "method" in rel else rel
    lines = []
    for metric, rows in overall.groupby("metric", sort=True):
        rows = rows.set_index("statistic")
        parts = [
            f"{_STATISTIC_NAMES[s]} {fmt.est_ci(rows.loc[s, 'estimate'], rows.loc[s, 'ci_low'], rows.loc[s, 'ci_high'])}"  # noqa: E501
            for s in _HEADLINE if s in rows.index
        ]
        if parts:
            first = rows.iloc[0]
            lines.append(
                f"- {metric} ({fmt.count(first['n_targets'])} responses, "
                f"{fmt.count(first['n_ratings'])} ratings): {'; '.join(parts)}."
            )
    section.blocks.append(Text(
        "How consistently the judge scores the same response across repeated judgings "
        "(targets: responses; raters: judging occasions)."
        + ("\n\n" + "\n".join(lines) if lines else "")
    ))
    shown = rel.copy()
    if "method" in shown:
        per_method = shown["method"].notna()
        shown = shown[~per_method | shown["statistic"].isin(_HEADLINE)]
    shown["statistic"] = shown["statistic"].map(lambda s: _STATISTIC_NAMES.get(s, s))
    drawn = shown[shown["method"].isna()] if "method" in shown else shown
    section.blocks.append(Figure(plots.reliability_forest(drawn), "Reliability statistics with "
                                 "95% intervals, per metric, all methods together.",
                                 "reliability_forest"))
    columns: list[Column] = [("Metric", _text("metric"))]
    if "method" in shown:
        columns.append(("Method", lambda r: "all" if pd.isna(r["method"]) else str(r["method"])))
    columns += [
        ("Statistic", _text("statistic")), ("Estimate [95% CI]", _ci_col("estimate")),
        ("Responses", _count_col("n_targets")), ("Ratings", _count_col("n_ratings")),
    ]
    section.blocks.append(_display(shown, columns, "All statistics over all methods; the "
                                   "headline ones per method."))
    return section


# --------------------------------------------------------------------------------- trade-off

_COSTS = (("coherence_loss", "coherence loss"), ("accuracy_loss", "accuracy loss"))


def tradeoff_section(data: ReportData) -> Section:
    """Behaviour gain against coherence and accuracy loss, with the Pareto front."""
    section, tr = _start(data, "tradeoff", "Trade-off: behaviour gained against what it costs",
                         "tradeoff", "trade-off estimates")
    if tr is None:
        return section
    tr = _with_arms(tr)
    baseline = ", ".join(sorted(tr["baseline"].astype(str).unique())) if "baseline" in tr else ""
    lines = []
    for model, rows in tr.groupby("model", sort=True):
        front = rows[rows["pareto"].astype(bool)]["method"].tolist()
        best = rows.loc[rows["p_good_trade"].idxmax()] if rows["p_good_trade"].notna().any() \
            else None
        line = f"- {model}: on the Pareto front: {fmt.listing(front)}."
        if best is not None:
            line += (f" Highest probability of a good trade: {best['method']} "
                     f"({fmt.num(best['p_good_trade'])}).")
        lines.append(line)
    margins = tr.iloc[0]
    section.blocks.append(Text(
        f"Gains and losses relative to {baseline or 'the baseline'}, each with an interval from "
        "one joint bootstrap so they can be compared; a method is on the Pareto front when no "
        "other arm of the same model (the baseline included) is at least as good on every "
        "estimate and better on one. A *good trade* is a behaviour gain above 0 with a "
        f"coherence loss below {fmt.num(margins['margin_coherence'])} points and an accuracy "
        f"loss below {fmt.num(margins['margin_accuracy'])}; P(good trade) is the share of "
        "bootstrap replicates in which it holds.\n\n" + "\n".join(lines)
    ))
    section.blocks.append(Figure(plots.tradeoff_scatter(tr, costs=_COSTS), "Behaviour gain "
                                 "against coherence and accuracy loss with 95% intervals; large "
                                 "filled points are on the Pareto front.", "tradeoff_scatter"))
    columns: list[Column] = [
        ("Model", _text("model")), ("Method", _text("method")),
        ("Behaviour gain [95% CI]", _joint_col("behavior_gain")),
    ]
    for cost, title in _COSTS:
        if cost in tr and tr[cost].notna().any():
            columns.append((f"{title.capitalize()} [95% CI]", _joint_col(cost)))
    columns.append(("Pareto front", lambda r: "yes" if bool(r["pareto"]) else "no"))
    columns.append(("P(good trade)", _col("p_good_trade")))
    section.blocks.append(_display(tr, columns))
    return section


def _joint_col(name: str) -> Callable[[pd.Series], str]:
    digits = 3 if name.startswith("accuracy") else 2
    return lambda r: fmt.est_ci(r[name], r[f"{name}_ci_low"], r[f"{name}_ci_high"], digits)


# ----------------------------------------------------------------------------- dose-response


def dose_response_section(data: ReportData) -> Section:
    """Metric against steering strength, the spread of per-query slopes, anti-steerable
    queries, and a strength chosen on half the prompts and checked on the other half."""
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
    ))
    if curves is not None:
        section.blocks.append(Figure(plots.dose_response_curves(curves), "Mean of each metric at "
                                     "each steering strength with 95% cluster-bootstrap "
                                     "intervals.", "dose_response"))
    if spread is not None:
        lines = []
        for _, r in spread.iterrows():
            line = (f"- {r['metric']}, {r['method']} on {r['model']}: mean slope per unit "
                    f"strength {fmt.est_ci(r['mean_slope'], r['ci_low'], r['ci_high'])} over "
                    f"{fmt.plural(r['n_queries'], 'query', 'queries')}; between-query SD of "
                    f"true slopes {fmt.num(r['tau'])}")
            if pd.notna(r["n_anti_steerable"]):
                anti = []
                if slopes is not None:
                    hit = slopes[(slopes["model"] == r["model"]) & (slopes["method"] ==
                                 r["method"]) & (slopes["metric"] == r["metric"])]
                    anti = hit[hit["anti_steerable"].astype("boolean").fillna(False)][
                        "query_id"].tolist()
                line += (f"; anti-steerable: {fmt.count(r['n_anti_steerable'])}"
                         + (f" ({fmt.listing(anti)})" if anti else ""))
            if pd.notna(r.get("note")) and r.get("note"):
                line += f" ({r['note']})"
            lines.append(line + ".")
        section.blocks.append(Text("\n".join(lines)))
    if selection is not None:
        chosen = selection[selection["metric"] == "behavior"]
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
        section.blocks.append(_display(slopes, [
            ("Model", _text("model")), ("Method", _text("method")), ("Metric", _text("metric")),
            ("Query", _text("query_id")), ("Slope [95% CI]", _ci_col("slope", 3)),
            ("Holm p", _p_col("p_holm")),
            ("Anti-steerable", lambda r: "yes" if r["anti_steerable"] is True or
             str(r["anti_steerable"]) == "True" else ""),
        ], "Per-query slopes of each metric on strength."))
    return section


# ----------------------------------------------------------------------------- parse failure


def parse_failures_section(data: ReportData) -> Section:
    """Share of ratings without a usable value, per model x method x metric, with reasons."""
    section, pf = _start(data, "parse-failures", "Parse failures", "parse_failures",
                         "parse-failure counts")
    if pf is None:
        return section
    total, bad = pf["n_ratings"].sum(), pf["n_unparsed"].sum()
    text = (
        f"{fmt.count(bad)} of {fmt.count(total)} ratings ({fmt.pct(bad / total)}) have no usable "
        "value: a judge answer without a readable score, or an MMLU response without a readable "
        "`<answer>` tag. They are excluded from means and counted, never scored as a number."
    )
    worst = pf.loc[pf["rate"].idxmax()]
    if worst["n_unparsed"] > 0:
        text += (f" The highest rate is {fmt.pct(worst['rate'])} ({worst['metric']}, "
                 f"{worst['method']} on {worst['model']}).")
    section.blocks.append(Text(text))
    section.blocks.append(Figure(plots.parse_failure_bars(pf), "Share of unparsed ratings per "
                                 "model, method and metric.", "parse_failures"))
    section.blocks.append(_display(pf, [
        ("Model", _text("model")), ("Method", _text("method")), ("Metric", _text("metric")),
        ("Ratings", _count_col("n_ratings")), ("Unparsed", _count_col("n_unparsed")),
        ("Rate", lambda r: fmt.pct(r["rate"])), ("Reasons", _text("reasons")),
    ]))
    return section


# ------------------------------------------------------------------------------------ power


def power_section(data: ReportData) -> Section:
    """What effect this design could detect, from the fitted variance components."""
    section, mde = _start(data, "power", "Power: what this design can detect", "mde",
                          "power analysis")
    if mde is None:
        return section
    lines = []
    for metric, rows in mde.groupby("metric", sort=True):
        parts = [
            f"{r['design']} ({fmt.plural(r['n_queries'], 'query', 'queries')}, "
            f"{fmt.plural(r['n_prompts'], 'prompt')} per query, "
            f"{fmt.plural(r['n_repeats'], 'response')} per cell): "
            f"{fmt.num(r['mde'], _digits(metric))} (Monte-Carlo SE {fmt.num(r['mc_se'], 3)})"
            for _, r in rows.iterrows()
        ]
        first = rows.iloc[0]
        lines.append(f"- {metric}, at {fmt.pct(first['power'], 0)} power and alpha "
                     f"{fmt.num(first['alpha'])}: " + "; ".join(parts) + ".")
    section.blocks.append(Text(
        "The smallest paired difference between two methods that a study of this shape would "
        "detect, by simulation from the fitted variance components (a smaller difference may "
        "exist but would usually go undetected):\n\n" + "\n".join(lines)
    ))
    return section


# --------------------------------------------------------------------------- methods appendix

ESTIMATORS: tuple[tuple[str, str], ...] = (
    ("Response score",
     "$\\bar y_{r} = \\frac{1}{k}\\sum_{j=1}^{k} y_{rj}$, the mean of a response's $k$ parsed "
     "judgings; unparsed judgings are excluded and counted."),
    ("Mean and interval",
     "$\\hat\\mu = \\frac{1}{n}\\sum_r \\bar y_r$; the interval is "
     "$\\hat\\mu \\pm t_{G-1}\\sqrt{G/(G-1)}\\,\\mathrm{SD}(\\hat\\mu^{*})$ over bootstrap "
     "replicates $\\hat\\mu^{*}$ that resample queries and prompts independently "
     "(pigeonhole bootstrap), $G$ the smaller number of queries or prompts."),
    ("Paired contrast",
     "$\\hat\\Delta = \\frac{1}{m}\\sum_{c}(\\bar y_{c}^{\\,\\mathrm{method}} - "
     "\\bar y_{c}^{\\,\\mathrm{base}})$ over the $m$ query-prompt cells both arms share, with "
     "the same bootstrap for its interval and $t = \\hat\\Delta/\\mathrm{SE}$ on $G-1$ df; "
     "Holm's step-down adjustment across the family; $d_z = \\hat\\Delta/s_{\\Delta}$."),
    ("Mixed model",
     "$y = X\\beta + u_{q} + u_{p} + u_{qm} + \\varepsilon$ with independent normal random "
     "intercepts for query, prompt and query-by-method, fitted by REML; marginal means "
     "$L\\hat\\beta$ with Satterthwaite degrees of freedom."),
    ("Accuracy",
     "$\\mathrm{logit}\\,P(\\mathrm{correct}) = \\beta_{\\mathrm{model}\\times\\mathrm{method}}$ "
     "by GEE with an exchangeable working correlation within question and robust standard "
     "errors."),
    ("Reliability",
     "$\\mathrm{ICC}(2,1) = \\frac{MS_R - MS_E}{MS_R + (k-1)MS_E + k(MS_C - MS_E)/n}$ "
     "(Shrout and Fleiss); Krippendorff's $\\alpha = 1 - D_o/D_e$ with ordinal distances."),
    ("Trade-off",
     "gains and losses $\\hat\\Delta$ against the baseline from one joint bootstrap; a method "
     "is Pareto-optimal when no other has higher gain and no higher cost."),
    ("Dose-response",
     "per query, the least-squares slope $\\hat b$ of the response score on strength, with a "
     "t interval from prompt-clustered (CR1) standard errors; anti-steerable when the "
     "behaviour slope is negative with Holm-adjusted $p < \\alpha$ across queries; the spread "
     "of slopes across queries from a DerSimonian-Laird random-effects model."),
    ("Power",
     "the smallest $\\Delta$ for which the share of simulated designs (from the fitted variance "
     "components) with $p < \\alpha$ reaches the target power."),
)


def methods_appendix(data: ReportData) -> Section:
    """Each estimator in one line."""
    del data
    lines = [f"- **{name}.** {line}" for name, line in ESTIMATORS]
    return Section("methods", "Methods appendix", [Text("\n".join(lines))])


SECTIONS: tuple[Callable[[ReportData], Section], ...] = (
    design_section,
    means_section,
    contrasts_section,
    mixed_model_section,
    reliability_section,
    tradeoff_section,
    dose_response_section,
    parse_failures_section,
    power_section,
    methods_appendix,
)


def build_sections(data: ReportData) -> list[Section]:
    """Every section of the report, in order."""
    return [build(data) for build in SECTIONS]
