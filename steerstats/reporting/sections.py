"""The report's sections, each built from the analysis tables and nothing else.

Every number in a section's text is read from a table and formatted here; none is typed in.
Every data string in prose is escaped (``escape.md``); a section whose analysis did not apply
says why in one line (the reason recorded by ``analyze``). ``build_sections`` never lets one
section's failure stop the report: that section becomes a one-line note.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pandas as pd

from steerstats import fmt, plots
from steerstats.reporting._cells import (
    ALPHA,
    Column,
    _ci_col,
    _col,
    _count_col,
    _digits,
    _display,
    _metric_ci_col,
    _missing,
    _ms,
    _notes,
    _p_col,
    _sorted,
    _start,
    _text,
    _with_arms,
    holm_family,
)
from steerstats.reporting.appendix import ESTIMATORS, methods_appendix
from steerstats.reporting.content import Block, Figure, Section, Text
from steerstats.reporting.data import ReportData
from steerstats.reporting.escape import md
from steerstats.reporting.judges import judges_section
from steerstats.reporting.queries import per_query_section
from steerstats.reporting.samples import samples_section
from steerstats.reporting.tradeoff import dose_response_section, finding_section, tradeoff_section

__all__ = [
    "ESTIMATORS",
    "SECTIONS",
    "build_sections",
    "contrasts_section",
    "design_section",
    "dose_response_section",
    "finding_section",
    "judges_section",
    "means_section",
    "methods_appendix",
    "mixed_model_section",
    "parse_failures_section",
    "per_query_section",
    "power_section",
    "reliability_section",
    "samples_section",
    "tradeoff_section",
]


# ------------------------------------------------------------------------------------ design


def design_section(data: ReportData) -> Section:
    """Models, methods, queries, prompts, samples, judging, and what failed or is absent."""
    section, design = _start(data, "design", "Design", "design", "design summary")
    judging = data.get("judging")
    if design is None:
        return section
    models = _ms(sorted(design["model"].astype(str).unique()))
    methods = []
    for method, rows in design.groupby("method", sort=False):
        strengths = [f"{s:g}" for s in sorted(rows["strength"].dropna().unique())]
        methods.append(f"{md(method)} (strengths {md(', '.join(strengths))})" if strengths
                       else md(method))
    lines = [
        f"- **Models** ({len(models)}): {fmt.listing(models)}.",
        f"- **Methods** ({len(methods)}): {fmt.listing(methods)}.",
    ]
    for prompt_set, rows in design.groupby("prompt_set", sort=True):
        lines.append(
            f"- **{md(prompt_set)} prompts**: "
            f"{fmt.plural(rows['n_queries'].max(), 'query', 'queries')}, "
            f"{fmt.plural(rows['n_prompts'].max(), 'distinct prompt')}, "
            f"{fmt.plural(rows['n_samples'].max(), 'sample')} per prompt; "
            f"{fmt.count(rows['n_responses'].sum())} responses in all."
        )
    if judging is not None:
        for _, r in judging.iterrows():
            lines.append(
                f"- **{md(r['metric'])}** rated by {md(r['rater'])}: "
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
        parts = [f"{md(r['method'])} on {md(r['model'])} ({md(r['prompt_set'])}): "
                 f"{fmt.count(r['n_absent'])}"
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
    design = _sorted(design, ["model", "method", "prompt_set"], [True, True, True])
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
        parts.append(f"steerstats {md(m['steerstats_version'])}")
    if m.get("created_at"):
        parts.append(f"created {md(m['created_at'])}")
    digest = m.get("experiment_digest")
    if digest:
        parts.append(f"experiment digest {md(str(digest)[:12])}")
    source = m.get("import") or m.get("source")
    if isinstance(source, dict) and source.get("format"):
        parts.append(f"imported from {md(source['format'])}")
    elif isinstance(source, str):
        parts.append(f"imported from {md(source)}")
    return ("Results: " + "; ".join(parts) + ".") if parts else ""


# ------------------------------------------------------------------------------------- means


def means_section(data: ReportData) -> Section:
    """Per model x method x metric means with cluster-bootstrap intervals (a forest plot)."""
    section, summary = _start(data, "means", "Means with 95% confidence intervals", "summary",
                              "means")
    if summary is None:
        return section
    table = _sorted(_with_arms(summary), ["metric", "model", "mean"], [True, True, False])
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
            f"- {md(metric)}, {md(model)}: highest {md(hi['method'])} "
            f"{fmt.est_ci(hi['mean'], hi['ci_low'], hi['ci_high'], d)}, lowest {md(lo['method'])} "
            f"{fmt.est_ci(lo['mean'], lo['ci_low'], lo['ci_high'], d)}."
        )
    if lines:
        section.blocks.append(Text("\n".join(lines)))
    notes = _notes(table, "means")
    if notes:
        section.blocks.append(notes)
    if table["mean"].notna().any():
        section.blocks.append(Figure(plots.means_forest(table), "Means per model, method and "
                                     "metric with 95% cluster-bootstrap intervals.",
                                     "means_forest"))
    else:
        section.blocks.append(Text("No mean could be computed: every rating is missing."))
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
    table = _sorted(table, ["baseline", "metric", "model", "diff"], [True, True, True, False])
    if table.empty:
        section.blocks.append(Text("No contrast has a matched pair: the methods share no "
                                   "query x prompt cell with the baseline."))
        return section
    baselines = _ms(sorted(table["baseline"].astype(str).unique()))
    significant = table[table["p_holm"] < ALPHA]
    intro = (
        f"Each method minus the baseline ({fmt.listing(baselines)}), paired on model, query and "
        "prompt; p-values and intervals respect clustering by query and prompt. "
        f"{holm_family(table)} "
        f"{fmt.count(len(significant))} of {fmt.count(len(table))} contrasts have a "
        f"Holm-adjusted p below {ALPHA}"
    )
    if len(significant):
        items = [
            f"- {md(r['method'])} − {md(r['baseline'])} on {md(r['metric'])} ({md(r['model'])}): "
            f"{fmt.est_ci(r['diff'], r['ci_low'], r['ci_high'], _digits(r['metric']))}, "
            f"Holm p {_p_phrase(r['p_holm'])}, $d_z$ = {fmt.num(r['dz'])}"
            for _, r in significant.iterrows()
        ]
        section.blocks.append(Text(intro + ":\n\n" + "\n".join(items)))
    else:
        section.blocks.append(Text(intro + "."))
    notes = _notes(table, "contrasts")
    if notes:
        section.blocks.append(notes)
    if table["diff"].notna().any():
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
            parts = [f"{md(r['group'])} {fmt.pct(r['share'])} (SD {fmt.num(r['sd'])})"
                     for _, r in rows.iterrows()]
            lines.append(f"- {md(metric)}: {'; '.join(parts)}.")
        section.blocks.append(Text("\n".join(lines)))
        singular = _singular(vc)
        if singular:
            section.blocks.append(Text(
                f"Singular fit for {fmt.listing(_ms(singular))}: a variance component is "
                "estimated at zero, so that model's intervals lean on a boundary estimate."))
        notes = _notes(vc, "mixed models")
        if notes:
            section.blocks.append(notes)
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
        emm = _sorted(emm, ["metric", "model", "estimate"], [True, True, False])
        section.blocks.append(_display(emm, [
            ("Metric", _text("metric")), ("Model", _text("model")), ("Method", _text("method")),
            ("Estimate [95% CI]", _metric_ci_col("estimate")),
            ("df", _col("df", 1)), ("Responses", _count_col("n")),
        ]))
    mixed_contrasts = data.get("mixed_contrasts")
    if mixed_contrasts is not None:
        section.blocks.append(Text("Model-based contrasts against the baseline. "
                                   f"{holm_family(mixed_contrasts)}"))
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


def _singular(table: pd.DataFrame) -> list[str]:
    """Metrics whose fit is flagged singular (a ``singular`` column, when the analysis writes
    one)."""
    if "singular" not in table:
        return []
    flagged = table[table["singular"].astype("boolean").fillna(False)]
    return sorted(flagged["metric"].astype(str).unique())


def _accuracy_blocks(acc: pd.DataFrame) -> list[Block]:
    gee = acc[(acc["outcome"] == "accuracy") & (acc["estimator"] == "gee")]
    unparsed = acc[acc["outcome"] == "unparsed"]
    boot = acc[(acc["outcome"] == "accuracy") & (acc["estimator"] == "bootstrap")]
    merged = gee.merge(boot, on=["model", "method"], suffixes=("", "_boot"), how="outer")
    merged = merged.merge(unparsed, on=["model", "method"], suffixes=("", "_unparsed"),
                          how="left")
    blocks: list[Block] = [Text(
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
                f"- {md(metric)} ({fmt.count(first['n_targets'])} responses, "
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
    if len(drawn) and drawn["estimate"].notna().any():
        section.blocks.append(Figure(plots.reliability_forest(drawn), "Reliability statistics "
                                     "with 95% intervals, per metric, all methods together.",
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


# ----------------------------------------------------------------------------- parse failure


def parse_failures_section(data: ReportData) -> Section:
    """Share of ratings without a usable value, per model x method x metric, with reasons;
    one line when every rating has a value."""
    section, pf = _start(data, "parse-failures", "Parse failures", "parse_failures",
                         "parse-failure counts")
    if pf is None:
        return section
    total, bad = pf["n_ratings"].sum(), pf["n_unparsed"].sum()
    if not bad or not total:
        section.blocks.append(Text(f"No parse failures: all {fmt.count(total)} ratings have a "
                                   "usable value."))
        return section
    text = (
        f"{fmt.count(bad)} of {fmt.count(total)} ratings ({fmt.pct(bad / total)}) have no usable "
        "value: a judge answer without a readable score, or an MMLU response without a readable "
        "`<answer>` tag. They are excluded from means and counted, never scored as a number."
    )
    failing = _sorted(pf[pf["n_unparsed"] > 0], ["rate", "n_unparsed"], [False, False])
    worst = failing.iloc[0]
    text += (f" The highest rate is {fmt.pct(worst['rate'])} ({md(worst['metric'])}, "
             f"{md(worst['method'])} on {md(worst['model'])}).")
    section.blocks.append(Text(text))
    drawn = pf[pf["metric"].isin(failing["metric"])]
    section.blocks.append(Figure(plots.parse_failure_bars(drawn), "Share of unparsed ratings "
                                 "per model, method and metric (metrics with at least one).",
                                 "parse_failures"))
    section.blocks.append(_display(failing, [
        ("Model", _text("model")), ("Method", _text("method")), ("Metric", _text("metric")),
        ("Ratings", _count_col("n_ratings")), ("Unparsed", _count_col("n_unparsed")),
        ("Rate", lambda r: fmt.pct(r["rate"])), ("Reasons", _text("reasons")),
    ], "Cells with at least one unparsed rating, highest rate first."))
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
            f"{md(r['design'])} ({fmt.plural(r['n_queries'], 'query', 'queries')}, "
            f"{fmt.plural(r['n_prompts'], 'prompt')} per query, "
            f"{fmt.plural(r['n_repeats'], 'response')} per cell): "
            f"{fmt.num(r['mde'], _digits(metric))} (Monte-Carlo SE {fmt.num(r['mc_se'], 3)})"
            for _, r in rows.iterrows()
        ]
        first = rows.iloc[0]
        lines.append(f"- {md(metric)}, at {fmt.pct(first['power'], 0)} power and alpha "
                     f"{fmt.num(first['alpha'])}: " + "; ".join(parts) + ".")
    section.blocks.append(Text(
        "The smallest paired difference between two methods that a study of this shape would "
        "detect, by simulation from the fitted variance components (a smaller difference may "
        "exist but would usually go undetected):\n\n" + "\n".join(lines)
    ))
    return section


SECTIONS: tuple[Callable[[ReportData], Section], ...] = (
    finding_section,
    design_section,
    functools.partial(tradeoff_section, figure=False),
    per_query_section,
    samples_section,
    means_section,
    contrasts_section,
    mixed_model_section,
    reliability_section,
    judges_section,
    functools.partial(dose_response_section, figure=False),
    parse_failures_section,
    power_section,
    methods_appendix,
)


def build_sections(data: ReportData) -> list[Section]:
    """Every section of the report, in order.

    A section that raises on these data is replaced by a one-line note naming the error, so
    the report always renders (the tests check that none of their folders needs it).
    """
    out = []
    for build in SECTIONS:
        try:
            out.append(build(data))
        except Exception as exc:  # noqa: BLE001 - one section must not cost the whole report
            name = getattr(build, "func", build).__name__
            out.append(Section(name.removesuffix("_section"), name.replace("_", " "), [Text(
                f"This section could not be built from these data: {md(type(exc).__name__)}: "
                f"{md(str(exc)[:300])}.")]))
    return out
