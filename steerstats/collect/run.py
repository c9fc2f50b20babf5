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
import functools
import gc
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from steerstats.backends.base import GenerationRequest, GenerationResult
from steerstats.collect.cache import now_iso
from steerstats.collect.ledger import remember_scope
from steerstats.collect.metering import (
    CURRENT_TASK,
    track_usage,
)
from steerstats.collect.plan import GenerationTask, JudgeTask, Plan, build_plan
from steerstats.collect.session import Session, run_sync
from steerstats.collect.status import recorded_usage
from steerstats.config import Experiment
from steerstats.errors import BudgetExceeded, ConfigError, SteerstatsError
from steerstats.judges.base import JudgeInput, Score
from steerstats.keys import KEY_VERSION

__all__ = ["UNPARSED_WARN", "RunSummary", "acollect", "collect", "run", "unparsed_rows"]

T = TypeVar("T")
TaskT = TypeVar("TaskT", "GenerationTask", "JudgeTask")

# Tasks alive at once (their calls are bounded by the backends' semaphores; this bounds memory).
_WINDOW = 1024
# Seconds between progress-bar updates (it redraws four times a second).
_BAR_UPDATE_S = 0.1
# Seconds between looks at tasks another process holds.
_PEER_POLL_S = 0.25
# A judge whose unparsed share exceeds this is warned about (early: after _EARLY judgements).
UNPARSED_WARN = 0.2
_EARLY = 20
# Allocations between collections of the youngest GC generation during a run (Python: 700).
_GC_GEN0_THRESHOLD = 10_000



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
    by_peers: int = 0  # tasks another process on the cache finished while we waited
    timeouts: int = 0
    # per judge label: [scores, unparsed scores, judgements] over the plan (cached or new)
    judge_scores: dict[str, list[int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return (self.failed_generations == 0 and self.failed_judgements == 0
                and self.budget_pending == 0 and self.blocked_judgements == 0
                and self.unresolved == 0)

    @property
    def unparsed(self) -> tuple[int, int]:
        """(unparsed scores, scores) over every judge."""
        return (sum(v[1] for v in self.judge_scores.values()),
                sum(v[0] for v in self.judge_scores.values()))


def _score_rows(scores: Sequence[Score]) -> list[dict[str, Any]]:
    rows = []
    for s in scores:
        if not isinstance(s, Score):
            raise TypeError(f"a judge returned {type(s).__name__}; score() must return list[Score]")
        v = float(s.value)
        row = {"metric": s.metric, "value": v if math.isfinite(v) else None, "reason": s.reason}
        if s.reply is not None:
            row["reply"] = s.reply
        rows.append(row)
    return rows


def unparsed_rows(rows: Sequence[dict[str, Any]]) -> int:
    """Scores of a judgement record that hold no value because the judge's reply was not
    understood (a reason starting "unparsed")."""
    return sum(1 for r in rows if r.get("value") is None
               and str(r.get("reason") or "").startswith("unparsed"))


class _Runner:
    """Runs tasks of one plan: claims each key, calls, stores, and tallies the summary."""

    def __init__(self, p: Plan, summary: RunSummary, advance: Callable[[int], None],
                 say: Callable[[str], None]) -> None:
        self.plan = p
        self.session = p.session
        self.cache = p.session.cache
        self.ledger = self.cache.ledger
        self.owner = p.session.owner
        self.summary = summary
        self.advance = advance
        self.say = say
        self.started_at = now_iso()
        # tasks another live process held when we came to them: looked at again later
        self.deferred: list[tuple[str, GenerationTask | JudgeTask, list[JudgeTask]]] = []
        self._warned: set[str] = set()

    def _stopped(self, key: str, kind: str, calls: int, exc: BudgetExceeded,
                 detail: dict[str, Any]) -> None:
        """A task the budget stopped after attempts that failed: keep those attempts on record
        (the ledger has them too), else it is simply still pending."""
        if calls:
            self.cache.record_failure(
                key, kind, f"stopped after {calls} failed attempt(s): {exc}", calls, detail)

    def judged(self, label: str, rows: Sequence[dict[str, Any]]) -> None:
        """Tally a judgement's scores; warn once when the judge's unparsed share is too high
        after its first 20 judgements."""
        tally = self.summary.judge_scores.setdefault(label, [0, 0, 0])
        tally[0] += len(rows)
        tally[1] += unparsed_rows(rows)
        tally[2] += 1
        if (label not in self._warned and tally[2] >= _EARLY and tally[0]
                and tally[1] / tally[0] > UNPARSED_WARN):
            self._warned.add(label)
            msg = (f"judge {label}: {tally[1]} of its first {tally[0]} scores could not be "
                   f"parsed ({tally[1] / tally[0]:.0%}); its raw replies are in the cache and "
                   "in judgements.parquet after `steerstats export` - check the judge model and "
                   "its max_tokens before spending more")
            self.summary.warnings.append(msg)
            self.say(msg)

    async def _claim(self, key: str, task: GenerationTask | JudgeTask,
                     judges: list[JudgeTask]) -> bool | None:
        """True: ours to run; None: already done (by another process); False: deferred."""
        if not await self.ledger.claim(key, self.owner):
            self.deferred.append((key, task, judges))
            return False
        if key in self.cache:  # finished elsewhere between our look and our claim
            self.ledger.release(key, self.owner)
            return None
        return True

    async def generation(self, key: str, task: GenerationTask, request: GenerationRequest,
                         judges: list[JudgeTask]) -> None:
        claimed = await self._claim(key, task, judges)
        if claimed is None:
            await self._done_elsewhere(task, judges)
        if not claimed:
            return
        try:
            await self._generation(key, task, request, judges)
        finally:
            self.ledger.release(key, self.owner)

    async def _generation(self, key: str, task: GenerationTask, request: GenerationRequest,
                          judges: list[JudgeTask]) -> None:
        backend = self.session.model_backend(task.model)
        started = now_iso()
        CURRENT_TASK.set((key, "generation"))
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

    async def _done_elsewhere(self, task: GenerationTask | JudgeTask,
                              judges: list[JudgeTask]) -> None:
        """A task another process finished: counted, and a generation's judges go on here
        (each is claimed in turn, so whoever comes first judges)."""
        self.summary.by_peers += 1
        self.advance(1)
        if isinstance(task, JudgeTask):
            rec = self.cache.get(task.key) if task.key else None
            if rec is not None:
                self.judged(task.judge, rec.get("scores") or [])
        elif judges:
            await asyncio.gather(*(self.judgement(j) for j in judges))

    async def judgement(self, jt: JudgeTask, gen: dict[str, Any] | None = None) -> None:
        key, g = jt.key, jt.generation
        if key is None or g.key is None or g.intervention is None:
            return  # unresolved: never scheduled, counted in the summary
        if key in self.cache:  # judged by another process while we generated
            await self._done_elsewhere(jt, [])
            return
        if gen is None:
            gen = self.cache.get(g.key)
            if gen is None:
                self.summary.blocked_judgements += 1
                self.advance(1)
                return
        claimed = await self._claim(key, jt, [])
        if claimed is None:
            await self._done_elsewhere(jt, [])
        if not claimed:
            return
        try:
            await self._judgement(key, jt, gen)
        finally:
            self.ledger.release(key, self.owner)

    async def _judgement(self, key: str, jt: JudgeTask, gen: dict[str, Any]) -> None:
        g = jt.generation
        judge = self.session.judges[jt.judge]
        jb = self.session.judge_backend(jt.judge)
        item = JudgeInput(query=g.query, prompt=g.prompt, response=gen["text"],
                          generation_key=g.key, intervention=g.intervention)  # type: ignore[arg-type]
        started = now_iso()
        CURRENT_TASK.set((key, "judgement"))
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
        if usage.replies:  # kept once, in "replies", not again beside each score
            for row in rows:
                row.pop("reply", None)
        record = {
            "v": KEY_VERSION, "kind": "judgement", "key": key, "generation_key": g.key,
            "judge": jt.judge, "rater": self.session.judge_specs[jt.judge].rater_label,
            "repeat": jt.repeat, "scores": rows,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "cost_usd": usage.cost_usd if usage.cost_known else None,
            "calls": usage.calls, "latency_s": usage.latency_s,
            "judge_backend": None if jb is None else jb.identity(),
            # the raw text of every reply the judge got (what its scores were read from)
            "replies": list(usage.replies),
            "started_at": started, "finished_at": now_iso(),
            "task": {**g.meta(), "judge": jt.judge, "repeat": jt.repeat},
        }
        await self.cache.aput(key, record)
        self.summary.new_judgements += 1
        self.judged(jt.judge, rows)
        self.advance(1)

    async def settle_deferred(self) -> None:
        """Wait for the tasks other processes held: each ends with a result (theirs), a failure
        recorded there during this run, or our taking it over (their lease expired or they
        gave it up, e.g. at their budget)."""
        while self.deferred:
            await asyncio.sleep(_PEER_POLL_S)
            pending, self.deferred = self.deferred, []
            held = await self.ledger.held_by_others([k for k, _, _ in pending], self.owner)
            retry: list[Callable[[], Any]] = []
            for key, task, judges in pending:
                if key in self.cache:
                    await self._done_elsewhere(task, judges)
                elif key in held:
                    self.deferred.append((key, task, judges))
                elif self._failed_elsewhere(key):
                    if isinstance(task, GenerationTask):
                        self.summary.failed_generations += 1
                        self.summary.blocked_judgements += len(judges)
                    else:
                        self.summary.failed_judgements += 1
                    self.advance(1 + len(judges))
                elif isinstance(task, GenerationTask):
                    retry.append(functools.partial(self.generation, key, task,
                                                   task.request, judges))  # type: ignore[arg-type]
                else:
                    retry.append(functools.partial(self.judgement, task))
            if retry:
                await _run_windowed(retry, _WINDOW)

    def _failed_elsewhere(self, key: str) -> bool:
        fail = self.cache.failure(key, fresh=True)
        return fail is not None and str(fail.get("last_at") or "") >= self.started_at


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
        runner = _Runner(p, summary, advance, say)
        session.cache.ledger.hold(runner.owner)
        items: Iterable[Callable[[], Any]] = [
            *((lambda k=k, g=g: runner.generation(k, g, g.request, judges_after[k]))
              for k, g in pending_gens.items() if g.request is not None),
            *((lambda j=j: runner.judgement(j)) for j in ready_judges),
        ]
        ticker = asyncio.ensure_future(tick()) if progress and total else None
        try:
            with _fewer_gc_passes():
                await _run_windowed(items, _WINDOW)
                await runner.settle_deferred()
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


async def acollect(config: Experiment, *, limit_queries: int | None = None,
                   limit_prompts: int | None = None, progress: bool = True,
                   console: Any = None) -> RunSummary:
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
        return await run(live, progress=progress, console=console)


def collect(config: Experiment, *, limit_queries: int | None = None,
            limit_prompts: int | None = None, progress: bool = True,
            console: Any = None) -> RunSummary:
    """Plan and run ``config`` (what ``steerstats collect`` does); safe to interrupt and re-run."""
    return run_sync(lambda: acollect(config, limit_queries=limit_queries,
                                      limit_prompts=limit_prompts, progress=progress,
                                      console=console))
