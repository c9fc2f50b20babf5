"""Importers: the seed study's CSVs and any table with a column mapping, into the tidy tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _shared import shared_path

from steerstats.datasets import common_prompt_texts, load_queries, paper_mmlu, paper_topic_prompts
from steerstats.errors import DataError
from steerstats.importers import (
    NOTE_COLUMNS,
    SEED_STUDY_ALIASES,
    UNMATCHED_COLUMNS,
    ImportResult,
    import_seed_study,
    import_table,
    normalize_method,
    row_key,
)
from steerstats.schema import GENERATION_COLUMNS, SCORE_COLUMNS

OPEN_CSV = shared_path("seed-study", "results", "open_prompts_llama-3.1-8b.csv")
MMLU_CSV = shared_path("seed-study", "results", "mmlu_llama-3.1-8b_partial.csv")
MMLU_JSON = shared_path("seed-study", "design", "mmlu.json")
DESIGN_DIR = None if MMLU_JSON is None else MMLU_JSON.parent
needs_seed_study = pytest.mark.skipif(
    OPEN_CSV is None or MMLU_CSV is None or DESIGN_DIR is None,
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

    assert tuple(result.notes.columns) == NOTE_COLUMNS
    assert result.notes[["kind", "query", "rows"]].values.tolist() == [
        ["unknown-query", "be very silly", 1]
    ]
    assert result.source["notes"][0]["kind"] == "unknown-query"

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
    assert accuracy == "no answer key: question not among the study's 171 shipped MMLU questions"


SEED_COLUMNS = ["query", "steering_method", "user_prompt", "response", "behavior", "coherence"]


def write_rows(path: Path, rows: list[tuple[object, ...]]) -> Path:
    pd.DataFrame(rows, columns=SEED_COLUMNS).to_csv(path, index=False)
    return path


def test_seed_study_aliases_need_evidence(tmp_path: Path) -> None:
    creative = paper_topic_prompts()["be-creative-and-imaginative"]
    funny = paper_topic_prompts()["be-funny"]
    common = common_prompt_texts()[0]
    old = "be more creative and imaginative"
    rows = [
        (old, "Control", creative[0], "A creature.", 3, 5),
        (old, "Control", creative[1], "A hero.", 3, 5),
        (old, "Control", common, "Circuits.", 2, 5),
        ("be jolly", "Control", funny[0], "Ha.", 3, 5),  # aliased to be funny, but with evidence
        ("be jolly", "Control", creative[2], "Hm.", 3, 5),  # ... one prompt is not be funny's
    ]
    path = write_rows(tmp_path / "open.csv", rows)
    aliases = {**SEED_STUDY_ALIASES, "be jolly": "be funny"}
    result = import_seed_study(path, query_aliases=aliases)
    check_contract((result.generations, result.scores))
    assert result.generations["query_id"].tolist() == ["be-creative-and-imaginative"] * 3
    assert result.generations["query"].tolist() == ["be creative and imaginative"] * 3
    assert result.generations["prompt_id"].tolist() == [
        "be-creative-and-imaginative/topic-00",
        "be-creative-and-imaginative/topic-01",
        "common-00",
    ]
    notes = result.notes.set_index("query")
    assert notes.loc[old, "kind"] == "alias" and notes.loc[old, "rows"] == 3
    assert notes.loc[old, "detail"].startswith("as 'be creative and imaginative': every distinct")
    assert notes.loc["be jolly", "kind"] == "alias-not-applied"
    assert notes.loc["be jolly", "detail"] == "1 of its 2 topic prompts are not among the target's"
    assert len(result.unmatched) == 2
    assert (
        result.unmatched["reason"]
        .str.startswith(
            "query text not among the shipped queries; alias to 'be funny' not applied: "
            "1 of its 2 topic prompts are not among the target's"
        )
        .all()
    )
    assert result.source["options"]["query_aliases"] == aliases

    # no aliasing at all: the renamed query is unknown
    plain = import_seed_study(path, query_aliases={})
    assert plain.generations.empty and plain.n_unmatched == 5
    assert set(plain.notes["kind"]) == {"unknown-query"}
    # unverified aliases are applied, and say so
    forced = import_seed_study(path, query_aliases=aliases, verify_aliases=False)
    assert forced.unmatched["reason"].tolist() == [
        "prompt text not among this query's topic prompts or the common prompts"
    ]  # be jolly's creative prompt, now under be funny
    assert forced.notes["detail"].str.endswith("not verified (verify_aliases=False)").all()
    # in the MMLU study every query gets the same questions: no evidence, no alias
    mmlu = write_rows(tmp_path / "mmlu.csv", [(old, "Control", mmlu_prompt_text(0), "x", 1, 5)])
    refused = import_seed_study(mmlu_csv=mmlu)
    assert refused.notes["kind"].tolist() == ["alias-not-applied"]
    assert refused.notes["detail"].iloc[0].startswith("the MMLU study asks every query")
    # a query whose rows hold only common prompts cannot confirm a rename
    only_common = write_rows(tmp_path / "common.csv", [(old, "Control", common, "x", 1, 5)])
    assert import_seed_study(only_common).notes["detail"].tolist() == [
        "its rows hold no topic prompts to compare"
    ]


@pytest.fixture
def design_dir(tmp_path: Path) -> Path:
    """A miniature seed-study design folder in the study's own formats."""
    folder = tmp_path / "design"
    folder.mkdir()
    topics = paper_topic_prompts()
    queries = [
        {"description": "be funny", "topic_specific_prompts": topics["be-funny"], "random_seed": 1}
    ]
    (folder / "steering_queries.json").write_text(json.dumps(queries))
    (folder / "steering_queries_mmlu.json").write_text(
        json.dumps([{"description": "be funny", "topic_specific_prompts": []}])
    )
    (folder / "common_prompts.json").write_text(json.dumps(common_prompt_texts()))
    shipped = paper_mmlu()[1]
    table = {
        "question": [
            " " + shipped.question,  # the study's file has stray leading spaces
            "Which colour is the sky?",
            "What drives consumer behaviour?",
        ],
        "subject": [shipped.subject, "astronomy", "marketing"],
        "choices": [
            list(shipped.choices),
            ["Red", "Blue", "Green", "Grey"],
            ["Needs", "Wants", "Prices", "Ads"],
        ],
        "answer": ["ABCD".index(shipped.answer), 1, 0],
        "category": ["all"] * 3,
    }
    (folder / "mmlu.json").write_text(json.dumps(table))
    return folder


def test_seed_study_design_dir(tmp_path: Path, design_dir: Path) -> None:
    sky = "Which colour is the sky?\nA. Red\nB. Blue\nC. Green\nD. Grey" + COT
    needs = "What drives consumer behavior?\nA. Needs\nB. Wants\nC. Prices\nD. Ads" + COT
    rows = [
        ("be funny", "Control", mmlu_prompt_text(1), "<answer>A</answer>", 3, 5),
        ("be funny", "Control", sky, "<answer>B</answer>", 3, 5),
        ("be funny", "AutoSteer", sky, "no tag", 3, 5),
        ("be funny", "Control", needs, "<answer>A</answer>", 3, 5),
        ("be seductive and flattering", "Control", sky, "<answer>C</answer>", 3, 5),
        ("be funny", "Control", mmlu_prompt_text(0), "<answer>B</answer>", 3, 5),
    ]
    path = write_rows(tmp_path / "mmlu.csv", rows)
    result = import_seed_study(mmlu_csv=path, design_dir=design_dir)
    check_contract((result.generations, result.scores))
    # shipped questions keep their id; the others are mmlu-dev-<row in mmlu.json>
    assert result.generations["prompt_id"].tolist() == [
        "mmlu-001",
        "mmlu-dev-001",
        "mmlu-dev-001",
        "mmlu-dev-002",
    ]
    accuracy = result.scores.query("metric == 'accuracy'")
    assert accuracy["value"].tolist()[:2] == [float(paper_mmlu()[1].answer == "A"), 1.0]
    assert math.isnan(accuracy["value"].iloc[2])
    assert accuracy["reason"].iloc[2] == "unparsed: no <answer> tag"
    assert accuracy["value"].iloc[3] == 1.0
    assert result.unmatched["reason"].tolist() == [
        f"query text not among the queries of {design_dir / 'steering_queries_mmlu.json'}",
        f"question not among the 3 questions of {design_dir / 'mmlu.json'}",
    ]
    notes = result.notes.set_index("kind")
    assert notes.loc["spelling", "rows"] == 1  # "behavior" in the CSV, "behaviour" in the design
    assert notes.loc["unknown-query", "query"] == "be seductive and flattering"
    assert result.source["design"]["design"] == str(design_dir)
    assert len(result.source["design"]["files"]["mmlu.json"]) == 64

    extra = import_seed_study(
        mmlu_csv=path, design_dir=design_dir, extra_queries=["be seductive and flattering"]
    )
    assert extra.n_unmatched == 1
    row = extra.generations.query("query_id == 'be-seductive-and-flattering'")
    assert row["prompt_id"].tolist() == ["mmlu-dev-001"]
    assert extra.scores.query("key in @row.key and metric == 'accuracy'")["value"].tolist() == [0.0]
    assert extra.notes.set_index("kind").loc["extra-query", "detail"].endswith("(extra_queries)")


def test_seed_study_design_dir_errors(tmp_path: Path, design_dir: Path) -> None:
    path = write_rows(tmp_path / "x.csv", [("be funny", "Control", "hi", "x", 1, 1)])
    with pytest.raises(ValueError, match="give queries or design_dir, not both"):
        import_seed_study(path, design_dir=design_dir, queries=tmp_path / "q.txt")
    with pytest.raises(ValueError, match="is not a folder"):
        import_seed_study(path, design_dir=tmp_path / "nowhere")
    (design_dir / "mmlu.json").unlink()
    with pytest.raises(DataError, match=r"mmlu.json not found"):
        import_seed_study(path, design_dir=design_dir)
    (design_dir / "mmlu.json").write_text(
        json.dumps({"question": ["q"], "subject": ["s"], "choices": [["a", "b"]], "answer": [0]})
    )
    with pytest.raises(DataError, match=r"mmlu.json: row 0 needs 4 choices"):
        import_seed_study(path, design_dir=design_dir)
    (design_dir / "mmlu.json").write_text(
        json.dumps(
            {
                "question": [paper_mmlu()[0].question],
                "subject": ["abstract_algebra"],
                "choices": [list(paper_mmlu()[0].choices)],
                "answer": [0],  # the shipped key is B
            }
        )
    )
    with pytest.raises(DataError, match="is shipped question mmlu-000 but its answer is A, not B"):
        import_seed_study(path, design_dir=design_dir)


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

RENAMED = {
    "be more creative and imaginative": "be creative and imaginative",
    "be educational and explain like a teacher": "be educational and accessible",
}


def check_real_import(result: ImportResult, raw: dict[str, pd.DataFrame]) -> None:
    """What holds for every import of the two real files: each row imported or reported, the
    judges' 0s unparsed NaN, accuracy 0/1 or NaN with a reason."""
    gens, scores, unmatched = result.generations, result.scores, result.unmatched
    check_contract((gens, scores))
    files = {f["study"]: f for f in result.source["files"]}
    for study in ("open", "mmlu"):
        assert files[study]["imported"] + files[study]["unmatched"] == len(raw[study])
    assert result.n_unmatched == files["open"]["unmatched"] + files["mmlu"]["unmatched"]
    assert set(gens.loc[gens.prompt_set == "open", "method"]) == {
        "control",
        "prompt",
        "autosteer",
        "autosteer+prompt",
        "agentic",
    }
    # the MMLU "Auto Steer" rows carry the prompt method's instruction: Auto Steer + prompt
    assert set(gens.loc[gens.prompt_set == "mmlu", "method"]) == {
        "control",
        "prompt",
        "autosteer+prompt",
    }

    # the 0s: NaN "unparsed", counted from the raw file minus its unmatched rows
    judged = scores[scores.metric.isin(["behavior", "coherence"])]
    zeros = 0
    for study, path in (("open", OPEN_CSV), ("mmlu", MMLU_CSV)):
        imported = raw[study].drop(index=unmatched.loc[unmatched["file"] == str(path), "row"])
        zeros += int((imported[["behavior", "coherence"]] == 0).sum().sum())
    assert judged["value"].isna().sum() == zeros > 0
    assert set(judged.loc[judged["value"].isna(), "reason"]) == {
        "unparsed: judge score 0 is outside 1-5"
    }
    assert judged["value"].dropna().isin([1.0, 2.0, 3.0, 4.0, 5.0]).all()
    accuracy = scores[scores.metric == "accuracy"]
    assert len(accuracy) == files["mmlu"]["imported"] and set(accuracy["rater"]) == {"auto"}
    assert accuracy.loc[accuracy["value"].isna(), "reason"].str.startswith("unparsed: ").all()
    assert set(accuracy["value"].dropna()) == {0.0, 1.0}

    # the renamed open-study queries are imported under their design names, and said so
    aliased = result.notes[result.notes["kind"] == "alias"]
    assert dict(zip(aliased["query"], aliased["rows"], strict=True)) == {q: 150 for q in RENAMED}
    for old, new in RENAMED.items():
        assert aliased.set_index("query").loc[old, "detail"].startswith(f"as '{new}'")
        assert (raw["open"]["query"] == old).sum() == 150
    assert files["open"]["unmatched"] == 0 and files["open"]["imported"] == 1494
    assert set(gens.loc[gens.prompt_set == "open", "query"]) == set(
        raw["open"]["query"].replace(RENAMED)
    )


@pytest.fixture(scope="module")
def raw_seed() -> dict[str, pd.DataFrame]:
    assert OPEN_CSV is not None and MMLU_CSV is not None
    raw = {"open": pd.read_csv(OPEN_CSV), "mmlu": pd.read_csv(MMLU_CSV)}
    assert (len(raw["open"]), len(raw["mmlu"])) == (1494, 1288)  # the README's row counts
    return raw


@needs_seed_study
def test_seed_study_real_files_shipped_design(raw_seed: dict[str, pd.DataFrame]) -> None:
    result = import_seed_study(OPEN_CSV, MMLU_CSV)
    check_real_import(result, raw_seed)
    gens, unmatched = result.generations, result.unmatched
    # mmlu: "be seductive and flattering" is not among the 14, and 4th/5th questions per
    # subject are not among the shipped 171 (3 prompts match only with "behaviour" folded)
    files = {f["study"]: f for f in result.source["files"]}
    assert (files["mmlu"]["imported"], files["mmlu"]["unmatched"]) == (747, 541)
    seductive = unmatched["query"] == "be seductive and flattering"
    assert seductive.sum() == 60
    assert (
        unmatched.loc[~seductive, "reason"]
        .eq("question not among the study's 171 shipped MMLU questions")
        .all()
    )
    notes = result.notes.set_index("kind")
    assert notes.loc["unknown-query", "query"] == "be seductive and flattering"
    assert notes.loc["spelling", "rows"] == 3
    assert len(gens) == 1494 + 747 and gens["query_id"].nunique() == 14
    assert set(gens["prompt_id"]) <= (
        {f"mmlu-{i:03d}" for i in range(171)}
        | {f"common-{i:02d}" for i in range(84)}
        | {f"{q.id}/topic-{i:02d}" for q in load_queries() for i in range(10)}
    )
    accuracy = result.scores[result.scores.metric == "accuracy"]
    assert accuracy["value"].isna().sum() == 50


@needs_seed_study
def test_seed_study_real_files_study_design(raw_seed: dict[str, pd.DataFrame]) -> None:
    """With the study's own design folder every MMLU question has a key; only the query that
    is in no design file stays unmatched, until it is named in extra_queries."""
    result = import_seed_study(OPEN_CSV, MMLU_CSV, design_dir=DESIGN_DIR)
    check_real_import(result, raw_seed)
    files = {f["study"]: f for f in result.source["files"]}
    assert (files["mmlu"]["imported"], files["mmlu"]["unmatched"]) == (1228, 60)
    assert set(result.unmatched["query"]) == {"be seductive and flattering"}
    assert result.notes.set_index("kind").loc["spelling", "rows"] == 12
    ids = set(result.generations.loc[result.generations.prompt_set == "mmlu", "prompt_id"])
    assert all(i.startswith(("mmlu-dev-", "mmlu-")) for i in ids)
    assert sum(i.startswith("mmlu-dev-") for i in ids) > 0
    assert len(result.source["design"]["files"]) == 4

    extra = import_seed_study(
        OPEN_CSV, MMLU_CSV, design_dir=DESIGN_DIR, extra_queries=["be seductive and flattering"]
    )
    check_real_import(extra, raw_seed)
    assert extra.n_unmatched == 0 and len(extra.generations) == 1494 + 1288
    assert extra.generations["query_id"].nunique() == 15
    assert extra.notes.set_index("kind").loc["extra-query", "rows"] == 60
    accuracy = extra.scores[extra.scores.metric == "accuracy"]
    assert len(accuracy) == 1288 and accuracy["value"].isna().sum() == 106
    # the same rows keep the same keys whatever design they were matched against
    shipped = import_seed_study(OPEN_CSV, MMLU_CSV).generations
    assert set(shipped["key"]) <= set(extra.generations["key"])


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
    with pytest.raises(DataError, match="mine.csv: mapping answer=output: 'answer' is not a tidy"):
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
    with pytest.raises(DataError, match="unsupported file type '.ods'"):
        (tmp_path / "x.ods").write_text("a")
        import_table(tmp_path / "x.ods")


def test_cli_import_seed_study_writes_a_results_directory(
    tmp_path: Path, seed_csvs: tuple[Path, Path]
) -> None:
    from typer.testing import CliRunner

    from steerstats.cli import app
    from steerstats.results import read_results

    open_csv, mmlu_csv = seed_csvs
    out = tmp_path / "imported"
    res = CliRunner().invoke(app, ["import", "--seed-open", str(open_csv), "--seed-mmlu",
                                   str(mmlu_csv), "--out", str(out)])
    assert res.exit_code == 0, res.output
    direct = import_seed_study(open_csv, mmlu_csv)
    back = read_results(out)
    assert len(back.generations) == len(direct.generations)
    assert len(back.scores) == len(direct.scores)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["import"]["importer"] == "seed-study"
    assert manifest["unmatched_rows"] == direct.n_unmatched > 0
    assert manifest["failures"]["scores_unparsed"] == int(back.scores["value"].isna().sum())
    assert len(pd.read_csv(out / "unmatched.csv")) == direct.n_unmatched
    assert f"{direct.n_unmatched} source rows could not be placed" in res.output


def test_cli_import_table_with_mapping(tmp_path: Path, wide_csv: Path) -> None:
    from typer.testing import CliRunner

    from steerstats.cli import app
    from steerstats.results import read_results

    out = tmp_path / "mine"
    args = ["import", str(wide_csv), "--out", str(out), "--format", "csv",
            "--default", "model=my-model", "--score", "beh", "--score", "coh"]
    for tidy, col in MAPPING.items():
        args += ["--map", f"{tidy}={col}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    back = read_results(out)
    assert set(back.generations["model"]) == {"my-model"}
    assert set(back.scores["metric"]) == {"beh", "coh"}
    assert (out / "scores.csv").exists()

    bad = CliRunner().invoke(app, ["import", str(wide_csv), "--out", str(out), "--map", "response"])
    assert bad.exit_code != 0
    assert "expected NAME=VALUE" in bad.output
