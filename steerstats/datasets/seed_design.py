"""The seed study's design as text -> id lookups: the shipped copy, or the study's own folder.

The importer matches result rows to queries, prompts and MMLU answer keys by text. By default
the lookups come from the shipped data (14 queries, 84 common prompts, 171 MMLU questions);
given the study's ``design/`` folder they come from its ``steering_queries.json``,
``steering_queries_mmlu.json``, ``common_prompts.json`` and ``mmlu.json`` (285 questions).
Ids stay those of the shipped data wherever the text is the same (see README.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerstats.datasets._files import data_digest
from steerstats.datasets._mmlu import LETTERS, MMLUQuestion, paper_mmlu
from steerstats.datasets._queries import (
    common_prompt_id,
    common_prompt_texts,
    load_queries,
    normalize_text,
    paper_topic_prompts,
    slugify,
    topic_prompt_id,
)
from steerstats.errors import DataError

DESIGN_FILES = (
    "steering_queries.json",
    "steering_queries_mmlu.json",
    "common_prompts.json",
    "mmlu.json",
)
MMLU_JSON_KEYS = ("question", "subject", "choices", "answer")
_BEHAVIOUR = re.compile(r"\b(behavi)our(?=s?\b)", re.IGNORECASE)


def mmlu_head(question: str, choices: Sequence[str]) -> str:
    """Question and lettered choices as the study's prompts begin, whitespace-normalised."""
    lines = [question, *(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))]
    return normalize_text("\n".join(lines))


def design_mmlu_id(index: int) -> str:
    """Id of a question of the study's ``mmlu.json`` that is not among the shipped 171."""
    return f"mmlu-dev-{index:03d}"


@dataclass
class SeedDesign:
    """Queries (text -> (id, text)) per study, common and topic prompts, MMLU questions."""

    queries: dict[str, dict[str, tuple[str, str]]]  # study -> normalised text -> (id, text)
    common: dict[str, str]  # normalised text -> common-NN
    topics: dict[str, dict[str, str]]  # query id -> normalised text -> <query_id>/topic-NN
    mmlu: list[tuple[str, MMLUQuestion]]  # (normalised head, question)
    mmlu_label: str  # names the question list in reasons ("the study's 171 shipped ...")
    query_source: dict[str, str]  # study -> names the query list in reasons
    source: dict[str, Any] = field(default_factory=dict)
    _mmlu_cache: dict[str, tuple[MMLUQuestion | None, bool]] = field(
        default_factory=dict, repr=False
    )

    def query(self, study: str, text: str) -> tuple[str, str] | None:
        return self.queries[study].get(normalize_text(text))

    def open_prompt_id(self, query_id: str, text: str) -> str | None:
        norm = normalize_text(text)
        return self.common.get(norm) or self.topics.get(query_id, {}).get(norm)

    def mmlu_question(self, text: str) -> tuple[MMLUQuestion | None, bool]:
        """The question whose text and lettered choices begin the prompt (the longest wins).

        The second item is True when it matched only after :func:`fold_spelling`.
        """
        norm = normalize_text(text)
        if norm not in self._mmlu_cache:
            found = _longest_head(norm, self.mmlu)
            folded = found is None
            if folded:
                found = _longest_head(
                    fold_spelling(norm), [(fold_spelling(h), q) for h, q in self.mmlu]
                )
            self._mmlu_cache[norm] = (found, folded and found is not None)
        return self._mmlu_cache[norm]


def _longest_head(norm: str, heads: Sequence[tuple[str, MMLUQuestion]]) -> MMLUQuestion | None:
    hits = [(len(h), q) for h, q in heads if norm == h or norm.startswith(h + " ")]
    return max(hits, key=lambda t: t[0])[1] if hits else None


def fold_spelling(text: str) -> str:
    """British "behaviour(s)" as American "behavior(s)", the one spelling difference found
    between the seed study's MMLU results and its ``mmlu.json`` (3 questions)."""
    return _BEHAVIOUR.sub(lambda m: m.group(1) + "or", text)


def shipped_seed_design(queries: str | Path = "paper") -> SeedDesign:
    """Lookups from the shipped data; ``queries`` may name another query file."""
    by_text = {normalize_text(q.text): (q.id, q.text) for q in load_queries(queries)}
    common = {normalize_text(t): common_prompt_id(i) for i, t in enumerate(common_prompt_texts())}
    topics = {
        qid: {normalize_text(t): topic_prompt_id(qid, i) for i, t in enumerate(texts)}
        for qid, texts in paper_topic_prompts().items()
    }
    return SeedDesign(
        queries={"open": by_text, "mmlu": by_text},
        common=common,
        topics=topics,
        mmlu=[(mmlu_head(q.question, q.choices), q) for q in paper_mmlu()],
        mmlu_label="the study's 171 shipped MMLU questions",
        query_source={"open": "the shipped queries", "mmlu": "the shipped queries"},
        source={
            "design": "shipped",
            "queries": str(queries),
            "files": {
                name: data_digest(name)
                for name in ("queries.json", "common_prompts.json", "mmlu_paper.jsonl")
            },
        },
    )


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(
            f"design_dir: {path} not found; the seed study's design folder holds "
            f"{', '.join(DESIGN_FILES)}"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _design_queries(path: Path) -> list[dict[str, Any]]:
    records = _read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of queries, got {type(records).__name__}")
    for n, rec in enumerate(records):
        if not (
            isinstance(rec, dict)
            and isinstance(rec.get("description"), str)
            and isinstance(rec.get("topic_specific_prompts", []), list)
        ):
            raise DataError(
                f"{path}: entry {n} needs a text 'description' and a list 'topic_specific_prompts'"
            )
    return records


def _design_mmlu(path: Path) -> list[MMLUQuestion]:
    """The study's ``mmlu.json`` (columns as lists; answer = index of the right choice)."""
    table = _read_json(path)
    if not isinstance(table, dict) or any(
        not isinstance(table.get(k), list) for k in MMLU_JSON_KEYS
    ):
        raise DataError(f"{path}: expected an object with lists {', '.join(MMLU_JSON_KEYS)}")
    lengths = {k: len(table[k]) for k in MMLU_JSON_KEYS}
    if len(set(lengths.values())) != 1:
        raise DataError(f"{path}: the lists differ in length ({lengths})")
    shipped = {mmlu_head(q.question, q.choices): q for q in paper_mmlu()}
    questions: list[MMLUQuestion] = []
    for i, (question, subject, choices, answer) in enumerate(
        zip(*(table[k] for k in MMLU_JSON_KEYS), strict=True)
    ):
        if not (
            isinstance(choices, list)
            and len(choices) == len(LETTERS)
            and isinstance(answer, int)
            and 0 <= answer < len(LETTERS)
        ):
            raise DataError(
                f"{path}: row {i} needs 4 choices and an answer index 0-3 "
                f"(got {len(choices) if isinstance(choices, list) else choices!r} choices, "
                f"answer {answer!r})"
            )
        texts = tuple(normalize_text(c) for c in choices)
        head = mmlu_head(normalize_text(question), texts)
        known = shipped.get(head)
        qid = known.id if known is not None else design_mmlu_id(i)
        letter = LETTERS[answer]
        if known is not None and known.answer != letter:
            raise DataError(
                f"{path}: row {i} is shipped question {known.id} but its answer is {letter}, "
                f"not {known.answer}; is this the seed study's design folder?"
            )
        questions.append(
            MMLUQuestion(qid, normalize_text(question), texts, letter, str(subject).strip())
        )
    return questions


def folder_seed_design(design_dir: str | Path) -> SeedDesign:
    """Lookups from the seed study's own ``design/`` folder (see the module docstring)."""
    folder = Path(design_dir)
    if not folder.is_dir():
        raise ValueError(f"design_dir: {folder} is not a folder (give the seed study's design/)")
    open_q = _design_queries(folder / "steering_queries.json")
    mmlu_q = _design_queries(folder / "steering_queries_mmlu.json")
    common_texts = _read_json(folder / "common_prompts.json")
    questions = _design_mmlu(folder / "mmlu.json")

    def by_text(records: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
        out = {}
        for rec in records:
            text = normalize_text(rec["description"])
            out[text] = (slugify(text), text)
        return out

    topics = {
        slugify(normalize_text(rec["description"])): {
            normalize_text(t): topic_prompt_id(slugify(normalize_text(rec["description"])), i)
            for i, t in enumerate(rec.get("topic_specific_prompts", []))
        }
        for rec in open_q
    }
    return SeedDesign(
        queries={"open": by_text(open_q), "mmlu": by_text(mmlu_q)},
        common={normalize_text(t): common_prompt_id(i) for i, t in enumerate(common_texts)},
        topics=topics,
        mmlu=[(mmlu_head(q.question, q.choices), q) for q in questions],
        mmlu_label=f"the {len(questions)} questions of {folder / 'mmlu.json'}",
        query_source={
            "open": f"the queries of {folder / 'steering_queries.json'}",
            "mmlu": f"the queries of {folder / 'steering_queries_mmlu.json'}",
        },
        source={
            "design": str(folder),
            "files": {
                name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                for name in DESIGN_FILES
            },
        },
    )
