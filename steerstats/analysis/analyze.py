"""Run every statistic that applies to a results set and write each table (CSV + JSON).

``steerstats analyze`` and the report both go through :func:`analyze`: the report reads the
tables it writes, so what the report says is exactly what the analysis directory holds. An
analysis that does not apply (no accuracy metric, no strength sweep, one judging per response)
or that fails (a model that does not converge) is listed in the ``skipped`` table with the
reason, never left out silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from steerstats import results, stats
from steerstats.analysis import describe
from steerstats.errors import DataError
from steerstats.schema import AUTO_RATER

__all__ = ["TABLES", "analyze", "analyze_results", "read_tidy", "write_tables"]

TABLES: dict[str, str] = {
    "design": "what was collected per model x method x prompt set (describe.design_table)",
    "judging": "judgings per response and missing ratings per metric x rater",
    "parse_failures": "unparsed ratings per model x method x metric, with reasons",
    "summary": "means with two-way cluster-robust CIs inside each metric's range, 'too few "
    "queries' notes (stats.summarize)",
    "contrasts": "paired contrasts against control and against prompt, Holm per model x metric x "
    "baseline, auxiliary metrics flagged, 'too few queries' notes (stats.paired_contrasts)",
    "accuracy": "MMLU accuracy by GEE and bootstrap, and the unparsed rate (stats.accuracy_model)",
    "tradeoff": "behaviour gain vs coherence and accuracy loss, Pareto front (stats.tradeoff)",
    "variance_components": "per metric: variance of each random term (query, prompt, query x "
    "method within model, shared generation) and residual, the structure fitted and whether the "
    "fit is singular (stats.mixed_model)",
    "emm": "per metric: mixed-model marginal means per model x method",
    "mixed_contrasts": "per metric: mixed-model contrasts against each baseline, Holm per model x "
    "metric x baseline, singular fits flagged",
    "reliability": "judge reliability per metric, overall (method empty) and per method "
    "(stats.reliability)",
    "rater_reliability": "reliability by facet: each judge against its own repeats (test-retest) "
    "and the judges against each other, repeats averaged (inter-rater); overall (method empty) "
    "and per method (stats.rater_reliability)",
    "g_study": "per metric (overall, method empty, and per method): REML variance components "
    "of response, judge, response x judge and residual (stats.g_study)",
    "decision_study": "G (relative) and Phi (absolute) reliability of the mean of n judges x n "
    "repeats, for a grid of both (stats.decision_study)",
    "rater_bias": "each judge's mean offset from the panel mean per metric, overall (method "
    "empty) and per method, with query-clustered CIs (stats.rater_bias)",
    "bland_altman": "limits of agreement between each pair of judges per metric "
    "(stats.bland_altman)",
    "judge_contrasts": "the paired contrasts pooled over judges and under each judge alone "
    "(stats.judge_contrasts)",
    "judge_robustness": "whether each contrast's conclusion (sign, significance after Holm) "
    "holds under every judge (stats.judge_robustness)",
    "dose_curves": "means per strength for methods run at several strengths (from summary)",
    "dose_response": "per-query slopes of each metric on strength, anti-steerable flags "
                     "(stats.dose_response)",
    "steerability": "per model x method x metric: spread of the per-query slopes",
    "dose_selection": "strength chosen on half the prompts, evaluated on the other half",
    "query_effects": "per model x arm x query x metric: mean paired difference from the first "
                     "baseline over the prompts both share (descriptive, no interval)",
    "mde": "per rated metric: minimum detectable paired difference for this design and for "
           "twice the queries (stats.mde, from the fitted variance components)",
    "skipped": "analyses not run, with the reason",
}

JUDGE_METRICS = ("behavior", "coherence")


def read_tidy(source_dir: str | Path) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """(generations, scores) of a results directory written by ``results.write_results``."""
    try:
        read = results.read_results(source_dir)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None
    return read.generations, read.scores


def _collected(scores: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Scores without the rows of tasks not collected (pending, or failed after retries):
    an export of a pilot or an interrupted run has them, and counting them as ratings or parse
    failures would be wrong. Returns (scores, rows left out)."""
    if "reason" not in scores:
        return scores, 0
    reason = scores["reason"].fillna("").astype(str)
    out = reason.str.startswith("pending") | reason.str.contains("failed after", regex=False)
    return scores[~out].reset_index(drop=True), int(out.sum())


def analyze(
    source: str | Path | tuple[pd.DataFrame | None, pd.DataFrame],
    *,
    out: str | Path | None = None,
    baselines: Sequence[str] = ("control", "prompt"),
    n_boot: int = 2000,
    seed: int | None = 0,
) -> dict[str, pd.DataFrame]:
    """Every table that applies to ``source``: a results directory or (generations, scores).

    Returns a dict of tidy DataFrames keyed by the names in :data:`TABLES`; with ``out``, each
    is also written as ``<out>/<name>.csv`` and ``.json``. ``baselines`` are the methods the
    paired contrasts are taken against (those present in the data).
    """
    generations, scores = read_tidy(source) if isinstance(source, str | Path) else source
    if generations is not None and generations.empty:
        generations = None  # e.g. an import of scores alone
    tables: dict[str, pd.DataFrame] = {}
    skipped: list[dict[str, str]] = []
    scores, not_collected = _collected(scores)
    if not_collected:
        skipped.append({"analysis": "rows not collected", "reason": (
            f"{not_collected} score row(s) pending or failed in collection are left out "
            "(they are neither ratings nor parse failures; `steerstats status` lists them)")})

    def run(name: str, compute: Callable[[], pd.DataFrame | None], reason: str | None) -> None:
        if reason is not None:
            skipped.append({"analysis": name, "reason": reason})
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                table = compute()
        except (RuntimeError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            skipped.append({"analysis": name, "reason": f"failed: {type(exc).__name__}: {exc}"})
            return
        if table is not None:
            tables[name] = table

    metrics = set(scores["metric"].dropna().astype(str))
    methods = set(scores["method"].dropna().astype(str))
    present = [b for b in baselines if b in methods]

    tables["design"] = describe.design_table(scores, generations)
    tables["judging"] = describe.judging_table(scores)
    tables["parse_failures"] = describe.parse_failures(scores)
    run("summary", lambda: stats.summarize(scores, n_boot=n_boot, seed=seed), None)
    run(
        "contrasts",
        # One call: Holm families are model x metric x baseline and a pair is tested once.
        lambda: stats.paired_contrasts(scores, present, n_boot=n_boot, seed=seed),
        None
        if present and len(methods) > 1
        else f"no baseline method ({', '.join(baselines)}) alongside another method",
    )
    run(
        "accuracy",
        lambda: stats.accuracy_model(scores, n_boot=n_boot, seed=seed),
        None if "accuracy" in metrics else "no accuracy metric (no MMLU prompts were scored)",
    )
    run(
        "tradeoff",
        lambda: stats.tradeoff(scores, present[0], n_boot=n_boot, seed=seed),
        None
        if present and len(methods) > 1 and metrics & {"behavior", "coherence", "accuracy"}
        else "needs a baseline method and another method scored on behavior, coherence or accuracy",
    )
    rated = sorted(m for m in metrics if m != "accuracy")
    if rated and len(methods) > 1:
        mixed, failures = _mixed(scores, rated, [b for b in present if b in methods])
        tables.update(mixed)
        skipped.extend({"analysis": "mixed_model", "reason": f"failed for {f}"} for f in failures)
    else:
        skipped.append(
            {
                "analysis": "mixed_model",
                "reason": "needs at least two methods scored on a rated (non-accuracy) metric",
            }
        )
    judging = tables["judging"]
    repeated = judging[(judging["rater"] != "auto")].groupby("metric")["n_repeats"].sum()
    run(
        "reliability",
        lambda: _reliability(scores, list(repeated[repeated >= 2].index), n_boot=n_boot, seed=seed),
        None
        if (repeated >= 2).any()
        else "each response was judged once (one judge, one repeat), so agreement between "
        "judgings cannot be estimated",
    )
    _judges(scores, present if len(methods) > 1 else [], run, skipped, n_boot, seed)
    sweep = _sweep(tables.get("summary"))
    run(
        "dose_curves",
        lambda: sweep,
        None if sweep is not None else "no method was run at more than one strength",
    )
    run("dose_response", lambda: _dose(scores, tables, "coherence" in metrics),
        None if sweep is not None and "behavior" in metrics else
        "no method was run at more than one strength on the behavior metric")
    run("query_effects", lambda: query_effects(scores, present[0]),
        None if present and len(methods) > 1 else "no baseline method alongside another method")
    vc = tables.get("variance_components")
    run("mde", lambda: _mde(scores, vc, tables["design"], seed),
        None if vc is not None else "no fitted variance components (the mixed model did not run)")
    tables["skipped"] = pd.DataFrame(skipped, columns=["analysis", "reason"])
    if out is not None:
        write_tables(tables, out)
    return tables


def _arms(scores: pd.DataFrame) -> pd.DataFrame:
    """A copy whose method names carry their strength ("caa @ 4") and strength NaN, so each
    strength of a sweep is its own level of the mixed model's method factor."""
    if "strength" not in scores or scores["strength"].isna().all():
        return scores
    out = scores.copy()
    has = out["strength"].notna()
    out.loc[has, "method"] = [
        f"{m} @ {float(s):g}"
        for m, s in zip(out.loc[has, "method"], out.loc[has, "strength"], strict=True)
    ]
    out["strength"] = np.nan
    return out


def _mixed(
    scores: pd.DataFrame,
    metrics: Sequence[str],
    baselines: Sequence[str],
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Fit the crossed mixed model per metric: (variance_components, emm and mixed_contrasts
    tables, each with a metric column; one message per metric whose fit failed)."""
    data = _arms(scores)
    vcs: list[pd.DataFrame] = []
    emms: list[pd.DataFrame] = []
    cons: list[pd.DataFrame] = []
    failures: list[str] = []
    for metric in metrics:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fit = stats.mixed_model(data, metric)
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            failures.append(f"{metric}: {exc}")
            continue
        flags = {"metric": metric, "singular": fit.singular}
        vcs.append(fit.variance_components.assign(**flags, structure=fit.structure))
        emms.append(fit.emm.assign(**flags))
        # Holm within each model x metric x baseline family, a pair tested once: the same
        # families as the paired contrasts.
        if baselines:
            cons.append(fit.contrasts(list(baselines)).assign(
                **flags, auxiliary=stats.is_auxiliary(metric, list(metrics))))
    out: dict[str, pd.DataFrame] = {}
    for name, parts in (("variance_components", vcs), ("emm", emms), ("mixed_contrasts", cons)):
        if parts:
            out[name] = _lead(pd.concat(parts, ignore_index=True), ["metric"])
    return out, failures


def _lead(frame: pd.DataFrame, first: Sequence[str]) -> pd.DataFrame:
    return frame[[*first, *[c for c in frame.columns if c not in first]]]


def _reliability(
    scores: pd.DataFrame, metrics: list[str], n_boot: int, seed: int | None
) -> pd.DataFrame:
    """Reliability of the repeatedly judged ``metrics``, overall (``method`` empty) and per
    method, in one table."""
    # A judged item is a response *for a query*: identical requests (e.g. control, which ignores
    # the query) share one generation key but are judged once per query.
    targets = ["key", "query_id"]
    overall = stats.reliability(scores, metrics=metrics, targets=targets, n_boot=n_boot, seed=seed)
    per_method = stats.reliability(
        scores, "method", metrics=metrics, targets=targets, n_boot=n_boot, seed=seed
    )
    overall.insert(0, "method", np.nan)
    return pd.concat([overall, per_method], ignore_index=True)


def _judges(
    scores: pd.DataFrame,
    baselines: Sequence[str],
    run: Callable[[str, Callable[[], pd.DataFrame | None], str | None], None],
    skipped: list[dict[str, str]],
    n_boot: int,
    seed: int | None,
) -> None:
    """The judge-panel tables: reliability by facet, G and D study, rater bias, Bland-Altman,
    conclusions per judge; what one judge or one repeat leaves unknown goes to ``skipped``."""
    rated = scores[scores["rater"].astype(str) != AUTO_RATER]
    n_raters = rated.groupby("metric")["rater"].nunique()
    n_repeats = rated.groupby(["metric", "rater"])["repeat"].nunique()
    panel = sorted(str(m) for m in n_raters.index[n_raters >= 2])
    repeated = sorted({str(m) for (m, _), k in n_repeats.items() if k >= 2})
    single = sorted(str(m) for m in n_raters.index if str(m) not in panel)
    names = ", ".join(f"{m} ({rated.loc[rated['metric'] == m, 'rater'].iloc[0]})"
                      for m in single)

    def per_method(fn: Callable[..., pd.DataFrame], **kw: object) -> pd.DataFrame:
        overall = fn(scores, **kw)
        overall.insert(0, "method", np.nan)
        return pd.concat([overall, fn(scores, "method", **kw)], ignore_index=True)

    run("rater_reliability",
        lambda: per_method(stats.rater_reliability, n_boot=min(n_boot, 1000), seed=seed),
        None if panel or repeated else "no metric was judged twice (neither repeats of a judge "
        "nor two judges): a judge's agreement with itself and with other judges is unknown")
    if panel and not repeated:
        skipped.append({"analysis": "rater_reliability: test-retest", "reason": (
            "each judge judged each response once (one repeat): how much a judge disagrees "
            "with itself on a re-run is unknown, and the G study cannot separate it from the "
            "judges ranking responses differently (its response:rater row holds both)")})
    unknown = (": whether another judge would give the same scores and the same conclusions, "
               "each judge's offset and the between-judge share of the error are unknown")
    if not panel:
        for name in ("g_study", "decision_study", "rater_bias", "bland_altman",
                     "judge_contrasts", "judge_robustness"):
            skipped.append({"analysis": name, "reason": (
                f"one judge per metric ({names})" if names else "no judged metric") + unknown})
        return
    if single:
        skipped.append({"analysis": "judge panels: " + ", ".join(single),
                        "reason": f"one judge for {names}" + unknown})
    vc: dict[str, pd.DataFrame] = {}

    def g() -> pd.DataFrame:
        vc["g"] = per_method(stats.g_study)
        return vc["g"]

    run("g_study", g, None)
    run("decision_study", lambda: stats.decision_study(vc["g"]),
        None if "g" in vc else "no variance components (the G study did not run)")
    run("rater_bias", lambda: per_method(stats.rater_bias, n_boot=n_boot, seed=seed), None)
    run("bland_altman", lambda: stats.bland_altman(scores, n_boot=n_boot, seed=seed), None)
    con: dict[str, pd.DataFrame] = {}

    def contrasts() -> pd.DataFrame:
        con["c"] = stats.judge_contrasts(scores, baselines, n_boot=n_boot, seed=seed)
        return con["c"]

    no_contrasts = "no baseline method alongside another method, so no contrasts to check"
    run("judge_contrasts", contrasts, None if baselines else no_contrasts)
    run("judge_robustness", lambda: stats.judge_robustness(con["c"]),
        None if "c" in con else (no_contrasts if not baselines else
                                 "the per-judge contrasts did not run"))


def _dose(scores: pd.DataFrame, tables: dict[str, pd.DataFrame], has_coherence: bool) -> None:
    """Fill dose_response (slopes), steerability and dose_selection; without a coherence
    metric the strength is chosen on behaviour alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = stats.dose_response(scores, coherence="coherence" if has_coherence else None)
    tables["steerability"] = result.steerability
    tables["dose_selection"] = result.selection
    tables["dose_response"] = result.slopes


def query_effects(scores: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Mean paired difference (arm minus ``baseline``) per model x arm x query x metric.

    Each response's ratings are averaged over judge repeats and samples per prompt, then paired
    with the baseline's on (model, query, prompt). Columns: model, method, strength, query_id,
    metric, baseline, diff, n_pairs. Descriptive: steerability per query, not an inference.
    """
    keys = ["model", "method", "strength", "query_id", "prompt_id", "metric"]
    rated = scores[scores["value"].notna()].copy()
    rated["strength"] = rated["strength"].astype(float)
    cell = rated.groupby(keys, dropna=False)["value"].mean().reset_index()
    base = cell[cell["method"] == baseline].drop(columns=["method", "strength"])
    arms = cell[cell["method"] != baseline]
    paired = arms.merge(base, on=["model", "query_id", "prompt_id", "metric"],
                        suffixes=("", "_base"))
    paired["diff"] = paired["value"] - paired["value_base"]
    out = (paired.groupby(["model", "method", "strength", "query_id", "metric"], dropna=False)
           .agg(diff=("diff", "mean"), n_pairs=("diff", "size")).reset_index())
    out.insert(5, "baseline", baseline)
    return out


def _mde(scores: pd.DataFrame, components: pd.DataFrame, design: pd.DataFrame,
         seed: int | None) -> pd.DataFrame:
    """MDE per rated metric for this design (queries, prompts per query, samples) and for
    twice the queries."""
    rows = []
    for metric, vc in components.groupby("metric", sort=True):
        rated = scores[scores["metric"] == metric]
        n_queries = int(rated["query_id"].nunique())
        n_prompts = int(rated.groupby("query_id")["prompt_id"].nunique().median())
        n_repeats = int(rated["sample"].nunique()) if "sample" in rated else 1
        if n_queries < 2 or n_prompts < 1:
            continue
        table = stats.mde(vc[["group", "variance"]], n_queries=[n_queries, 2 * n_queries],
                          n_prompts=n_prompts, n_repeats=n_repeats, seed=seed)
        table.insert(0, "design", ["this design", "twice the queries"])
        table.insert(0, "metric", metric)
        rows.append(table)
    if not rows:
        raise ValueError("no rated metric has two or more queries")
    return pd.concat(rows, ignore_index=True)


def _sweep(summary: pd.DataFrame | None) -> pd.DataFrame | None:
    """Summary rows of the model x method pairs run at two or more strengths."""
    if summary is None or "strength" not in summary:
        return None
    finite = summary[summary["strength"].notna()]
    n = finite.groupby(["model", "method"])["strength"].transform("nunique")
    swept = finite[n >= 2]
    return swept.reset_index(drop=True) if len(swept) else None


def write_tables(tables: dict[str, pd.DataFrame], out: str | Path) -> None:
    """Write each table as ``<out>/<name>.csv`` and ``<out>/<name>.json`` (records)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
        table.to_json(folder / f"{name}.json", orient="records", indent=1, double_precision=15)


def analyze_results(
    results: str | Path, *, out: str | Path | None = None, **options: object
) -> dict[str, pd.DataFrame]:
    """:func:`analyze` a results directory, writing to ``out`` (default ``<results>/analysis``)."""
    target = Path(out) if out is not None else Path(results) / "analysis"
    return analyze(results, out=target, **options)  # type: ignore[arg-type]
