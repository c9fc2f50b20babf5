"""Run a plan: what the cache does not hold is called, with bounded concurrency, retries, the
budget and a progress bar; each result is written the moment it finishes (kill -9 loses at
most the calls in flight) and a finished experiment re-runs with zero backend calls. Methods
and judges only ever see :class:`~steerstats.collect.metering.MeteredBackend` proxies, so the
budget, the per-backend concurrency and the retry policy cover every call they make.

Every task is claimed in the ledger before it runs, so several processes on one experiment
(``collect --workers N``, or two runs started by hand) request each key once: a task another
live process holds is skipped, then looked at again until it has a result, failed there, or
its owner's lease expired (a killed owner) and it is taken over. Judges whose replies cannot
be parsed are warned about early (after 20 judgements) and at the end."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from steerstats.collect.ledger import remember_scope
from steerstats.collect.plan import GenerationTask, JudgeTask, Plan, build_plan
from steerstats.collect.session import Session, run_sync
from steerstats.collect.status import recorded_usage
from steerstats.collect.tasks import (
    UNPARSED_WARN,
    WINDOW,
    RunSummary,
    TaskRunner,
    run_windowed,
    unparsed_rows,
)
from steerstats.config import Experiment
from steerstats.errors import ConfigError

__all__ = ["UNPARSED_WARN", "RunSummary", "acollect", "claim_window", "collect", "run",
           "unparsed_rows"]

TaskT = TypeVar("TaskT", "GenerationTask", "JudgeTask")

# Seconds between progress-bar updates (it redraws four times a second).
_BAR_UPDATE_S = 0.1
# Allocations between collections of the youngest GC generation during a run (Python: 700).
_GC_GEN0_THRESHOLD = 10_000
# Tasks alive (so keys claimed) per call that may be in flight, and the fewest alive at once.
_CLAIMS_PER_SLOT = 2
_MIN_WINDOW = 8


def claim_window(session: Session, gens: Iterable[GenerationTask],
                 judgements: Iterable[JudgeTask]) -> int:
    """How many tasks run (and so hold a claim) at once: about twice the calls the run's
    backends may have in flight, at most :data:`WINDOW`. A task claims its key when it starts,
    long before a backend slot frees up, so a window far above the slots lets the first
    ``collect --workers`` process claim what it cannot call for a while, and the others sit
    idle (benchmarks/collect_scaling.py: 2 workers were slower than 1)."""
    limits: dict[str, int] = {}  # per concurrency group (a backend name)
    for b in {*(session.model_backend(g.model) for g in {g.model: g for g in gens}.values()),
              *(session.judge_backend(j) for j in {j.judge for j in judgements})}:
        if b is not None:
            limits[b.name] = max(limits.get(b.name, 0), b.max_concurrency())
    return max(_MIN_WINDOW, min(WINDOW, _CLAIMS_PER_SLOT * sum(limits.values())))


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


async def run(p: Plan, *, progress: bool = True, console: Any = None,
              share: tuple[int, int] | None = None) -> RunSummary:
    """Execute every task of ``p`` the cache does not hold; return what happened. ``share``
    ``(i, n)``: this is worker i of n on the plan, which starts i/n of the way through it (so
    the workers meet at the end instead of trying each other's claims all along)."""
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
    stats = meter.stats
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} tasks/s"), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("in flight {task.fields[in_flight]} retries {task.fields[retries]} "
                   "timeouts {task.fields[timeouts]}"),
        TextColumn("${task.fields[spend]:.4f}{task.fields[cap]}"),
    ]
    cap = "" if meter.budget.max_usd is None else f" / ${meter.budget.max_usd:.2f}"
    bar = Progress(*columns, console=console, disable=not progress or total == 0,
                   transient=False, refresh_per_second=4)
    run_start = time.perf_counter()
    with bar:
        tid = bar.add_task("collect", total=total, rate=0.0, spend=meter.budget.spent_usd,
                           cap=cap, in_flight=0, retries=0, timeouts=0)
        done = 0
        shown_at = run_start

        def show(now: float) -> None:
            nonlocal shown_at
            shown_at = now
            bar.update(tid, completed=done, rate=done / max(1e-9, now - run_start),
                       spend=meter.budget.spent_usd, in_flight=stats.in_flight,
                       retries=stats.retries, timeouts=stats.timeouts)

        def advance(n: int) -> None:
            # The bar redraws a few times a second: updating it per task only costs CPU.
            nonlocal done
            done += n
            now = time.perf_counter()
            if now - shown_at >= _BAR_UPDATE_S:
                show(now)

        def say(message: str) -> None:
            """One line above the bar (the console's markup is not applied to ``message``)."""
            if console is not None:
                console.print(message, markup=False, highlight=False)

        async def tick() -> None:  # a slow server finishes nothing for minutes: show it anyway
            while True:
                await asyncio.sleep(0.5)
                show(time.perf_counter())

        previous_event = meter.on_event
        meter.on_event = say
        runner = TaskRunner(p, summary, advance, say)
        session.cache.ledger.hold(runner.owner)
        items: list[Callable[[], Any]] = [
            *((lambda k=k, g=g: runner.generation(k, g, g.request, judges_after[k]))
              for k, g in pending_gens.items() if g.request is not None),
            *((lambda j=j: runner.judgement(j)) for j in ready_judges),
        ]
        if share is not None and share[1] > 1:
            start = len(items) * (share[0] % share[1]) // share[1]
            items = items[start:] + items[:start]
        window = claim_window(session, pending_gens.values(),
                              [*ready_judges, *(j for js in judges_after.values() for j in js)])
        ticker = asyncio.ensure_future(tick()) if progress and total else None
        try:
            with _fewer_gc_passes():
                await run_windowed(items, window)
                await runner.settle_deferred(window)
        finally:
            meter.on_event = previous_event
            session.cache.ledger.drop(runner.owner)
            if ticker is not None:
                ticker.cancel()
            show(time.perf_counter())
    for j, cached in judgements:  # the final tally covers what earlier runs judged too
        if cached:
            rec = cache.get(j.key)  # type: ignore[arg-type]
            if rec is not None:
                tally = summary.judge_scores.setdefault(j.judge, [0, 0, 0])
                rows = rec.get("scores") or []
                tally[0] += len(rows)
                tally[1] += unparsed_rows(rows)
                tally[2] += 1
    for label, (n, bad, _) in sorted(summary.judge_scores.items()):
        if n and bad / n > UNPARSED_WARN:
            summary.warnings.append(
                f"judge {label}: {bad} of {n} scores unparsed ({bad / n:.0%}); see the "
                "judgements table (`steerstats export`) for its raw replies")
    cache.ledger.flush()  # settlements still queued: the totals below include them
    meter.budget.refresh()
    summary.calls = meter.stats.calls - start_calls
    summary.retries = meter.stats.retries
    summary.timeouts = meter.stats.timeouts
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


async def acollect(config: Experiment, *, limit_queries: int | None = None,
                   limit_prompts: int | None = None, progress: bool = True,
                   console: Any = None, share: tuple[int, int] | None = None) -> RunSummary:
    """Async :func:`collect`, for callers already inside an event loop."""
    async with Session(config, dry=True) as session:
        ledger, scope = session.cache.ledger, config.experiment.name
        dry_plan = None
        if not ledger.has_scope(scope):
            # A cache filled before the ledger existed: what its records say was spent (read
            # before anything that costs is resolved) starts the experiment's totals.
            usd, calls = 0.0, 0
            if not session.cache.is_empty():
                dry_plan = await build_plan(config, session, limit_queries, limit_prompts)
                usd, calls = recorded_usage(dry_plan)
            ledger.seed(scope, usd, calls)
        session.meter.budget.refresh()
        session.dry = False
        live = await build_plan(config, session, limit_queries, limit_prompts, previous=dry_plan)
        if not live.generations:
            raise ConfigError(
                f"{config.path}: nothing to collect: no prompt applies to any query (check "
                "[queries] and [prompts], and the --limit options)")
        remember_scope(ledger, scope, limit_queries, limit_prompts)
        return await run(live, progress=progress, console=console, share=share)


def collect(config: Experiment, *, limit_queries: int | None = None,
            limit_prompts: int | None = None, progress: bool = True,
            console: Any = None, share: tuple[int, int] | None = None) -> RunSummary:
    """Plan and run ``config`` (what ``steerstats collect`` does); safe to interrupt and re-run.
    ``share=(i, n)``: one of n processes on it (see :func:`run`)."""
    return run_sync(lambda: acollect(config, limit_queries=limit_queries,
                                      limit_prompts=limit_prompts, progress=progress,
                                      console=console, share=share))
