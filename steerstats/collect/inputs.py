"""The experiment's queries and prompts: shipped datasets or the experiment file's own.

Shipped sets come from :mod:`steerstats.datasets` (``load_queries``, ``open_prompts``,
``mmlu_prompts``); inline ``items`` and JSON/JSONL prompt files are read here. Limits (the
file's ``limit``/``ids`` and the CLI's pilot limits) are applied here, so planning, status and
export all see the same grid.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from steerstats.config import Experiment, PromptItem, unicode_problem
from steerstats.errors import ConfigError
from steerstats.items import Prompt, Query

__all__ = ["experiment_prompts", "experiment_queries"]


def _datasets() -> Any:
    try:
        return importlib.import_module("steerstats.datasets")
    except ImportError as exc:
        raise ConfigError(
            f"shipped datasets are unavailable ({exc}); give queries/prompts as items or files"
        ) from None


def experiment_queries(cfg: Experiment, limit: int | None = None) -> list[Query]:
    """The steering queries, filtered by ``[queries] ids`` and cut to ``limit`` (the smaller
    of the file's and the argument's)."""
    spec = cfg.queries
    if spec.items is not None:
        queries = [
            Query(id=q.query_id, text=q.text, criteria=q.criteria, sentiment=q.sentiment)
            for q in spec.items
        ]
    else:
        source = str(cfg.resolve_path(spec.file)) if spec.file is not None else spec.set or "paper"
        field = "queries.file" if spec.file is not None else "queries.set"
        try:
            queries = list(_datasets().load_queries(source))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{cfg.path}: {field}: {source}: "
                              f"{unicode_problem(exc.object, exc)}") from None
        except IsADirectoryError:
            raise ConfigError(f"{cfg.path}: {field}: {source} is a directory; give a file"
                              ) from None
        except (ValueError, OSError) as exc:  # DataError too
            raise ConfigError(f"{cfg.path}: {field}: {exc}") from None
        if not queries:
            raise ConfigError(f"{cfg.path}: {field}: {source} holds no queries")
    if spec.ids is not None:
        by_id = {q.id: q for q in queries}
        unknown = [i for i in spec.ids if i not in by_id]
        if unknown:
            raise ConfigError(
                f"{cfg.path}: queries.ids: unknown query id(s) {', '.join(map(repr, unknown))}; "
                f"valid ids: {', '.join(by_id)}"
            )
        queries = [by_id[i] for i in spec.ids]
    cut = [n for n in (spec.limit, limit) if n is not None]
    if cut:
        queries = queries[: min(cut)]
    return queries


def experiment_prompts(
    cfg: Experiment, queries: Sequence[Query], limit: int | None = None
) -> dict[str, list[Prompt]]:
    """Prompts for each query id: open prompts (topic + common) then MMLU questions; with
    ``limit``, the first ``limit`` of each prompt set per query (a pilot)."""
    out: dict[str, list[Prompt]] = {q.id: [] for q in queries}
    op = cfg.prompts.open
    if op is not None:
        if op.items is not None or op.file is not None:
            items = (list(op.items) if op.items is not None
                     else _read_prompt_file(cfg, str(op.file)))
            per_query = _custom_open_prompts(items, queries, cfg)
        else:
            try:
                per_query = _datasets().open_prompts(
                    list(queries), n_topic=op.n_topic, n_common=op.n_common,
                    seed=cfg.seed_for(op.seed), crossed=op.crossed)
            except ValueError as exc:
                raise ConfigError(f"{cfg.path}: prompts.open: {exc}") from None
        for q in queries:
            got = list(per_query.get(q.id, []))
            out[q.id].extend(got[:limit] if limit is not None else got)
    mm = cfg.prompts.mmlu
    if mm is not None:
        as_path = cfg.resolve_path(mm.source)  # a JSONL file next to the experiment, or a name
        source = str(as_path) if as_path.is_file() else mm.source
        try:
            questions = list(_datasets().mmlu_prompts(n=mm.n, seed=cfg.seed_for(mm.seed),
                                                      source=source, template=mm.template))
        except (ValueError, OSError) as exc:  # DataError too
            raise ConfigError(f"{cfg.path}: prompts.mmlu: {exc}") from None
        if limit is not None:
            questions = questions[:limit]
        for q in queries:
            out[q.id].extend(questions)
    return out


def _custom_open_prompts(
    items: Sequence[PromptItem], queries: Sequence[Query], cfg: Experiment
) -> dict[str, list[Prompt]]:
    common: list[Prompt] = []
    topic: dict[str, list[Prompt]] = {}
    for i, it in enumerate(items):
        if it.query_id is None:
            common.append(Prompt(id=it.id or f"custom-{i:02d}", text=it.text, prompt_set="open"))
        else:
            n = len(topic.setdefault(it.query_id, []))
            pid = f"{it.query_id}/{it.id or f'topic-{n:02d}'}"
            topic[it.query_id].append(Prompt(id=pid, text=it.text, prompt_set="open"))
    seen: set[str] = set()
    for p in common + [p for ps in topic.values() for p in ps]:
        if p.id in seen:
            raise ConfigError(f"{cfg.path}: prompts.open: duplicate prompt id {p.id!r}")
        seen.add(p.id)
    return {q.id: topic.get(q.id, []) + common for q in queries}


def _read_prompt_file(cfg: Experiment, file: str) -> list[PromptItem]:
    path = cfg.resolve_path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{cfg.path}: prompts.open.file: {path} is a directory; give a "
                          ".json or .jsonl file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{cfg.path}: prompts.open.file: {path}: "
                          f"{unicode_problem(exc.object, exc)}") from None
    except OSError as exc:
        raise ConfigError(f"{cfg.path}: prompts.open.file: cannot read {path}: "
                          f"{exc.strerror or exc}") from None
    rows: list[tuple[int, Any]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{n}: invalid JSON: {exc.msg}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(data, list):
            raise ConfigError(f"{path}: expected a JSON list of {{text, id?, query_id?}} objects")
        rows = [(i + 1, r) for i, r in enumerate(data)]
    items = []
    for n, row in rows:
        try:
            items.append(PromptItem.model_validate(row))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = ".".join(map(str, first["loc"])) or "(row)"
            raise ConfigError(
                f"{path}: row {n}: {loc}: {first['msg']} (expected {{text, id?, query_id?}})"
            ) from None
    return items

