"""The report's "Judges" section: the judges as raters, from the judge-panel tables.

What one judge's repeats agree on (test-retest), what a second judge would change
(inter-rater), how many judgings buy a reliable mean (G and D study), each judge's offset,
the limits of agreement of two judges, and whether each conclusion holds under every judge.
With one judge or one repeat it says plainly what that leaves unknown.
"""

from __future__ import annotations

import pandas as pd

from steerstats import fmt, plots
from steerstats.reporting._cells import (
    ALPHA,
    Column,
    _ci_col,
    _count_col,
    _display,
    _sorted,
    _text,
    _with_arms,
)
from steerstats.reporting.content import Block, Figure, Section, Text
from steerstats.reporting.data import ReportData
from steerstats.reporting.escape import label, md
from steerstats.schema import AUTO_RATER

__all__ = ["judges_section"]

TARGET = 0.8  # the reliability a decision study is read against (G >= 0.8)

# What each facet of the panel tells, to say when it could not be measured.
_NO_RETEST = ("how much a judge disagrees with itself on a re-run (test-retest) is unknown, "
              "and the judge x response interaction cannot be told apart from that noise")
_NO_PANEL = ("whether another judge would give the same scores, each judge's offset, the "
             "between-judge share of the error, and whether the conclusions hold under "
             "another judge are unknown")

# Statistics of the facet table: (rater_reliability label, column header).
_FACET_STATS = (
    ("ICC1", "ICC(1,1)"),
    ("ICC2", "ICC(2,1) absolute"),
    ("ICC3", "ICC(3,1) consistency"),
    ("alpha_interval", "alpha (interval)"),
)


def judges_section(data: ReportData) -> Section:
    """Judges as raters: the panel, reliability by facet, the decision study, rater bias,
    Bland-Altman limits and the conclusions under each judge."""
    section = Section("judges", "Judges")
    blocks = section.blocks
    blocks.append(_panel_text(data))
    for part in (_facets, _decision, _bias, _bland_altman, _robustness):
        blocks.extend(part(data))
    return section


def _overall(table: pd.DataFrame) -> pd.DataFrame:
    """The rows over all methods (``method`` empty), when the table is split by method."""
    if "method" not in table:
        return table
    return table[table["method"].isna()]


# ------------------------------------------------------------------------- what was collected


def _panel_text(data: ReportData) -> Text:
    """Per judged metric: its judges and repeats, and what that design leaves unknown."""
    judging = data.get("judging")
    if judging is None or not {"metric", "rater", "n_repeats"} <= set(judging.columns):
        return Text("No judged metric is in these results (no judging table), so nothing is "
                    "known about the judges.")
    rated = judging[judging["rater"].astype(str) != AUTO_RATER]
    if rated.empty:
        return Text("Every metric here is computed (no judge), so there is no judge to "
                    "assess.")
    lines: list[str] = []
    gaps: dict[str, tuple[list[str], str]] = {}
    for metric, rows in rated.groupby("metric", sort=True):
        judges = [f"{md(r['rater'])} ({fmt.plural(r['n_repeats'], 'repeat')})"
                  for _, r in rows.iterrows()]
        n_judges = rows["rater"].nunique()
        repeated = bool((pd.to_numeric(rows["n_repeats"], errors="coerce") >= 2).any())
        lines.append(f"- **{md(metric)}**: {fmt.plural(n_judges, 'judge')}, "
                     f"{fmt.listing(judges)}.")
        if n_judges < 2:
            gaps.setdefault("one judge", ([], _NO_PANEL))[0].append(md(metric))
        if not repeated:
            gaps.setdefault("one judging per judge", ([], _NO_RETEST))[0].append(md(metric))
    said = [f"With {what} ({fmt.listing(metrics)}), {unknown}."
            for what, (metrics, unknown) in gaps.items()]
    return Text(
        "A judged score mixes the response (what we want to measure) with the judge: its "
        "noise on a re-run, its offset, and its own ranking of responses. Judges and repeats "
        "per judged metric:\n\n" + "\n".join(lines) + ("\n\n" + " ".join(said) if said else ""))


# ------------------------------------------------------------------------------ by facet


def _facets(data: ReportData) -> list[Block]:
    """Test-retest per judge and inter-rater (repeats averaged), the headline statistics."""
    rel = data.get("rater_reliability")
    if rel is None:
        return [_why(data, "rater_reliability", "reliability by facet")]
    rel = _overall(rel)
    keys = ["metric", "facet", "rater"]
    rows = []
    for key, g in rel.groupby(keys, sort=False, dropna=False):
        g = g.set_index("statistic")
        row = dict(zip(keys, key, strict=True))
        row["n_targets"] = g["n_targets"].max() if "n_targets" in g else float("nan")
        row["n_raters"] = g["n_raters"].iloc[0] if "n_raters" in g else float("nan")
        for stat, _ in _FACET_STATS:
            for col in ("estimate", "ci_low", "ci_high"):
                row[f"{stat}_{col}"] = g.loc[stat, col] if stat in g.index else float("nan")
        rows.append(row)
    if not rows:
        return [Text("No reliability by facet was computed over all methods.")]
    table = pd.DataFrame(rows)
    table["_f"] = table["facet"].map({"test-retest": 0, "inter-rater": 1})
    table = _sorted(table, ["metric", "_f", "rater"], [True, True, True])
    intro = Text(
        "*Test-retest*: one judge's repeats of the same response. *Inter-rater*: the judges "
        "against each other, each judge's repeats averaged first. A high test-retest and a "
        "low inter-rater ICC means the judges measure different things, not noisily; "
        "ICC(3,1) above ICC(2,1) means the judges differ by a systematic offset (see rater "
        "bias below). 95% intervals; ICC(1,1) suits repeats, whose order means nothing.")
    columns = [
        ("Metric", _text("metric")), ("Facet", _text("facet")),
        ("Judge", lambda r: "all judges" if pd.isna(r["rater"]) else str(r["rater"])),
        *[(header, lambda r, s=stat: fmt.est_ci(r[f"{s}_estimate"], r[f"{s}_ci_low"],
                                                r[f"{s}_ci_high"]))
          for stat, header in _FACET_STATS],
        ("Responses", _count_col("n_targets")),
    ]
    blocks: list[Block] = [intro, _display(table, columns, "Reliability by facet, all "
                                           "methods together.")]
    retest = data.skipped("rater_reliability: test-retest")
    if retest and data.get("judging") is None:  # else the panel's description says it
        blocks.append(Text(f"No test-retest row: {md(retest)}."))
    return blocks


# ------------------------------------------------------------------- G and decision study


def _decision(data: ReportData) -> list[Block]:
    """Variance components (G study) and the reliability of more judges or repeats (D study)."""
    blocks: list[Block] = []
    g = data.get("g_study")
    confounded_metrics: set[str] = set()
    if g is None:
        blocks.append(_why(data, "g_study", "generalizability study"))
    else:
        g = _overall(g).copy()
        blocks.append(Text(
            "Generalizability study: each judged score's variance split into the response "
            "(universe score), the judge's offset, the judge x response interaction and the "
            "residual (a judge's disagreement with itself), by REML."))
        confounded = g.get("confounded", pd.Series(False, index=g.index))
        confounded = confounded.map(_true)
        confounded_metrics = {str(m) for m in g.loc[confounded, "metric"]}
        if confounded.any():
            blocks.append(Text(
                "One judging per judge: the response:rater row holds the judge x response "
                "interaction and the judges' noise together (residual not separable)."))
        blocks.append(_display(g, [
            ("Metric", _text("metric")), ("Component", _text("component")),
            ("Variance", lambda r: fmt.num(r["variance"], 3)),
            ("Share", lambda r: fmt.pct(r["share"])),
            ("Levels", _count_col("n_levels")),
        ], "Variance components, all methods together."))
    grid = data.get("decision_study")
    if grid is None:
        blocks.append(_why(data, "decision_study", "decision study"))
        return blocks
    grid = _overall(grid)
    if confounded_metrics:
        # One repeat collected: what more repeats would buy is not estimable (the judges'
        # noise is inside response:rater), so the grid is read at one repeat only.
        keep = ~grid["metric"].astype(str).isin(confounded_metrics) | (grid["n_repeats"] == 1)
        grid = grid[keep]
    lines = []
    for metric, rows in grid.groupby("metric", sort=True):
        rows = rows.assign(judgings=rows["n_raters"] * rows["n_repeats"])
        here = rows[rows["collected"].astype("boolean").fillna(False)]
        parts = []
        if len(here):
            h = here.iloc[0]
            parts.append(f"as collected ({_design(h)}) G = {fmt.num(h['g'])}, "
                         f"Phi = {fmt.num(h['phi'])}")
        enough = rows[rows["g"] >= TARGET].sort_values(["judgings", "n_raters"],
                                                       ascending=[True, False])
        if len(enough):
            parts.append(f"G ≥ {TARGET:g} first with {_design(enough.iloc[0])}")
        else:
            parts.append(f"no design in the grid reaches G ≥ {TARGET:g} (at most "
                         f"{fmt.num(rows['g'].max())})")
        if str(metric) in confounded_metrics:
            parts.append("what more repeats per judge would buy is unknown (one was "
                         "collected), so only more judges are shown")
        lines.append(f"- {md(metric)}: " + "; ".join(parts) + ".")
    blocks.append(Text(
        "Decision study: the reliability of the mean of more judges or repeats, from the "
        "variance components. G (relative) is what comparing methods needs; Phi (absolute) "
        "what a score on the rubric's own scale needs: judge offsets lower Phi, not G.\n\n"
        + "\n".join(lines)))
    drawn = grid[grid[["g", "phi"]].notna().any(axis=1)]
    if len(drawn):
        drawn = drawn.assign(metric=[label(m) for m in drawn["metric"]])
        repeats = sorted({int(k) for k in drawn["n_repeats"]})
        dashes = "; ".join(f"{plots.DASH_NAMES[i % len(plots.DASH_NAMES)]}: "
                           f"{fmt.plural(k, 'repeat')} per judge" for i, k in enumerate(repeats))
        blocks.append(Figure(plots.decision_study_curve(drawn, target=TARGET),
                             "G (blue) and Phi (orange) of the mean score against the judgings "
                             f"per response ({dashes}); ringed: the design collected; grey "
                             f"line: {TARGET:g}.", "decision_study"))
    return blocks


def _design(row: pd.Series) -> str:
    return (f"{fmt.plural(int(row['n_raters']), 'judge')} x "
            f"{fmt.plural(int(row['n_repeats']), 'repeat')}")


# ------------------------------------------------------------------------------ rater bias


def _bias(data: ReportData) -> list[Block]:
    """Each judge's mean offset from the panel mean, with query-clustered intervals."""
    bias = data.get("rater_bias")
    if bias is None:
        return [_why(data, "rater_bias", "rater bias estimates")]
    bias = _sorted(_overall(bias), ["metric", "offset"], [True, False])
    lines = []
    for _, r in bias.iterrows():
        if pd.notna(r["ci_low"]) and (r["ci_low"] > 0 or r["ci_high"] < 0):
            lines.append(f"- {md(r['rater'])} on {md(r['metric'])}: "
                         f"{fmt.est_ci(r['offset'], r['ci_low'], r['ci_high'])}.")
    intro = ("Rater bias: each judge's mean score minus the panel's mean, on the responses "
             "every judge rated (95% intervals resample queries). ")
    intro += ("Offsets whose interval excludes 0:\n\n" + "\n".join(lines) if lines
              else "No offset's interval excludes 0.")
    return [Text(intro), _display(bias, [
        ("Metric", _text("metric")), ("Judge", _text("rater")),
        ("Offset [95% CI]", _ci_col("offset")),
        ("Judge mean", lambda r: fmt.num(r["judge_mean"])),
        ("Panel mean", lambda r: fmt.num(r["panel_mean"])),
        ("Responses", _count_col("n_responses")), ("Queries", _count_col("n_clusters")),
    ], "Offsets from the panel mean, all methods together.")]


def _bland_altman(data: ReportData) -> list[Block]:
    """Limits of agreement between each pair of judges."""
    ba = data.get("bland_altman")
    if ba is None:
        return [_why(data, "bland_altman", "Bland-Altman limits")]
    ba = _overall(ba)
    return [Text("Bland-Altman limits of agreement: 95% of the differences between two "
                 "judges' scores of one response (each judge's repeats averaged) are expected "
                 "between the limits."), _display(ba, [
        ("Metric", _text("metric")),
        ("Judges (a − b)", lambda r: f"{r['rater_a']} − {r['rater_b']}"),
        ("Responses", _count_col("n_responses")),
        ("Mean difference [95% CI]",
         lambda r: fmt.est_ci(r["bias"], r["bias_ci_low"], r["bias_ci_high"])),
        ("SD", lambda r: fmt.num(r["sd"])),
        ("Lower limit [95% CI]",
         lambda r: fmt.est_ci(r["loa_low"], r["loa_low_ci_low"], r["loa_low_ci_high"])),
        ("Upper limit [95% CI]",
         lambda r: fmt.est_ci(r["loa_high"], r["loa_high_ci_low"], r["loa_high_ci_high"])),
    ], "Limits of agreement per pair of judges.")]


# -------------------------------------------------------------------------- robustness


def _robustness(data: ReportData) -> list[Block]:
    """Whether each pooled conclusion holds under each judge alone."""
    rob = data.get("judge_robustness")
    if rob is None:
        return [_why(data, "judge_robustness", "per-judge conclusions")]
    rob = _sorted(_with_arms(rob), ["metric", "baseline", "model", "diff"],
                  [True, True, True, False])
    holds = rob["holds_under_every_judge"].map(_true)
    testable = rob["conclusion"].astype(str) != "not estimable"
    failing = rob[testable & ~holds]
    text = (
        "Conclusions under each judge: the paired contrasts rerun on each judge's scores alone, "
        "with the same Holm families as the pooled ones (one per model x metric x baseline). "
        f"A conclusion is the sign of the difference and whether its Holm p is below {ALPHA}. ")
    n_untestable = int((~testable).sum())
    if n_untestable:
        text += (f"{fmt.count(n_untestable)} of {fmt.count(len(rob))} pooled contrasts have no "
                 "p-value (e.g. too few queries), so whether they hold under another judge is "
                 "unknown. ")
    if testable.any():
        text += (f"{fmt.count(int((testable & holds).sum()))} of "
                 f"{fmt.count(int(testable.sum()))} testable conclusions hold under every judge")
        if len(failing):
            items = [f"- {md(r['method'])} − {md(r['baseline'])} on {md(r['metric'])} "
                     f"({md(r.get('model', ''))}): pooled {md(r['conclusion'])}; "
                     f"{md(r['judges'])}" for _, r in failing.iterrows()]
            text += "; these do not:\n\n" + "\n".join(items)
        else:
            text += "."
    several = "model" in rob and rob["model"].nunique() > 1
    columns: list[Column] = [("Model", _text("model"))] if several else []
    return [Text(text.strip()), _display(rob, [
        *columns, ("Metric", _text("metric")),
        ("Contrast", lambda r: f"{r['method']} − {r['baseline']}"),
        ("Pooled difference", lambda r: fmt.num(r["diff"])),
        ("Holm p", lambda r: fmt.pval(r["p_holm"])), ("Conclusion", _text("conclusion")),
        ("Holds under every judge",
         lambda r: "yes" if _true(r["holds_under_every_judge"]) else "no"),
        ("Each judge", _text("judges")),
    ], "Pooled conclusions and each judge's.")]


def _true(value: object) -> bool:
    """A boolean cell read back from CSV (True, "True"); missing is False."""
    return value is True or str(value).strip().lower() == "true" or (
        isinstance(value, (int, float)) and not pd.isna(value) and bool(value))


def _why(data: ReportData, name: str, what: str) -> Text:
    reason = data.skipped(name)
    if reason:
        return Text(f"No {what}: {md(reason)}.")
    return Text(f"No {what} (table `{name}` is absent or empty).")

