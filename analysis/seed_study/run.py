"""Re-analyse the seed study's published Llama-3.1-8B rows and render the comparison report.

    python analysis/seed_study/run.py [--shared ../shared] [--out results/seed-study]

Imports the study's CSVs with ``steerstats.importers``, writes two results directories (the
MMLU snapshot and the open-prompt study), runs ``steerstats.analysis`` on each, and renders one
self-contained HTML page that sets the study's published conclusions beside steerstats' own.
Prints the page's path.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare  # noqa: E402

from steerstats import fmt  # noqa: E402
from steerstats.analysis.analyze import analyze  # noqa: E402
from steerstats.importers import import_seed_study  # noqa: E402
from steerstats.reporting import ReportData, Section, Table, Text, to_html  # noqa: E402
from steerstats.reporting import sections as std  # noqa: E402
from steerstats.reporting.content import Figure  # noqa: E402
from steerstats.reporting.sections import methods_appendix  # noqa: E402

REPO = HERE.parents[1]


def import_and_analyze(seed_dir: Path, out: Path, n_boot: int) -> dict[str, object]:
    """Import both studies, write their results directories, analyse them."""
    results = seed_dir / "results"
    design = seed_dir / "design"  # the study's own queries, prompts and 285 MMLU answer keys
    studies = {
        # The open study's rows whose query or prompt is not among the shipped texts are kept
        # under ids derived from their text: they are real responses to real prompts.
        "open": import_seed_study(open_csv=results / "open_prompts_llama-3.1-8b.csv",
                                  model=compare.MODEL, design_dir=design,
                                  keep_unmatched=True),
        # MMLU rows for questions without an answer key have unknown correctness: they stay
        # out (and are counted in the report).
        "mmlu": import_seed_study(mmlu_csv=results / "mmlu_llama-3.1-8b_partial.csv",
                                  model=compare.MODEL, design_dir=design,
                                  keep_unmatched=False),
    }
    out_tables: dict[str, object] = {}
    for name, imported in studies.items():
        folder = out / name
        imported.write(folder)
        out_tables[name] = analyze(folder, out=folder / "analysis", n_boot=n_boot, seed=0)
        out_tables[f"{name}_import"] = imported
    return out_tables


def study_labels(imported: object) -> dict[str, str]:
    """Study label -> the method its rows were imported as, for labels whose rows were all
    re-labelled (contaminated) or none; a label split between the two maps to itself."""
    labels: dict[str, str] = {}
    for info in imported.source["files"]:  # type: ignore[attr-defined]
        for label, entry in info.get("labels", {}).items():
            whole = entry["contaminated"] == entry["rows"]
            labels[label] = entry["imported_as"] if whole else label
    return labels


def contamination_table(imports: dict[str, object]) -> pd.DataFrame:
    """Per study file and method label: rows, rows whose system prompt holds their query's
    steering instruction, those of them whose method sends none (contaminated), and the
    method the contaminated rows were imported as."""
    rows = []
    for name in ("mmlu", "open"):
        for info in imports[f"{name}_import"].source["files"]:  # type: ignore[attr-defined]
            for label, entry in info.get("labels", {}).items():
                rows.append({"study": name, "label": label, **entry})
    return pd.DataFrame(rows, columns=["study", "label", "rows", "with_instruction",
                                       "contaminated", "imported_as"])


READS_AS = {
    ("autosteer", "control"): "steering and the prompt together, against nothing",
    ("autosteer", "prompt"): "what steering adds on top of the same prompt",
    ("prompt", "control"): "the prompt alone",
}


def contamination_section(table: pd.DataFrame, tests: pd.DataFrame,
                          published: pd.DataFrame) -> Section:
    by = table.set_index(["study", "label"])

    def count(study: str, label: str) -> str:
        if (study, label) not in by.index:
            return "no rows"
        row = by.loc[(study, label)]
        return f"{fmt.count(row['with_instruction'])} of {fmt.count(row['rows'])}"

    dirty = table[table["contaminated"] > 0]
    if dirty.empty:
        return Section("contamination", "Condition contamination", [Text(
            "No row of a method that sends no prompt (control, Auto Steer, agentic) carries "
            "its query's steering instruction in its system prompt.")])
    shown = tests[[(m, b) in READS_AS for m, b in zip(tests["method"], tests["baseline"],
                                                       strict=True)]]
    auto = shown[shown["method"] == "autosteer"]
    on_prompt = auto[auto["baseline"] == "prompt"].set_index("metric")
    effects = "; ".join(
        f"{metric} {fmt.est_ci(r['paired_diff'], r['paired_ci_low'], r['paired_ci_high'], 3)}"
        f" (Holm p {_p(r['paired_p_holm'])})" for metric, r in on_prompt.iterrows())
    pub = published.set_index(["method", "metric"])["published"]
    pub_auto = ", ".join(f"{m} {fmt.num(pub.get(('autosteer', m)), 3)}"
                         for m in ("accuracy", "behavior", "coherence")
                         if ("autosteer", m) in pub.index)
    text = (
        "**The MMLU snapshot's \"Auto Steer\" rows are Auto Steer + prompt.** "
        f"{count('mmlu', 'autosteer')} rows the study labelled Auto Steer carry their query's "
        "steering instruction in their system prompt (\"When answering, please be funny.\"), "
        f"as the prompt method's rows do by design ({count('mmlu', 'prompt')}); control rows: "
        f"{count('mmlu', 'control')}. The study's prompt method edits the shared message list in "
        "place, so its MMLU Auto Steer condition sent the prompt too. The open-prompt study's "
        f"Auto Steer rows are clean ({count('open', 'autosteer')}). steerstats' importer reads "
        "this from the rows' own system prompts and imports them as `autosteer+prompt` (each "
        "row is listed in `mmlu/flagged.csv`; `--as-labelled` keeps the study's label).\n\n"
        "So the published MMLU comparisons with Auto Steer measure something else than their "
        "names say: *Auto Steer − Control* is steering and the prompt together, and *Auto "
        "Steer − Simple Prompting* is what steering adds on top of the same prompt. On the "
        f"snapshot's rows (paired, clustered on queries and questions, 95% CI), steering on "
        f"top of the prompt changes {effects}. No MMLU row measures Auto Steer alone, so the "
        "accuracy and coherence cost the paper attributes to Auto Steer on MMLU is, in these "
        "rows, the cost of steering added to a prompt. If the final runs behind the published "
        "means used the same code, the published MMLU Auto Steer figures "
        f"({compare.MODEL}: {pub_auto}) describe Auto Steer + prompt as well."
    )
    table_view = Table(pd.DataFrame({
        "Published comparison": [f"{m} − {b}" for m, b in zip(shown["method"], shown["baseline"],
                                                                strict=True)],
        "Rows compared": [f"{m} − {b}" for m, b in zip(shown["rows_method"],
                                                        shown["rows_baseline"], strict=True)],
        "Reads as": [READS_AS[(m, b)] for m, b in zip(shown["method"], shown["baseline"],
                                                       strict=True)],
        "Metric": shown["metric"],
        "Published diff": [fmt.num(d, 3) for d in shown["published_diff"]],
        "Snapshot, paired [95% CI]": [
            fmt.est_ci(d, lo, hi, 3) for d, lo, hi in
            zip(shown["paired_diff"], shown["paired_ci_low"], shown["paired_ci_high"],
                strict=True)],
        "Holm p": [_p(p) for p in shown["paired_p_holm"]],
    }), "Differences are method − baseline, by the study's labels; the rows compared are what "
        "those labels hold once contamination is read from the system prompts.")
    return Section("contamination", "Condition contamination: MMLU Auto Steer is Auto Steer + "
                   "prompt", [Text(text), table_view])


def _prefixed(section: Section, prefix: str, label: str) -> Section:
    blocks = [dataclasses.replace(b, name=f"{prefix}-{b.name}") if isinstance(b, Figure) else b
              for b in section.blocks]
    return Section(f"{prefix}-{section.id}", f"{label}: {section.title}", blocks)


def data_section(imports: dict[str, object], published_tests: pd.DataFrame) -> Section:
    mmlu_gens = imports["mmlu_import"].generations  # type: ignore[attr-defined]
    per_query = mmlu_gens.groupby(["method", "query_id"])["prompt_id"].nunique().max()
    per_method = int(published_tests["published_n"].max() // 2)
    lines = []
    for name, label in (("mmlu", "MMLU snapshot"), ("open", "Open-prompt study")):
        imp = imports[f"{name}_import"]
        gens, scores, unmatched = imp.generations, imp.scores, imp.unmatched  # type: ignore[attr-defined]
        kept = int(unmatched["kept"].sum()) if len(unmatched) else 0
        lines.append(
            f"- **{label}**: {fmt.count(len(gens))} responses imported "
            f"({fmt.listing(sorted(gens['method'].unique()))}; "
            f"{fmt.plural(gens['query_id'].nunique(), 'query', 'queries')}, "
            f"{fmt.plural(gens['prompt_id'].nunique(), 'prompt')}), "
            f"{fmt.count(len(scores))} scores; {fmt.count(len(unmatched))} source rows did not "
            f"match the shipped queries or prompts, of which {fmt.count(kept)} were kept under "
            "ids derived from their text and "
            f"{fmt.count(len(unmatched) - kept)} left out (listed in `unmatched.csv`)."
        )
    return Section("data", "What was re-analysed", [Text(
        "The study's published means and tests come from its final runs (about "
        f"{fmt.count(per_method)} responses per method and metric in each test), whose rows "
        "were not published. The rows that were published are an MMLU snapshot "
        f"({fmt.count(mmlu_gens['method'].nunique())} methods, up to "
        f"{fmt.count(per_query)} questions per query) and the earlier open-prompt study. "
        "Numbers therefore differ; what can be compared is how each analysis treats the same "
        "kind of data, and which conclusions hold up.\n\n" + "\n".join(lines)
    )])


def means_compare_section(table: pd.DataFrame) -> Section:
    known = table[table["mean"].notna()]
    inside = int(known["published_in_ci"].astype(bool).sum())
    text = (
        f"Published means for {compare.MODEL} beside the MMLU snapshot's means with 95% "
        "intervals from the two-way cluster bootstrap (queries and questions). "
        f"{inside} of {len(known)} published means lie inside the snapshot's interval; "
        f"{fmt.count(len(table) - len(known))} published means have no rows here (methods the "
        "snapshot lacks)."
    )
    shown = Table(pd.DataFrame({
        "Method": [m if m == r or pd.isna(r) else f"{m} (rows: {r})"
                   for m, r in zip(table["method"], table["rows_method"], strict=True)],
        "Metric": table["metric"],
        "Published": [fmt.num(v, 3) for v in table["published"]],
        "Snapshot mean [95% CI]": [
            "no rows" if pd.isna(m) else fmt.est_ci(m, lo, hi, 3)
            for m, lo, hi in zip(table["mean"], table["ci_low"], table["ci_high"], strict=True)],
        "Responses": [fmt.count(n) for n in table["n"]],
        "CI width": [fmt.num(w, 3) for w in table["ci_width"]],
    }))
    return Section("published-means", "Published means and the published rows", [Text(text),
                                                                                   shown])


def tests_section(tests: pd.DataFrame, n_published: int) -> Section:
    pub = int(tests["published_significant"].sum())
    naive = int(tests["naive_significant"].sum())
    paired = int(tests["paired_significant"].sum())
    lost = tests[tests["published_significant"] & ~tests["paired_significant"]]
    mixed_sig = (tests["mixed_p_holm"] < compare.ALPHA) if "mixed_p_holm" in tests else None
    text = (
        f"Of the study's {n_published} tests for {compare.MODEL}, {len(tests)} compare methods "
        "present in the published rows. The study called "
        f"{pub} of these {len(tests)} significant. Re-running its own test (unpaired t-test, "
        f"every response independent, Bonferroni over the {len(tests)} tests) on the published "
        f"rows flags {naive}. "
        f"steerstats' paired contrast (pairs matched on query and question, intervals and "
        f"p-values from the two-way cluster bootstrap on queries - 1 degrees of freedom, Holm) "
        f"flags {paired}"
    )
    if mixed_sig is not None:
        rated = tests["mixed_p_holm"].notna()
        text += (f"; the crossed mixed model flags {int(mixed_sig.sum())} of the "
                 f"{int(rated.sum())} rated-metric contrasts")
    text += "."
    if len(lost):
        items = "\n".join(
            f"- {r['method']} − {r['baseline']} on {r['metric']}: published "
            f"{fmt.num(r['published_diff'], 3)} (p {_p(r['published_p'])}); paired "
            f"{fmt.est_ci(r['paired_diff'], r['paired_ci_low'], r['paired_ci_high'], 3)}, "
            f"Holm p {_p(r['paired_p_holm'])}"
            for _, r in lost.iterrows())
        text += "\n\nPublished as significant but not surviving the paired, clustered test:\n\n" \
            + items
    else:
        text += "\n\nEvery difference the study called significant also survives here."
    table = Table(pd.DataFrame({
        "Contrast": [f"{m} − {b}" for m, b in zip(tests["method"], tests["baseline"],
                                                    strict=True)],
        "Metric": tests["metric"],
        "Published diff (p)": [f"{fmt.num(d, 3)} ({_p(p)})" for d, p in
                               zip(tests["published_diff"], tests["published_p"], strict=True)],
        "Naive on these rows [95% CI]": [
            fmt.est_ci(d, lo, hi, 3) for d, lo, hi in
            zip(tests["naive_diff"], tests["naive_ci_low"], tests["naive_ci_high"], strict=True)],
        "Naive Bonferroni p": [_p(p) for p in tests["naive_p_bonferroni"]],
        "Paired, clustered [95% CI]": [
            fmt.est_ci(d, lo, hi, 3) for d, lo, hi in
            zip(tests["paired_diff"], tests["paired_ci_low"], tests["paired_ci_high"],
                strict=True)],
        "Holm p": [_p(p) for p in tests["paired_p_holm"]],
        "Mixed model [95% CI]": [
            "" if pd.isna(d) else fmt.est_ci(d, lo, hi, 3) for d, lo, hi in
            zip(tests.get("mixed_estimate", pd.Series(float("nan"), index=tests.index)),
                tests.get("mixed_ci_low", pd.Series(float("nan"), index=tests.index)),
                tests.get("mixed_ci_high", pd.Series(float("nan"), index=tests.index)),
                strict=True)],
    }), "Differences are method − baseline. Naive: unpaired t-test on responses.")
    return Section("survive", "Which published differences survive", [Text(text), table])


def _p(p: object) -> str:
    text = fmt.pval(p)
    return text if text.startswith("<") else f"= {text}"


def widths_section(tests: pd.DataFrame) -> Section:
    ratio = tests["width_ratio"]
    text = (
        "An interval that treats every response as independent ignores that responses share "
        "queries and prompts. On the published rows the paired, clustered interval is "
        f"{fmt.num(ratio.min(), 1)} to {fmt.num(ratio.max(), 1)} times as wide as the naive "
        f"one (median {fmt.num(ratio.median(), 1)}): that is the honest width for conclusions "
        "about new queries and questions like these."
    )
    table = Table(pd.DataFrame({
        "Contrast": [f"{m} − {b}" for m, b in zip(tests["method"], tests["baseline"],
                                                    strict=True)],
        "Metric": tests["metric"],
        "Naive CI width": [fmt.num(h - lo, 3) for lo, h in
                           zip(tests["naive_ci_low"], tests["naive_ci_high"], strict=True)],
        "Clustered CI width": [fmt.num(h - lo, 3) for lo, h in
                               zip(tests["paired_ci_low"], tests["paired_ci_high"], strict=True)],
        "Ratio": [fmt.num(r, 2) for r in ratio],
    }))
    return Section("widths", "How wide the honest intervals are", [Text(text), table])


def variance_section(shares: dict[str, pd.DataFrame]) -> Section:
    lines = []
    for study, table in shares.items():
        for metric, rows in table.groupby("metric", sort=True):
            by = rows.set_index("group")["share"]
            lines.append(
                f"- {study}, {metric}: queries {fmt.pct(by.get('query'))}, query x method "
                f"{fmt.pct(by.get('query:method'))}, prompts {fmt.pct(by.get('prompt'))}, "
                f"residual {fmt.pct(by.get('residual'))} of the variance."
            )
    return Section("query-variance", "How large the query-level variance is", [Text(
        "Share of each metric's variance at each level of the crossed mixed model (response "
        "level). Variance between queries, and in how a method's effect differs between "
        "queries, is what makes rows from the same query alike, and what the unpaired tests "
        "leave out.\n\n" + "\n".join(lines)
    )])


def limits_section(imports: dict[str, object], tables: dict[str, dict[str, pd.DataFrame]],
                   means: pd.DataFrame) -> Section:
    lines = []
    for name, label in (("mmlu", "MMLU snapshot"), ("open", "open-prompt study")):
        judging = tables[name]["judging"]
        rated = judging[judging["rater"] != "auto"]
        once = rated[rated["n_repeats"] == 1]["metric"].tolist()
        if once:
            lines.append(f"- **Judge reliability** ({label}): {fmt.listing(once)} were judged "
                         "once per response, so agreement between judgings (ICC, "
                         "Krippendorff's alpha) cannot be estimated and judge noise cannot be "
                         "told apart from response differences.")
        failures = tables[name]["parse_failures"]
        bad = failures[failures["n_unparsed"] > 0]
        for metric, rows in bad.groupby("metric", sort=True):
            lines.append(
                f"- **Unusable {metric} values** ({label}): {fmt.count(rows['n_unparsed'].sum())}"
                f" of {fmt.count(rows['n_ratings'].sum())} (judge scores outside 1-5, or answers "
                "without a readable tag), excluded and counted rather than scored.")
    missing = sorted(means.loc[means["mean"].isna(), "method"].unique())
    if missing:
        lines.append(f"- **Methods without published rows** in the MMLU snapshot: "
                     f"{fmt.listing(missing)}; their published numbers cannot be checked.")
    lines.append("- **Llama-3.3-70B**: no rows were published, so none of its results can be "
                 "re-analysed.")
    return Section("limits", "What these data cannot tell", [Text("\n".join(lines))])


def build(seed_dir: Path, out: Path, n_boot: int = 2000) -> Path:
    """Run the whole re-analysis and write ``<out>/report/index.html``; return its path."""
    imports = import_and_analyze(seed_dir, out, n_boot)
    tables = {k: v for k, v in imports.items() if k in ("open", "mmlu")}
    mmlu: dict[str, pd.DataFrame] = tables["mmlu"]  # type: ignore[assignment]
    openp: dict[str, pd.DataFrame] = tables["open"]  # type: ignore[assignment]
    published = seed_dir / "results"
    labels = study_labels(imports["mmlu_import"])
    pub_means = compare.published_means(published / "paper_metrics_by_method_and_model.csv")
    means = compare.means_table(pub_means, mmlu["summary"], labels)
    pub_tests = compare.published_tests(published / "paper_pairwise_ttests_bonferroni.csv")
    mmlu_scores = imports["mmlu_import"].scores  # type: ignore[attr-defined]
    tests = compare.tests_table(pub_tests, mmlu_scores, mmlu["contrasts"],
                                mmlu.get("mixed_contrasts"), labels)
    contamination = contamination_table(imports)
    shares = {label: compare.variance_shares(t["variance_components"])
              for label, t in (("MMLU snapshot", mmlu), ("open-prompt study", openp))
              if "variance_components" in t}
    comparison = {"published_means": means, "published_tests": tests,
                  "contamination": contamination}
    for name, table in comparison.items():
        table.to_csv(out / f"{name}.csv", index=False)
    m_data = ReportData(mmlu, title="MMLU snapshot")
    o_data = ReportData(openp, title="open-prompt study")
    # The finding first (behaviour gained against coherence lost, open-prompt study), as in
    # every steerstats report; to_html puts the section with id "finding" before the contents.
    finding = dataclasses.replace(std.finding_section(o_data),
                                  title="The finding (open-prompt study)")
    sections = [
        finding,
        data_section(imports, tests),
        contamination_section(contamination, tests, pub_means),
        means_compare_section(means),
        tests_section(tests, len(pub_tests)),
        widths_section(tests),
        variance_section(shares),
        limits_section(imports, tables, means),  # type: ignore[arg-type]
    ]
    for build_section in (std.means_section, std.contrasts_section, std.mixed_model_section,
                          std.tradeoff_section, std.parse_failures_section, std.power_section):
        sections.append(_prefixed(build_section(m_data), "mmlu", "MMLU snapshot"))
    for build_section in (std.design_section, std.means_section, std.contrasts_section,
                          std.mixed_model_section, std.power_section):
        sections.append(_prefixed(build_section(o_data), "open", "Open-prompt study"))
    sections.append(methods_appendix(m_data))
    page = out / "report" / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    report = ReportData({}, title=f"The seed study re-analysed: {compare.MODEL}",
                        source=str(seed_dir))
    page.write_text(to_html(report, sections), encoding="utf-8")
    return page


def default_shared() -> Path:
    """$STEERSTATS_SHARED if set, else ``../shared`` beside the repository."""
    env = os.environ.get("STEERSTATS_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=default_shared(),
                        help="the folder holding seed-study/ (default: $STEERSTATS_SHARED, "
                             "else ../shared beside the repository)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "seed-study")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args(argv)
    seed_dir = args.shared / "seed-study"
    if not (seed_dir / "results").is_dir():
        parser.error(f"{seed_dir}/results not found; pass --shared pointing at the folder that "
                     "holds seed-study/")
    print(build(seed_dir, args.out, args.n_boot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
