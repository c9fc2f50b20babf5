"""The task grid: every (model, method, strength, query) resolved to an intervention, then every
generation task and the judge tasks that depend on it, each with its cache key (DESIGN.md)."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from steerstats.backends.base import GenerationRequest
from steerstats.collect.inputs import experiment_prompts, experiment_queries
from steerstats.collect.metering import (
    NeedsResolution,
    track_usage,
)
from steerstats.collect.session import Session, run_sync
from steerstats.config import Experiment
from steerstats.errors import BudgetExceeded, ConfigError, SteerstatsError
from steerstats.items import Prompt, Query
from steerstats.keys import KEY_VERSION, Fragment, cache_key, canonical_json, fragment
from steerstats.methods.base import Intervention, Method

__all__ = ["GenerationTask", "JudgeTask", "Plan", "build_plan", "build_request",
           "generation_key", "judgement_key", "plan", "with_plan"]

T = TypeVar("T")



@dataclass(frozen=True)
class _Unit:
    model: str
    method: str
    strength: float | None
    query: Query


@dataclass
class GenerationTask:
    """One response to collect. ``key`` is None while its method is unresolved (``note``)."""

    model: str
    method: str
    strength: float | None
    query: Query
    prompt: Prompt
    sample: int
    key: str | None = None
    request: GenerationRequest | None = None
    intervention: Intervention | None = None
    note: str | None = None

    @property
    def reported_strength(self) -> float:
        """The strength for the tidy tables: the intervention's, else the sweep's, else NaN."""
        if self.intervention is not None and self.intervention.strength is not None:
            return float(self.intervention.strength)
        return math.nan if self.strength is None else float(self.strength)

    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model, "method": self.method, "strength": self.strength,
            "query_id": self.query.id, "prompt_set": self.prompt.prompt_set,
            "prompt_id": self.prompt.id, "sample": self.sample,
        }


@dataclass
class JudgeTask:
    """One judging occasion (``repeat``) of one generation by judge ``judge`` (its label)."""

    generation: GenerationTask
    judge: str
    repeat: int
    key: str | None = None


@dataclass
class Plan:
    """Every task of an experiment (after limits), in order: generations, then judgements."""

    config: Experiment
    session: Session
    queries: list[Query]
    prompts: dict[str, list[Prompt]]
    generations: list[GenerationTask]
    judgements: list[JudgeTask]
    unresolved: dict[tuple[str, str, float | None, str], str] = field(default_factory=dict)
    units: dict[_Unit, _UnitTasks] = field(default_factory=dict)

    def generation_keys(self) -> list[str]:
        return list(dict.fromkeys(g.key for g in self.generations if g.key is not None))

    def judgement_keys(self) -> list[str]:
        return list(dict.fromkeys(j.key for j in self.judgements if j.key is not None))


def build_request(cfg: Experiment, iv: Intervention, prompt: Prompt,
                  sample: int) -> GenerationRequest:
    """The chat request of one generation: the intervention's system prompt (else the prompt
    set's ``system``, if any), the prompt, and the experiment's sampling (seed offset by the
    replicate index)."""
    system = iv.system_prompt or cfg.prompts.system_for(prompt.prompt_set)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt.text})
    s = cfg.sampling
    seed = None if s.seed is None else s.seed + sample
    return GenerationRequest(messages=messages, temperature=s.temperature,
                             max_tokens=s.max_tokens, seed=seed, steering=iv.steering)


def generation_key(backend_identity: dict[str, Any], iv: Intervention,
                   request: GenerationRequest, sample: int) -> str:
    """Key of one generation: backend identity, resolved intervention, request, replicate."""
    return _generation_key(backend_identity, iv.canonical(), request, sample)


def _generation_key(backend: Any, intervention: Any, request: GenerationRequest,
                    sample: int) -> str:
    # backend and intervention may be pre-encoded fragments (shared by many tasks)
    return cache_key({
        "v": KEY_VERSION, "kind": "generation", "backend": backend,
        "intervention": intervention, "request": request.canonical(), "sample": sample,
    })


def _query_part(query: Query) -> dict[str, Any]:
    part = {"id": query.id, "text": query.text, "criteria": query.criteria}
    if query.sentiment is not None:  # only when declared: keys of other queries are unchanged
        part["sentiment"] = query.sentiment
    return part


def _prompt_part(prompt: Prompt) -> dict[str, Any]:
    return {"id": prompt.id, "text": prompt.text, "set": prompt.prompt_set,
            "answer": prompt.answer}


def judgement_key(judge_identity: dict[str, Any], judge_backend: dict[str, Any] | None,
                  gen_key: str, query: Query, prompt: Prompt, repeat: int) -> str:
    """Key of one judging occasion: judge and its backend, the generation, what the judge was
    shown beside the response (query and prompt), and the repeat index."""
    return _judgement_key(judge_identity, judge_backend, gen_key, _query_part(query),
                          _prompt_part(prompt), repeat)


def _judgement_key(judge: Any, judge_backend: Any, gen_key: str, query: Any, prompt: Any,
                   repeat: int) -> str:
    # The canonical JSON of {"generation", "judge", "judge_backend", "kind", "prompt", "query",
    # "repeat", "v"} (keys in sorted order), written out directly: there are many judge tasks.
    text = "".join((
        '{"generation":', canonical_json(gen_key), ',"judge":', canonical_json(judge),
        ',"judge_backend":', canonical_json(judge_backend), ',"kind":"judgement","prompt":',
        canonical_json(prompt), ',"query":', canonical_json(query), ',"repeat":',
        canonical_json(repeat), ',"v":', canonical_json(KEY_VERSION), "}",
    ))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _resolution_failure_key(unit: _Unit, method: Method, backend: dict[str, Any]) -> str:
    return cache_key({
        "v": KEY_VERSION, "kind": "resolution", "method": method.identity(),
        "query": {"id": unit.query.id, "text": unit.query.text, "criteria": unit.query.criteria},
        "strength": unit.strength, "backend": backend,
    })


async def _resolve(session: Session, unit: _Unit) -> tuple[Intervention | None, str | None]:
    method = session.methods[unit.method]
    ctx = session.context(unit.model)
    fkey = _resolution_failure_key(unit, method, ctx.backend.identity())
    with track_usage() as usage:
        try:
            iv = await method.resolve(unit.query, unit.strength, ctx)
        except NeedsResolution:
            fail = session.cache.failure(fkey)
            if fail is not None:
                return None, f"method resolution failed: {fail['error']}"
            return None, "pending: method not resolved yet"
        except BudgetExceeded:
            return None, "pending: budget reached while resolving the method"
        except SteerstatsError:
            raise
        except Exception as exc:  # a method's own fault: recorded, the other units go on
            error = f"{type(exc).__name__}: {exc}"
            if not session.dry:
                session.cache.record_failure(
                    fkey, "resolution", error, max(1, usage.calls),
                    {"model": unit.model, "method": unit.method, "strength": unit.strength,
                     "query_id": unit.query.id},
                )
            return None, f"method resolution failed: {error}"
    if not isinstance(iv, Intervention):
        raise TypeError(
            f"method {unit.method!r} resolved to {type(iv).__name__}; resolve() must return an "
            "Intervention"
        )
    if not session.dry:
        session.cache.clear_failure(fkey)
    return iv, None


async def plan(
    config: Experiment,
    session: Session | None = None,
    *,
    limit_queries: int | None = None,
    limit_prompts: int | None = None,
) -> Plan:
    """Every generation task, then every judge task depending on one, each with its cache key.

    Methods are resolved first (through ``session``'s resolution cache); in a dry session a
    method whose resolution would need a backend call leaves its tasks without a key.
    """
    own = session is None
    session = session if session is not None else Session(config, dry=True)
    try:
        return await build_plan(config, session, limit_queries, limit_prompts)
    finally:
        if own:
            await session.aclose()


@dataclass
class _UnitTasks:
    intervention: Intervention | None
    note: str | None
    generations: list[GenerationTask]
    judgements: list[JudgeTask]


async def build_plan(config: Experiment, session: Session, limit_queries: int | None,
                limit_prompts: int | None, previous: Plan | None = None) -> Plan:
    """Build the plan; units ``previous`` already resolved (same session) are reused as is."""
    queries = experiment_queries(config, limit_queries)
    for label, judge in session.judges.items():
        try:
            judge.check_queries(queries)
        except ConfigError as exc:
            raise ConfigError(f"{config.path}: judge {label!r}: {exc}") from None
    prompts = experiment_prompts(config, queries, limit_prompts)
    units = [
        _Unit(m.name, ms.column, strength, q)
        for m in config.models
        for ms in config.methods
        for strength in (ms.strengths if ms.strengths is not None else (None,))
        for q in queries
    ]
    reuse = {} if previous is None else {
        u: t for u, t in previous.units.items() if t.intervention is not None
    }
    todo = [u for u in units if u not in reuse]
    resolved = dict(zip(todo, await asyncio.gather(*(_resolve(session, u) for u in todo)),
                        strict=True))

    # Parts shared by many keys are encoded once (the keys are the same as encoding in full).
    identities = {m.name: fragment(session.model_backend(m.name).identity())
                  for m in config.models}
    judge_ids = {label: fragment(session.judge_identity(label)) for label in session.judges}
    judge_backends = {}
    for label in session.judges:
        jb = session.judge_backend(label)
        judge_backends[label] = fragment(None if jb is None else jb.identity())
    judge_labels = [js.label for js in config.judges]
    prompt_parts: dict[int, Fragment] = {}
    samples = config.sampling.samples

    by_unit: dict[_Unit, _UnitTasks] = {}
    for unit in units:
        if unit in reuse:
            by_unit[unit] = reuse[unit]
            continue
        iv, note = resolved[unit]
        iv_part = None if iv is None else fragment(iv.canonical())
        query_part = fragment(_query_part(unit.query))
        gens: list[GenerationTask] = []
        for prompt in prompts[unit.query.id]:
            for s in range(samples):
                g = GenerationTask(unit.model, unit.method, unit.strength, unit.query, prompt, s)
                if iv is None:
                    g.note = note
                else:
                    g.intervention = iv
                    g.request = build_request(config, iv, prompt, s)
                    g.key = _generation_key(identities[unit.model], iv_part, g.request, s)
                gens.append(g)
        judgements: list[JudgeTask] = []
        for g in gens:
            prompt_part = prompt_parts.get(id(g.prompt))
            if prompt_part is None:
                prompt_part = prompt_parts[id(g.prompt)] = fragment(_prompt_part(g.prompt))
            for label in judge_labels:
                if not session.judges[label].applies_to(g.prompt):
                    continue
                for r in range(session.repeats[label]):
                    key = None
                    if g.key is not None:
                        key = _judgement_key(judge_ids[label], judge_backends[label], g.key,
                                             query_part, prompt_part, r)
                    judgements.append(JudgeTask(g, label, r, key))
        by_unit[unit] = _UnitTasks(iv, note, gens, judgements)

    unresolved = {(u.model, u.method, u.strength, u.query.id): t.note or ""
                  for u, t in by_unit.items() if t.intervention is None}
    return Plan(config, session, queries, prompts,
                [g for t in by_unit.values() for g in t.generations],
                [j for t in by_unit.values() for j in t.judgements],
                unresolved, by_unit)


def with_plan(config: Experiment, fn: Callable[[Plan], T], *, limit_queries: int | None = None,
              limit_prompts: int | None = None) -> T:
    """``fn(plan)`` on a dry plan of ``config`` (no calls); backends are closed afterwards.

    For readers of the cache such as :mod:`steerstats.collect.export`."""

    async def go() -> T:
        async with Session(config, dry=True) as session:
            return fn(await build_plan(config, session, limit_queries, limit_prompts))

    return run_sync(go)
