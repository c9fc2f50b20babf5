"""Shipped datasets and their loaders: queries, open prompts, MMLU loading, sampling, answers."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import pytest
from _shared import shared_path

from steerstats.datasets import (
    MMLUQuestion,
    dataset_names,
    extract_answer,
    format_mmlu,
    load_mmlu_jsonl,
    load_queries,
    mmlu_prompts,
    open_prompts,
    paper_mmlu,
    parse_answer,
    read_dataset,
    reference_text,
    slugify,
)
from steerstats.errors import DataError

MMLU_TEST = shared_path("data", "mmlu_test.jsonl")

GOOD_ROW = {
    "question": "2 + 2 = ?",
    "answer_a": "3",
    "answer_b": "4",
    "answer_c": "5",
    "answer_d": "22",
    "correct_answer": "B",
    "topic": "arithmetic",
}
HEADER_ROW = {
    "question": "question",
    "answer_a": "answer_a",
    "answer_b": "answer_b",
    "answer_c": "answer_c",
    "answer_d": "answer_d",
    "correct_answer": "answer",
    "topic": "elementary mathematics",
}


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


# ----------------------------------------------------------------------------- shipped data


def test_index_lists_every_dataset_with_source_and_licence() -> None:
    names = dataset_names()
    assert names == [
        "queries",
        "topic_prompts",
        "common_prompts",
        "criteria",
        "mmlu_paper",
        "reference_text",
    ]
    for name in names:
        assert len(read_dataset(name)) > 0


def test_read_dataset_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names are: queries, topic_prompts"):
        read_dataset("nope")


def test_paper_queries_are_the_studys_14_with_slug_ids_and_own_criteria() -> None:
    queries = load_queries("paper")
    assert len(queries) == 14
    assert queries[0].id == "be-funny" and queries[0].text == "be funny"
    assert queries[-1].id == "be-misleading-and-ambiguous"
    assert all(q.id == slugify(q.text) for q in queries)
    for q in queries:
        assert q.criteria is not None
        assert [line[:2] for line in q.criteria.splitlines()] == ["1:", "3:", "5:"]
    assert read_dataset("criteria").groupby("query_id").size().eq(3).all()


def test_load_queries_from_files(tmp_path: Path) -> None:
    txt = tmp_path / "q.txt"
    txt.write_text("# my queries\nbe funny\n\nBe  Very Polite!\n")
    queries = load_queries(txt)
    assert [q.id for q in queries] == ["be-funny", "be-very-polite"]
    assert queries[0].criteria is not None  # shipped criteria follow the id
    assert queries[1].criteria is None and queries[1].text == "Be Very Polite!"
    js = tmp_path / "q.json"
    js.write_text(json.dumps([{"text": "be brief", "criteria": "1: long. 5: short."}, "be kind"]))
    assert [(q.id, q.criteria) for q in load_queries(js)] == [
        ("be-brief", "1: long. 5: short."),
        ("be-kind", None),
    ]
    dup = tmp_path / "dup.txt"
    dup.write_text("be funny\nBe funny!\n")
    with pytest.raises(DataError, match=r"dup.txt: queries 1 and 2 both have id 'be-funny'"):
        load_queries(dup)
    with pytest.raises(ValueError, match="neither a shipped set"):
        load_queries("no-such-set")


def test_open_prompts_crossed_design() -> None:
    queries = load_queries()
    design = open_prompts(queries)
    assert set(design) == {q.id for q in queries}
    funny = design["be-funny"]
    assert len(funny) == 30
    assert [p.id for p in funny[:10]] == [f"be-funny/topic-{i:02d}" for i in range(10)]
    assert funny[0].text == "Explain quantum physics" and funny[0].prompt_set == "open"
    # crossed: the same 20 common prompts, after each query's own 10, for every query
    assert all(len(ps) == 30 for ps in design.values())
    drawn = {qid: [p.id for p in ps[10:]] for qid, ps in design.items()}
    assert all(ids == drawn["be-funny"] for ids in drawn.values())
    assert all(i.startswith("common-") for i in drawn["be-funny"])
    # seed 1 is the draw the study made for "be funny" (random.seed(1); random.sample(list, 20))
    common_texts = read_dataset("common_prompts")["text"].tolist()
    expected = random.Random(1).sample(common_texts, 20)
    assert [p.text for p in funny[10:]] == expected
    assert open_prompts(queries, seed=2)["be-funny"][10:] != funny[10:]


def test_open_prompts_nested_reproduces_the_studys_per_query_draws() -> None:
    design = open_prompts(load_queries(), crossed=False)
    concise = sorted(
        int(p.id.split("-")[1])
        for p in design["be-concise-and-direct"]
        if p.id.startswith("common-")
    )
    # the common prompts present for "be concise and direct" in the study's Llama-3.1-8B results
    assert concise == [2, 7, 8, 11, 13, 19, 22, 28, 30, 35, 37, 38, 46, 50, 51, 61, 66, 68, 70, 81]


def test_open_prompts_limits_and_errors() -> None:
    queries = load_queries()[:2]
    design = open_prompts(queries, n_topic=3, n_common=5, seed=7)
    assert [len(v) for v in design.values()] == [8, 8]
    with pytest.raises(ValueError, match="n_common must be between 0 and 84"):
        open_prompts(queries, n_common=85)
    with pytest.raises(ValueError, match="has 10 topic prompts, fewer than n_topic=11"):
        open_prompts(queries, n_topic=11)


def test_topic_prompt_equal_to_a_common_prompt_takes_the_common_id() -> None:
    # "What is climate change?" is both a topic prompt of "be educational and accessible" and
    # common prompt 53; ids are shared when the text is the same.
    [educational] = [q for q in load_queries() if q.id == "be-educational-and-accessible"]
    ids = [p.id for p in open_prompts([educational], n_common=0)[educational.id]]
    assert "common-53" in ids and len(ids) == 10 and len(set(ids)) == 10


def test_paper_mmlu_is_171_questions_three_per_subject() -> None:
    questions = paper_mmlu()
    assert len(questions) == 171
    assert questions[0].id == "mmlu-000" and questions[-1].id == "mmlu-170"
    per_subject = collections.Counter(q.subject for q in questions)
    assert len(per_subject) == 57 and set(per_subject.values()) == {3}
    # first question and key as in the study's steering_queries_mmlu.json
    assert questions[0].question.startswith("Find all c in Z_3") and questions[0].answer == "B"
    assert read_dataset("mmlu_paper").shape == (171, 8)


def test_reference_text_is_about_300_words() -> None:
    words = len(reference_text().split())
    assert 250 <= words <= 350
    assert len(read_dataset("reference_text")) == 4


# ----------------------------------------------------------------------------- MMLU loader


def test_loader_rejects_header_rows_naming_file_and_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [GOOD_ROW, GOOD_ROW, HEADER_ROW, GOOD_ROW, HEADER_ROW])
    with pytest.raises(DataError) as info:
        load_mmlu_jsonl(path)
    message = str(info.value)
    assert str(path) in message
    assert "line(s) 3, 5:" in message
    assert "correct_answer is 'answer'" in message and "on_error='skip'" in message


def test_loader_names_each_kind_of_bad_row(tmp_path: Path) -> None:
    rows: list[object] = [
        GOOD_ROW,
        "{not json",
        {k: v for k, v in GOOD_ROW.items() if k != "topic"},
        {**GOOD_ROW, "correct_answer": "E"},
        {**GOOD_ROW, "answer_c": ""},
        [1, 2],
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_mmlu_jsonl(path)
    message = str(info.value)
    assert "5 malformed row(s) at line(s) 2, 3, 4, 5, 6" in message
    assert "line 2: not valid JSON" in message
    assert "line 3: missing key(s) topic" in message
    assert "line 4: correct_answer is 'E'" in message
    assert "line 5: empty or non-text value(s) for answer_c" in message
    assert "line 6: expected a JSON object, got list" in message


def test_loader_skip_warns_with_lines_and_keeps_good_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl", [GOOD_ROW, HEADER_ROW, "", {**GOOD_ROW, "question": "1+1?"}]
    )
    with pytest.warns(UserWarning, match=r"skipped .*m.jsonl: 1 malformed row\(s\) at line\(s\) 2"):
        questions = load_mmlu_jsonl(path, on_error="skip")
    assert [(q.question, q.line, q.answer, q.choices[1]) for q in questions] == [
        ("2 + 2 = ?", 1, "B", "4"),
        ("1+1?", 4, "B", "4"),
    ]
    assert questions[0].id.startswith("mmlu-") and questions[0].id != questions[1].id


def test_loader_missing_file_and_bad_option(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_mmlu_jsonl(tmp_path / "absent.jsonl")
    path = write_jsonl(tmp_path / "m.jsonl", [GOOD_ROW])
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        load_mmlu_jsonl(path, on_error="ignore")  # type: ignore[arg-type]


@pytest.mark.skipif(
    MMLU_TEST is None, reason="../shared/data/mmlu_test.jsonl not present in this checkout"
)
def test_loader_on_the_development_mmlu_file_names_exactly_the_two_header_lines() -> None:
    assert MMLU_TEST is not None
    with pytest.raises(DataError) as info:
        load_mmlu_jsonl(MMLU_TEST)
    message = str(info.value)
    assert "2 malformed row(s) at line(s) 11777, 12794:" in message
    assert message.count("correct_answer is 'answer'") == 2


# ----------------------------------------------------------------------------- sampler


def synthetic_pool() -> list[MMLUQuestion]:
    sizes = {"algebra": 40, "biology": 25, "chemistry": 20, "drama": 10, "economics": 5}
    return [
        MMLUQuestion(f"q-{s}-{i}", f"{s} question {i}?", ("w", "x", "y", "z"), "ABCD"[i % 4], s)
        for s, n in sizes.items()
        for i in range(n)
    ]


def test_sampler_is_stratified_by_subject() -> None:
    pool = synthetic_pool()  # 100 questions: shares 40/25/20/10/5 %
    sample = mmlu_prompts(20, seed=3, source=pool)
    counts = collections.Counter(p.subject for p in sample)
    assert counts == {"algebra": 8, "biology": 5, "chemistry": 4, "drama": 2, "economics": 1}
    # 10 of 100 needs largest remainders: 4, 2.5, 2, 1, 0.5 -> the two .5 shares compete for 1 place
    counts10 = collections.Counter(p.subject for p in mmlu_prompts(10, seed=0, source=pool))
    assert counts10["algebra"] == 4 and counts10["chemistry"] == 2 and counts10["drama"] == 1
    assert counts10["biology"] + counts10["economics"] == 3 and counts10["biology"] in (2, 3)
    assert all(p.prompt_set == "mmlu" and p.answer in "ABCD" for p in sample)


def test_sampler_is_seeded() -> None:
    pool = synthetic_pool()
    a = [p.id for p in mmlu_prompts(20, seed=3, source=pool)]
    assert a == [p.id for p in mmlu_prompts(20, seed=3, source=pool)]
    assert a != [p.id for p in mmlu_prompts(20, seed=4, source=pool)]
    assert a == sorted(a, key=[q.id for q in pool].index)  # keeps the source order


def test_sampler_on_paper_questions() -> None:
    assert len(mmlu_prompts()) == 171
    sample = mmlu_prompts(57, seed=0)
    assert len({p.subject for p in sample}) == 57  # one per subject
    by_id = {q.id: q for q in paper_mmlu()}
    for p in sample:
        q = by_id[p.id]
        assert p.text == format_mmlu(q.question, q.choices) and (p.answer, p.subject) == (
            q.answer,
            q.subject,
        )
    with pytest.raises(ValueError, match="n must be between 1 and 171"):
        mmlu_prompts(172)


def test_sampler_reads_a_jsonl_source(tmp_path: Path) -> None:
    rows = [{**GOOD_ROW, "question": f"q{i}", "topic": "ab"[i % 2]} for i in range(10)]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    sample = mmlu_prompts(4, seed=1, source=str(path))
    assert collections.Counter(p.subject for p in sample) == {"a": 2, "b": 2}


# ----------------------------------------------------------------------------- format and answers


def test_format_mmlu_letters_choices_and_asks_for_the_tag() -> None:
    text = format_mmlu("What is 2 + 2?", ["3", "4", "5", "22"])
    assert text.startswith("What is 2 + 2?\n\nA. 3\nB. 4\nC. 5\nD. 22\n\n")
    assert "<answer></answer>" in text and "single letter (A, B, C, D)" in text
    with pytest.raises(ValueError, match="2 to 4 choices"):
        format_mmlu("q", ["a", "b", "c", "d", "e"])


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("<answer>B</answer>", "B"),
        ("<thinking>A looks wrong</thinking>\n<answer> c </answer>", "C"),
        ("<answer>(B)</answer>", "B"),
        ("<answer>D.</answer>", "D"),
        ("<answer>**A**</answer>", "A"),
        ("<ANSWER>\nB\n</ANSWER>", "B"),
        ("<answer>C. foreign policy.</answer>", "C"),
        ("<answer>(A) The first pharyngeal arch</answer>", "A"),
        ("<answer>Answer: D</answer>", "D"),
        ("first <answer>A</answer> then, on reflection, <answer>C</answer>", "C"),
        ("reasoning... <answer>B", "B"),  # cut off after the letter
        ("no tag, but the answer is B", None),
        ("<answer></answer>", None),
        ("<answer>A or C</answer>", None),
        ("<answer>A, B, C</answer>", None),
        ("<answer>E</answer>", None),
        ("<answer>...</answer>", None),
        ("<answer>B</answer> and finally <answer>maybe</answer>", None),
        ("", None),
    ],
)
def test_extract_answer(reply: str, letter: str | None) -> None:
    assert extract_answer(reply) == letter


def test_parse_answer_gives_reasons() -> None:
    assert parse_answer("nothing here") == (None, "no <answer> tag")
    assert parse_answer("<answer> </answer>") == (None, "empty <answer> tag")
    assert parse_answer("<answer>C, D</answer>") == (
        None,
        "<answer> tag holds 'C, D', not a single letter A-D",
    )
    assert parse_answer("<answer>B</answer>") == ("B", None)
