"""Condition contamination: rows labelled Auto Steer (or control) whose own system prompt holds
their query's steering instruction are flagged and, by default, re-labelled."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from _shared import shared_path
from test_importers import COT, mmlu_prompt_text

from steerstats.importers import contaminated, import_seed_study

MMLU_CSV = shared_path("seed-study", "results", "mmlu_llama-3.1-8b_partial.csv")
OPEN_CSV = shared_path("seed-study", "results", "open_prompts_llama-3.1-8b.csv")
needs_seed_study = pytest.mark.skipif(
    MMLU_CSV is None or OPEN_CSV is None,
    reason="../shared/seed-study/results not present (set STEERSTATS_SHARED)",
)

HELPFUL = "You are a helpful assistant.\nFirst, think step-by-step inside <thinking> tags."


@pytest.fixture
def mmlu_csv(tmp_path: Path) -> Path:
    rows = [
        ("be funny", "Control", HELPFUL, mmlu_prompt_text(0), "<answer>B</answer>", 2, 5),
        ("be funny", "Simple Prompting", "When answering, please be funny.",
         mmlu_prompt_text(0), "<answer>B</answer>", 3, 5),
        ("be funny", "Auto Steer", "When answering, please be   FUNNY.",
         mmlu_prompt_text(0), "<answer>A</answer>", 4, 2),
        ("be funny", "Auto Steer", HELPFUL, mmlu_prompt_text(1), "<answer>A</answer>", 4, 2),
        ("be funny", "Control", "When answering, please be funny.", mmlu_prompt_text(1),
         "<answer>C</answer>", 4, 4),
        ("be very silly", "Auto Steer", "When answering, please be very silly.",
         mmlu_prompt_text(1), "x", 1, 1),  # unknown query: not imported, still flagged
    ]
    frame = pd.DataFrame(rows, columns=["query", "steering_method", "system_prompt",
                                        "user_prompt", "response", "behavior", "coherence"])
    path = tmp_path / "mmlu.csv"
    frame.to_csv(path, index=False)
    return path


def test_contaminated_rows_are_flagged_and_relabelled(mmlu_csv: Path) -> None:
    result = import_seed_study(mmlu_csv=mmlu_csv)
    assert result.generations["method"].tolist() == [
        "control", "prompt", "autosteer+prompt", "autosteer", "prompt"]
    flagged = result.flagged
    assert flagged["kind"].tolist() == ["contaminated"] * 3
    assert flagged["row"].tolist() == [2, 4, 5]
    # each row's line is where it starts in the file (its prompts span several lines)
    text = mmlu_csv.read_text().splitlines()
    assert [text[int(n) - 1].split(",")[:2] for n in flagged["line"]] == [
        ["be funny", "Auto Steer"], ["be funny", "Control"], ["be very silly", "Auto Steer"]]
    assert flagged["kept"].tolist() == [True, True, False]
    assert flagged["reason"].iloc[0] == (
        "contaminated: the system prompt holds the query's steering instruction ('be funny') "
        "although autosteer sends none; imported as autosteer+prompt")
    notes = result.notes[result.notes["kind"] == "contaminated"]
    assert notes["detail"].tolist() == [
        "1 of 2 rows labelled 'Control' carry their query's steering instruction in the system "
        "prompt, although control sends none; imported as prompt (as_labelled=True keeps the "
        "study's label)",
        "2 of 3 rows labelled 'Auto Steer' carry their query's steering instruction in the "
        "system prompt, although autosteer sends none; imported as autosteer+prompt "
        "(as_labelled=True keeps the study's label)",
    ]
    [info] = result.source["files"]
    assert info["labels"]["autosteer"] == {"rows": 3, "with_instruction": 2, "contaminated": 2,
                                           "imported_as": "autosteer+prompt"}
    # prompt rows carry it by design: not contaminated
    assert info["labels"]["prompt"] == {"rows": 1, "with_instruction": 1, "contaminated": 0,
                                        "imported_as": "prompt"}
    assert result.source["contaminated"] == 3

    labelled = import_seed_study(mmlu_csv=mmlu_csv, as_labelled=True)
    assert labelled.generations["method"].tolist() == [
        "control", "prompt", "autosteer", "autosteer", "control"]
    assert labelled.flagged["reason"].str.endswith("(as_labelled)").all()
    assert len(labelled.flagged) == 3
    # the same rows keep the same keys either way
    assert labelled.generations["key"].tolist() == result.generations["key"].tolist()


def test_contamination_is_recorded_in_the_results_directory(
    mmlu_csv: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from steerstats.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["import", "--seed-mmlu", str(mmlu_csv), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "contaminated: 2 of 3 rows labelled 'Auto Steer'" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["flagged"] == {"contaminated": 3}
    assert manifest["flagged_reasons"] == ["contaminated"]
    flagged = pd.read_csv(out / "flagged.csv")
    assert flagged["reason"].str.startswith("contaminated: ").all()
    res = CliRunner().invoke(app, ["import", "--seed-mmlu", str(mmlu_csv), "--out",
                                   str(tmp_path / "as"), "--as-labelled"])
    assert res.exit_code == 0, res.output
    gens = pd.read_parquet(tmp_path / "as" / "generations.parquet")
    assert "autosteer+prompt" not in set(gens["method"])


def test_seed_study_exact_duplicate_rows_are_reported_and_dropped(mmlu_csv: Path) -> None:
    frame = pd.read_csv(mmlu_csv)
    doubled = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    doubled.to_csv(mmlu_csv, index=False)
    result = import_seed_study(mmlu_csv=mmlu_csv)
    assert len(result.generations) == 5  # as without the copy
    dup = result.flagged[result.flagged["kind"] == "duplicate"]
    assert dup["row"].tolist() == [6] and not dup["kept"].any()
    assert dup["reason"].tolist() == ["duplicate: the same cells as line 2; dropped"]
    assert result.source["files"][0]["duplicates"] == 1
    kept = import_seed_study(mmlu_csv=mmlu_csv, keep_duplicates=True)
    assert len(kept.generations) == 6 and kept.generations["sample"].tolist()[-1] == 1


def test_contaminated_needs_a_promptless_method_and_the_instruction() -> None:
    got = contaminated(
        ["autosteer", "autosteer", "prompt", "control", "agentic", "autosteer"],
        [("be funny",), ("be funny",), ("be funny",), ("be  kind", "be kind"), ("be terse",),
         ("be funny",)],
        ["When answering, please be funny.", "You are a helpful assistant.",
         "When answering, please be funny.", "Please BE KIND", "be terse", None],
    )
    assert got.tolist() == [True, False, False, True, True, False]


def test_a_clean_file_has_nothing_flagged(tmp_path: Path) -> None:
    rows = [("be funny", "Auto Steer", HELPFUL, mmlu_prompt_text(0), "<answer>B</answer>", 2, 5)]
    path = tmp_path / "clean.csv"
    pd.DataFrame(rows, columns=["query", "steering_method", "system_prompt", "user_prompt",
                                "response", "behavior", "coherence"]).to_csv(path, index=False)
    result = import_seed_study(mmlu_csv=path)
    assert result.flagged.empty and result.generations["method"].tolist() == ["autosteer"]
    assert COT in mmlu_prompt_text(0)


@needs_seed_study
def test_seed_mmlu_auto_steer_rows_all_carry_the_instruction() -> None:
    """The README of ../shared/seed-study and issue 16: 389 of 389 MMLU "Auto Steer" rows carry
    the instruction in their system prompt, control 0 of 450; the open study is clean."""
    result = import_seed_study(OPEN_CSV, MMLU_CSV, extra_queries=["be seductive and flattering"],
                               keep_unmatched=True)
    files = {f["study"]: f for f in result.source["files"]}
    labels = files["mmlu"]["labels"]
    assert labels["autosteer"] == {"rows": 389, "with_instruction": 389, "contaminated": 389,
                                   "imported_as": "autosteer+prompt"}
    assert labels["control"] == {"rows": 450, "with_instruction": 0, "contaminated": 0,
                                 "imported_as": "control"}
    assert labels["prompt"] == {"rows": 449, "with_instruction": 449, "contaminated": 0,
                                "imported_as": "prompt"}
    assert all(v["contaminated"] == 0 for v in files["open"]["labels"].values())
    assert len(result.flagged) == 389 and result.flagged["kept"].all()
    mmlu = result.generations[result.generations.prompt_set == "mmlu"]
    assert (mmlu["method"] == "autosteer+prompt").sum() == 389
    assert "autosteer" not in set(mmlu["method"])
    notes = result.notes[result.notes["kind"] == "contaminated"]
    assert notes["detail"].tolist() == [
        "389 of 389 rows labelled 'Auto Steer' carry their query's steering instruction in the "
        "system prompt, although autosteer sends none; imported as autosteer+prompt "
        "(as_labelled=True keeps the study's label)"
    ]
