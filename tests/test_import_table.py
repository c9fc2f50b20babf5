"""import_table never guesses: ratings stay ratings, duplicates and bad cells are reported,
ragged rows are rejected with their lines, and every bad input is one line naming the file."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _shared import ROOT

from steerstats.errors import DataError
from steerstats.importers import FLAGGED_COLUMNS, UNMATCHED_COLUMNS, import_table
from steerstats.schema import GENERATION_COLUMNS, SCORE_COLUMNS


def check_contract(generations: pd.DataFrame, scores: pd.DataFrame) -> None:
    assert tuple(generations.columns) == GENERATION_COLUMNS
    assert tuple(scores.columns) == SCORE_COLUMNS
    assert generations["key"].is_unique
    assert set(scores["key"]) <= set(generations["key"])
    assert (scores["value"].isna() == scores["reason"].notna()).all()


def judged_table() -> pd.DataFrame:
    """160 responses (2 methods x 4 queries x 20 prompts), each judged by two judges twice."""
    rng = np.random.default_rng(0)
    rows = []
    for method, query, prompt in itertools.product(("control", "prompt"), range(4), range(20)):
        response = f"{method} answer to prompt {prompt} of query {query}"
        for rater, repeat in itertools.product(("judge-a", "judge-b"), (0, 1)):
            rows.append({"model": "m", "method": method, "query": f"be query {query}",
                         "prompt": f"Prompt number {prompt}?", "response": response,
                         "rater": rater, "repeat": repeat,
                         "behavior": int(rng.integers(1, 6)), "coherence": int(rng.integers(1, 6))})
    return pd.DataFrame(rows)


def test_two_judges_two_repeats_round_trip_into_160_responses_and_640_ratings(
    tmp_path: Path,
) -> None:
    from steerstats.results import read_results

    table = judged_table()
    path = tmp_path / "judged.csv"
    table.sample(frac=1, random_state=1).to_csv(path, index=False)  # order must not matter
    result = import_table(path, score_columns=["behavior", "coherence"])
    check_contract(result.generations, result.scores)
    assert len(result.generations) == 160 and result.generations["sample"].eq(0).all()
    behavior = result.scores[result.scores.metric == "behavior"]
    assert len(behavior) == 640 and len(result.scores) == 1280
    per_response = behavior.groupby("key")[["rater", "repeat"]].apply(
        lambda g: sorted(zip(g["rater"], g["repeat"], strict=True)))
    assert all(v == [("judge-a", 0), ("judge-a", 1), ("judge-b", 0), ("judge-b", 1)]
               for v in per_response)
    # each rating kept its value
    merged = behavior.merge(result.generations[["key", "response"]], on="key")
    want = table.set_index(["response", "rater", "repeat"])["behavior"].astype(float)
    got = merged.set_index(["response", "rater", "repeat"])["value"]
    assert got.to_dict() == want.to_dict()

    back = read_results(result.write(tmp_path / "out"))
    assert len(back.generations) == 160 and len(back.scores) == 1280
    assert result.source["summary"]["responses"] == 160
    assert result.source["summary"]["duplicates"] == 0

    # the same ratings in long form give the same responses and keys
    long = table.melt(id_vars=["model", "method", "query", "prompt", "response", "rater",
                               "repeat"], value_vars=["behavior"], var_name="metric")
    from_long = import_table(long)
    assert len(from_long.generations) == 160 and len(from_long.scores) == 640
    assert set(from_long.generations["key"]) == set(result.generations["key"])


def test_ratings_without_response_text_are_grouped_by_design_cells() -> None:
    table = judged_table().drop(columns=["response"])
    result = import_table(table, score_columns=["behavior"])
    assert len(result.generations) == 160 and len(result.scores) == 640
    assert result.generations["response"].isna().all()
    # with replicates, the sample column tells the responses apart
    again = table.assign(sample=1, behavior=table["behavior"] % 5 + 1)  # other scores
    two = pd.concat([table.assign(sample=0), again], ignore_index=True)
    result = import_table(two, score_columns=["behavior"])
    assert len(result.generations) == 320 and len(result.scores) == 1280
    with pytest.raises(DataError, match="conflicting duplicates at rows 0, 640"):
        import_table(two.drop(columns=["sample"]), score_columns=["behavior"])


def four_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "model": "m", "method": ["control", "control", "prompt", "prompt"], "query": "be funny",
        "prompt": ["Why?", "How?", "Why?", "How?"], "response": ["a", "b", "c", "d"],
        "behavior": [1, 2, 3, 4],
    })


def test_exact_duplicate_rows_are_reported_and_dropped(tmp_path: Path) -> None:
    frame = pd.concat([four_rows(), four_rows().iloc[[1]]], ignore_index=True)
    path = tmp_path / "dup.csv"
    frame.to_csv(path, index=False)
    result = import_table(path, score_columns=["behavior"])
    assert len(result.generations) == 4 and len(result.scores) == 4
    assert result.generations["sample"].eq(0).all()
    assert tuple(result.flagged.columns) == FLAGGED_COLUMNS
    [dup] = result.flagged.to_dict("records")
    # data row 4 is file line 6 (header line 1); it repeats data row 1, line 3
    assert (dup["kind"], dup["row"], dup["line"], dup["kept"]) == ("duplicate", 4, 6.0, False)
    assert dup["reason"] == "duplicate: the same cells as line 3; dropped"
    assert result.source["summary"]["duplicates"] == 1

    kept = import_table(path, score_columns=["behavior"], keep_duplicates=True)
    assert len(kept.generations) == 5
    assert kept.generations["sample"].tolist() == [0, 0, 0, 0, 1]
    assert kept.flagged["reason"].tolist() == [
        "duplicate: the same cells as line 3; kept as a separate response (keep_duplicates)"
    ]
    assert kept.flagged["kept"].tolist() == [True]


def test_conflicting_duplicate_is_an_error_naming_its_lines(tmp_path: Path) -> None:
    frame = four_rows()
    frame.loc[4] = {**frame.loc[1].to_dict(), "behavior": 5}  # same response and rating cell
    path = tmp_path / "conflict.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"conflict.csv: conflicting duplicates at lines 3, 6: "
                       r"the same ratings of one response \(model 'm', method 'control'"):
        import_table(path, score_columns=["behavior"])
    long = pd.DataFrame({"model": "m", "method": "c", "query_id": "q", "prompt_id": "p",
                         "response": "r", "metric": "behavior", "rater": "a", "repeat": 0,
                         "value": [3, 4]})
    with pytest.raises(DataError, match=r"<DataFrame>: conflicting duplicates at rows 0, 1: the "
                       r"same rating of one response .*metric 'behavior', rater 'a', repeat 0"):
        import_table(long)


def test_impossible_scores_become_nan_with_reasons(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "model": "m", "method": "control", "query": "be funny",
        "prompt": [f"Prompt {i}?" for i in range(7)], "response": [f"r{i}" for i in range(7)],
        "behavior": ["3", "inf", "-inf", "1e308", "7", "high", ""],
        "toxicity": ["0.5", "2", "nan", "1e308", "-0.1", "0", "1"],
    })
    path = tmp_path / "scores.csv"
    frame.to_csv(path, index=False)
    result = import_table(path, score_columns=["behavior", "toxicity"],
                          scale={"toxicity": (0, 1)})
    check_contract(result.generations, result.scores)
    scores = result.scores.set_index(["metric", "prompt_id"]).sort_index()
    behavior = result.scores[result.scores.metric == "behavior"]
    assert behavior["value"].tolist()[0] == 3.0 and behavior["value"].iloc[1:].isna().all()
    assert behavior["reason"].tolist()[1:] == [
        "unparsed: value inf is not finite",
        "unparsed: value -inf is not finite",
        "unparsed: value 1e+308 is outside 1-5",
        "unparsed: value 7 is outside 1-5",
        "unparsed: value 'high' is not a number",
        "missing in source",
    ]
    toxicity = result.scores[result.scores.metric == "toxicity"]
    assert toxicity["value"].tolist()[0] == 0.5
    assert toxicity["value"].tolist()[5:] == [0.0, 1.0]
    assert toxicity["reason"].tolist()[1:5] == [
        "unparsed: value 2 is outside 0-1",
        "missing in source",
        "unparsed: value 1e+308 is outside 0-1",
        "unparsed: value -0.1 is outside 0-1",
    ]
    assert len(scores) == 14
    # nothing out of range reaches the statistics
    assert result.scores["value"].dropna().between(0, 5).all()
    # counted, and listed with file, line and column (missing values are not flagged)
    assert result.source["summary"]["scores_unusable"] == {
        "not a number": 1, "not finite": 2, "too large": 0, "out of range": 5}
    flagged = result.flagged
    assert set(flagged["kind"]) == {"score"} and len(flagged) == 8
    first = flagged.iloc[0]
    assert (first["column"], first["row"], first["line"]) == ("behavior", 1, 3.0)
    # without a declared range, a number too large to square is still refused
    free = import_table(path, score_columns={"free": "toxicity"})
    assert free.scores["reason"].tolist()[3] == (
        "unparsed: value 1e+308 is too large to analyse (its square overflows)")
    assert free.source["summary"]["scores_unusable"]["too large"] == 1


def test_ragged_rows_are_rejected_with_line_numbers_never_shifted(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(
        "model,method,query,prompt,response\n"
        'm,control,be funny,p0,"a reply\nover two lines"\n'
        "m,prompt,be funny,p0,be funny,EXTRA\n"
        "m,prompt,be funny,p1\n"
        "m,prompt,be funny,p1,fine\n"
    )
    result = import_table(path)
    assert result.generations["response"].tolist() == ["a reply\nover two lines", "fine"]
    assert "EXTRA" not in set(result.generations.astype(str).to_numpy().ravel())
    assert tuple(result.unmatched.columns) == UNMATCHED_COLUMNS
    assert result.unmatched[["row", "line"]].values.tolist() == [[1, 4], [2, 5]]
    assert result.unmatched["reason"].tolist() == [
        "rejected: 6 fields where the header has 5; the row is not read (its columns cannot "
        "be placed)",
        "rejected: 4 fields where the header has 5; the row is not read (its columns cannot "
        "be placed)",
    ]
    summary = result.source["summary"]
    assert (summary["rows_read"], summary["rows_rejected"]) == (4, 2)


def test_bad_inputs_are_one_error_naming_the_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.csv: the file is empty; expected a header"):
        import_table(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("model,method,query,prompt,response\n")
    with pytest.raises(DataError, match=r"header.csv: a header but no data rows"):
        import_table(header_only)
    corrupt = tmp_path / "broken.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable Parquet file"):
        import_table(corrupt)
    sheet = tmp_path / "sheet.xlsx"
    sheet.write_bytes(b"PK\x03\x04 not really a workbook")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # as if it were not installed
    with pytest.raises(DataError, match=r"sheet.xlsx: Excel files are read with openpyxl, which "
                       r"is not installed \(pip install openpyxl\); or save the sheet as CSV"):
        import_table(sheet)
    good = tmp_path / "good.csv"
    four_rows().to_csv(good, index=False)
    with pytest.raises(DataError, match=r"good.csv: default bogus='1': 'bogus' is not a tidy "
                       r"column; accepted: model, method"):
        import_table(good, defaults={"bogus": "1"})
    with pytest.raises(DataError, match=r"good.csv: mapping nonsense=model: 'nonsense' is not a "
                       r"tidy column"):
        import_table(good, {"nonsense": "model"})
    with pytest.raises(DataError, match=r"range behavior=5,1: expected finite LOW < HIGH"):
        import_table(good, scale={"behavior": (5, 1)})


def test_excel_is_read_when_openpyxl_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("openpyxl")
    path = tmp_path / "sheet.xlsx"
    four_rows().to_excel(path, index=False)
    result = import_table(path, score_columns=["behavior"])
    assert len(result.generations) == 4
    assert result.scores["value"].tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [
        ("empty", [], "empty.csv: the file is empty"),
        ("xlsx", [], "sheet.xlsx: "),
        ("parquet", [], "broken.parquet: not a readable Parquet file"),
        ("good", ["--default", "bogus=1"], "default bogus='1': 'bogus' is not a tidy column"),
        ("good", ["--map", "nonsense=model"], "mapping nonsense=model: 'nonsense' is not a tidy"),
        ("good", ["--range", "behavior=high"], "--range behavior=high: expected METRIC=LOW,HIGH"),
    ],
)
def test_cli_bad_inputs_print_one_line(
    tmp_path: Path, setup: str, args: list[str], expected: str
) -> None:
    files = {"empty": ("empty.csv", b""), "xlsx": ("sheet.xlsx", b"PK\x03\x04 broken"),
             "parquet": ("broken.parquet", b"PAR1 nope"),
             "good": ("good.csv", four_rows().to_csv(index=False).encode())}
    name, content = files[setup]
    (tmp_path / name).write_bytes(content)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "steerstats", "import", str(tmp_path / name), "--out",
         str(tmp_path / "out"), *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected in lines[0]


def test_cli_keep_duplicates_range_and_summary(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from steerstats.cli import app

    frame = pd.concat([four_rows(), four_rows().iloc[[0]]], ignore_index=True)
    frame["toxicity"] = [0.1, 0.2, 3.0, 0.4, 0.1]
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    base = ["import", str(path), "--out", str(out), "--score", "behavior", "--score", "toxicity"]
    res = CliRunner().invoke(app, [*base, "--range", "toxicity=0,1"])
    assert res.exit_code == 0, res.output
    assert "5 rows read, 0 rejected (field count), 0 not placed; 1 exact duplicate(s) dropped; " \
        "4 responses, 8 ratings; unusable scores made NaN: 1 out of range" in res.output
    assert "flagged: 1 duplicate, 1 score" in res.output
    flagged = pd.read_csv(out / "flagged.csv")
    assert flagged["kind"].tolist() == ["duplicate", "score"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["flagged"] == {"duplicate": 1, "score": 1}
    assert manifest["import"]["options"]["scale"]["toxicity"] == [0.0, 1.0]
    assert manifest["import"]["summary"]["scores_unusable"]["out of range"] == 1

    res = CliRunner().invoke(app, [*base, "--keep-duplicates"])
    assert res.exit_code == 0, res.output
    assert "5 responses" in res.output and "1 exact duplicate(s) kept" in res.output
