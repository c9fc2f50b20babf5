"""analyze(): which tables it writes, what it skips and why, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steerstats.analysis.analyze import _arms, analyze
from steerstats.errors import DataError
from steerstats.results import write_results
from steerstats.schema import GENERATION_COLUMNS
from steerstats.stats import example_scores, mixed_model, paired_contrasts, summarize

PANEL_TABLES = ("rater_reliability", "g_study", "decision_study", "rater_bias", "bland_altman",
                "judge_contrasts", "judge_robustness")


@pytest.fixture(scope="module")
def scores() -> pd.DataFrame:
    return example_scores(seed=0, strengths=[0.5, 1.0, 2.0], n_queries=4)


def test_tables_are_the_stats_functions_outputs(scores: pd.DataFrame, tmp_path: Path) -> None:
    tables = analyze((None, scores), n_boot=200, seed=3, out=tmp_path)
    pd.testing.assert_frame_equal(tables["summary"], summarize(scores, n_boot=200, seed=3))
    both = paired_contrasts(scores, ["control", "prompt"], n_boot=200, seed=3)
    pd.testing.assert_frame_equal(tables["contrasts"], both)
    assert set(tables["contrasts"]["baseline"]) == {"control", "prompt"}
    # 4 queries: estimates shown, inference withheld with the reason
    assert tables["contrasts"]["note"].str.startswith("too few queries: G = 4").all()
    assert tables["summary"]["note"].str.startswith("too few queries: G = 4").all()
    # The sweep (steer at 3 strengths) gives dose curves: summary rows of the swept arm only.
    curves = tables["dose_curves"]
    assert set(curves["method"]) == {"steer"} and sorted(curves["strength"].unique()) == [
        0.5, 1.0, 2.0]
    # One judge per metric: only the judge-panel analyses are skipped, each saying why.
    assert set(tables["skipped"]["analysis"]) == set(PANEL_TABLES) - {"rater_reliability"}
    assert tables["skipped"]["reason"].str.contains("one judge per metric").all()
    # The mixed model sees each strength of the sweep as its own method level.
    fit = mixed_model(_arms(scores), "behavior")
    vc = tables["variance_components"].query("metric == 'behavior'")
    pd.testing.assert_frame_equal(
        vc.drop(columns=["metric", "singular", "structure"]).reset_index(drop=True),
        fit.variance_components)
    assert (vc["structure"] == fit.structure).all() and (vc["singular"] == fit.singular).all()
    assert "singular" in tables["emm"] and "singular" in tables["mixed_contrasts"]
    assert {"steer @ 0.5", "steer @ 2"} <= set(tables["emm"]["method"])
    assert set(tables["mixed_contrasts"]["baseline"]) == {"control", "prompt"}
    rel = tables["reliability"]
    assert set(rel["metric"]) == {"behavior", "coherence"}  # accuracy is rated once
    assert rel["method"].isna().any() and set(rel["method"].dropna()) == {"control", "prompt",
                                                                          "steer"}
    for name, table in tables.items():
        csv = pd.read_csv(tmp_path / f"{name}.csv") if len(table.columns) else None
        records = json.loads((tmp_path / f"{name}.json").read_text())
        assert len(records) == len(table)
        if csv is not None:
            assert list(csv.columns) == list(table.columns)


def test_skips_are_reported_with_reasons() -> None:
    scores = example_scores(seed=1, methods=("steer",), n_queries=3, n_mmlu=0, n_repeats=1)
    tables = analyze((None, scores), n_boot=100)
    reasons = dict(zip(tables["skipped"]["analysis"], tables["skipped"]["reason"], strict=True))
    assert set(reasons) == {"contrasts", "accuracy", "tradeoff", "mixed_model", "reliability",
                            "dose_curves", "dose_response", "query_effects", "mde",
                            *PANEL_TABLES}
    assert "judged twice" in reasons["rater_reliability"]
    assert "whether another judge would give the same scores" in reasons["judge_robustness"]
    assert "mixed model did not run" in reasons["mde"]
    assert "judged once" in reasons["reliability"]
    assert "two methods" in reasons["mixed_model"]
    assert "no accuracy metric" in reasons["accuracy"]
    assert "summary" in tables and "contrasts" not in tables


def test_mmlu_sweep_without_coherence_gets_its_dose_tables() -> None:
    # A 4-question MMLU sweep (behaviour and accuracy, no coherence judge) used to be skipped:
    # dose_response wanted a coherence metric, and before that a slope whose SE was round-off
    # (each question answered alike at every strength) made the steerability summary divide
    # by zero. Now the accuracy row says why its spread is NaN.
    from test_stats_dose import _mmlu_like

    sweep = _mmlu_like((0.1, 0.2, 0.3))
    control = sweep[sweep["strength"] == 0.1].assign(method="control", strength=float("nan"))
    tables = analyze((None, pd.concat([sweep, control], ignore_index=True)), n_boot=50)
    assert "dose_response" not in set(tables["skipped"]["analysis"])
    spread = tables["steerability"].set_index("metric")
    assert spread.loc["accuracy", "n_queries"] == 1
    assert "needs two or more" in spread.loc["accuracy", "note"]
    assert set(tables["dose_selection"]["metric"]) == {"behavior"}


def test_cli_analyze_prints_and_writes(tmp_path: Path) -> None:
    scores = example_scores(seed=2, n_queries=3, n_topic=2, n_common=2, n_mmlu=4)
    results = tmp_path / "results"
    generations = pd.DataFrame({c: pd.Series(dtype=object) for c in GENERATION_COLUMNS})
    write_results(results, generations, scores, {"source": "example_scores"})
    done = subprocess.run([sys.executable, "-m", "steerstats", "analyze", str(results),
                           "--n-boot", "100"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Paired contrasts" in done.stdout and "Means" in done.stdout
    assert (results / "analysis" / "tradeoff.json").exists()


def test_missing_scores_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a results directory"):
        analyze(tmp_path)


def test_a_failing_analysis_is_reported_not_fatal(scores: pd.DataFrame,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from steerstats import stats

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(stats, "dose_response", broken)
    tables = analyze((None, scores), n_boot=50)
    reasons = dict(zip(tables["skipped"]["analysis"], tables["skipped"]["reason"], strict=True))
    failed = {k: v for k, v in reasons.items() if k not in PANEL_TABLES}  # one judge: skipped
    assert failed == {"dose_response": "failed: ZeroDivisionError: float division by zero"}
    assert "summary" in tables and "dose_response" not in tables


def test_reliability_targets_a_shared_response_once_per_query() -> None:
    # A control request ignores the query, so the collector makes it once and every query's
    # judge rates that same generation (one key) against its own query.
    scores = example_scores(seed=2, n_queries=3, n_mmlu=0, n_repeats=2)
    control = scores["method"] == "control"
    scores.loc[control, "key"] = (
        "ctrl-" + scores.loc[control, "model"] + scores.loc[control, "prompt_id"]
    )
    assert scores[control].duplicated(["key", "metric", "rater", "repeat"]).any()
    tables = analyze((None, scores), n_boot=100)
    assert "reliability" not in set(tables["skipped"]["analysis"])
    overall = tables["reliability"][tables["reliability"]["method"].isna()]
    n_targets = scores.groupby("metric")[["key", "query_id"]].apply(
        lambda g: len(g.drop_duplicates()))
    icc2 = overall[overall["statistic"] == "ICC2"].set_index("metric")
    counted = icc2["n_targets"] + icc2["n_targets_dropped"]  # dropped: an unparsed rating
    assert counted.to_dict() == {m: n_targets[m] for m in icc2.index}


def _two_judges(seed: int, n_repeats: int) -> pd.DataFrame:
    """example_scores plus a second behavior judge that rates 0.5 higher (plus noise)."""
    scores = example_scores(seed=seed, n_queries=6, n_mmlu=0, n_repeats=n_repeats)
    other = scores[scores["metric"] == "behavior"].copy()
    rng = np.random.default_rng(seed)
    other["rater"] = "judge-b"
    other["value"] = (other["value"] + 0.5 + rng.normal(0, 0.7, len(other))).round().clip(1, 5)
    return pd.concat([scores, other], ignore_index=True)


def test_an_imported_table_with_a_rater_column_gets_every_judge_table(tmp_path: Path) -> None:
    from steerstats import stats
    from steerstats.importers import import_table

    scores = _two_judges(seed=4, n_repeats=2)
    long = scores.rename(columns={"key": "response"})[
        ["model", "method", "query_id", "prompt_id", "sample", "response", "metric", "rater",
         "repeat", "value"]]
    imported = import_table(long)
    assert set(imported.scores["rater"]) == {"example-judge", "judge-b"}
    imported.write(tmp_path / "res")
    tables = analyze(tmp_path / "res", n_boot=200, seed=1)
    assert set(PANEL_TABLES) <= set(tables)
    skipped = dict(zip(tables["skipped"]["analysis"], tables["skipped"]["reason"], strict=True))
    assert not set(PANEL_TABLES) & set(skipped)
    assert "one judge for coherence (example-judge)" in skipped["judge panels: coherence"]
    rel = tables["rater_reliability"]
    assert set(rel["facet"]) == {"test-retest", "inter-rater"}
    assert set(rel.loc[rel["facet"] == "inter-rater", "metric"]) == {"behavior"}
    assert rel["method"].isna().any() and rel["method"].notna().any()
    g = tables["g_study"]
    assert set(g["component"]) == {"response", "rater", "response:rater", "residual"}
    assert tables["decision_study"]["collected"].sum() == g.groupby(
        ["method", "metric"], dropna=False).ngroups
    bias = tables["rater_bias"]
    overall = bias[bias["method"].isna()].set_index("rater")
    assert overall.loc["judge-b", "offset"] > 0.15  # half of the 0.5 offset, less clipping
    ba = tables["bland_altman"]
    assert ba[["rater_a", "rater_b"]].values.tolist() == [["example-judge", "judge-b"]]
    rob = tables["judge_robustness"]
    assert set(rob["baseline"]) == {"control", "prompt"}
    assert rob["n_judges"].eq(2).all() and rob["metric"].eq("behavior").all()
    # The pooled rows are the main contrasts table's behavior rows.
    pooled = tables["judge_contrasts"].query("judge == 'pooled'")
    main = tables["contrasts"].query("metric == 'behavior'")
    np.testing.assert_allclose(pooled["p_holm"].to_numpy(), main["p_holm"].to_numpy())
    direct = stats.g_study(imported.scores)
    np.testing.assert_allclose(g[g["method"].isna()]["variance"].to_numpy(),
                               direct["variance"].to_numpy())


def test_two_judges_with_one_repeat_say_test_retest_is_unknown() -> None:
    tables = analyze((None, _two_judges(seed=5, n_repeats=1)), n_boot=100)
    skipped = dict(zip(tables["skipped"]["analysis"], tables["skipped"]["reason"], strict=True))
    assert "one repeat" in skipped["rater_reliability: test-retest"]
    assert set(tables["rater_reliability"]["facet"]) == {"inter-rater"}
    assert tables["g_study"]["confounded"].all()


def test_query_effects_are_paired_prompt_means() -> None:
    """The per-query heatmap's table: arm minus baseline over the prompts both share, after
    averaging each prompt's judgings and samples."""
    scores = example_scores(seed=2, n_queries=3, n_mmlu=0)
    table = analyze((None, scores), n_boot=50)["query_effects"]
    row = table[(table["metric"] == "behavior")].iloc[0]
    rated = scores[(scores["metric"] == "behavior") & scores["value"].notna()
                   & (scores["model"] == row["model"]) & (scores["query_id"] == row["query_id"])]
    arm = rated[rated["method"] == row["method"]].groupby("prompt_id")["value"].mean()
    base = rated[rated["method"] == row["baseline"]].groupby("prompt_id")["value"].mean()
    shared = arm.index.intersection(base.index)
    assert row["n_pairs"] == len(shared)
    assert row["diff"] == pytest.approx((arm[shared] - base[shared]).mean())
