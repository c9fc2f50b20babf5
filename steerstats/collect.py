"""Plan the task grid and run it: concurrency, retries, budget, progress, resumability.

:func:`plan` resolves every (model, method, strength, query) to an
:class:`~steerstats.methods.base.Intervention` (methods memoise expensive work through the
resolution cache), then lists every generation task and the judge tasks that depend on it,
each with its cache key. :func:`run` executes what the cache does not already hold: each
result is written the moment it finishes (kill -9 loses at most the calls in flight) and a
finished experiment re-runs with zero backend calls. Methods and judges only ever see
:class:`~steerstats.metering.MeteredBackend` proxies, so the budget, the per-backend
concurrency and the retry policy cover every call they make.

The sync entry points used by the CLI are :func:`collect`, :func:`estimate` and :func:`status`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import hashlib
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from steerstats.backends import create_backend
from steerstats.backends.base import Backend, GenerationRequest, GenerationResult
from steerstats.cache import (
    KEY_VERSION,
    Cache,
    Fragment,
    cache_key,
    canonical_json,
    fragment,
    now_iso,
)
from steerstats.config import Experiment, JudgeSpec, ModelSpec
from steerstats.errors import BudgetExceeded, ConfigError, SteerstatsError
from steerstats.grid import experiment_prompts, experiment_queries
from steerstats.judges import create_judge
from steerstats.judges.base import Judge, JudgeInput, Prompt, Score
from steerstats.metering import (
    Budget,
    Meter,
    MeteredBackend,
    NeedsResolution,
    Price,
    RetryPolicy,
    estimate_prompt_tokens,
    track_usage,
)
from steerstats.methods import create_method
from steerstats.methods.base import Intervention, Method, MethodContext, Query

__all__ = [
    "DryRunReport",
    "GenerationTask",
    "JudgeTask",
    "Plan",
    "RunSummary",
    "Session",
    "StatusReport",
    "acollect",
    "collect",
    "estimate",
    "plan",
    "run",
    "status",
    "with_plan",
]

T = TypeVar("T")
TaskT = TypeVar("TaskT", "GenerationTask", "JudgeTask")

# Rough size of a rubric judge's instructions, for dry-run estimates only.
_JUDGE_TEMPLATE_TOKENS = 400
_JUDGE_MAX_TOKENS = 512
# Tasks alive at once (their calls are bounded by the backends' semaphores; this bounds memory).
_WINDOW = 1024
# Seconds between progress-bar updates (it redraws four times a second).
_BAR_UPDATE_S = 0.1
# Allocations between collections of the youngest GC generation during a run (Python: 700).
_GC_GEN0_THRESHOLD = 10_000


# ---------------------------------------------------------------------------------------------
# Session: backends, methods, judges and the meter for one run


class _DryResolutionCache:
    """Serves cached resolutions; anything not cached would need a call: NeedsResolution."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def get_or_compute(self, namespace: str, key: Any, compute: Any) -> Any:
        found, value = self._cache.peek_resolution(namespace, key)
        if not found:
            raise NeedsResolution(namespace)
        return value


class Session:
    """Backends (one instance per distinct backend/model/options), method and judge objects,
    the cache and the :class:`Meter` for one experiment. ``dry`` sessions make no calls."""

    def __init__(self, config: Experiment, *, cache: Cache | None = None,
                 dry: bool = False) -> None:
        self.config = config
        self._own_cache = cache is None
        self.cache = cache if cache is not None else Cache(config.cache_path)
        self.meter = Meter(
            budget=Budget(config.budget.max_usd, config.budget.max_calls),
            retry=RetryPolicy(**config.retries.model_dump()),
            pricing={k: Price(v.input, v.output) for k, v in config.pricing.items()},
            concurrency=config.concurrency.backends,
            default_concurrency=config.concurrency.default,
            dry=dry,
            seed=config.experiment.seed,
        )
        self._raw: dict[str, Backend] = {}
        self._by_label: dict[str, MeteredBackend] = {}
        self._judge_proxies: dict[str, MeteredBackend | None] = {}
        self.methods: dict[str, Method] = {
            ms.column: create_method(ms.name, dict(ms.params)) for ms in config.methods
        }
        self.judges: dict[str, Judge] = {}
        self.judge_specs: dict[str, JudgeSpec] = {js.label: js for js in config.judges}
        self.repeats: dict[str, int] = {}
        for js in config.judges:
            judge = create_judge(js.name, dict(js.params))
            self.repeats[js.label] = js.effective_repeats(int(getattr(judge, "repeats", 1)))
            for attr, value in (("repeats", self.repeats[js.label]), ("rater", js.rater_label)):
                try:
                    setattr(judge, attr, value)
                except AttributeError:  # frozen judges keep their own; the spec still rules
                    pass
            self.judges[js.label] = judge

    @property
    def dry(self) -> bool:
        return self.meter.dry

    @dry.setter
    def dry(self, value: bool) -> None:
        self.meter.dry = value

    def _backend(self, backend: str, model: str, options: dict[str, Any], where: str) -> Backend:
        ident = canonical_json([backend, model, options])
        b = self._raw.get(ident)
        if b is None:
            try:
                b = create_backend(backend, model, dict(options))
            except ConfigError as exc:
                raise ConfigError(f"{self.config.path}: {where}: {exc}") from None
            self._raw[ident] = b
        return b

    def _spec_backend(self, spec: ModelSpec, where: str) -> Backend:
        return self._backend(spec.backend, spec.model, spec.options, where)

    def model_backend(self, label: str) -> MeteredBackend:
        """The metered backend of the model (or helper) labelled ``label``."""
        proxy = self._by_label.get(label)
        if proxy is not None:
            return proxy
        for section, specs in (("models", self.config.models), ("helpers", self.config.helpers)):
            for i, spec in enumerate(specs):
                if spec.name == label:
                    proxy = self.meter.wrap(self._spec_backend(spec, f"{section}[{i}]"))
                    self._by_label[label] = proxy
                    return proxy
        valid = ", ".join(m.name for m in (*self.config.models, *self.config.helpers))
        raise ConfigError(f"no model or helper labelled {label!r}; valid labels: {valid}")

    chat_backend = model_backend

    def judge_backend(self, label: str) -> MeteredBackend | None:
        """The metered chat backend of judge ``label`` (None for computed judges)."""
        if label in self._judge_proxies:
            return self._judge_proxies[label]
        js = self.judge_specs[label]
        proxy = None
        if js.backend is not None and js.model is not None:
            i = self.config.judges.index(js)
            proxy = self.meter.wrap(self._backend(js.backend, js.model, js.options,
                                                  f"judges[{i}]"))
        self._judge_proxies[label] = proxy
        return proxy

    def context(self, model_label: str) -> MethodContext:
        """What a method may use while resolving for ``model_label``."""
        cache: Any = _DryResolutionCache(self.cache) if self.dry else self.cache
        return MethodContext(
            backend=self.model_backend(model_label),
            cache=cache,
            chat_backend=self.chat_backend,
            cache_dir=str(self.config.cache_path),
        )

    async def aclose(self) -> None:
        for b in self._raw.values():
            await b.aclose()
        self._raw.clear()
        self._by_label.clear()
        self._judge_proxies.clear()
        if self._own_cache:
            self.cache.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------------------------------------
# The plan


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


def _request(cfg: Experiment, iv: Intervention, prompt: Prompt, sample: int) -> GenerationRequest:
    messages = [{"role": "system", "content": iv.system_prompt}] if iv.system_prompt else []
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
        return await _plan(config, session, limit_queries, limit_prompts)
    finally:
        if own:
            await session.aclose()


@dataclass
class _UnitTasks:
    intervention: Intervention | None
    note: str | None
    generations: list[GenerationTask]
    judgements: list[JudgeTask]


async def _plan(config: Experiment, session: Session, limit_queries: int | None,
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
    judge_ids = {label: fragment(j.identity()) for label, j in session.judges.items()}
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
                    g.request = _request(config, iv, prompt, s)
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


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class RunSummary:
    """What a run did. ``complete`` when every task of the plan has a result."""

    generations: int = 0
    judgements: int = 0
    cached_generations: int = 0
    cached_judgements: int = 0
    new_generations: int = 0
    new_judgements: int = 0
    failed_generations: int = 0
    failed_judgements: int = 0
    budget_pending: int = 0
    blocked_judgements: int = 0
    unresolved: int = 0
    calls: int = 0
    retries: int = 0
    cost_usd: float = 0.0
    spent_usd: float = 0.0
    elapsed_s: float = 0.0
    budget_reached: bool = False
    budget_note: str = ""
    lookups: int = 0
    lookup_s: float = 0.0

    @property
    def complete(self) -> bool:
        return (self.failed_generations == 0 and self.failed_judgements == 0
                and self.budget_pending == 0 and self.blocked_judgements == 0
                and self.unresolved == 0)


def _score_rows(scores: Sequence[Score]) -> list[dict[str, Any]]:
    rows = []
    for s in scores:
        if not isinstance(s, Score):
            raise TypeError(f"a judge returned {type(s).__name__}; score() must return list[Score]")
        v = float(s.value)
        rows.append({"metric": s.metric, "value": v if math.isfinite(v) else None,
                     "reason": s.reason})
    return rows


class _Runner:
    def __init__(self, p: Plan, summary: RunSummary, advance: Callable[[int], None]) -> None:
        self.plan = p
        self.session = p.session
        self.cache = p.session.cache
        self.summary = summary
        self.advance = advance

    def _stopped(self, key: str, kind: str, calls: int, exc: BudgetExceeded,
                 detail: dict[str, Any]) -> None:
        """A task the budget stopped after attempts that failed: keep those attempts on record
        (they count against max_calls on the next run), else it is simply still pending."""
        if calls:
            self.cache.record_failure(
                key, kind, f"stopped after {calls} failed attempt(s): {exc}", calls, detail)

    async def generation(self, key: str, task: GenerationTask, request: GenerationRequest,
                         judges: list[JudgeTask]) -> None:
        backend = self.session.model_backend(task.model)
        started = now_iso()
        with track_usage() as usage:
            try:
                res = await backend.generate(request)
            except BudgetExceeded as exc:
                self._stopped(key, "generation", usage.calls, exc, task.meta())
                self.summary.budget_pending += 1 + len(judges)
                self.advance(1 + len(judges))
                return
            except SteerstatsError:
                raise
            except Exception as exc:
                self.cache.record_failure(key, "generation", f"{type(exc).__name__}: {exc}",
                                          max(1, usage.calls), task.meta())
                self.summary.failed_generations += 1
                self.summary.blocked_judgements += len(judges)
                self.advance(1 + len(judges))
                return
        if not isinstance(res, GenerationResult):
            raise TypeError(f"{backend.name}.generate returned {type(res).__name__}")
        iv = task.intervention
        record = {
            "v": KEY_VERSION, "kind": "generation", "key": key,
            "text": res.text, "finish_reason": res.finish_reason,
            "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
            "cost_usd": usage.cost_usd if usage.cost_known else None,
            "calls": usage.calls, "latency_s": usage.latency_s,
            "backend": backend.identity(), "model_id": backend.model,
            "started_at": started, "finished_at": now_iso(),
            "task": task.meta(),
            "intervention": None if iv is None else iv.canonical(),
            "detail": None if iv is None else dict(iv.detail),
            "extra": res.extra,
        }
        await self.cache.aput(key, record)
        self.summary.new_generations += 1
        self.advance(1)
        if judges:
            await asyncio.gather(*(self.judgement(j, record) for j in judges))

    async def judgement(self, jt: JudgeTask, gen: dict[str, Any] | None = None) -> None:
        key, g = jt.key, jt.generation
        if key is None or g.key is None or g.intervention is None:
            return  # unresolved: never scheduled, counted in the summary
        if gen is None:
            gen = self.cache.get(g.key)
            if gen is None:
                self.summary.blocked_judgements += 1
                self.advance(1)
                return
        judge = self.session.judges[jt.judge]
        jb = self.session.judge_backend(jt.judge)
        item = JudgeInput(query=g.query, prompt=g.prompt, response=gen["text"],
                          generation_key=g.key, intervention=g.intervention)
        started = now_iso()
        with track_usage() as usage:
            try:
                rows = _score_rows(await judge.score(item, jt.repeat, jb))
            except BudgetExceeded as exc:
                self._stopped(key, "judgement", usage.calls, exc,
                              {**g.meta(), "judge": jt.judge, "repeat": jt.repeat})
                self.summary.budget_pending += 1
                self.advance(1)
                return
            except SteerstatsError:
                raise
            except Exception as exc:
                self.cache.record_failure(key, "judgement", f"{type(exc).__name__}: {exc}",
                                          max(1, usage.calls),
                                          {**g.meta(), "judge": jt.judge, "repeat": jt.repeat})
                self.summary.failed_judgements += 1
                self.advance(1)
                return
        record = {
            "v": KEY_VERSION, "kind": "judgement", "key": key, "generation_key": g.key,
            "judge": jt.judge, "rater": self.session.judge_specs[jt.judge].rater_label,
            "repeat": jt.repeat, "scores": rows,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "cost_usd": usage.cost_usd if usage.cost_known else None,
            "calls": usage.calls, "latency_s": usage.latency_s,
            "judge_backend": None if jb is None else jb.identity(),
            "started_at": started, "finished_at": now_iso(),
            "task": {**g.meta(), "judge": jt.judge, "repeat": jt.repeat},
        }
        await self.cache.aput(key, record)
        self.summary.new_judgements += 1
        self.advance(1)


def _distinct_keys(tasks: Sequence[TaskT], cache: Any) -> list[tuple[TaskT, bool]]:
    """Each resolved key once (identical requests share one), with whether it is cached."""
    seen: set[str] = set()
    out: list[tuple[TaskT, bool]] = []
    for t in tasks:
        if t.key is None or t.key in seen:
            continue
        seen.add(t.key)
        out.append((t, t.key in cache))
    return out


async def run(p: Plan, *, progress: bool = True, console: Any = None) -> RunSummary:
    """Execute every task of ``p`` the cache does not hold; return what happened."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    session, cache = p.session, p.session.cache
    summary = RunSummary(unresolved=sum(1 for g in p.generations if g.key is None))
    t0 = time.perf_counter()

    pending_gens: dict[str, GenerationTask] = {}
    gens = _distinct_keys(p.generations, cache)
    for g, cached in gens:
        if cached:
            summary.cached_generations += 1
        else:
            pending_gens[g.key] = g  # type: ignore[index]
    summary.generations = len(gens)
    judges_after: dict[str, list[JudgeTask]] = {k: [] for k in pending_gens}
    ready_judges: list[JudgeTask] = []
    judgements = _distinct_keys(p.judgements, cache)
    for j, cached in judgements:
        if cached:
            summary.cached_judgements += 1
        elif j.generation.key in judges_after:
            judges_after[j.generation.key].append(j)
        else:
            ready_judges.append(j)
    summary.judgements = len(judgements)
    summary.lookups = len(gens) + len(judgements)
    summary.lookup_s = time.perf_counter() - t0
    summary.unresolved += sum(1 for j in p.judgements if j.key is None)

    total = len(pending_gens) + sum(len(v) for v in judges_after.values()) + len(ready_judges)
    meter = session.meter
    start_calls, start_cost = meter.stats.calls, meter.stats.cost_usd
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} tasks/s"), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("${task.fields[spend]:.4f}{task.fields[cap]}"),
    ]
    cap = "" if meter.budget.max_usd is None else f" / ${meter.budget.max_usd:.2f}"
    bar = Progress(*columns, console=console, disable=not progress or total == 0,
                   transient=False, refresh_per_second=4)
    run_start = time.perf_counter()
    with bar:
        tid = bar.add_task("collect", total=total, rate=0.0, spend=meter.budget.spent_usd,
                           cap=cap)
        done = 0
        shown_at = run_start

        def show(now: float) -> None:
            nonlocal shown_at
            shown_at = now
            bar.update(tid, completed=done, rate=done / max(1e-9, now - run_start),
                       spend=meter.budget.spent_usd)

        def advance(n: int) -> None:
            # The bar redraws a few times a second: updating it per task only costs CPU.
            nonlocal done
            done += n
            now = time.perf_counter()
            if now - shown_at >= _BAR_UPDATE_S:
                show(now)

        runner = _Runner(p, summary, advance)
        items: Iterable[Callable[[], Any]] = [
            *((lambda k=k, g=g: runner.generation(k, g, g.request, judges_after[k]))
              for k, g in pending_gens.items() if g.request is not None),
            *((lambda j=j: runner.judgement(j)) for j in ready_judges),
        ]
        try:
            with _fewer_gc_passes():
                await _run_windowed(items, _WINDOW)
        finally:
            show(time.perf_counter())
    summary.calls = meter.stats.calls - start_calls
    summary.retries = meter.stats.retries
    summary.cost_usd = meter.stats.cost_usd - start_cost
    summary.spent_usd = meter.budget.spent_usd
    summary.elapsed_s = time.perf_counter() - t0
    summary.budget_reached = meter.budget.exhausted and summary.budget_pending > 0
    if summary.budget_reached:
        summary.budget_note = meter.budget.describe()
    return summary


@contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Python's cycle collector took ~10% of a run's CPU (benchmarks/collect_throughput.py):
    every call allocates hundreds of objects, and each full pass walked the whole plan. For the
    run, what exists now (the plan, loaded modules) is set aside (``gc.freeze``) and the
    youngest generation is collected less often; both are restored afterwards. A process that
    froze objects itself keeps its own setting."""
    if gc.get_freeze_count():
        yield
        return
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], _GC_GEN0_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _run_windowed(items: Iterable[Callable[[], Any]], window: int) -> None:
    """Run coroutine factories with at most ``window`` alive; the first error from a task
    (only fatal ones escape the task bodies) cancels the rest and is raised."""
    sem = asyncio.Semaphore(window)
    running: set[asyncio.Task[Any]] = set()
    failure: list[BaseException] = []

    def finished(t: asyncio.Task[Any]) -> None:
        running.discard(t)
        sem.release()
        if not t.cancelled() and t.exception() is not None and not failure:
            failure.append(t.exception())  # type: ignore[arg-type]
            for other in list(running):
                other.cancel()

    try:
        for make in items:
            await sem.acquire()
            if failure:
                sem.release()
                break
            t = asyncio.ensure_future(make())
            running.add(t)
            t.add_done_callback(finished)
        if running:
            await asyncio.wait(set(running))
    finally:
        for t in list(running):
            t.cancel()
        if running:
            await asyncio.wait(set(running))
    if failure:
        raise failure[0]


# ---------------------------------------------------------------------------------------------
# Recorded spend, estimates and status


def recorded_usage(p: Plan, keys: Iterable[str] | None = None) -> tuple[float, int]:
    """(USD, calls) the cache records for the plan's tasks (results and failed attempts) and
    the resolutions its methods used."""
    cache = p.session.cache
    usd, calls = 0.0, 0
    wanted = keys if keys is not None else [*p.generation_keys(), *p.judgement_keys()]
    for k in wanted:
        rec = cache.get(k)
        if rec is not None:
            usd += float(rec.get("cost_usd") or 0.0)
            calls += int(rec.get("calls") or 0)
        else:
            fail = cache.failure(k)
            if fail is not None:
                calls += int(fail.get("attempts") or 0)
    if keys is None:
        usd += cache.resolutions.cost_usd
        calls += cache.resolutions.calls
    return usd, calls


async def acollect(config: Experiment, *, limit_queries: int | None = None,
                   limit_prompts: int | None = None, progress: bool = True,
                   console: Any = None) -> RunSummary:
    """Async :func:`collect`, for callers already inside an event loop."""
    budgeted = config.budget.max_usd is not None or config.budget.max_calls is not None
    async with Session(config, dry=budgeted) as session:
        dry_plan = None
        budget = session.meter.budget
        if budgeted:
            # What the experiment has already spent, before resolving anything that costs.
            dry_plan = await _plan(config, session, limit_queries, limit_prompts)
            budget.spent_usd, budget.calls = recorded_usage(dry_plan)
            session.dry = False
        live = await _plan(config, session, limit_queries, limit_prompts, previous=dry_plan)
        if dry_plan is not None:
            known = {*dry_plan.generation_keys(), *dry_plan.judgement_keys()}
            new = [k for k in (*live.generation_keys(), *live.judgement_keys()) if k not in known]
            usd, calls = recorded_usage(live, new)
            budget.spent_usd += usd
            budget.calls += calls
        return await run(live, progress=progress, console=console)


def collect(config: Experiment, *, limit_queries: int | None = None,
            limit_prompts: int | None = None, progress: bool = True,
            console: Any = None) -> RunSummary:
    """Plan and run ``config`` (what ``steerstats collect`` does); safe to interrupt and re-run."""
    return _run_sync(lambda: acollect(config, limit_queries=limit_queries,
                                      limit_prompts=limit_prompts, progress=progress,
                                      console=console))


def _run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, also when an event loop is already running
    in this thread (Jupyter, Quarto): then in a worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@dataclass
class EstimateRow:
    model: str
    method: str
    stage: str  # "generate" or a judge label
    tasks: int = 0
    cached: int = 0
    to_run: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0


@dataclass
class DryRunReport:
    """What a run would do: per model x method x stage, tasks to run, calls, tokens, cost
    (typical input tokens; output at ``max_tokens``, an upper bound)."""

    rows: list[EstimateRow]
    unresolved_units: int
    generations: int
    judgements: int

    def totals(self) -> EstimateRow:
        t = EstimateRow("total", "", "")
        for r in self.rows:
            for f in ("tasks", "cached", "to_run", "calls", "input_tokens", "output_tokens"):
                setattr(t, f, getattr(t, f) + getattr(r, f))
            both = t.cost_usd is not None and r.cost_usd is not None
            t.cost_usd = t.cost_usd + r.cost_usd if both else None  # type: ignore[operator]
        return t


def _estimate(p: Plan) -> DryRunReport:
    cfg, session, cache = p.config, p.session, p.session.cache
    rows: dict[tuple[str, str, str], EstimateRow] = {}

    def row(model: str, method: str, stage: str) -> EstimateRow:
        r = rows.get((model, method, stage))
        if r is None:
            r = rows[(model, method, stage)] = EstimateRow(model, method, stage)
        return r

    def add_cost(r: EstimateRow, price: Price | None, inp: int, out: int) -> None:
        r.input_tokens += inp
        r.output_tokens += out
        if r.cost_usd is not None:
            r.cost_usd = None if price is None else r.cost_usd + price.cost(inp, out)

    counted: set[str] = set()
    for g in p.generations:
        r = row(g.model, g.method, "generate")
        r.tasks += 1
        if g.key is not None and g.key in counted:
            continue
        if g.key is not None:
            counted.add(g.key)
            if g.key in cache:
                r.cached += 1
                continue
        req = g.request or _request(cfg, Intervention(), g.prompt, g.sample)
        r.to_run += 1
        r.calls += 1
        add_cost(r, session.meter.price(session.model_backend(g.model).inner),
                 estimate_prompt_tokens(req), cfg.sampling.max_tokens)
    for j in p.judgements:
        g = j.generation
        r = row(g.model, g.method, j.judge)
        r.tasks += 1
        if j.key is not None and j.key in counted:
            continue
        if j.key is not None:
            counted.add(j.key)
            if j.key in cache:
                r.cached += 1
                continue
        r.to_run += 1
        jb = session.judge_backend(j.judge)
        if jb is None:
            continue
        judge = session.judges[j.judge]
        n_calls = int(getattr(judge, "calls_per_item", 1))
        r.calls += n_calls
        inp = (len(g.prompt.text) + len(g.query.text)) // 4 + cfg.sampling.max_tokens
        inp += _JUDGE_TEMPLATE_TOKENS
        out = int(getattr(judge, "max_tokens", _JUDGE_MAX_TOKENS))
        add_cost(r, session.meter.price(jb.inner), n_calls * inp, n_calls * out)
    return DryRunReport(list(rows.values()), len(p.unresolved), len(p.generations),
                        len(p.judgements))


def estimate(config: Experiment, *, limit_queries: int | None = None,
             limit_prompts: int | None = None) -> DryRunReport:
    """The dry run: plan without calling anything and estimate what the run would cost."""
    return with_plan(config, _estimate, limit_queries=limit_queries, limit_prompts=limit_prompts)


TaskState = Literal["done", "failed", "pending"]


@dataclass
class StatusRow:
    model: str
    method: str
    stage: str
    done: int = 0
    failed: int = 0
    pending: int = 0
    spend_usd: float = 0.0


@dataclass
class StatusReport:
    """Done / failed / pending per model x method x stage, and what has been spent."""

    rows: list[StatusRow]
    spent_usd: float
    calls: int
    failures: list[dict[str, Any]]


def _status(p: Plan) -> StatusReport:
    cache = p.session.cache
    rows: dict[tuple[str, str, str], StatusRow] = {}
    failures: list[dict[str, Any]] = []
    spent_keys: set[str] = set()

    def tally(model: str, method: str, stage: str, key: str | None,
              note: str | None = None) -> None:
        r = rows.get((model, method, stage))
        if r is None:
            r = rows[(model, method, stage)] = StatusRow(model, method, stage)
        if key is None:
            if note is not None and note.startswith("method resolution failed"):
                r.failed += 1
            else:
                r.pending += 1
            return
        rec = cache.get(key)
        if rec is not None:
            r.done += 1
            if key not in spent_keys:
                spent_keys.add(key)
                r.spend_usd += float(rec.get("cost_usd") or 0.0)
            return
        fail = cache.failure(key)
        if fail is not None:
            r.failed += 1
            failures.append(fail)
        else:
            r.pending += 1

    for g in p.generations:
        tally(g.model, g.method, "generate", g.key, g.note)
    for j in p.judgements:
        tally(j.generation.model, j.generation.method, j.judge, j.key, j.generation.note)
    for (model, method, strength, query_id), note in p.unresolved.items():
        if note.startswith("method resolution failed"):
            failures.append({"kind": "resolution", "error": note, "detail": {
                "model": model, "method": method, "strength": strength, "query_id": query_id}})
    usd, calls = recorded_usage(p)
    return StatusReport(list(rows.values()), usd, calls, failures)


def status(config: Experiment, *, limit_queries: int | None = None,
           limit_prompts: int | None = None) -> StatusReport:
    """What the cache holds for ``config``'s plan (makes no calls)."""
    return with_plan(config, _status, limit_queries=limit_queries, limit_prompts=limit_prompts)


def with_plan(config: Experiment, fn: Callable[[Plan], T], *, limit_queries: int | None = None,
              limit_prompts: int | None = None) -> T:
    """``fn(plan)`` on a dry plan of ``config`` (no calls); backends are closed afterwards.

    For readers of the cache such as :mod:`steerstats.tidy`."""

    async def go() -> T:
        async with Session(config, dry=True) as session:
            return fn(await _plan(config, session, limit_queries, limit_prompts))

    return _run_sync(go)
