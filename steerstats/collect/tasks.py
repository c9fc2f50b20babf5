"""Running single tasks of a plan: claim the key in the ledger, call, store the record, tally
the run's summary. Tasks another process holds are deferred and looked at again until they have
a result, failed there during this run, or their owner's lease expired (then taken over).
Judges whose replies cannot be parsed are warned about early (after 20 judgements)."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from steerstats.backends.base import GenerationRequest, GenerationResult
from steerstats.collect.cache import now_iso
from steerstats.collect.metering import CURRENT_TASK, track_usage
from steerstats.collect.plan import GenerationTask, JudgeTask, Plan
from steerstats.errors import BudgetExceeded, SteerstatsError
from steerstats.judges.base import JudgeInput, Score
from steerstats.keys import KEY_VERSION

__all__ = ["UNPARSED_WARN", "WINDOW", "RunSummary", "TaskRunner", "run_windowed",
           "unparsed_rows"]

# Most tasks alive at once (their calls are bounded by the backends' semaphores; this bounds
# memory); a run uses fewer, sized to its backends' slots (run.claim_window).
WINDOW = 1024
# Seconds between looks at tasks another process holds.
_PEER_POLL_S = 0.25
# A judge whose unparsed share exceeds this is warned about (early: after _EARLY judgements).
UNPARSED_WARN = 0.2
_EARLY = 20


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


class TaskRunner:
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
        if key in self.cache:  # done by another process since planning: no claim needed
            await self._done_elsewhere(task, judges)
            return
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

    async def settle_deferred(self, window: int = WINDOW) -> None:
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
                await run_windowed(retry, window)

    def _failed_elsewhere(self, key: str) -> bool:
        fail = self.cache.failure(key, fresh=True)
        return fail is not None and str(fail.get("last_at") or "") >= self.started_at



async def run_windowed(items: Iterable[Callable[[], Any]], window: int) -> None:
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
