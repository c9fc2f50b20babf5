"""Turn results made elsewhere into the two tidy tables (``schema.GENERATION_COLUMNS`` and
``schema.SCORE_COLUMNS``), so the statistics and the report serve them too.

Two entry points: :func:`import_seed_study` for the seed study's CSVs (queries, prompts and
answer keys come from the shipped design data or the study's own design folder) and
:func:`import_table` for any CSV/Parquet with a column mapping. Rows that cannot be placed
are returned in ``unmatched``, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerstats.datasets import normalize_text, parse_answer, slugify
from steerstats.datasets.seed_design import SeedDesign, folder_seed_design, shipped_seed_design
from steerstats.errors import DataError
from steerstats.schema import AUTO_RATER, GENERATION_COLUMNS, SCORE_COLUMNS

__all__ = [
    "METHOD_NAMES",
    "NOTE_COLUMNS",
    "SEED_STUDY_ALIASES",
    "UNMATCHED_COLUMNS",
    "ImportResult",
    "import_seed_study",
    "import_table",
    "normalize_method",
    "read_table",
    "row_key",
]

UNMATCHED_COLUMNS: tuple[str, ...] = ("file", "row", "query", "method", "prompt", "reason", "kept")
NOTE_COLUMNS: tuple[str, ...] = ("file", "kind", "query", "rows", "detail")

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


@dataclass
class ImportResult:
    """The tidy tables of an import, the rows that could not be placed, and what was read.

    ``unmatched`` has one row per source row that could not be placed: ``file``, ``row`` (0-based
    data row, header excluded), ``query``, ``method``, ``prompt`` (normalised, first 120
    characters), ``reason``, and ``kept`` (whether it was still imported with derived ids).
    ``notes`` (:data:`NOTE_COLUMNS`) has one row per file and query text that was not imported
    as itself: ``kind`` "alias", "alias-not-applied", "extra-query" or "unknown-query", the
    number of ``rows`` and a ``detail``; and a "spelling" row per file counting MMLU prompts
    matched only after reading "behavior" as "behaviour". ``source`` is JSON-able (files with
    SHA-256 and row counts, options, design-file digests, the notes) for the manifest.
    """

    generations: pd.DataFrame
    scores: pd.DataFrame
    unmatched: pd.DataFrame
    source: dict[str, Any] = field(default_factory=dict)
    notes: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(NOTE_COLUMNS)).astype({"rows": "int64"})
    )

    @property
    def n_unmatched(self) -> int:
        return len(self.unmatched)

    def write(self, out_dir: str | Path, fmt: str = "parquet") -> Path:
        """Write a results directory: the tidy tables, ``manifest.json`` (what was read, with
        which options, what could not be placed) and ``unmatched.csv`` / ``import_notes.csv``."""
        from steerstats.results import package_versions, write_results

        unparsed = self.scores["value"].isna() & self.scores["reason"].fillna("").str.startswith(
            "unparsed"
        )
        manifest = {
            "python": platform.python_version(),
            "packages": package_versions(),
            "import": self.source,
            "unmatched_rows": self.n_unmatched,
            "failures": {"scores_unparsed": int(unparsed.sum())},
        }
        out = write_results(out_dir, self.generations, self.scores, manifest, fmt=fmt)  # type: ignore[arg-type]
        self.unmatched.to_csv(out / "unmatched.csv", index=False)
        self.notes.to_csv(out / "import_notes.csv", index=False)
        return out


def row_key(content: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a row's identifying content (stable across runs)."""
    blob = json.dumps(
        content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def normalize_method(label: str) -> str | None:
    """The steerstats name for a seed-study method label, or None if it is not one of them."""
    return METHOD_NAMES.get(normalize_text(label).lower())


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file by its suffix; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(p)
    if suffix in (".csv", ".tsv", ".txt"):
        try:
            return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{p}: cannot be read as {suffix[1:].upper()}: {exc}") from None
    raise ValueError(f"{p}: unsupported file type {suffix!r}; use .csv, .tsv or .parquet")


def _file_info(path: Path, rows: int) -> dict[str, Any]:
    return {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "rows": rows,
    }


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    return _coerce(frame)


_FLOAT_COLUMNS = ("strength", "n_tokens", "latency_s", "cost_usd", "value")
_INT_COLUMNS = ("sample", "repeat")


def _coerce(frame: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes: floats (NaN for missing), int64 sample/repeat, text elsewhere (NaN missing)."""
    for col in frame.columns:
        if col in _FLOAT_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
        elif col in _INT_COLUMNS:
            frame[col] = frame[col].astype("int64")
        elif col != "kept":
            frame[col] = frame[col].astype(object).where(frame[col].notna(), np.nan)
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- seed study

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
) -> tuple[
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
    dict[str, Any],
]:
    data = read_table(path)
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
    unmatched: list[dict[str, Any]] = []
    occurrences: dict[tuple[str, ...], int] = {}
    spelling_folds = 0
    for row_number, row in enumerate(data.itertuples(index=False)):
        rec = row._asdict()
        query_text = normalize_text(rec["query"])
        prompt_text = str(rec["user_prompt"])
        problems: list[str] = []
        method = normalize_method(str(rec["steering_method"]))
        if method is None:
            problems.append(
                f"unknown method {rec['steering_method']!r} (known: {', '.join(METHOD_NAMES)})"
            )
            method = slugify(str(rec["steering_method"]))
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
        key = row_key({**identity, "sample": sample})
        base = {
            "model": model,
            "method": method,
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
            value, reason = _value(rec[metric], JUDGE_SCALE, "judge score", integer=True)
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
    info = _file_info(path, len(data))
    info.update(study=study, unmatched=len(unmatched), imported=len(gens))
    return gens, scores, unmatched, notes, info


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
    notes: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    for path, study in ((open_csv, "open"), (mmlu_csv, "mmlu")):
        if path is None:
            continue
        g, s, u, n, info = _import_seed_file(
            Path(path),
            study,
            design,
            model,
            rater,
            keep_unmatched,
            aliases,
            extras,
            verify_aliases,
        )
        gens += g
        scores += s
        unmatched += u
        notes += n
        files.append(info)
    notes_frame = pd.DataFrame(notes, columns=list(NOTE_COLUMNS))
    notes_frame["rows"] = notes_frame["rows"].astype("int64")
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
        },
        "method_names": dict(METHOD_NAMES),
        "design": design.source,
        "notes": [{k: note[k] for k in NOTE_COLUMNS} for note in notes],
        "unmatched": len(unmatched),
    }
    return ImportResult(
        generations=_frame(gens, GENERATION_COLUMNS),
        scores=_frame(scores, SCORE_COLUMNS),
        unmatched=_frame(unmatched, UNMATCHED_COLUMNS),
        notes=notes_frame,
        source=source,
    )


# --------------------------------------------------------------------------- any table

MAPPABLE = tuple(dict.fromkeys((*GENERATION_COLUMNS, *SCORE_COLUMNS, "prompt")))
REQUIRED = ("model", "method", "response")
IDENTITY = ("model", "method", "strength", "query_id", "prompt_set", "prompt_id")


def import_table(
    source: str | Path | pd.DataFrame,
    mapping: Mapping[str, str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    score_columns: Sequence[str] | Mapping[str, str] | None = None,
    rater: str = "imported",
    scale: Mapping[str, tuple[float, float]] | None = None,
) -> ImportResult:
    """Import any table of generations (and scores) given a column mapping.

    Parameters
    ----------
    source
        A CSV/TSV/Parquet path or a DataFrame.
    mapping
        Tidy column name -> the table's column, e.g. ``{"response": "output", "method":
        "system"}``. Columns already named as in the tidy tables need no entry. ``prompt`` maps
        prompt text when there is no prompt id.
    defaults
        Values for absent columns, e.g. ``{"model": "my-model", "prompt_set": "open"}``.
    score_columns
        Wide score columns to melt to long form (metric = column name), or a mapping metric ->
        column. Without it, a table with ``metric`` and ``value`` columns is read as long form
        (one row per score); otherwise no scores are imported.
    rater
        Rater label where the table has no ``rater`` column.
    scale
        Valid range per metric; a value outside it (or not numeric) becomes NaN with an
        "unparsed: ..." reason. A missing value is NaN with reason "missing in source".

    Required: model, method, response, a query (``query_id`` or ``query`` text) and a prompt
    (``prompt_id`` or ``prompt`` text); missing ones raise DataError naming the file and column.
    Derived when absent: ``query_id`` = slug of the query text, ``query`` = ``query_id``,
    ``prompt_id`` = ``p-`` + digest of the prompt text, ``prompt_set`` = "open", ``strength``
    NaN, ``sample`` = order of appearance within a (model, method, strength, query, prompt)
    cell, ``repeat`` 0, ``key`` = SHA-256 of the identifying columns and sample. Rows missing a
    required value are reported in ``unmatched``.
    """
    label = "<DataFrame>" if isinstance(source, pd.DataFrame) else str(source)
    raw = source.copy() if isinstance(source, pd.DataFrame) else read_table(source)
    frame = _apply_mapping(raw, mapping or {}, label)
    for col, value in (defaults or {}).items():
        if col not in MAPPABLE:
            raise ValueError(f"defaults: unknown column {col!r}; accepted: {', '.join(MAPPABLE)}")
        if col not in frame:
            frame[col] = value
    _require(frame, label, raw.columns)

    metric_cols = _score_column_map(score_columns, frame, label)
    long_form = metric_cols is None and {"metric", "value"} <= set(frame.columns)

    if "query_id" not in frame:
        frame["query_id"] = frame["query"].map(lambda t: slugify(str(t)) if pd.notna(t) else np.nan)
    if "query" not in frame:
        frame["query"] = frame["query_id"]
    if "prompt_id" not in frame:
        frame["prompt_id"] = frame["prompt"].map(
            lambda t: (
                "p-" + hashlib.sha256(normalize_text(t).encode()).hexdigest()[:10]
                if pd.notna(t)
                else np.nan
            )
        )
    frame["prompt_set"] = frame["prompt_set"] if "prompt_set" in frame else "open"
    frame["strength"] = (
        pd.to_numeric(frame["strength"], errors="coerce") if "strength" in frame else np.nan
    )

    frame["_row"] = np.arange(len(frame))
    bad = frame[list(REQUIRED[:2]) + ["query_id", "prompt_id"]].isna().any(axis=1)
    unmatched = [
        {
            "file": label,
            "row": int(r["_row"]),
            "query": r.get("query"),
            "method": r.get("method"),
            "prompt": normalize_text(r.get("prompt", r.get("prompt_id", "")))[:120],
            "reason": "missing value in "
            + ", ".join(c for c in ("model", "method", "query_id", "prompt_id") if pd.isna(r[c])),
            "kept": False,
        }
        for _, r in frame[bad].iterrows()
    ]
    frame = frame[~bad].copy()

    if "sample" not in frame:
        cell = [*IDENTITY, "response"] if long_form else list(IDENTITY)
        if long_form:
            firsts = frame.drop_duplicates(cell).copy()
            firsts["sample"] = firsts.groupby(list(IDENTITY), dropna=False, sort=False).cumcount()
            frame = frame.merge(firsts[[*cell, "sample"]], on=cell, how="left")
        else:
            frame["sample"] = frame.groupby(cell, dropna=False, sort=False).cumcount()
    frame["sample"] = _int_column(frame["sample"], "sample", label)
    if "key" not in frame:
        frame["key"] = [
            row_key({c: (None if pd.isna(r[c]) else r[c]) for c in (*IDENTITY, "sample")})
            for _, r in frame.iterrows()
        ]
    gens = frame.drop_duplicates("key").copy()
    if not long_form and len(gens) < len(frame):
        dupes = frame.loc[frame["key"].duplicated(keep=False), "_row"].tolist()[:10]
        raise DataError(
            f"{label}: several rows describe the same generation (rows {dupes}); give each a "
            "distinct 'sample' or 'key', or use long form (metric and value columns)"
        )
    for col in GENERATION_COLUMNS:
        if col not in gens:
            gens[col] = np.nan
    generations = _coerce(gens[list(GENERATION_COLUMNS)].copy())

    scores = _scores(frame, metric_cols, long_form, rater, scale or {}, label)
    info: dict[str, Any] = {"path": label, "rows": len(raw)}
    if not isinstance(source, pd.DataFrame):
        info = _file_info(Path(source), len(raw))
    return ImportResult(
        generations=generations,
        scores=scores,
        unmatched=_frame(unmatched, UNMATCHED_COLUMNS),
        source={
            "importer": "table",
            "files": [info],
            "options": {
                "mapping": dict(mapping or {}),
                "defaults": {k: str(v) for k, v in (defaults or {}).items()},
                "score_columns": None if metric_cols is None else dict(metric_cols),
                "long_form": long_form,
                "rater": rater,
                "scale": {k: list(v) for k, v in (scale or {}).items()},
            },
            "unmatched": len(unmatched),
        },
    )


def _apply_mapping(raw: pd.DataFrame, mapping: Mapping[str, str], label: str) -> pd.DataFrame:
    unknown = [k for k in mapping if k not in MAPPABLE]
    if unknown:
        raise ValueError(
            f"mapping: unknown tidy column(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(MAPPABLE)}"
        )
    absent = [f"{k}={v!r}" for k, v in mapping.items() if v not in raw.columns]
    if absent:
        raise DataError(
            f"{label}: mapped column(s) not found: {', '.join(absent)} "
            f"(columns present: {', '.join(map(str, raw.columns))})"
        )
    frame = pd.DataFrame(index=raw.index)
    taken = set(mapping.values())
    for tidy, col in mapping.items():
        frame[tidy] = raw[col]
    for col in raw.columns:
        if col in MAPPABLE and col not in frame and col not in taken:
            frame[col] = raw[col]
    for col in raw.columns:  # other columns stay available for score_columns
        if col not in frame and col not in taken:
            frame[col] = raw[col]
    return frame


def _require(frame: pd.DataFrame, label: str, present: Sequence[Any]) -> None:
    needs = [(c, c) for c in REQUIRED] + [
        ("query_id' or 'query", ("query_id", "query")),
        ("prompt_id' or 'prompt", ("prompt_id", "prompt")),
    ]
    for name, cols in needs:
        options = (cols,) if isinstance(cols, str) else cols
        if not any(c in frame for c in options):
            raise DataError(
                f"{label}: required column '{name}' not found; map it with "
                f"mapping={{'{options[0]}': '<your column>'}} "
                f"or give defaults={{'{options[0]}': ...}} "
                f"(columns present: {', '.join(map(str, present))})"
            )


def _score_column_map(
    score_columns: Sequence[str] | Mapping[str, str] | None, frame: pd.DataFrame, label: str
) -> dict[str, str] | None:
    if score_columns is None:
        return None
    if isinstance(score_columns, str):
        score_columns = [score_columns]
    pairs = (
        dict(score_columns) if isinstance(score_columns, Mapping) else {c: c for c in score_columns}
    )
    absent = [c for c in pairs.values() if c not in frame]
    if absent:
        raise DataError(
            f"{label}: score column(s) {', '.join(map(repr, absent))} not found "
            f"(columns present: {', '.join(map(str, frame.columns))})"
        )
    return pairs


def _int_column(series: pd.Series, name: str, label: str) -> pd.Series:
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.isna().any() or not (numbers == numbers.round()).all():
        raise DataError(
            f"{label}: column {name!r} must hold whole numbers (0, 1, ...) in every row"
        )
    return numbers.astype("int64")


def _value(
    raw: Any, scale: tuple[float, float] | None, what: str = "value", integer: bool = False
) -> tuple[float, str | None]:
    """A source cell as a score: a number within ``scale`` (and whole, if ``integer``), or NaN
    with the reason ("missing in source", or "unparsed: ..." for anything else)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return math.nan, "missing in source"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return math.nan, f"unparsed: {what} {raw!r} is not a number"
    if math.isnan(value):
        return math.nan, "missing in source"
    if scale is not None:
        low, high = scale
        if (integer and not value.is_integer()) or not low <= value <= high:
            return math.nan, f"unparsed: {what} {value:g} is outside {low:g}-{high:g}"
    return value, None


def _scores(
    frame: pd.DataFrame,
    metric_cols: dict[str, str] | None,
    long_form: bool,
    rater: str,
    scale: Mapping[str, tuple[float, float]],
    label: str,
) -> pd.DataFrame:
    base_cols = [*IDENTITY, "sample", "key"]
    if metric_cols is not None:
        parts = []
        for metric, col in metric_cols.items():
            part = frame[base_cols].copy()
            part["metric"] = metric
            part["_raw"] = frame[col].to_numpy()
            part["rater"] = frame["rater"] if "rater" in frame else rater
            part["repeat"] = frame["repeat"] if "repeat" in frame else 0
            part["_reason"] = np.nan
            parts.append(part)
        long = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=base_cols)
    elif long_form:
        long = frame[base_cols].copy()
        long["metric"] = frame["metric"].to_numpy()
        long["_raw"] = frame["value"].to_numpy()
        long["rater"] = frame["rater"].to_numpy() if "rater" in frame else rater
        long["repeat"] = frame["repeat"].to_numpy() if "repeat" in frame else 0
        long["_reason"] = frame["reason"].to_numpy() if "reason" in frame else np.nan
    else:
        return _frame([], SCORE_COLUMNS)
    parsed = [
        _value(v, scale.get(str(m))) for v, m in zip(long["_raw"], long["metric"], strict=True)
    ]
    long["value"] = [v for v, _ in parsed]
    long["reason"] = [
        given if isinstance(given, str) and given else why
        for given, (_, why) in zip(long["_reason"], parsed, strict=True)
    ]
    long["repeat"] = _int_column(long["repeat"], "repeat", label)
    return _coerce(long[list(SCORE_COLUMNS)].copy())
