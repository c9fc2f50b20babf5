"""What an experiment has spent (from the cache), what a run would cost (the dry run), and what
is done, failed or pending per model x method x stage (``steerstats status``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from steerstats.collect.ledger import LedgerTotals, last_scope
from steerstats.collect.metering import (
    Price,
    estimate_prompt_tokens,
)
from steerstats.collect.plan import Plan, build_request, with_plan
from steerstats.collect.wall import WallClock
from steerstats.config import Experiment
from steerstats.keys import canonical_json
from steerstats.methods.base import Intervention

__all__ = ["DryRunReport", "EstimateRow", "StatusReport", "StatusRow", "estimate",
           "recorded_usage", "remembered_limits", "status"]

# Rough size of a rubric judge's instructions, for dry-run estimates only.
_JUDGE_TEMPLATE_TOKENS = 400
_JUDGE_MAX_TOKENS = 512


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
    """What a run would do: per model x method x stage ("resolve", "generate" or a judge), tasks
    to run, calls, tokens, cost (typical input tokens; output at ``max_tokens``, an upper bound),
    and the wall time from measured or assumed per-call latencies."""

    rows: list[EstimateRow]
    unresolved_units: int
    generations: int
    judgements: int
    # wall time (None: a backend's latency is neither measured nor assumed: ``unmeasured``)
    wall_s: float | None = None
    unmeasured: tuple[str, ...] = ()
    resolve_wall_s: float | None = None  # the part spent resolving methods, before any task
    assumed: dict[str, float] = field(default_factory=dict)  # per-call seconds assumed
    measured: tuple[str, ...] = ()  # backends whose latency `collect --check` measured
    concurrency: dict[str, int] = field(default_factory=dict)  # per backend group in use
    resolve_max_calls: int = 0  # resolution calls if every picker answer needs its retries
    unestimated_units: int = 0  # unresolved units of methods that give no estimate

    def totals(self) -> EstimateRow:
        t = EstimateRow("total", "", "")
        for r in self.rows:
            # a "resolve" row counts query x model units, not tasks: only its calls add up
            counts = ("tasks", "cached", "to_run") if r.stage != "resolve" else ()
            for f in (*counts, "calls", "input_tokens", "output_tokens"):
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

    resolving, tasks = WallClock(cache.ledger), WallClock(cache.ledger)
    chain, max_calls, unestimated = _estimate_resolutions(p, row, add_cost, resolving)

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
        req = g.request or build_request(cfg, Intervention(), g.prompt, g.sample)
        r.to_run += 1
        r.calls += 1
        tasks.occupy(session.model_backend(g.model), 1)
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
        tasks.occupy(jb, n_calls)
        inp = (len(g.prompt.text) + len(g.query.text)) // 4 + cfg.sampling.max_tokens
        inp += _JUDGE_TEMPLATE_TOKENS
        out = int(getattr(judge, "max_tokens", _JUDGE_MAX_TOKENS))
        add_cost(r, session.meter.price(jb.inner), n_calls * inp, n_calls * out)

    def limit(name: str) -> int:
        return session.meter.limit_for(_group_backend(session, name))

    unknown = resolving.unknown | tasks.unknown
    wall = resolve_wall = None
    if not unknown:
        resolve_wall = max(resolving.seconds(limit), chain)
        wall = resolve_wall + tasks.seconds(limit)
    groups = {*resolving.busy, *tasks.busy}
    ordered = [*(rows.pop(k) for k in [k for k in rows if k[2] == "resolve"]), *rows.values()]
    return DryRunReport(ordered, len(p.unresolved), len(p.generations), len(p.judgements),
                        wall, tuple(sorted(unknown)), resolve_wall,
                        {**resolving.assumed, **tasks.assumed},
                        tuple(sorted(resolving.measured | tasks.measured)),
                        {name: limit(name) for name in sorted(groups)}, max_calls, unestimated)


def _estimate_resolutions(p: Plan, row: Any, add_cost: Any,
                          clock: WallClock) -> tuple[float, int, int]:
    """The "resolve" rows: each unresolved unit's calls (from its method's
    ``estimate_resolution``), a call shared by several units counted once and a cached one not
    at all. Returns the longest unit's seconds (its calls run one after another), the calls if
    every retry is needed, and the unresolved units whose method gives no estimate."""
    session, cache = p.session, p.session.cache
    seen: set[str] = set()
    chain, max_calls, unestimated = 0.0, 0, 0
    for unit, unit_tasks in p.units.items():
        method = session.methods[unit.method]
        planned = method.estimate_resolution(unit.query, unit.strength,
                                             session.context(unit.model), cache.peek_resolution)
        if planned == []:
            continue  # resolves without a call (control, prompt): no row
        r = row(unit.model, unit.method, "resolve")
        r.tasks += 1
        if unit_tasks.intervention is not None:
            r.cached += 1
            continue
        r.to_run += 1
        if planned is None:
            unestimated += 1
            continue
        seconds = 0.0
        for c in planned:
            ident = c.namespace + canonical_json(c.key)
            if ident in seen or cache.peek_resolution(c.namespace, c.key)[0]:
                continue
            seen.add(ident)
            r.calls += c.calls
            max_calls += c.max_calls
            inner = getattr(c.backend, "inner", c.backend)
            if c.request is not None:
                add_cost(r, session.meter.price(inner), c.calls * estimate_prompt_tokens(c.request),
                         c.calls * c.request.max_tokens)
            lat = clock.occupy(inner, c.calls, c.kind)
            seconds += (lat or 0.0) * c.calls
        chain = max(chain, seconds)
    return chain, max_calls, unestimated


def _group_backend(session: Any, name: str) -> Any:
    """A backend of concurrency group ``name`` (its limit is the group's)."""
    for proxy in session.meter._proxies.values():
        if proxy.inner.name == name:
            return proxy.inner
    raise KeyError(name)


def estimate(config: Experiment, *, limit_queries: int | None = None,
             limit_prompts: int | None = None) -> DryRunReport:
    """The dry run: plan without calling anything and estimate what the run would cost."""
    return with_plan(config, _estimate, limit_queries=limit_queries, limit_prompts=limit_prompts)


def remembered_limits(config: Experiment) -> dict[str, int | None]:
    """The pilot limits of the experiment's latest collect (both None: the whole plan)."""
    from steerstats.collect.cache import Cache

    with Cache(config.cache_path) as cache:
        return last_scope(cache.ledger, config.experiment.name)


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
    # every attempt recorded for the experiment by any process (the budget counts these)
    ledger: LedgerTotals = LedgerTotals()


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
    return StatusReport(list(rows.values()), usd, calls, failures,
                        cache.ledger.totals(p.config.experiment.name))


def status(config: Experiment, *, limit_queries: int | None = None,
           limit_prompts: int | None = None) -> StatusReport:
    """What the cache holds for ``config``'s plan (makes no calls)."""
    return with_plan(config, _status, limit_queries=limit_queries, limit_prompts=limit_prompts)
