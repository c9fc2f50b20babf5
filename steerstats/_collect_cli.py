"""CLI commands of the collection side: init, collect, status, export.

Registered on :data:`steerstats.cli.app`; each parses options, calls the library and prints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from steerstats.cli import app

if TYPE_CHECKING:
    from steerstats.collect import DryRunReport, RunSummary

_Config = Annotated[Path, typer.Argument(help="Experiment TOML file.")]
_LimitQ = Annotated[int | None, typer.Option(
    "--limit-queries", min=1, help="Pilot: only the first N steering queries.")]
_LimitP = Annotated[int | None, typer.Option(
    "--limit-prompts", min=1, help="Pilot: only the first M prompts of each prompt set per query.")]


def _console(stderr: bool = False) -> Console:
    """A console as wide as the terminal, or 140 columns when output is not a terminal."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=140)


def _usd(x: float | None) -> str:
    return "unknown" if x is None or (isinstance(x, float) and math.isnan(x)) else f"${x:,.4f}"


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Experiment file to write, e.g. my.toml.")],
    preset: Annotated[str, typer.Option(
        "--preset", "-p", help="Shipped preset to start from (an unknown name lists them).")
    ] = "demo",
    force: Annotated[bool, typer.Option("--force", help="Overwrite PATH if it exists.")] = False,
) -> None:
    """Write a commented experiment file from a shipped preset (steerstats/presets/*.toml)."""
    from steerstats.config import init_experiment

    out = init_experiment(path, preset, force=force)
    typer.echo(f"wrote {out} (preset {preset!r}); edit it, then run: "
               f"steerstats collect {out} --dry-run")


@app.command()
def collect(
    config: _Config,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Make no calls: print plan size, calls, tokens and est. cost.")
    ] = False,
    limit_queries: _LimitQ = None,
    limit_prompts: _LimitP = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Collect generations and judge scores into the cache.

    Safe to interrupt (Ctrl-C, even kill -9) and re-run: finished results are kept and never
    requested again. The budget in the experiment file covers the whole experiment.
    """
    from steerstats import collect as col
    from steerstats.config import load_config

    cfg = load_config(config)
    out = _console()
    if dry_run:
        _print_estimate(out, col.estimate(cfg, limit_queries=limit_queries,
                                          limit_prompts=limit_prompts))
        return
    err = _console(stderr=True)
    try:
        summary = col.collect(cfg, limit_queries=limit_queries, limit_prompts=limit_prompts,
                              progress=not quiet, console=err)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: finished results are saved; re-run to continue")
        raise typer.Exit(130) from None
    _print_summary(out, summary)
    if not summary.complete:
        raise typer.Exit(1)


def _print_estimate(out: Console, rep: DryRunReport) -> None:
    t = Table(title=f"dry run: {rep.generations} generation tasks, {rep.judgements} judge tasks")
    for col in ("model", "method", "stage", "tasks", "cached", "to run", "calls",
                "in tokens~", "out tokens<=", "cost~"):
        t.add_column(col, justify="right" if col not in ("model", "method", "stage") else "left")
    for r in [*rep.rows, rep.totals()]:
        t.add_row(r.model, r.method, r.stage, str(r.tasks), str(r.cached), str(r.to_run),
                  str(r.calls), f"{r.input_tokens:,}", f"{r.output_tokens:,}", _usd(r.cost_usd))
    out.print(t)
    out.print("Input tokens are estimated at ~4 characters per token; output is counted at "
              "max_tokens (an upper bound); retries are not included.")
    if rep.unresolved_units:
        out.print(f"{rep.unresolved_units} method resolution(s) still need backend calls; their "
                  "tasks are counted but their resolution calls are not.")


def _print_summary(out: Console, s: RunSummary) -> None:
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
    if s.budget_pending:
        out.print(f"[yellow]{s.budget_pending} task(s) not run[/]: {s.budget_note}")
    if s.unresolved:
        out.print(f"[yellow]{s.unresolved} task(s) wait on a method resolution that failed[/] "
                  "(see `steerstats status`)")
    if s.failed_generations or s.failed_judgements:
        out.print("[yellow]some tasks failed[/]: re-run to retry them; "
                  "`steerstats status` shows the errors")
    elif s.complete:
        out.print("[green]complete[/]: every task has a result")


@app.command()
def status(
    config: _Config,
    limit_queries: _LimitQ = None,
    limit_prompts: _LimitP = None,
    errors: Annotated[int, typer.Option("--errors", help="How many recorded errors to show.")] = 5,
) -> None:
    """Done / failed / pending per model x method x stage (generate or judge), and spend."""
    from steerstats import collect as col
    from steerstats.config import load_config

    rep = col.status(load_config(config), limit_queries=limit_queries, limit_prompts=limit_prompts)
    out = _console()
    t = Table(title=f"status of {config}")
    for c in ("model", "method", "stage", "done", "failed", "pending", "spend"):
        t.add_column(c, justify="left" if c in ("model", "method", "stage") else "right")
    for r in rep.rows:
        t.add_row(r.model, r.method, r.stage, str(r.done), str(r.failed), str(r.pending),
                  _usd(r.spend_usd))
    out.print(t)
    out.print(f"spent {_usd(rep.spent_usd)} over {rep.calls} calls (results, failed attempts "
              "and method resolutions)")
    for f in rep.failures[:errors]:
        out.print(f"[red]{f.get('kind')}[/] {f.get('detail')}: {f.get('error')}")
    if len(rep.failures) > errors:
        out.print(f"... and {len(rep.failures) - errors} more failure(s)")


@app.command()
def export(
    config: _Config,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results directory to write.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet (default) or csv.")] = "parquet",
    limit_queries: _LimitQ = None,
    limit_prompts: _LimitP = None,
) -> None:
    """Write the tidy tables, manifest.json and the experiment file to a results directory.

    generations and scores follow steerstats.schema; failed and pending tasks are rows too
    (error / reason set), so nothing silently disappears.
    """
    from steerstats.config import load_config
    from steerstats.tidy import export as do_export

    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("must be parquet or csv", param_hint="--format")
    path = do_export(load_config(config), out, fmt,  # type: ignore[arg-type]
                     limit_queries=limit_queries, limit_prompts=limit_prompts)
    typer.echo(f"wrote {path}/ (generations, scores, manifest.json, experiment.toml)")
