"""The `steerstats` command: parses arguments and calls the library; no logic of its own.

Commands appear in ``--help`` in the order of a study: init, collect, status, export (the
collection side), import (results made elsewhere), analyze, report, power. Terminal output of
the longer ones lives in ``collect_print`` and ``analysis_print``; libraries are imported inside
each command so that ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from steerstats import __version__
from steerstats.errors import SteerstatsError

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Measure what steering a language model buys (behaviour) and costs (coherence, "
    "capability), with honest statistics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_Config = Annotated[Path, typer.Argument(help="Experiment TOML file.")]
_LimitQ = Annotated[int | None, typer.Option(
    "--limit-queries", min=1, help="Pilot: only the first N steering queries.")]
_LimitP = Annotated[int | None, typer.Option(
    "--limit-prompts", min=1, help="Pilot: only the first M prompts of each prompt set per query.")]
_Results = Annotated[str, typer.Argument(
    help="A results directory (generations/scores tables).")]


def main() -> None:
    """Console-script entry point: user errors print one line, not a traceback."""
    import sqlite3

    try:
        app()
    except sqlite3.DatabaseError as exc:  # a cache file damaged in a way not caught earlier
        typer.secho(f"error: a cache file is damaged ({exc}); run `steerstats cache check "
                    "<cache dir>` or restore it from a backup", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None
    except SteerstatsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"steerstats {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """steerstats: collect steered generations, judge them, analyse and report."""


# ----------------------------------------------------------------------------- collection


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Experiment file to write, e.g. my.toml.")],
    preset: Annotated[str, typer.Option(
        "--preset", "-p", help="Shipped preset to start from (an unknown name lists them).")
    ] = "demo",
    force: Annotated[bool, typer.Option("--force", help="Overwrite PATH if it exists.")] = False,
) -> None:
    """Write a commented experiment file from a shipped preset.

    Presets are the files in steerstats/presets/*.toml.
    """
    from steerstats.config import init_experiment

    out = init_experiment(path, preset, force=force)
    typer.echo(f"wrote {out} (preset {preset!r}); edit it, then run: "
               f"steerstats collect {out} --dry-run")


_All = Annotated[bool, typer.Option(
    "--all", help="The whole plan, not the scope (pilot limits) of the latest collect.")]


def _scope(config: Path, cfg: object, limit_queries: int | None, limit_prompts: int | None,
           all_: bool) -> tuple[int | None, int | None]:
    """The limits to show: given ones, else (unless --all) those of the latest collect."""
    from steerstats.collect.status import remembered_limits

    if limit_queries is not None or limit_prompts is not None or all_:
        return limit_queries, limit_prompts
    last = remembered_limits(cfg)  # type: ignore[arg-type]
    lq, lp = last["limit_queries"], last["limit_prompts"]
    if lq is not None or lp is not None:
        flags = " ".join(f"--{n} {v}" for n, v in (("limit-queries", lq),
                                                    ("limit-prompts", lp)) if v is not None)
        typer.echo(f"scope: the latest collect's pilot ({flags}); pass --all for the whole plan "
                   f"of {config}", err=True)
    return lq, lp


@app.command()
def collect(
    config: _Config,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Make no calls: print plan size, calls, tokens, est. cost and time.")
    ] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="Send one generation per model and one judgement per chat judge: "
        "latency, whether the judge's reply parsed, suggested concurrency and timeout.")
    ] = False,
    limit_queries: _LimitQ = None,
    limit_prompts: _LimitP = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, help="Processes collecting this experiment together (each task is "
        "claimed by one; uses more than one core).")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
    share: Annotated[str, typer.Option("--share", hidden=True)] = "",
) -> None:
    """Collect generations and judge scores into the cache.

    Safe to interrupt (Ctrl-C, even kill -9) and re-run: finished results are kept and never
    requested again, and every attempt is in the cache's ledger before it is sent, so the budget
    in the experiment file holds over the whole experiment, across runs and processes.
    """
    import subprocess
    import sys

    from steerstats import collect as col
    from steerstats.collect.printing import console, print_check, print_estimate, print_summary
    from steerstats.config import load_config

    cfg = load_config(config)
    out = console()
    if dry_run:
        print_estimate(out, col.estimate(cfg, limit_queries=limit_queries,
                                         limit_prompts=limit_prompts))
        return
    if check:
        from steerstats.collect.check import check as run_check

        rows = run_check(cfg)
        print_check(out, rows)
        if not all(r.ok and r.parsed is not False for r in rows):
            raise typer.Exit(1)
        return
    err = console(stderr=True)
    children = []
    if workers > 1:
        args = [sys.executable, "-m", "steerstats", "collect", str(config), "-q", "--worker"]
        for flag, value in (("--limit-queries", limit_queries),
                            ("--limit-prompts", limit_prompts)):
            if value is not None:
                args += [flag, str(value)]
        children = [subprocess.Popen([*args, "--share", f"{i}/{workers}"],
                                     stdout=subprocess.DEVNULL) for i in range(1, workers)]
    # Worker i of n starts i/n of the way through the plan (hidden --share i/n).
    mine = (0, workers) if workers > 1 else None
    if share:
        i, _, n = share.partition("/")
        mine = (int(i), int(n))
    try:
        summary = col.collect(cfg, limit_queries=limit_queries, limit_prompts=limit_prompts,
                              progress=not quiet, console=err, share=mine)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: finished results are saved; re-run to continue")
        raise typer.Exit(130) from None
    finally:
        codes = [c.wait() for c in children]
    if worker:
        raise typer.Exit(0 if summary.complete else 1)
    print_summary(out, summary)
    crashed = [c for c in codes if c not in (0, 1)]
    if crashed:
        err.print(f"[red]{len(crashed)} worker process(es) failed[/] (exit codes "
                  f"{', '.join(map(str, crashed))}); their tasks were taken over or are pending")
    if not summary.complete:
        raise typer.Exit(1)


@app.command()
def status(
    config: _Config,
    limit_queries: _LimitQ = None,
    limit_prompts: _LimitP = None,
    all_: _All = False,
    errors: Annotated[int, typer.Option("--errors", help="How many recorded errors to show.")] = 5,
) -> None:
    """Done, failed and pending tasks and spend per model x method.

    Counted per stage (generate, judge) over the scope of the latest collect (a pilot's limits;
    --all for the whole plan); attempts, failures, retries, timeouts and spend come from the
    ledger. The first --errors recorded failures are shown.
    """
    from steerstats import collect as col
    from steerstats.collect.printing import console, print_status
    from steerstats.config import load_config

    cfg = load_config(config)
    lq, lp = _scope(config, cfg, limit_queries, limit_prompts, all_)
    rep = col.status(cfg, limit_queries=lq, limit_prompts=lp)
    print_status(console(), rep, f"status of {config}", errors)


@app.command()
def export(
    config: _Config,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results directory to write.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet (default) or csv.")] = "parquet",
    limit_queries: _LimitQ = None,
    limit_prompts: _LimitP = None,
    all_: _All = False,
) -> None:
    """Write the tidy tables and their manifest to a results directory.

    Also copies the experiment file. generations, scores and judgements (the judges' raw
    replies) follow steerstats.schema; failed and pending tasks are rows too (error / reason
    set), so nothing silently disappears. The scope is the latest collect's (--all: the whole
    plan).
    """
    from steerstats.collect.export import export as do_export
    from steerstats.config import load_config

    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("must be parquet or csv", param_hint="--format")
    cfg = load_config(config)
    lq, lp = _scope(config, cfg, limit_queries, limit_prompts, all_)
    path = do_export(cfg, out, fmt,  # type: ignore[arg-type]
                     limit_queries=lq, limit_prompts=lp)
    typer.echo(f"wrote {path}/ (generations, scores, judgements, manifest.json, experiment.toml)")


cache_app = typer.Typer(help="Look after a cache directory.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("check")
def cache_check(
    target: Annotated[Path, typer.Argument(help="A cache directory or an experiment file.")],
    rebuild_indexes: Annotated[bool, typer.Option(
        "--rebuild-indexes", help="Rebuild the SQLite indexes of readable files (safe).")
    ] = False,
) -> None:
    """Integrity check of a cache: each file ok or damaged, what it holds, index rebuild."""
    from steerstats.collect.maintenance import check_cache

    directory = target
    if target.is_file():
        from steerstats.config import load_config

        directory = load_config(target).cache_path
    rep = check_cache(directory, rebuild=rebuild_indexes)
    for name, state in rep.files.items():
        typer.echo(f"{directory / name}: {state}")
    if rep.counts:
        typer.echo("holds: " + ", ".join(f"{n} {k}" for k, n in sorted(rep.counts.items())))
    if rep.rebuilt:
        typer.echo("rebuilt the indexes of " + ", ".join(rep.rebuilt))
    if not rep.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- analysis


@app.command("import")
def import_(
    out: Annotated[str, typer.Option("--out", help="Results directory to write.")],
    table: Annotated[str | None, typer.Argument(
        help="A CSV/TSV/Parquet file of generations (and scores) made elsewhere.")] = None,
    map_: Annotated[list[str] | None, typer.Option(
        "--map", help="TIDY=SOURCE column mapping, e.g. --map response=output --map "
        "method=system (repeatable); columns already named as in the tidy tables need none.")
    ] = None,
    default: Annotated[list[str] | None, typer.Option(
        "--default", help="COLUMN=VALUE for a column the table lacks, e.g. --default "
        "model=my-model (repeatable).")] = None,
    score: Annotated[list[str] | None, typer.Option(
        "--score", help="A wide score column to melt into the scores table (metric = its "
        "name), e.g. --score behavior --score coherence (repeatable).")] = None,
    rater: Annotated[str, typer.Option(
        "--rater", help="Rater label where there is no rater column (TABLE) or the seed "
        "study's judge.")] = "imported",
    seed_open: Annotated[str | None, typer.Option(
        "--seed-open", help="The seed study's open-prompt results CSV.")] = None,
    seed_mmlu: Annotated[str | None, typer.Option(
        "--seed-mmlu", help="The seed study's MMLU results CSV.")] = None,
    design: Annotated[str | None, typer.Option(
        "--design", help="The seed study's design/ folder (queries, prompts, answer keys); "
        "default: the copies shipped with steerstats.")] = None,
    model: Annotated[str, typer.Option(
        "--model", help="Model label for the seed study.")] = "Llama-3.1-8B",
    extra_query: Annotated[list[str] | None, typer.Option(
        "--extra-query", help="Import this seed-study query although the design lacks it.")
    ] = None,
    keep_unmatched: Annotated[bool, typer.Option(
        "--keep-unmatched", help="Keep rows that match no shipped query/prompt, under ids "
        "derived from their text (they are listed in unmatched.csv either way).")] = False,
    keep_duplicates: Annotated[bool, typer.Option(
        "--keep-duplicates", help="Keep exact duplicate rows, each copy as a separate "
        "response (default: report them in flagged.csv and drop them).")] = False,
    range_: Annotated[list[str] | None, typer.Option(
        "--range", help="METRIC=LOW,HIGH: the metric's valid range, e.g. --range "
        "toxicity=0,1 (repeatable); scores outside it become NaN with a reason. behavior and "
        "coherence are 1-5 and accuracy 0-1 unless given.")] = None,
    as_labelled: Annotated[bool, typer.Option(
        "--as-labelled", help="Seed study: keep the study's method label on rows whose own "
        "system prompt holds their query's steering instruction (default: re-label them, "
        "e.g. Auto Steer -> autosteer+prompt). Either way they are listed in flagged.csv.")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Turn results made elsewhere into a results directory.

    Either TABLE with a column mapping, or the seed study's CSVs (--seed-open / --seed-mmlu);
    analyze and report read the directory it writes. Rows that cannot be placed are written to
    unmatched.csv, and rows or scores not taken as they stood (duplicates, unusable scores,
    contaminated conditions) to flagged.csv; all are counted, never dropped silently.
    """
    from steerstats.importers import describe_summary, import_seed_study, import_table

    if (table is None) == (seed_open is None and seed_mmlu is None):
        raise typer.BadParameter("give either TABLE or --seed-open/--seed-mmlu (not both)")
    if table is not None:
        result = import_table(table, _pairs(map_, "--map"), defaults=_pairs(default, "--default"),
                              score_columns=score or None, rater=rater,
                              scale=_ranges(range_), keep_duplicates=keep_duplicates)
    else:
        result = import_seed_study(seed_open, seed_mmlu, model=model,
                                   rater="gpt-4o-mini" if rater == "imported" else rater,
                                   design_dir=design, extra_queries=extra_query or [],
                                   keep_unmatched=keep_unmatched, as_labelled=as_labelled,
                                   keep_duplicates=keep_duplicates)
    path = result.write(out, fmt=fmt)
    typer.echo(f"imported {len(result.generations)} responses and {len(result.scores)} scores "
               f"into {path}; {result.n_unmatched} source rows could not be placed"
               + (f" (see {path / 'unmatched.csv'})" if result.n_unmatched else ""))
    if "summary" in result.source:
        typer.echo(describe_summary(result.source["summary"]))
    flags = result.flag_counts()
    if flags:
        typer.echo("flagged: " + ", ".join(f"{n} {kind}" for kind, n in sorted(flags.items()))
                   + f" (see {path / 'flagged.csv'})")
    for note in result.notes.itertuples():
        if note.kind == "contaminated":
            typer.echo(f"contaminated: {note.detail}")


def _ranges(items: list[str] | None) -> dict[str, tuple[float, float]]:
    """``--range METRIC=LOW,HIGH`` options as a dict; a malformed one is a one-line error."""
    from steerstats.errors import DataError

    out: dict[str, tuple[float, float]] = {}
    for metric, bounds in _pairs(items, "--range").items():
        try:
            low, high = (float(b) for b in bounds.split(","))
        except ValueError:
            raise DataError(f"--range {metric}={bounds}: expected METRIC=LOW,HIGH with two "
                            "numbers, e.g. --range behavior=1,5") from None
        out[metric] = (low, high)
    return out


@app.command()
def analyze(
    results: _Results,
    out: Annotated[str | None, typer.Option(
        "--out", help="Where to write the tables (default: RESULTS/analysis).")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap replicates.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstraps.")] = 0,
) -> None:
    """Run every statistic that applies and write each table.

    Tables are written as CSV and JSON; the main ones are printed.
    """
    from steerstats.analysis.analyze import analyze_results
    from steerstats.analysis.printing import print_tables

    target = Path(out) if out is not None else Path(results) / "analysis"
    tables = analyze_results(results, out=target, n_boot=n_boot, seed=seed)
    print_tables(tables)
    typer.echo(f"wrote {len(tables)} tables to {target}")


@app.command()
def summary(results: _Results) -> None:
    """Each metric's mean and n per model x method x strength (no inference: see analyze)."""
    import pandas as pd

    from steerstats.analysis.summary import summary_table
    from steerstats.results import read_results

    table = summary_table(read_results(results).scores)
    with pd.option_context("display.max_rows", None, "display.width", 120):
        typer.echo(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


@app.command()
def report(
    results: _Results,
    out: Annotated[str | None, typer.Option(
        "--out", help="Output folder (default: RESULTS/report).")] = None,
    renderer: Annotated[str, typer.Option(
        "--renderer",
        help="auto: Quarto when installed, else built in; quarto; builtin (one HTML file).",
    )] = "auto",
) -> None:
    """Render the report of a results directory and print its path."""
    from steerstats.errors import pip_dependency_error

    if renderer not in ("auto", "quarto", "builtin"):
        raise typer.BadParameter("choose auto, quarto or builtin", param_hint="--renderer")
    try:
        from steerstats.reporting import write_report
    except ImportError as exc:
        raise pip_dependency_error("steerstats report", [str(exc.name)], "report") from None
    typer.echo(str(write_report(results, out, renderer=renderer)))  # type: ignore[arg-type]


@app.command("power")
def power_command(
    queries: Annotated[list[int], typer.Option(
        "--queries", help="Queries; repeat for several.")],
    prompts: Annotated[list[int], typer.Option(
        "--prompts", help="Prompts per query; repeatable.")],
    var_query: Annotated[float | None, typer.Option(
        "--var-query", help="Query variance.")] = None,
    var_prompt: Annotated[float | None, typer.Option(
        "--var-prompt", help="Prompt variance.")] = None,
    var_query_method: Annotated[float | None, typer.Option(
        "--var-query-method", help="Query x method variance.")] = None,
    var_residual: Annotated[float | None, typer.Option(
        "--var-residual", help="Residual (per-response) variance.")] = None,
    from_csv: Annotated[str | None, typer.Option(
        "--from", help="variance_components CSV (columns group, variance), e.g. written by "
        "`steerstats analyze`; replaces the --var-* options.")] = None,
    repeats: Annotated[list[int] | None, typer.Option(
        "--repeats", help="Responses per query x prompt x method; repeatable (default 1).")
    ] = None,
    effect: Annotated[list[float] | None, typer.Option(
        "--effect", help="True method difference; repeatable.")] = None,
    mde_: Annotated[bool, typer.Option(
        "--mde", help="Report the minimum detectable effect at --power instead of the power "
        "at --effect.")] = False,
    target_power: Annotated[float, typer.Option(
        "--power", help="Target power for --mde.")] = 0.8,
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided significance level.")] = 0.05,
    n_sims: Annotated[int, typer.Option(
        "--n-sims", help="Simulated studies per design.")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulation.")] = 0,
) -> None:
    """Power (or minimum detectable effect) of a paired method contrast."""
    from steerstats.stats.power import mde, power

    components = _variance_components(from_csv, {
        "query": var_query, "prompt": var_prompt, "query:method": var_query_method,
        "residual": var_residual})
    if mde_ == bool(effect):
        raise typer.BadParameter("give --effect (power of that effect) or --mde, one of them",
                                 param_hint="--effect/--mde")
    try:
        if mde_:
            table = mde(components, queries, prompts, repeats or [1], power=target_power,
                        alpha=alpha, n_sims=n_sims, seed=seed)
        else:
            table = power(components, queries, prompts, repeats or [1], effect or [],
                          alpha=alpha, n_sims=n_sims, seed=seed)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


# ----------------------------------------------------------------------------- option parsing


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """Parse repeated ``NAME=VALUE`` options into a dict, naming the option on a bad item."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        out[name.strip()] = value.strip()
    return out


def _variance_components(
    from_csv: str | None, given: dict[str, float | None]
) -> pd.DataFrame | dict[str, float]:
    """The variance components of ``power``: a CSV (--from) or all four --var-* options."""
    import pandas as pd

    if from_csv is not None:
        if any(v is not None for v in given.values()):
            raise typer.BadParameter("give either --from or the --var-* options, not both",
                                     param_hint="--from")
        try:
            return pd.read_csv(from_csv)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"cannot read {from_csv}: {exc}",
                                     param_hint="--from") from None
    missing = [f"--var-{k.replace(':', '-')}" for k, v in given.items() if v is None]
    if missing:
        raise typer.BadParameter(f"missing {', '.join(missing)} (or pass --from CSV)",
                                 param_hint="--var-*")
    return {k: float(v) for k, v in given.items() if v is not None}
