"""``steerstats collect --check``: one generation per model and one judgement per chat judge,
to learn a server's latency and whether the judge's replies parse before paying for a run.

Each call is a single attempt (no retries) through the metered backends, so it is counted in
the ledger and the budget. The latency is remembered in the ledger per backend identity; the
dry run then estimates wall time from it. Suggestions are rules of thumb: a server on this
machine usually works on one request at a time, so a reply under load takes about
concurrency x the single latency, and the timeout must allow for that.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

from steerstats.collect.plan import build_plan
from steerstats.collect.session import Session, run_sync
from steerstats.config import Experiment
from steerstats.judges.base import JudgeInput
from steerstats.keys import canonical_json

__all__ = ["CheckRow", "check", "latency_key", "suggest"]

_LOCAL = ("://127.0.0.1", "://localhost", "://[::1]", "://0.0.0.0")


@dataclass
class CheckRow:
    """One checked call: what, on which backend, how long, whether it worked and parsed."""

    stage: str  # "generate <model>" or "judge <label>"
    backend: str
    latency_s: float | None
    ok: bool
    parsed: bool | None  # judges: every score readable; None for generations
    note: str
    concurrency: int
    suggested_concurrency: int
    suggested_timeout_s: int


def latency_key(identity: dict[str, Any]) -> str:
    """The ledger note holding the latency measured for a backend identity."""
    return "latency:" + canonical_json(identity)


def suggest(latency_s: float, concurrency: int, local: bool) -> tuple[int, int]:
    """(concurrency, timeout_s) for a backend with single-request ``latency_s``."""
    if local:
        conc = concurrency if latency_s < 2 else max(1, min(concurrency, 4))
        return conc, int(math.ceil(max(30.0, 3 * latency_s * conc)))
    return concurrency, int(math.ceil(max(30.0, 5 * latency_s)))


def check(config: Experiment) -> list[CheckRow]:
    """Run the check (makes real calls: one per model and per chat judge)."""
    return run_sync(lambda: _check(config))


async def _check(config: Experiment) -> list[CheckRow]:
    rows: list[CheckRow] = []
    async with Session(config) as session:
        meter = session.meter
        meter.retry = replace(meter.retry, max_attempts=1)
        p = await build_plan(config, session, 1, 1)
        texts: dict[str, str] = {}
        for m in config.models:
            g = next((g for g in p.generations if g.model == m.name and g.request is not None),
                     None)
            backend = session.model_backend(m.name)
            if g is None or g.request is None:
                rows.append(_row(session, backend, f"generate {m.name}", None, False, None,
                                 "no resolved task to send (method not resolved)"))
                continue
            t0 = time.perf_counter()
            try:
                res = await backend.generate(g.request)
            except Exception as exc:  # reported, not raised: the point is to see it
                rows.append(_row(session, backend, f"generate {m.name}", None, False, None,
                                 f"{type(exc).__name__}: {exc}"))
                continue
            latency = time.perf_counter() - t0
            texts[m.name] = res.text
            rows.append(_row(session, backend, f"generate {m.name}", latency, True, None,
                             f"{len(res.text)} characters, finish {res.finish_reason}"))
        for js in config.judges:
            jb = session.judge_backend(js.label)
            if jb is None:
                continue
            j = next((j for j in p.judgements if j.judge == js.label
                      and j.generation.intervention is not None), None)
            if j is None:
                rows.append(_row(session, jb, f"judge {js.label}", None, False, None,
                                 "no generation it applies to in the first query/prompt"))
                continue
            g = j.generation
            item = JudgeInput(query=g.query, prompt=g.prompt,
                              response=texts.get(g.model, "A short test reply."),
                              generation_key=g.key or "", intervention=g.intervention)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            try:
                scores = await session.judges[js.label].score(item, 0, jb)
            except Exception as exc:
                rows.append(_row(session, jb, f"judge {js.label}", None, False, None,
                                 f"{type(exc).__name__}: {exc}"))
                continue
            latency = time.perf_counter() - t0
            parsed = all(math.isfinite(float(s.value)) for s in scores)
            reply = next((s.reply for s in scores if s.reply), "") or ""
            note = ("scores read" if parsed else
                    "; ".join(str(s.reason) for s in scores if s.reason)
                    + (f"; reply began {reply[:120]!r}" if reply else ""))
            rows.append(_row(session, jb, f"judge {js.label}", latency, True, parsed, note))
    return rows


def _row(session: Session, backend: Any, stage: str, latency: float | None, ok: bool,
         parsed: bool | None, note: str) -> CheckRow:
    ident = backend.identity()
    conc = session.meter.limit_for(backend.inner)
    local = any(marker in canonical_json(ident) for marker in _LOCAL)
    sc, st = suggest(latency, conc, local) if latency is not None else (conc, 0)
    if latency is not None:
        session.cache.ledger.set_meta(latency_key(ident), {"latency_s": latency,
                                                           "at": time.time()})
    return CheckRow(stage, f"{backend.name}/{backend.model}", latency, ok, parsed, note, conc,
                    sc, st)
