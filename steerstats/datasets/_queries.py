"""Steering queries, their criteria and the open-ended prompt design (topic + common prompts)."""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from steerstats.datasets._files import data_json
from steerstats.errors import DataError
from steerstats.items import SENTIMENTS, Prompt, Query

SHIPPED_QUERY_SETS = ("paper",)
N_HARD = 5  # the last five topic prompts of each shipped list are at odds with the behaviour


def slugify(text: str) -> str:
    """Query id from query text: lower case, runs of other characters become '-' ("be-funny")."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug:
        raise ValueError(f"cannot make an id from {text!r}: it has no letters or digits")
    return slug


def normalize_text(text: str) -> str:
    """Collapse runs of whitespace and trim, so texts compare equal across files and tools."""
    return " ".join(str(text).split())


def _paper_queries() -> list[dict[str, Any]]:
    queries: list[dict[str, Any]] = data_json("queries.json")
    return queries


def _criteria() -> dict[str, dict[str, str]]:
    criteria: dict[str, dict[str, str]] = data_json("criteria.json")
    return criteria


def criteria_text(query_id: str) -> str | None:
    """The shipped rubric criteria for a query as prose ("1: ... / 3: ... / 5: ..."), if any."""
    levels = _criteria().get(query_id)
    if levels is None:
        return None
    return "\n".join(f"{level}: {levels[level]}" for level in sorted(levels, key=int))


def load_queries(name_or_path: str | Path = "paper") -> list[Query]:
    """Steering queries: a shipped set by name ("paper": the study's 14) or a file.

    A file may be ``.txt`` (one query a line; blank lines and ``#`` comments skipped), ``.json``
    (a list of strings or of objects with ``text`` and optional ``id``, ``criteria``,
    ``sentiment``) or ``.csv`` (column ``text``, optional ``id``, ``criteria``, ``sentiment``:
    "positive" or "negative", the direction the ``sentiment`` judge scores). Ids default to
    the slug of the text; a query whose id has shipped criteria gets them unless the file gives
    its own.
    """
    if str(name_or_path) in SHIPPED_QUERY_SETS:
        return [
            Query(id=q["id"], text=q["text"], criteria=criteria_text(q["id"]))
            for q in _paper_queries()
        ]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"queries {str(name_or_path)!r} is neither a shipped set "
            f"({', '.join(SHIPPED_QUERY_SETS)}) "
            "nor an existing .txt/.json/.csv file"
        )
    records = _read_query_records(path)
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for n, rec in enumerate(records, start=1):
        text = normalize_text(rec.get("text") or "")
        if not text:
            raise DataError(f"{path}: query {n} has no text")
        qid = str(rec.get("id") or slugify(text))
        if qid in seen:
            raise DataError(
                f"{path}: queries {seen[qid]} and {n} both have id {qid!r}; give them distinct ids"
            )
        seen[qid] = n
        criteria = rec.get("criteria") or criteria_text(qid)
        sentiment = rec.get("sentiment") or None
        if sentiment not in SENTIMENTS:
            raise DataError(
                f"{path}: query {n} ({qid}): sentiment must be 'positive' or 'negative' (or "
                f"empty), got {sentiment!r}"
            )
        queries.append(Query(id=qid, text=text, criteria=criteria, sentiment=sentiment))
    if not queries:
        raise DataError(f"{path}: no queries found")
    return queries


def _read_query_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".txt":
        lines = (line.strip() for line in text.splitlines())
        return [{"text": line} for line in lines if line and not line.startswith("#")]
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of queries, got {type(data).__name__}")
        records: list[dict[str, Any]] = []
        for n, item in enumerate(data, start=1):
            if isinstance(item, str):
                records.append({"text": item})
            elif isinstance(item, dict) and "text" in item:
                records.append(item)
            else:
                raise DataError(
                    f"{path}: query {n} must be a string or an object with a 'text' key, "
                    f"got {item!r}"
                )
        return records
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "text" not in rows[0]:
            raise DataError(f"{path}: no 'text' column (columns: {', '.join(rows[0])})")
        return [dict(row) for row in rows]
    raise ValueError(f"{path}: unsupported query file type {suffix!r}; use .txt, .json or .csv")


def paper_topic_prompts() -> dict[str, list[str]]:
    """The study's 10 topic-specific prompts per query id."""
    return {q["id"]: list(q["topic_prompts"]) for q in _paper_queries()}


def paper_open_seeds() -> dict[str, int]:
    """The seed the study used per query to draw that query's common prompts."""
    return {q["id"]: int(q["open_seed"]) for q in _paper_queries()}


def common_prompt_texts() -> list[str]:
    """The 84 common prompts; ``common-NN`` is the index in this list."""
    prompts: list[str] = data_json("common_prompts.json")
    return list(prompts)


def common_prompt_id(index: int) -> str:
    return f"common-{index:02d}"


def topic_prompt_id(query_id: str, index: int) -> str:
    return f"{query_id}/topic-{index:02d}"


def open_prompts(
    queries: Sequence[Query],
    n_topic: int | None = None,
    n_common: int = 20,
    seed: int = 1,
    *,
    crossed: bool = True,
    topic_prompts: Mapping[str, Sequence[str]] | None = None,
    common_prompts: Sequence[str] | None = None,
) -> dict[str, list[Prompt]]:
    """The open-ended prompt design: per query, its topic prompts then sampled common prompts.

    ``n_topic`` topic prompts per query (the first ones; None: all; queries without shipped
    topic prompts get none) and ``n_common`` common prompts drawn with ``random.Random(seed)``.
    With ``crossed=True`` (default) every query gets the same common prompts, so prompt is
    crossed with query; ``seed=1`` reproduces the draw the study made for "be funny".
    ``crossed=False`` reproduces the study exactly: each query draws with its own seed (the
    study's per-query seed for its queries, ``seed + position`` for others), so common prompts
    are nested in queries. A topic prompt whose text is also a common prompt takes the common
    id and appears once.
    """
    topics = (
        paper_topic_prompts()
        if topic_prompts is None
        else {k: list(v) for k, v in topic_prompts.items()}
    )
    common = common_prompt_texts() if common_prompts is None else list(common_prompts)
    if not 0 <= n_common <= len(common):
        raise ValueError(
            f"n_common must be between 0 and {len(common)} (common prompts available), "
            f"got {n_common}"
        )
    if n_topic is not None and n_topic < 0:
        raise ValueError(f"n_topic must be >= 0 or None (all), got {n_topic}")
    common_index = {normalize_text(t): i for i, t in enumerate(common)}
    paper_seeds = paper_open_seeds()

    def draw(query_seed: int) -> list[int]:
        return random.Random(query_seed).sample(range(len(common)), n_common)

    shared = draw(seed)
    design: dict[str, list[Prompt]] = {}
    for position, query in enumerate(queries):
        own = topics.get(query.id, [])
        if n_topic is not None and n_topic > len(own):
            raise ValueError(
                f"query {query.id!r} has {len(own)} topic prompts, fewer than n_topic={n_topic}; "
                "lower n_topic or pass topic_prompts="
            )
        chosen = own if n_topic is None else own[:n_topic]
        prompts: list[Prompt] = []
        seen: set[str] = set()
        for i, text in enumerate(chosen):
            ci = common_index.get(normalize_text(text))
            pid = topic_prompt_id(query.id, i) if ci is None else common_prompt_id(ci)
            if pid not in seen:
                seen.add(pid)
                prompts.append(Prompt(id=pid, text=text, prompt_set="open"))
        picks = shared if crossed else draw(paper_seeds.get(query.id, seed + position))
        for ci in picks:
            pid = common_prompt_id(ci)
            if pid not in seen:
                seen.add(pid)
                prompts.append(Prompt(id=pid, text=common[ci], prompt_set="open"))
        design[query.id] = prompts
    return design


def queries_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"query_id": q["id"], "query": q["text"], "open_seed": q["open_seed"]}
            for q in _paper_queries()
        ]
    )


def topic_prompts_frame() -> pd.DataFrame:
    rows = []
    for qid, texts in paper_topic_prompts().items():
        for i, text in enumerate(texts):
            rows.append(
                {
                    "query_id": qid,
                    "prompt_id": topic_prompt_id(qid, i),
                    "text": text,
                    "hard": i >= len(texts) - N_HARD,
                }
            )
    return pd.DataFrame(rows)


def common_prompts_frame() -> pd.DataFrame:
    texts = common_prompt_texts()
    return pd.DataFrame(
        {"prompt_id": [common_prompt_id(i) for i in range(len(texts))], "text": texts}
    )


def criteria_frame() -> pd.DataFrame:
    rows = [
        {"query_id": qid, "level": int(level), "description": text}
        for qid, levels in _criteria().items()
        for level, text in levels.items()
    ]
    return pd.DataFrame(rows)
