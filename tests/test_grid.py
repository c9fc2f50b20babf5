"""An experiment's queries and prompts: shipped sets, inline items, files, ids and limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerstats.collect.inputs import experiment_prompts, experiment_queries
from steerstats.config import load_config
from steerstats.errors import ConfigError

HEAD = """
[experiment]
name = "g"

[[models]]
backend = "mock"
model = "m"

[[methods]]
name = "control"
"""


def cfg_with(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "exp.toml"
    p.write_text(HEAD + body)
    return load_config(p)


def test_shipped_queries_ids_and_limits(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path, '[queries]\nset = "paper"\n\n[prompts.open]\nn_topic = 2\n'
                             'n_common = 3\n\n[prompts.mmlu]\nn = 4\nseed = 2\n')
    qs = experiment_queries(cfg)
    assert len(qs) == 14 and qs[0].id == "be-funny" and qs[0].criteria
    prompts = experiment_prompts(cfg, qs)
    first = prompts["be-funny"]
    assert [p.prompt_set for p in first] == ["open"] * 5 + ["mmlu"] * 4
    assert first[0].id == "be-funny/topic-00" and first[2].id.startswith("common-")
    # common prompts are crossed with queries; MMLU questions are the same for every query
    assert [p.id for p in first[2:]] == [p.id for p in prompts[qs[1].id][2:]]
    assert all(p.answer in {"A", "B", "C", "D"} for p in first[5:])
    assert len(experiment_queries(cfg, limit=3)) == 3
    limited = experiment_prompts(cfg, qs[:1], limit=2)["be-funny"]
    assert [p.prompt_set for p in limited] == ["open", "open", "mmlu", "mmlu"]

    cfg = cfg_with(tmp_path, '[queries]\nset = "paper"\n'
                             'ids = ["be-concise-and-direct", "be-funny"]\n'
                             "limit = 1\n\n[prompts.mmlu]\nn = 2\n")
    assert [q.id for q in experiment_queries(cfg)] == ["be-concise-and-direct"]
    bad = cfg_with(tmp_path, '[queries]\nset = "paper"\nids = ["be-funy"]\n\n[prompts.mmlu]\n')
    with pytest.raises(ConfigError, match="queries.ids: unknown query id.*'be-funy'.*be-funny"):
        experiment_queries(bad)


def test_query_file_and_prompt_file_relative_to_the_experiment(tmp_path: Path) -> None:
    (tmp_path / "q.json").write_text(json.dumps(["be terse", {"text": "be kind", "id": "kind"}]))
    rows = [{"text": "Common one."}, {"text": "Only for terse.", "query_id": "be-terse"},
            {"text": "Named.", "id": "named"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = cfg_with(tmp_path, '[queries]\nfile = "q.json"\n\n[prompts.open]\nfile = "p.jsonl"\n')
    qs = experiment_queries(cfg)
    assert [q.id for q in qs] == ["be-terse", "kind"]
    prompts = experiment_prompts(cfg, qs)
    assert [p.id for p in prompts["be-terse"]] == ["be-terse/topic-00", "custom-00", "named"]
    assert [p.id for p in prompts["kind"]] == ["custom-00", "named"]


def test_bad_prompt_file_rows_are_reported_with_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    cfg = cfg_with(tmp_path, '[queries]\nitems = [{ text = "be terse" }]\n\n'
                             '[prompts.open]\nfile = "p.jsonl"\n')
    with pytest.raises(ConfigError,
                       match=r"p\.jsonl: row 2: .*expected \{text, id\?, query_id\?\}"):
        experiment_prompts(cfg, experiment_queries(cfg))
    (tmp_path / "p.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(ConfigError, match=r"p\.jsonl:2: invalid JSON"):
        experiment_prompts(cfg, experiment_queries(cfg))


def test_dataset_errors_name_the_field(tmp_path: Path) -> None:
    cfg = cfg_with(tmp_path, '[queries]\nfile = "missing.json"\n\n[prompts.mmlu]\nn = 2\n')
    with pytest.raises(ConfigError, match="queries.file: .*neither a shipped set"):
        experiment_queries(cfg)
    cfg = cfg_with(tmp_path, '[queries]\nset = "paper"\n\n[prompts.open]\nn_topic = 99\n')
    with pytest.raises(ConfigError, match="prompts.open: .*fewer than n_topic=99"):
        experiment_prompts(cfg, experiment_queries(cfg))
