"""What an experiment has spent (from the cache), what a run would cost (the dry run), and what
is done, failed or pending per model x method x stage (``steerstats status``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from steerstats.collect.metering import (
    Price,
    estimate_prompt_tokens,
)
from steerstats.collect.plan import Plan, build_request, with_plan
from steerstats.config import Experiment
from steerstats.methods.base import Intervention

__all__ = ["DryRunReport", "EstimateRow", "StatusReport", "StatusRow", "estimate",
           "recorded_usage", "status"]

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
        req = g.request or build_request(cfg, Intervention(), g.prompt, g.sample)
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
