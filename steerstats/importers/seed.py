"""Import the seed study's result CSVs ("Mind the Performance Gap", arXiv 2602.04903).

Queries, prompts and answer keys come from the shipped design data or the study's own design
folder; rows are matched by normalised text, every row that cannot be placed is reported, and
rows whose own system prompt contradicts their method label are flagged (and by default
re-labelled, see :mod:`steerstats.importers.contamination`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerstats.datasets import normalize_text, parse_answer, slugify
from steerstats.datasets.seed_design import SeedDesign, folder_seed_design, shipped_seed_design
from steerstats.errors import DataError
from steerstats.importers._common import (
    FLAGGED_COLUMNS,
    NOTE_COLUMNS,
    UNMATCHED_COLUMNS,
    ImportResult,
    file_info,
    frame_of,
    row_key,
    tidy_frame,
)
from steerstats.importers.contamination import carries_instruction, contaminated, relabel
from steerstats.importers.read import read_source
from steerstats.schema import AUTO_RATER, GENERATION_COLUMNS, SCORE_COLUMNS

__all__ = [
    "METHOD_NAMES",
    "SEED_STUDY_ALIASES",
    "import_seed_study",
    "normalize_method",
]

METHOD_NAMES: dict[str, str] = {
    "control": "control",
    "simple prompting": "prompt",
    "autosteer": "autosteer",
    "auto steer": "autosteer",
    "combined approach": "autosteer+prompt",
    "agentic": "agentic",
}
"""The seed study's method labels (lower case, whitespace collapsed) -> steerstats method names."""

SEED_STUDY_COLUMNS = (
    "query",
    "steering_method",
    "user_prompt",
    "response",
    "behavior",
    "coherence",
)
JUDGE_SCALE = (1, 5)


def normalize_method(label: str) -> str | None:
    """The steerstats name for a seed-study method label, or None if it is not one of them."""
    return METHOD_NAMES.get(normalize_text(label).lower())


SEED_STUDY_ALIASES: dict[str, str] = {
    "be more creative and imaginative": "be creative and imaginative",
    "be educational and explain like a teacher": "be educational and accessible",
}
"""Query texts of the seed study's published open-prompt run -> the design's names for them.

The two queries were renamed in ``steering_queries.json`` after that run. An alias is applied
to a file only when its rows confirm it (see :func:`import_seed_study`), and every use is
reported in ``ImportResult.notes``.
"""


def _extra_prompt_id(query_id: str, text: str, study: str) -> str:
    digest = hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()[:8]
    return f"mmlu-x{digest}" if study == "mmlu" else f"{query_id}/extra-{digest}"


def _alias_problem(design: SeedDesign, study: str, prompts: set[str], target_id: str) -> str | None:
    """Why a file's rows do not confirm that their query is ``target_id`` renamed (None: they do).

    Evidence: the query's distinct prompts that are not common prompts are all topic prompts of
    the target, and not all topic prompts of any other query.
    """
    if study == "mmlu":
        return "the MMLU study asks every query the same questions, so its rows cannot confirm it"
    topic = {normalize_text(p) for p in prompts} - set(design.common)
    if not topic:
        return "its rows hold no topic prompts to compare"
    outside = topic - set(design.topics.get(target_id, {}))
    if outside:
        return f"{len(outside)} of its {len(topic)} topic prompts are not among the target's"
    also = sorted(q for q, t in design.topics.items() if q != target_id and topic <= set(t))
    if also:
        return f"its topic prompts also fit {', '.join(also)}"
    return None


def _resolve_queries(
    data: pd.DataFrame,
    path: Path,
    study: str,
    design: SeedDesign,
    aliases: Mapping[str, str],
    extra_queries: set[str],
    verify_aliases: bool,
    keep_unmatched: bool,
) -> tuple[dict[str, tuple[str, str] | str], list[dict[str, Any]]]:
    """Each distinct query text -> (id, text) to import it as, or the reason it is unmatched."""
    resolved: dict[str, tuple[str, str] | str] = {}
    notes: list[dict[str, Any]] = []
    texts = data["query"].map(normalize_text)
    for text, rows in texts.groupby(texts, sort=False).groups.items():
        n = len(rows)
        found = design.query(study, text)
        note = {"file": str(path), "query": text, "rows": n}
        if found is not None:
            resolved[text] = found
        elif text in aliases:
            target = aliases[text]
            hit = design.query(study, target)
            if hit is None:
                why: str | None = f"'{target}' is not a query of {design.query_source[study]}"
            elif verify_aliases:
                why = _alias_problem(design, study, set(data.loc[rows, "user_prompt"]), hit[0])
            else:
                why = None
            if why is None and hit is not None:
                resolved[text] = hit
                evidence = (
                    "not verified (verify_aliases=False)"
                    if not verify_aliases
                    else "every distinct non-common prompt of these rows is a topic prompt of "
                    f"'{target}' and of no other query"
                )
                notes.append({**note, "kind": "alias", "detail": f"as '{target}': {evidence}"})
            else:
                why = why or "no such query"
                resolved[text] = (
                    f"query text not among {design.query_source[study]}; "
                    f"alias to '{target}' not applied: {why}"
                )
                notes.append({**note, "kind": "alias-not-applied", "detail": why})
        elif text in extra_queries:
            resolved[text] = (slugify(text), text)
            notes.append(
                {
                    **note,
                    "kind": "extra-query",
                    "detail": f"not among {design.query_source[study]}; imported as "
                    f"'{slugify(text)}' (extra_queries)",
                }
            )
        else:
            resolved[text] = f"query text not among {design.query_source[study]}"
            fate = (
                f"imported as '{slugify(text)}' (keep_unmatched)"
                if keep_unmatched
                else "not imported (pass extra_queries or keep_unmatched to import it)"
            )
            notes.append(
                {
                    **note,
                    "kind": "unknown-query",
                    "detail": f"not among {design.query_source[study]}; {fate}",
                }
            )
    return resolved, notes


def _import_seed_file(
    path: Path,
    study: str,
    design: SeedDesign,
    model: str,
    rater: str,
    keep_unmatched: bool,
    aliases: Mapping[str, str],
    extra_queries: set[str],
    verify_aliases: bool,
    as_labelled: bool,
    keep_duplicates: bool,
) -> tuple[
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
    dict[str, Any],
]:
    src = read_source(path)
    data = src.frame
    missing = [c for c in SEED_STUDY_COLUMNS if c not in data.columns]
    if missing:
        raise DataError(
            f"{path}: column(s) {', '.join(map(repr, missing))} not found; a seed-study CSV has "
            f"{', '.join(SEED_STUDY_COLUMNS)} "
            f"(columns present: {', '.join(map(str, data.columns))})"
        )
    resolved, notes = _resolve_queries(
        data, path, study, design, aliases, extra_queries, verify_aliases, keep_unmatched
    )
    gens: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = [
        {"file": str(path), "row": r.row, "line": r.line, "query": None, "method": None,
         "prompt": None, "reason": r.reason, "kept": False}
        for r in src.rejected
    ]
    flagged: list[dict[str, Any]] = []
    labels = [normalize_method(str(m)) or slugify(str(m)) for m in data["steering_method"]]
    carries, dirty = _contamination(data, labels, resolved)
    occurrences: dict[tuple[str, ...], int] = {}
    spelling_folds = 0
    copies = data.groupby(list(data.columns), dropna=False, sort=False).ngroup().to_numpy()
    first_of: dict[int, int] = {}
    for index, row in enumerate(data.itertuples(index=False)):
        row_number = int(src.rows[index])
        rec = row._asdict()
        original = first_of.setdefault(int(copies[index]), row_number)
        if original != row_number:
            flagged.append(
                {
                    "file": str(path),
                    "row": row_number,
                    "kind": "duplicate",
                    "column": None,
                    "query": rec["query"],
                    "method": rec["steering_method"],
                    "prompt": normalize_text(str(rec["user_prompt"]))[:120],
                    "reason": "kept as a separate response (keep_duplicates)"
                    if keep_duplicates
                    else "dropped",
                    "kept": keep_duplicates,
                    "_of": original,
                }
            )
            if not keep_duplicates:
                continue
        query_text = normalize_text(rec["query"])
        prompt_text = str(rec["user_prompt"])
        problems: list[str] = []
        method = normalize_method(str(rec["steering_method"]))
        if method is None:
            problems.append(
                f"unknown method {rec['steering_method']!r} (known: {', '.join(METHOD_NAMES)})"
            )
            method = slugify(str(rec["steering_method"]))
        if dirty[index]:
            flagged.append(
                {
                    "file": str(path),
                    "row": row_number,
                    "kind": "contaminated",
                    "column": "system_prompt",
                    "query": rec["query"],
                    "method": rec["steering_method"],
                    "prompt": normalize_text(prompt_text)[:120],
                    "reason": f"contaminated: the system prompt holds the query's steering "
                    f"instruction ({query_text!r}) although {method} sends none; "
                    + (f"kept as {method} (as_labelled)" if as_labelled
                       else f"imported as {relabel(method)}"),
                    "kept": True,
                }
            )
        query = resolved[query_text]
        if isinstance(query, str):
            problems.append(query)
            query_id, query_label = slugify(query_text), query_text
        else:
            query_id, query_label = query
        answer: str | None = None
        if study == "open":
            prompt_id = design.open_prompt_id(query_id, prompt_text)
            if prompt_id is None:
                problems.append(
                    "prompt text not among this query's topic prompts or the common prompts"
                )
        else:
            question, folded = design.mmlu_question(prompt_text)
            if folded:
                spelling_folds += 1
            prompt_id = None if question is None else question.id
            answer = None if question is None else question.answer
            if question is None:
                problems.append(f"question not among {design.mmlu_label}")
        if problems:
            unmatched.append(
                {
                    "file": str(path),
                    "row": row_number,
                    "query": rec["query"],
                    "method": rec["steering_method"],
                    "prompt": normalize_text(prompt_text)[:120],
                    "reason": "; ".join(problems),
                    "kept": keep_unmatched,
                }
            )
            if not keep_unmatched:
                if dirty[index]:
                    flagged[-1]["kept"] = False
                continue
        if prompt_id is None:
            prompt_id = _extra_prompt_id(query_id, prompt_text, study)
        identity = {
            "source": "seed-study",
            "study": study,
            "model": model,
            "method": method,
            "query": query_text,
            "system_prompt": normalize_text(rec.get("system_prompt", "")),
            "prompt": normalize_text(prompt_text),
        }
        cell = (study, method, query_text, identity["prompt"])
        sample = occurrences.get(cell, 0)
        occurrences[cell] = sample + 1
        key = row_key({**identity, "sample": sample})  # of the study's label: stable
        base = {
            "model": model,
            "method": relabel(method) if dirty[index] and not as_labelled else method,
            "strength": math.nan,
            "query_id": query_id,
            "prompt_set": study,
            "prompt_id": prompt_id,
            "sample": sample,
        }
        gens.append(
            {
                **base,
                "query": query_label,
                "response": rec["response"],
                "n_tokens": math.nan,
                "finish_reason": None,
                "latency_s": math.nan,
                "cost_usd": math.nan,
                "error": None,
                "key": key,
            }
        )
        for metric in ("behavior", "coherence"):
            value, reason = _judge_value(rec[metric])
            scores.append(
                {
                    **base,
                    "metric": metric,
                    "rater": rater,
                    "repeat": 0,
                    "value": value,
                    "key": key,
                    "reason": reason,
                }
            )
        if study == "mmlu":
            if answer is None:
                value, reason = math.nan, f"no answer key: question not among {design.mmlu_label}"
            else:
                letter, why = parse_answer(rec["response"])
                value = math.nan if letter is None else float(letter == answer)
                reason = None if letter is not None else f"unparsed: {why}"
            scores.append(
                {
                    **base,
                    "metric": "accuracy",
                    "rater": AUTO_RATER,
                    "repeat": 0,
                    "value": value,
                    "key": key,
                    "reason": reason,
                }
            )
    if spelling_folds:
        notes.append(
            {
                "file": str(path),
                "kind": "spelling",
                "query": None,
                "rows": spelling_folds,
                "detail": "MMLU question matched only with 'behavior' read as 'behaviour'",
            }
        )
    notes += _contamination_notes(path, data, labels, carries, dirty, as_labelled)
    lines = src.lines([u["row"] for u in unmatched] + [f["row"] for f in flagged])
    for entry, line in zip([*unmatched, *flagged], lines, strict=True):
        entry.setdefault("line", line)
    for entry in flagged:
        if "_of" in entry:  # a duplicate: name the row it repeats by its line
            of = entry.pop("_of")
            [of_line] = src.lines([of])
            where = f"row {of}" if of_line is None else f"line {of_line}"
            entry["reason"] = f"duplicate: the same cells as {where}; {entry['reason']}"
    info = file_info(path, src.n_rows)
    info.update(
        study=study,
        unmatched=len(unmatched),
        imported=len(gens),
        rejected=len(src.rejected),
        duplicates=sum(f["kind"] == "duplicate" for f in flagged),
        labels=_label_counts(labels, carries, dirty, as_labelled),
        contamination_checked="system_prompt" in data.columns,
    )
    return gens, scores, unmatched, flagged, notes, info


def _judge_value(raw: Any) -> tuple[float, str | None]:
    """A judge's cell as a 1-5 score, or NaN with the reason (the study wrote 0 for an
    answer it could not parse)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return math.nan, "missing in source"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return math.nan, f"unparsed: judge score {raw!r} is not a number"
    if math.isnan(value):
        return math.nan, "missing in source"
    low, high = JUDGE_SCALE
    if not value.is_integer() or not low <= value <= high:
        return math.nan, f"unparsed: judge score {value:g} is outside {low:g}-{high:g}"
    return value, None


def _contamination(
    data: pd.DataFrame, labels: list[str], resolved: Mapping[str, tuple[str, str] | str]
) -> tuple[Any, Any]:
    """Rows whose system prompt holds their query's instruction, and those of them whose
    method sends none (contaminated)."""
    if "system_prompt" not in data.columns:
        none = np.zeros(len(data), dtype=bool)
        return none, none
    texts = []
    for q in data["query"]:
        text = normalize_text(q)
        hit = resolved.get(text)
        texts.append((text, hit[1]) if isinstance(hit, tuple) else (text,))
    carries = carries_instruction(texts, data["system_prompt"])
    return carries, contaminated(labels, texts, data["system_prompt"])


def _label_counts(
    labels: list[str], carries: Any, dirty: Any, as_labelled: bool
) -> dict[str, Any]:
    """Per study label (as a steerstats name): rows, rows whose system prompt holds the
    query's instruction, contaminated rows (of those, a method that sends none), and what the
    contaminated rows became."""
    out: dict[str, Any] = {}
    for label, has, bad in zip(labels, carries, dirty, strict=True):
        entry = out.setdefault(
            label, {"rows": 0, "with_instruction": 0, "contaminated": 0, "imported_as": label}
        )
        entry["rows"] += 1
        entry["with_instruction"] += int(has)
        if bad:
            entry["contaminated"] += 1
            if not as_labelled:
                entry["imported_as"] = relabel(label)
    return out


def _contamination_notes(
    path: Path, data: pd.DataFrame, labels: list[str], carries: Any, dirty: Any,
    as_labelled: bool,
) -> list[dict[str, Any]]:
    notes = []
    counts = _label_counts(labels, carries, dirty, as_labelled)
    raw = dict(zip(labels, data["steering_method"], strict=True))
    for label, entry in counts.items():
        if not entry["contaminated"]:
            continue
        fate = (
            f"kept as {label} (as_labelled)"
            if as_labelled
            else f"imported as {relabel(label)} (as_labelled=True keeps the study's label)"
        )
        notes.append(
            {
                "file": str(path),
                "kind": "contaminated",
                "query": None,
                "rows": entry["contaminated"],
                "detail": f"{entry['contaminated']} of {entry['rows']} rows labelled "
                f"{raw[label]!r} carry their query's steering instruction in the system prompt, "
                f"although {label} sends none; {fate}",
            }
        )
    return notes


def import_seed_study(
    open_csv: str | Path | None = None,
    mmlu_csv: str | Path | None = None,
    *,
    model: str = "Llama-3.1-8B",
    rater: str = "gpt-4o-mini",
    queries: str | Path = "paper",
    design_dir: str | Path | None = None,
    query_aliases: Mapping[str, str] | None = None,
    verify_aliases: bool = True,
    extra_queries: Sequence[str] = (),
    keep_unmatched: bool = False,
    as_labelled: bool = False,
    keep_duplicates: bool = False,
) -> ImportResult:
    """Import the seed study's open-prompt and/or MMLU result CSVs into the tidy tables.

    Method labels are normalised (:data:`METHOD_NAMES`); judge scores outside 1-5 (the study's
    0s) become NaN with an "unparsed: ..." reason; MMLU correctness (metric ``accuracy``, rater
    "auto") is derived from the response's ``<answer>`` tag against the answer key, a reply
    without a readable tag being NaN with its reason. Rows are matched to queries and prompts
    by whitespace-normalised text (MMLU questions also with "behavior" read as "behaviour", the
    one spelling the study's results changed); every row that cannot be matched is listed in
    ``unmatched`` with the reason, and ``notes`` summarises per query text every alias, extra
    query and unknown query.

    Parameters
    ----------
    design_dir
        The seed study's ``design/`` folder. Without it queries, prompts and the 171 answer keys
        come from the shipped data; with it from the folder's ``steering_queries.json`` (open
        study), ``steering_queries_mmlu.json`` (MMLU study), ``common_prompts.json`` and
        ``mmlu.json`` (285 questions with keys). Questions also shipped keep their ``mmlu-NNN``
        id; the others are ``mmlu-dev-NNN``, NNN their 0-based row in ``mmlu.json``.
    queries
        Another query file instead of the shipped 14 (only without ``design_dir``).
    query_aliases
        Query text in the CSV -> the design's query text. Default :data:`SEED_STUDY_ALIASES`;
        ``{}`` turns aliasing off. An alias is applied to a file only if its rows confirm it:
        the aliased query's distinct prompts that are not common prompts must all be topic
        prompts of the target query and not all be topic prompts of any other query. MMLU rows
        cannot confirm an alias (every query gets the same questions), so there it is not
        applied unless ``verify_aliases=False``. Every alias applied or refused is in ``notes``.
    extra_queries
        Query texts to import although the design lacks them (id: slug of the text), such as
        "be seductive and flattering" in the MMLU study; listed in ``notes``.
    keep_unmatched
        Also import unmatched rows, with ids derived from their text (query slug;
        ``<query_id>/extra-<digest>`` or ``mmlu-x<digest>`` prompts, whose accuracy is NaN for
        want of a key). They stay in ``unmatched`` with ``kept`` True.
    as_labelled
        Keep the study's method label on contaminated rows. By default a row labelled control,
        Auto Steer or agentic whose own system prompt holds its query's steering instruction
        (the MMLU "Auto Steer" rows: the study's prompt method edited the shared messages in
        place) is imported as ``prompt``, ``autosteer+prompt`` or ``agentic+prompt``. Either
        way each such row is in ``flagged`` (kind "contaminated"), counted per label in
        ``notes`` and in ``source["files"][i]["labels"]``. Keys do not depend on this option.
    keep_duplicates
        An exact duplicate row (every cell equal to an earlier row's) is listed in ``flagged``
        (kind "duplicate") and dropped; with True it is kept as the next sample.
    """
    if open_csv is None and mmlu_csv is None:
        raise ValueError("give open_csv, mmlu_csv or both (paths to the seed study's result CSVs)")
    if design_dir is not None and str(queries) != "paper":
        raise ValueError(
            "give queries or design_dir, not both: design_dir takes the queries from its "
            "steering_queries.json and steering_queries_mmlu.json"
        )
    if isinstance(extra_queries, str):
        extra_queries = [extra_queries]
    design = shipped_seed_design(queries) if design_dir is None else folder_seed_design(design_dir)
    alias_table = dict(SEED_STUDY_ALIASES if query_aliases is None else query_aliases)
    aliases = {normalize_text(k): normalize_text(v) for k, v in alias_table.items()}
    extras = {normalize_text(q) for q in extra_queries}
    gens: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    for path, study in ((open_csv, "open"), (mmlu_csv, "mmlu")):
        if path is None:
            continue
        g, s, u, f, n, info = _import_seed_file(
            Path(path),
            study,
            design,
            model,
            rater,
            keep_unmatched,
            aliases,
            extras,
            verify_aliases,
            as_labelled,
            keep_duplicates,
        )
        gens += g
        scores += s
        unmatched += u
        flagged += f
        notes += n
        files.append(info)
    source = {
        "importer": "seed-study",
        "files": files,
        "options": {
            "model": model,
            "rater": rater,
            "queries": str(queries),
            "design_dir": None if design_dir is None else str(design_dir),
            "query_aliases": alias_table,
            "verify_aliases": verify_aliases,
            "extra_queries": sorted(extras),
            "keep_unmatched": keep_unmatched,
            "as_labelled": as_labelled,
            "keep_duplicates": keep_duplicates,
        },
        "method_names": dict(METHOD_NAMES),
        "design": design.source,
        "notes": [{k: note[k] for k in NOTE_COLUMNS} for note in notes],
        "unmatched": len(unmatched),
        "contaminated": sum(f["kind"] == "contaminated" for f in flagged),
    }
    return ImportResult(
        generations=tidy_frame(gens, GENERATION_COLUMNS),
        scores=tidy_frame(scores, SCORE_COLUMNS),
        unmatched=frame_of(unmatched, UNMATCHED_COLUMNS),
        flagged=frame_of(flagged, FLAGGED_COLUMNS),
        notes=frame_of(notes, NOTE_COLUMNS),
        source=source,
    )
