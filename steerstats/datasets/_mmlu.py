"""MMLU questions: JSONL loader, stratified sampler, prompt format and answer reading."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import string
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd

from steerstats.errors import DataError
from steerstats.items import Prompt

LETTERS = "ABCD"
CHOICE_KEYS = ("answer_a", "answer_b", "answer_c", "answer_d")
REQUIRED_KEYS = ("question", *CHOICE_KEYS, "correct_answer", "topic")
PAPER_FILE = "mmlu_paper.jsonl"
MAX_LISTED = 20  # bad lines quoted in an error message; all are counted

INSTRUCTION = (
    "Work out the answer to the multiple-choice question above. You may reason first. "
    "End with your final choice as a single letter ({letters}) inside <answer></answer> tags."
)


@dataclass(frozen=True)
class MMLUQuestion:
    """One four-choice question; ``line`` is its 1-based line in the source file, if any."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str
    subject: str
    line: int | None = None

    def to_prompt(self, template: str | None = None) -> Prompt:
        return Prompt(
            id=self.id,
            text=format_mmlu(self.question, self.choices, template),
            prompt_set="mmlu",
            answer=self.answer,
            subject=self.subject,
        )


def _content_id(question: str, choices: Sequence[str]) -> str:
    blob = json.dumps([question, list(choices)], ensure_ascii=False)
    return "mmlu-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:10]


def _check_row(obj: object) -> str | None:
    """Why a parsed line is not a valid question, or None when it is."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    not_text = [k for k in REQUIRED_KEYS if not isinstance(obj[k], str) or not obj[k].strip()]
    if not_text:
        return f"empty or non-text value(s) for {', '.join(not_text)}"
    answer = obj["correct_answer"].strip()
    if answer not in LETTERS:
        hint = " (a stray CSV header row)" if obj["question"].strip() == "question" else ""
        return f"correct_answer is {obj['correct_answer']!r}, expected one of A, B, C, D{hint}"
    return None


def _parse_lines(text: str, source: str, on_error: Literal["raise", "skip"]) -> list[MMLUQuestion]:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    questions: list[MMLUQuestion] = []
    bad: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((lineno, f"not valid JSON ({exc.msg})"))
            continue
        problem = _check_row(obj)
        if problem is not None:
            bad.append((lineno, problem))
            continue
        question = obj["question"].strip()
        choices = tuple(obj[k].strip() for k in CHOICE_KEYS)
        questions.append(
            MMLUQuestion(
                id=_content_id(question, choices),
                question=question,
                choices=choices,
                answer=obj["correct_answer"].strip(),
                subject=obj["topic"].strip(),
                line=lineno,
            )
        )
    if bad:
        numbers = ", ".join(str(n) for n, _ in bad)
        details = "; ".join(f"line {n}: {why}" for n, why in bad[:MAX_LISTED])
        more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        summary = f"{source}: {len(bad)} malformed row(s) at line(s) {numbers}: {details}{more}"
        if on_error == "raise":
            raise DataError(summary + ". Fix the file, or pass on_error='skip' to drop these rows.")
        warnings.warn(f"skipped {summary}", UserWarning, stacklevel=3)
    if not questions:
        raise DataError(f"{source}: no valid questions")
    return questions


def load_mmlu_jsonl(
    path: str | Path, *, on_error: Literal["raise", "skip"] = "raise"
) -> list[MMLUQuestion]:
    """Read MMLU questions from JSONL (keys question, answer_a..answer_d, correct_answer, topic).

    Malformed rows (bad JSON, missing keys, a ``correct_answer`` that is not A-D such as a stray
    CSV header row) raise :class:`~steerstats.errors.DataError` naming the file and every bad line;
    ``on_error="skip"`` drops them with a warning that lists them instead. Blank lines are
    ignored. Ids are ``mmlu-`` plus a digest of the question and choices, so they do not depend
    on the file's order.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"MMLU file {p} not found") from None
    return _parse_lines(text, str(p), on_error)


def paper_mmlu() -> list[MMLUQuestion]:
    """The study's 171 MMLU questions (3 per subject), ids ``mmlu-000`` .. ``mmlu-170``."""
    text = resources.files("steerstats.datasets").joinpath(PAPER_FILE).read_text(encoding="utf-8")
    questions = _parse_lines(text, PAPER_FILE, "raise")
    return [
        MMLUQuestion(f"mmlu-{i:03d}", q.question, q.choices, q.answer, q.subject, q.line)
        for i, q in enumerate(questions)
    ]


def paper_mmlu_frame() -> pd.DataFrame:
    rows = [
        {
            "prompt_id": q.id,
            "subject": q.subject,
            "question": q.question,
            **{letter: c for letter, c in zip(LETTERS, q.choices, strict=True)},
            "answer": q.answer,
        }
        for q in paper_mmlu()
    ]
    return pd.DataFrame(rows)


def _resolve_source(source: str | Path | Sequence[MMLUQuestion]) -> list[MMLUQuestion]:
    if isinstance(source, str | Path):
        if str(source) == "paper":
            return paper_mmlu()
        return load_mmlu_jsonl(source)
    return list(source)


def stratified_sample(
    questions: Sequence[MMLUQuestion], n: int | None, seed: int
) -> list[MMLUQuestion]:
    """``n`` questions with subjects in proportion to their share (largest remainder), seeded.

    Ties for the last places are broken at random with the same seed; the result keeps the
    input order. Questions identical in text and choices are counted once.
    """
    unique: dict[str, MMLUQuestion] = {}
    for q in questions:
        unique.setdefault(q.id, q)
    pool = list(unique.values())
    if n is None:
        return pool
    if not 1 <= n <= len(pool):
        raise ValueError(f"n must be between 1 and {len(pool)} (questions available), got {n}")
    rng = random.Random(seed)
    by_subject: dict[str, list[int]] = {}
    for i, q in enumerate(pool):
        by_subject.setdefault(q.subject, []).append(i)
    subjects = list(by_subject)
    exact = {s: n * len(by_subject[s]) / len(pool) for s in subjects}
    quota = {s: math.floor(exact[s]) for s in subjects}
    order = subjects[:]
    rng.shuffle(order)
    order.sort(
        key=lambda s: exact[s] - quota[s], reverse=True
    )  # stable: shuffled order breaks ties
    for s in order[: n - sum(quota.values())]:
        quota[s] += 1
    chosen: list[int] = []
    for s in subjects:
        chosen.extend(rng.sample(by_subject[s], quota[s]))
    return [pool[i] for i in sorted(chosen)]


def mmlu_prompts(
    n: int | None = None, seed: int = 0, source: str | Path | Sequence[MMLUQuestion] = "paper",
    template: str | None = None,
) -> list[Prompt]:
    """MMLU prompts stratified by subject: all questions (``n=None``) or a seeded sample of ``n``.

    ``source`` is "paper" (the study's 171), a JSONL path (see :func:`load_mmlu_jsonl`) or a list
    of :class:`MMLUQuestion`. Each prompt carries its answer letter and subject. ``template``
    words the questions (see :func:`format_mmlu`); ids do not depend on it.
    """
    return [q.to_prompt(template) for q in stratified_sample(_resolve_source(source), n, seed)]


def format_mmlu(question: str, choices: Sequence[str], template: str | None = None) -> str:
    """The question, its choices lettered A-D and the instruction to answer in ``<answer>`` tags;
    or ``template`` filled in (see :data:`TEMPLATE_FIELDS`), e.g. a study's own wording."""
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"an MMLU question needs 2 to {len(LETTERS)} choices, got {len(choices)}")
    letters = LETTERS[: len(choices)]
    listed = [f"{letter}. {choice}" for letter, choice in zip(letters, choices, strict=True)]
    if template is not None:
        return template.format(question=question.strip(), choices="\n".join(listed),
                               letters=", ".join(letters))
    lines = [question.strip(), "", *listed, "", INSTRUCTION.format(letters=", ".join(letters))]
    return "\n".join(lines)


# The placeholders of an MMLU question template ([prompts.mmlu] template): the question text,
# its choices one per line ("A. ...\nB. ..."), and the letters in use ("A, B, C, D").
TEMPLATE_FIELDS = ("question", "choices", "letters")
_REQUIRED_FIELDS = ("question", "choices")


def mmlu_template_problem(template: str) -> str | None:
    """Why ``template`` is not a usable MMLU question template (None when it is)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"{exc}; write {{{{ and }}}} for literal braces"
    used = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            return (f"unknown placeholder {{{name}}}; the placeholders are "
                    f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)} (write {{{{ and }}}} "
                    "for literal braces)")
        if spec or conversion:
            return f"placeholder {{{name}}} takes no format spec or conversion"
        used.add(name)
    missing = [f for f in _REQUIRED_FIELDS if f not in used]
    if missing:
        return (f"the template must contain {' and '.join('{' + f + '}' for f in missing)}, "
                "or the model would not see the question")
    return None


_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_OPEN_TAG = re.compile(r"<answer>", re.IGNORECASE)
_DECOR = " \t\r\n*_`'\"“”‘’"
_BARE = re.compile(r"\(?\[?([A-Da-d])\]?\)?[.:]?")
_LED = re.compile(r"\(?([A-D])[.):]\s+\S.*", re.DOTALL)
_PHRASE = re.compile(
    r"(?:the\s+)?(?:final\s+)?(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-D])\)?\.?",
    re.IGNORECASE,
)


def parse_answer(text: str) -> tuple[str | None, str | None]:
    """The letter in a reply's last ``<answer>`` tag, or None and the reason it is unreadable.

    Accepts "B", " b ", "(B)", "B.", "B)", "**B**", "B. the choice text", "Answer: B". A reply cut
    off after an opening tag is read from the tag to the end.
    """
    if not isinstance(text, str):
        return None, "no response text"
    tags = _TAG.findall(text)
    if tags:
        content = tags[-1]
    else:
        opens = list(_OPEN_TAG.finditer(text))
        if not opens:
            return None, "no <answer> tag"
        content = text[opens[-1].end() :]
    inner = content.strip(_DECOR)
    if not inner:
        return None, "empty <answer> tag"
    for pattern in (_BARE, _LED, _PHRASE):
        match = pattern.fullmatch(inner)
        if match:
            return match.group(1).upper(), None
    shown = inner if len(inner) <= 40 else inner[:37] + "..."
    return None, f"<answer> tag holds {shown!r}, not a single letter A-D"


def extract_answer(text: str) -> str | None:
    """The letter A-D in the reply's last ``<answer>`` tag, or None when unreadable or ambiguous.

    >>> extract_answer("<thinking>...</thinking><answer> (b) </answer>")
    'B'
    >>> extract_answer("<answer>A or C</answer>") is None
    True
    """
    return parse_answer(text)[0]
