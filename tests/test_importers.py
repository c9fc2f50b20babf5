"""Importers: the seed study's CSVs and any table with a column mapping, into the tidy tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steerstats.datasets import load_queries, paper_mmlu, paper_topic_prompts
from steerstats.errors import DataError
from steerstats.importers import (
    UNMATCHED_COLUMNS,
    import_seed_study,
    import_table,
    normalize_method,
    row_key,
)
from steerstats.schema import GENERATION_COLUMNS, SCORE_COLUMNS


def shared_file(*parts: str) -> Path | None:
    """A file under ``../shared`` seen from the repository root or a folder above it."""
    root = Path(__file__).resolve().parents[1]
    for base in (root, *root.parents):
        candidate = base.parent / "shared" / Path(*parts)
        if candidate.is_file():
            return candidate
    return None


OPEN_CSV = shared_file("seed-study", "results", "open_prompts_llama-3.1-8b.csv")
MMLU_CSV = shared_file("seed-study", "results", "mmlu_llama-3.1-8b_partial.csv")
needs_seed_study = pytest.mark.skipif(
    OPEN_CSV is None or MMLU_CSV is None,
    reason="../shared/seed-study/results not present in this checkout",
)

COT = (
    "\n\nThis is a Chain-of-Thought (CoT) task.\nFirst, think step-by-step inside "
    "<thinking>...</thinking> tags.\nThen, give only the final answer inside "
    "<answer>...</answer> tags."
)


def check_contract(result_tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    generations, scores = result_tables
    assert tuple(generations.columns) == GENERATION_COLUMNS
    assert tuple(scores.columns) == SCORE_COLUMNS
    assert generations["key"].is_unique
    assert set(scores["key"]) <= set(generations["key"])
    assert scores["value"].dtype == np.float64 and scores["repeat"].dtype == np.int64
    assert generations["sample"].dtype == np.int64 and generations["strength"].dtype == np.float64
    # a reason exactly where the value is missing
    assert (scores["value"].isna() == scores["reason"].notna()).all()


# ------------------------------------------------------------------------- seed study, synthetic


def mmlu_prompt_text(index: int) -> str:
    q = paper_mmlu()[index]
    lines = [q.question] + [f"{'ABCD'[i]}. {c}" for i, c in enumerate(q.choices)]
    return "\n".join(lines) + COT


@pytest.fixture
def seed_csvs(tmp_path: Path) -> tuple[Path, Path]:
    topic = paper_topic_prompts()["be-funny"]
    open_rows = [
        ("be funny", "Control", topic[0], "Quantum is odd.", 2, 5),
        ("be funny", "Simple Prompting", "  Explain  quantum\nphysics ", "Quantum, ha!", 4, 5),
        ("be funny", "AutoSteer", topic[0], "Quantum quack.", 0, 3),
        ("be funny", "Auto Steer", "What causes earthquakes?", "Rocks quarrel.", 5, 0),
        ("be  funny", "Combined Approach", topic[1], "Cake!", 3, 4),
        ("be funny", "Agentic", topic[1], "Cake again.", 3, 4),
        ("be funny", "Agentic", topic[1], "Cake a third time.", 2, 4),  # a second sample
        ("be very silly", "Control", "What causes earthquakes?", "Hm.", 1, 5),  # unknown query
        ("be funny", "Control", "A prompt nobody wrote", "Eh.", 1, 5),  # unknown prompt
        ("be funny", "Telepathy", topic[0], "...", 1, 5),  # unknown method
    ]
    open_frame = pd.DataFrame(
        open_rows,
        columns=["query", "steering_method", "user_prompt", "response", "behavior", "coherence"],
    )
    open_frame.insert(2, "system_prompt", "You are a helpful assistant.")
    open_path = tmp_path / "open.csv"
    open_frame.to_csv(open_path, index=False)

    key0 = paper_mmlu()[0].answer  # "B"
    mmlu_rows = [
        (
            "be funny",
            "Control",
            mmlu_prompt_text(0),
            f"<thinking>x</thinking><answer>{key0}</answer>",
            1,
            5,
        ),
        ("be funny", "Auto Steer", mmlu_prompt_text(0), "<answer>A</answer>", 0, 2),
        ("be funny", "Simple Prompting", mmlu_prompt_text(1), "I think it is B", 3, 4),
        (
            "be funny",
            "Control",
            "What is 2+2?\nA. 1\nB. 4\nC. 3\nD. 5" + COT,
            "<answer>B</answer>",
            1,
            5,
        ),
    ]
    mmlu_frame = pd.DataFrame(
        mmlu_rows,
        columns=["query", "steering_method", "user_prompt", "response", "behavior", "coherence"],
    )
    mmlu_path = tmp_path / "mmlu.csv"
    mmlu_frame.to_csv(mmlu_path, index=False)
    return open_path, mmlu_path


def test_method_names_are_normalised() -> None:
    assert [
        normalize_method(m)
        for m in [
            "Control",
            "Simple Prompting",
            "AutoSteer",
            "Auto Steer",
            "Combined Approach",
            "Agentic",
        ]
    ] == ["control", "prompt", "autosteer", "autosteer", "autosteer+prompt", "agentic"]
    assert normalize_method(" auto  steer ") == "autosteer"
    assert normalize_method("Telepathy") is None


def test_seed_study_synthetic(seed_csvs: tuple[Path, Path]) -> None:
    open_path, mmlu_path = seed_csvs
    result = import_seed_study(open_path, mmlu_path)
    gens, scores, unmatched = result.generations, result.scores, result.unmatched
    check_contract((gens, scores))

    open_gens = gens[gens.prompt_set == "open"]
    assert len(open_gens) == 7
    assert list(open_gens["method"]) == [
        "control",
        "prompt",
        "autosteer",
        "autosteer",
        "autosteer+prompt",
        "agentic",
        "agentic",
    ]
    assert set(gens["model"]) == {"Llama-3.1-8B"} and gens["strength"].isna().all()
    assert set(open_gens["query_id"]) == {"be-funny"} and set(open_gens["query"]) == {"be funny"}
    # whitespace-normalised text matching; common prompts by their index in the 84
    assert list(open_gens["prompt_id"]) == [
        "be-funny/topic-00",
        "be-funny/topic-00",
        "be-funny/topic-00",
        "common-01",
        "be-funny/topic-01",
        "be-funny/topic-01",
        "be-funny/topic-01",
    ]
    assert list(open_gens["sample"]) == [0, 0, 0, 0, 0, 0, 1]

    judged = scores[scores.metric.isin(["behavior", "coherence"])]
    assert set(judged["rater"]) == {"gpt-4o-mini"} and set(judged["repeat"]) == {0}
    zeros = judged[judged["value"].isna()]
    assert len(zeros) == 3  # open: behaviour 0, coherence 0; mmlu: behaviour 0
    assert set(zeros["reason"]) == {"unparsed: judge score 0 is outside 1-5"}
    assert judged["value"].dropna().between(1, 5).all()

    accuracy = scores[scores.metric == "accuracy"].set_index("method")
    assert set(accuracy["rater"]) == {"auto"}
    assert accuracy.loc["control", "value"] == 1.0
    assert accuracy.loc["autosteer", "value"] == 0.0
    assert math.isnan(accuracy.loc["prompt", "value"])
    assert accuracy.loc["prompt", "reason"] == "unparsed: no <answer> tag"
    mmlu_gens = gens[gens.prompt_set == "mmlu"]
    assert list(mmlu_gens["prompt_id"]) == ["mmlu-000", "mmlu-000", "mmlu-001"]

    assert tuple(unmatched.columns) == UNMATCHED_COLUMNS
    assert result.n_unmatched == 4 and not unmatched["kept"].any()
    reasons = dict(
        zip(zip(unmatched["file"], unmatched["row"], strict=True), unmatched["reason"], strict=True)
    )
    assert reasons[(str(open_path), 7)] == "query text not among the shipped queries"
    assert reasons[(str(open_path), 8)].startswith(
        "prompt text not among this query's topic prompts"
    )
    assert reasons[(str(open_path), 9)].startswith("unknown method 'Telepathy'")
    assert (
        reasons[(str(mmlu_path), 3)] == "question not among the study's 171 shipped MMLU questions"
    )

    files = result.source["files"]
    assert [(f["rows"], f["imported"], f["unmatched"]) for f in files] == [(10, 7, 3), (4, 3, 1)]
    assert all(len(f["sha256"]) == 64 for f in files)
    assert result.source["options"]["rater"] == "gpt-4o-mini"


def test_seed_study_keys_are_stable_and_distinct(seed_csvs: tuple[Path, Path]) -> None:
    open_path, _ = seed_csvs
    first = import_seed_study(open_path).generations["key"].tolist()
    again = import_seed_study(open_path).generations["key"].tolist()
    assert first == again and len(set(first)) == len(first)
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in first)
    other_model = import_seed_study(open_path, model="Llama-3.3-70B").generations["key"].tolist()
    assert not set(first) & set(other_model)


def test_seed_study_keep_unmatched(seed_csvs: tuple[Path, Path]) -> None:
    open_path, mmlu_path = seed_csvs
    result = import_seed_study(open_path, mmlu_path, keep_unmatched=True)
    check_contract((result.generations, result.scores))
    assert len(result.generations) == 14 and result.unmatched["kept"].all()
    ids = set(result.generations["query_id"])
    assert "be-very-silly" in ids
    assert any(p.startswith("be-funny/extra-") for p in result.generations["prompt_id"])
    [accuracy] = result.scores.query("metric == 'accuracy' and prompt_id.str.startswith('mmlu-x')")[
        "reason"
    ].tolist()
    assert accuracy == "no answer key: question not among the shipped 171"


def test_seed_study_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give open_csv, mmlu_csv or both"):
        import_seed_study()
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"query": ["be funny"], "response": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"bad.csv: column\(s\) 'steering_method', 'user_prompt'"):
        import_seed_study(bad)
    with pytest.raises(DataError, match="not found"):
        import_seed_study(tmp_path / "absent.csv")


# ------------------------------------------------------------------------ seed study, real files


@needs_seed_study
def test_seed_study_real_files() -> None:
    assert OPEN_CSV is not None and MMLU_CSV is not None
    result = import_seed_study(OPEN_CSV, MMLU_CSV)
    gens, scores, unmatched = result.generations, result.scores, result.unmatched
    check_contract((gens, scores))
    raw_open, raw_mmlu = pd.read_csv(OPEN_CSV), pd.read_csv(MMLU_CSV)
    assert (len(raw_open), len(raw_mmlu)) == (1494, 1288)  # the README's row counts

    # every row is either imported or reported
    files = {f["study"]: f for f in result.source["files"]}
    assert files["open"]["imported"] + files["open"]["unmatched"] == 1494
    assert files["mmlu"]["imported"] + files["mmlu"]["unmatched"] == 1288
    assert result.n_unmatched == files["open"]["unmatched"] + files["mmlu"]["unmatched"]

    # open study: two queries were renamed after this run, so their 300 rows are unmatched
    renamed = {"be more creative and imaginative", "be educational and explain like a teacher"}
    open_unmatched = unmatched[unmatched["file"] == str(OPEN_CSV)]
    assert set(open_unmatched["query"]) == renamed
    assert len(open_unmatched) == raw_open["query"].isin(renamed).sum() == 300
    # mmlu: "be seductive and flattering" is not among the 14, and questions outside the 171
    mmlu_unmatched = unmatched[unmatched["file"] == str(MMLU_CSV)]
    assert len(mmlu_unmatched) == 544
    seductive = mmlu_unmatched["query"] == "be seductive and flattering"
    assert seductive.sum() == 60
    assert (
        mmlu_unmatched.loc[~seductive, "reason"]
        .eq("question not among the study's 171 shipped MMLU questions")
        .all()
    )

    assert len(gens) == 1194 + 744 and gens["query_id"].nunique() == 14
    assert set(gens.loc[gens.prompt_set == "open", "method"]) == {
        "control",
        "prompt",
        "autosteer",
        "autosteer+prompt",
        "agentic",
    }
    assert set(gens.loc[gens.prompt_set == "mmlu", "method"]) == {"control", "prompt", "autosteer"}
    assert set(gens["prompt_id"]) <= (
        {f"mmlu-{i:03d}" for i in range(171)}
        | {f"common-{i:02d}" for i in range(84)}
        | {f"{q.id}/topic-{i:02d}" for q in load_queries() for i in range(10)}
    )

    # the 0s: NaN "unparsed", counted from the raw file minus those in unmatched rows
    judged = scores[scores.metric.isin(["behavior", "coherence"])]
    zeros_kept = 0
    for raw, path in ((raw_open, OPEN_CSV), (raw_mmlu, MMLU_CSV)):
        imported = raw.drop(index=unmatched.loc[unmatched["file"] == str(path), "row"])
        zeros_kept += int((imported[["behavior", "coherence"]] == 0).sum().sum())
    assert zeros_kept == 65
    assert judged["value"].isna().sum() == zeros_kept
    assert set(judged.loc[judged["value"].isna(), "reason"]) == {
        "unparsed: judge score 0 is outside 1-5"
    }
    assert judged["value"].dropna().isin([1.0, 2.0, 3.0, 4.0, 5.0]).all()

    accuracy = scores[scores.metric == "accuracy"]
    assert len(accuracy) == 744 and set(accuracy["rater"]) == {"auto"}
    unparsed = accuracy[accuracy["value"].isna()]
    assert len(unparsed) == 50 and unparsed["reason"].str.startswith("unparsed: ").all()
    assert set(accuracy["value"].dropna()) == {0.0, 1.0}


# ----------------------------------------------------------------------------- any table


@pytest.fixture
def wide_csv(tmp_path: Path) -> Path:
    frame = pd.DataFrame(
        {
            "system": ["ctrl", "ctrl", "steer", "steer", "steer"],
            "alpha": [np.nan, np.nan, 4.0, 4.0, 8.0],
            "task": ["be funny"] * 5,
            "input": ["Why is the sky blue?", "How do planes fly?"] * 2 + ["Why is the sky blue?"],
            "output": ["Rayleigh.", "Lift.", "Blue jokes.", "Wing jokes.", "Sky!!"],
            "beh": [1, 2, 4, 7, "high"],
            "coh": [5, 5, 4, 3, np.nan],
        }
    )
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    return path


MAPPING = {
    "method": "system",
    "strength": "alpha",
    "query": "task",
    "prompt": "input",
    "response": "output",
}


def test_table_wide_scores_melted(wide_csv: Path) -> None:
    result = import_table(
        wide_csv,
        MAPPING,
        defaults={"model": "my-model"},
        score_columns={"behavior": "beh", "coherence": "coh"},
        rater="judge-x",
        scale={"behavior": (1, 5), "coherence": (1, 5)},
    )
    gens, scores = result.generations, result.scores
    check_contract((gens, scores))
    assert len(gens) == 5 and len(scores) == 10 and result.n_unmatched == 0
    assert set(gens["model"]) == {"my-model"} and set(gens["query_id"]) == {"be-funny"}
    assert set(gens["prompt_set"]) == {"open"}
    assert gens["strength"].tolist()[2:] == [4.0, 4.0, 8.0] and gens["strength"].isna().sum() == 2
    assert gens["prompt_id"].str.match(r"^p-[0-9a-f]{10}$").all()
    assert gens["prompt_id"].nunique() == 2 and gens["sample"].eq(0).all()
    assert gens["n_tokens"].isna().all() and gens["error"].isna().all()

    by = scores.set_index(["metric", "key"])["reason"]
    reasons = sorted(r for r in by if isinstance(r, str))
    assert reasons == [
        "missing in source",
        "unparsed: value 'high' is not a number",
        "unparsed: value 7 is outside 1-5",
    ]
    assert set(scores["rater"]) == {"judge-x"} and set(scores["repeat"]) == {0}
    assert result.source["options"]["mapping"] == MAPPING


def test_table_samples_numbered_and_keys_stable(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "model": "m",
            "method": "control",
            "query_id": "q",
            "prompt_id": ["p1", "p1", "p2"],
            "response": ["a", "b", "c"],
        }
    )
    result = import_table(frame)
    assert result.generations["sample"].tolist() == [0, 1, 0]
    again = import_table(frame.copy())
    assert result.generations["key"].tolist() == again.generations["key"].tolist()
    assert result.generations["key"].iloc[0] == row_key(
        {
            "model": "m",
            "method": "control",
            "strength": None,
            "query_id": "q",
            "prompt_set": "open",
            "prompt_id": "p1",
            "sample": 0,
        }
    )
    assert result.scores.empty and tuple(result.scores.columns) == SCORE_COLUMNS
    assert result.generations["query"].tolist() == ["q", "q", "q"]


def test_table_long_form_and_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "model": "m",
            "method": ["control"] * 4 + ["prompt"] * 2,
            "query_id": "be-funny",
            "prompt_id": "common-00",
            "response": ["r1"] * 4 + ["r2"] * 2,
            "metric": ["behavior", "behavior", "coherence", "coherence", "behavior", "coherence"],
            "rater": ["a", "b", "a", "b", "a", "a"],
            "repeat": [0, 0, 0, 1, 0, 0],
            "value": [2.0, 3.0, np.nan, 5.0, 4.0, 4.0],
            "reason": [None, None, "unparsed: no <score> tag", None, None, None],
        }
    )
    path = tmp_path / "long.parquet"
    frame.to_parquet(path)
    result = import_table(path)
    check_contract((result.generations, result.scores))
    assert len(result.generations) == 2 and len(result.scores) == 6
    assert result.scores["reason"].dropna().tolist() == ["unparsed: no <score> tag"]
    assert result.scores["rater"].tolist() == ["a", "b", "a", "b", "a", "a"]
    assert result.scores["repeat"].tolist() == [0, 0, 0, 1, 0, 0]
    assert result.source["options"]["long_form"] is True


def test_table_rows_missing_identity_are_reported(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "model": "m",
            "method": ["control", None, "prompt"],
            "query": ["be funny"] * 3,
            "prompt": ["x", "y", None],
            "response": ["a", "b", "c"],
        }
    )
    result = import_table(frame)
    assert len(result.generations) == 1
    assert result.unmatched["row"].tolist() == [1, 2]
    assert result.unmatched["reason"].tolist() == [
        "missing value in method",
        "missing value in prompt_id",
    ]


def test_table_errors_name_file_and_column(wide_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"mine.csv: required column 'model' not found; map it with "
        r"mapping=\{'model': '<your column>'\}",
    ):
        import_table(wide_csv, MAPPING)
    with pytest.raises(
        DataError, match=r"mine.csv: mapped column\(s\) not found: response='answer'"
    ):
        import_table(wide_csv, {**MAPPING, "response": "answer"}, defaults={"model": "m"})
    with pytest.raises(
        DataError, match=r"mine.csv: required column 'prompt_id' or 'prompt' not found"
    ):
        import_table(
            wide_csv, {k: v for k, v in MAPPING.items() if k != "prompt"}, defaults={"model": "m"}
        )
    with pytest.raises(DataError, match=r"mine.csv: score column\(s\) 'quality' not found"):
        import_table(wide_csv, MAPPING, defaults={"model": "m"}, score_columns=["quality"])
    with pytest.raises(ValueError, match="mapping: unknown tidy column"):
        import_table(wide_csv, {"answer": "output"})
    dup = pd.DataFrame(
        {
            "model": "m",
            "method": "c",
            "query_id": "q",
            "prompt_id": "p",
            "sample": [0, 0],
            "response": ["a", "b"],
        }
    )
    with pytest.raises(DataError, match="several rows describe the same generation"):
        import_table(dup)
    with pytest.raises(ValueError, match="unsupported file type '.xlsx'"):
        (tmp_path / "x.xlsx").write_text("")
        import_table(tmp_path / "x.xlsx")
