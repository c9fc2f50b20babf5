"""Print collection plans, run summaries and status in the terminal (rich tables)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from steerstats.collect import DryRunReport, RunSummary, StatusReport
    from steerstats.collect.check import CheckRow

__all__ = ["console", "print_check", "print_estimate", "print_status", "print_summary"]

_LEFT = ("model", "method", "stage")


def console(stderr: bool = False) -> Console:
    """A console as wide as the terminal, or 140 columns when output is not a terminal."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=140)


def _usd(x: float | None) -> str:
    return "unknown" if x is None or (isinstance(x, float) and math.isnan(x)) else f"${x:,.4f}"


def _table(title: str, columns: tuple[str, ...]) -> Table:
    """A table whose model, method and stage columns are left-aligned, the rest right."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="left" if col in _LEFT else "right")
    return t


def print_estimate(out: Console, rep: DryRunReport) -> None:
    """The dry run's plan: tasks, cached results, calls, tokens and cost per model x method."""
    t = _table(f"dry run: {rep.generations} generation tasks, {rep.judgements} judge tasks",
               ("model", "method", "stage", "tasks", "cached", "to run", "calls",
                "in tokens~", "out tokens<=", "cost~"))
    for r in [*rep.rows, rep.totals()]:
        t.add_row(r.model, r.method, r.stage, str(r.tasks), str(r.cached), str(r.to_run),
                  str(r.calls), f"{r.input_tokens:,}", f"{r.output_tokens:,}", _usd(r.cost_usd))
    out.print(t)
    out.print("Input tokens are estimated at ~4 characters per token; output is counted at "
              "max_tokens (an upper bound); retries are not included. \"resolve\" rows: the "
              "methods' own calls before any generation (Auto Steer, feature searches, a "
              "picker's replies), once per query x model, none when already cached.",
              markup=False)
    if rep.resolve_max_calls > sum(r.calls for r in rep.rows if r.stage == "resolve"):
        out.print(f"resolve calls: up to {rep.resolve_max_calls} if every picker answer needs "
                  "its retries", markup=False)
    groups = ", ".join(f"{k} {v}" for k, v in rep.concurrency.items())
    if rep.wall_s is not None:
        resolve = (f" (resolving methods ~{_duration(rep.resolve_wall_s)}, then the tasks)"
                   if rep.resolve_wall_s else "")
        out.print(f"wall time ~{_duration(rep.wall_s)}{resolve} at concurrency {groups}; "
                  "retries not included", markup=False)
        if rep.assumed:
            lat = ", ".join(f"{k} ~{v:g} s" for k, v in rep.assumed.items())
            out.print(f"per-call latencies assumed: {lat} (`steerstats collect --check` measures "
                      "the chat latency of your backends)", markup=False)
        if rep.measured:
            out.print(f"latency measured by `steerstats collect --check`: "
                      f"{', '.join(rep.measured)}", markup=False)
    elif rep.unmeasured:
        out.print(f"wall time: unknown until `steerstats collect --check` measures "
                  f"{', '.join(rep.unmeasured)}", markup=False)
    if rep.unestimated_units:
        out.print(f"{rep.unestimated_units} method resolution(s) still need backend calls that "
                  "their method does not estimate: not counted above.", markup=False)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def print_check(out: Console, rows: list[CheckRow]) -> None:
    """What `collect --check` found, with suggested concurrency and timeout per backend."""
    t = Table(title="collect --check: one call per model and chat judge")
    for col in ("stage", "backend", "latency", "parsed", "concurrency now -> suggested",
                "timeout_s suggested"):
        t.add_column(col, justify="left" if col in ("stage", "backend") else "right")
    for r in rows:
        t.add_row(escape(r.stage), escape(r.backend),
                  "failed" if r.latency_s is None else f"{r.latency_s:.2f}s",
                  {None: "-", True: "yes", False: "NO"}[r.parsed],
                  f"{r.concurrency} -> {r.suggested_concurrency}",
                  str(r.suggested_timeout_s or "-"))
    out.print(t)
    for r in rows:
        if not r.ok or r.parsed is False:
            out.print(f"{r.stage}: {r.note}", markup=False, highlight=False)
    out.print("Suggestions: a local server usually answers one request at a time, so under load "
              "a reply takes about concurrency x latency; set [retries] timeout_s and the "
              "backend's options.timeout_s above that, and [concurrency] to the suggestion. "
              "The dry run now estimates wall time from these latencies.", markup=False)


def print_summary(out: Console, s: RunSummary) -> None:
    """What a collect run did: new, cached and failed tasks, calls, spend, what is left."""
    t = Table(title="collect summary")
    for col in ("", "total", "cached before", "new", "failed", "not run (budget)", "blocked"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("generations", str(s.generations), str(s.cached_generations),
              str(s.new_generations), str(s.failed_generations), "", "")
    t.add_row("judgements", str(s.judgements), str(s.cached_judgements), str(s.new_judgements),
              str(s.failed_judgements), "", str(s.blocked_judgements))
    out.print(t)
    rate = s.calls / s.elapsed_s if s.elapsed_s > 0 else 0.0
    out.print(f"calls {s.calls} (retries {s.retries}), {rate:.1f} calls/s over {s.elapsed_s:.1f}s; "
              f"this run {_usd(s.cost_usd)}, experiment total {_usd(s.spent_usd)}")
    if s.timeouts:
        out.print(f"[yellow]{s.timeouts} attempt(s) timed out[/] (counted in `steerstats "
                  "status`); on a slow server raise retries.timeout_s / options.timeout_s or "
                  "lower the concurrency")
    if s.by_peers:
        out.print(f"{s.by_peers} task(s) were finished by another process on this cache")
    if s.budget_pending:
        out.print(f"[yellow]{s.budget_pending} task(s) not run[/]: {escape(s.budget_note)}")
    for w in s.warnings:
        out.print(f"[bold red]warning[/]: {escape(w)}")
    if s.unresolved:
        out.print(f"[yellow]{s.unresolved} task(s) wait on a method resolution that failed[/] "
                  "(see `steerstats status`)")
    if s.failed_generations or s.failed_judgements:
        out.print("[yellow]some tasks failed[/]: re-run to retry them; "
                  "`steerstats status` shows the errors")
    elif s.complete:
        bad, n = s.unparsed
        if bad:
            out.print(f"[yellow]complete, but not clean[/]: every task has a result; {bad} of "
                      f"{n} scores unparsed ({bad / n:.0%})")
        else:
            out.print("[green]complete[/]: every task has a result")


def print_status(out: Console, rep: StatusReport, title: str, errors: int) -> None:
    """Done / failed / pending per model x method x stage, spend, and the first ``errors``
    recorded failures."""
    t = _table(title, ("model", "method", "stage", "done", "failed", "pending", "spend"))
    for r in rep.rows:
        t.add_row(r.model, r.method, r.stage, str(r.done), str(r.failed), str(r.pending),
                  _usd(r.spend_usd))
    out.print(t)
    out.print(f"spent {_usd(rep.spent_usd)} over {rep.calls} calls on these tasks (results, "
              "failed attempts and method resolutions)")
    lg = rep.ledger
    out.print(f"ledger (the whole experiment, every process): {lg.calls} attempts, "
              f"{lg.failed} failed, {lg.retries} retries, {lg.timeouts} timeouts, "
              f"{lg.unsettled} in flight or lost to a kill; spent {_usd(lg.usd)}", markup=False)
    for f in rep.failures[:errors]:
        out.print(f"[red]{escape(str(f.get('kind')))}[/] {escape(str(f.get('detail')))}: "
                  f"{escape(str(f.get('error')))}")
    if len(rep.failures) > errors:
        out.print(f"... and {len(rep.failures) - errors} more failure(s)")
