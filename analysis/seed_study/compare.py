"""Tables that set the seed study's published conclusions beside steerstats' re-analysis.

The published means and t-tests (``paper_*.csv``) come from the study's final runs, whose rows
were not published; the re-analysis uses the rows that were (an MMLU snapshot with three
methods, and the earlier open-prompt study). So the comparison is of conclusions and of how
each analysis treats the same kind of data: on the published rows we run both the study's test
(unpaired t-test on rows, Bonferroni) and steerstats' paired, clustered and mixed-model ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from steerstats.importers import normalize_method

MODEL = "Llama-3.1-8B"
ALPHA = 0.05


def published_means(path: Path, model: str = MODEL) -> pd.DataFrame:
    """The study's published means for ``model``: method, metric, published."""
    raw = pd.read_csv(path)
    raw = raw[raw["Model"] == model]
    long = raw.melt(id_vars=["Model", "Steering Method"], value_vars=["Accuracy", "Behavior",
                                                                      "Coherence"],
                    var_name="metric", value_name="published")
    long["method"] = [normalize_method(m) or m for m in long["Steering Method"]]
    long["metric"] = long["metric"].str.lower()
    return long[["method", "metric", "published"]].reset_index(drop=True)


def published_tests(path: Path, model: str = MODEL) -> pd.DataFrame:
    """The study's t-tests for ``model``: metric, baseline, method (the two sides of "A vs B"),
    published_diff (B - A), published_t, published_p, published_significant, published_d."""
    raw = pd.read_csv(path)
    raw = raw[raw["Model"] == model].copy()
    sides = raw["Comparison"].str.split(" vs ", n=1, expand=True)
    out = pd.DataFrame({
        "metric": raw["Metric"].str.lower().to_numpy(),
        "baseline": [normalize_method(a.strip()) or a for a in sides[0]],
        "method": [normalize_method(b.strip()) or b for b in sides[1]],
        # The study reports Mean 1 - Mean 2; here every difference is method - baseline.
        "published_diff": -raw["Diff"].to_numpy(float),
        "published_t": -raw["t-statistic"].to_numpy(float),
        "published_p": raw["p-value"].to_numpy(float),
        "published_significant": raw["Significant"].fillna("").astype(str).str.strip() != "",
        "published_d": -raw["Cohen's d"].to_numpy(float),
        "published_n": (raw["n1"] + raw["n2"]).to_numpy(int),
    })
    return out


def rows_method(published: pd.DataFrame, labels: Mapping[str, str] | None,
                columns: tuple[str, ...] = ("method",)) -> pd.DataFrame:
    """Add ``rows_<column>``: the method the published rows of each study label were imported
    as (``labels``: study label -> imported method, e.g. autosteer -> autosteer+prompt for the
    contaminated MMLU rows). A label the rows lack maps to nothing (NaN), so a published
    Combined Approach is not matched with rows that are Auto Steer + prompt only by accident.
    Without ``labels`` every label maps to itself."""
    out = published.copy()
    for col in columns:
        out[f"rows_{col}"] = (out[col] if labels is None
                              else out[col].map(lambda m: labels.get(m)))
    return out


def means_table(published: pd.DataFrame, summary: pd.DataFrame,
                labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Published means beside the re-analysed rows' means and cluster-bootstrap intervals.

    ``method`` is the study's label; ``rows_method`` what its published rows were imported as
    (see :func:`rows_method`)."""
    ours = summary[["method", "metric", "n", "mean", "ci_low", "ci_high"]].rename(
        columns={"method": "rows_method"})
    merged = rows_method(published, labels).merge(ours, on=["rows_method", "metric"], how="left")
    merged["ci_width"] = merged["ci_high"] - merged["ci_low"]
    inside = (merged["published"] >= merged["ci_low"]) & (merged["published"] <= merged["ci_high"])
    merged["published_in_ci"] = inside.astype(object).where(merged["mean"].notna(), None)
    return merged


def _response_values(scores: pd.DataFrame) -> pd.DataFrame:
    """One value per response (its judgings averaged), unparsed ratings left out."""
    keys = ["model", "method", "metric", "query_id", "prompt_id", "sample"]
    return scores.dropna(subset=["value"]).groupby(keys, as_index=False)["value"].mean()


def tests_table(
    published: pd.DataFrame,
    scores: pd.DataFrame,
    contrasts: pd.DataFrame,
    mixed_contrasts: pd.DataFrame | None,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Each published test that the published rows allow, three ways.

    ``naive_*``: the study's test re-run on these rows (unpaired Student t-test treating every
    response as independent, Bonferroni over the tests run here). ``paired_*``: steerstats'
    paired contrast (pairs matched on query and prompt, two-way cluster bootstrap, Holm).
    ``mixed_*``: the crossed mixed model's contrast (Satterthwaite df, Holm), for rated metrics.
    ``width_ratio`` is the paired interval's width over the naive one's. ``method`` and
    ``baseline`` are the study's labels, ``rows_method`` and ``rows_baseline`` what their rows
    were imported as (``labels``, see :func:`rows_method`).
    """
    values = _response_values(scores)
    methods = set(values["method"])
    published = rows_method(published, labels, ("method", "baseline"))
    rows = []
    for _, test in published.iterrows():
        if test["rows_baseline"] not in methods or test["rows_method"] not in methods:
            continue
        sel = values["metric"] == test["metric"]
        a = values.loc[sel & (values["method"] == test["rows_baseline"]), "value"].to_numpy(float)
        b = values.loc[sel & (values["method"] == test["rows_method"]), "value"].to_numpy(float)
        naive = sps.ttest_ind(b, a, equal_var=True)
        low, high = naive.confidence_interval(0.95)
        rows.append({**test.to_dict(), "naive_n": len(a) + len(b),
                     "naive_diff": b.mean() - a.mean(), "naive_ci_low": low,
                     "naive_ci_high": high, "naive_t": naive.statistic, "naive_p": naive.pvalue})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["naive_p_bonferroni"] = np.minimum(1.0, out["naive_p"] * len(out))
    keys = {"baseline": "rows_baseline", "method": "rows_method"}
    on = ["metric", "rows_baseline", "rows_method"]
    paired = contrasts[["metric", "baseline", "method", "n_pairs", "diff", "ci_low", "ci_high",
                        "p", "p_holm", "dz"]].rename(columns=lambda c: keys.get(c, c) if c in (
                            "metric", "baseline", "method") else f"paired_{c}")
    out = out.merge(paired, on=on, how="left")
    if mixed_contrasts is not None:
        mixed = mixed_contrasts[["metric", "baseline", "method", "estimate", "ci_low", "ci_high",
                                 "df", "p_holm"]].rename(columns=lambda c: keys.get(c, c) if c in (
                                     "metric", "baseline", "method") else f"mixed_{c}")
        out = out.merge(mixed, on=on, how="left")
    out["naive_significant"] = out["naive_p_bonferroni"] < ALPHA
    out["paired_significant"] = out["paired_p_holm"] < ALPHA
    out["width_ratio"] = (out["paired_ci_high"] - out["paired_ci_low"]) / (
        out["naive_ci_high"] - out["naive_ci_low"])
    return out


def variance_shares(components: pd.DataFrame) -> pd.DataFrame:
    """Each variance component's share of the total, per metric."""
    out = components.copy()
    out["share"] = out["variance"] / out.groupby("metric")["variance"].transform("sum")
    return out
