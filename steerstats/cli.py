"""The `steerstats` command: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import typer

from steerstats import __version__
from steerstats.errors import SteerstatsError

app = typer.Typer(
    help="Measure what steering a language model buys (behaviour) and costs (coherence, "
    "capability), with honest statistics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"steerstats {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """steerstats: collect steered generations, judge them, analyse and report."""


def main() -> None:
    """Console-script entry point: user errors print one line, not a traceback."""
    try:
        app()
    except SteerstatsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


@app.command()
def report(
    results: str = typer.Argument(..., help="A results directory (generations/scores tables)."),
    out: str | None = typer.Option(None, "--out", help="Output folder (default: RESULTS/report)."),
    renderer: str = typer.Option(
        "auto", "--renderer",
        help="auto: Quarto when installed, else built in; quarto; builtin (one HTML file).",
    ),
) -> None:
    """Render the report of a results directory and print the HTML file's path."""
    from steerstats.errors import pip_dependency_error

    if renderer not in ("auto", "quarto", "builtin"):
        raise typer.BadParameter("choose auto, quarto or builtin", param_hint="--renderer")
    try:
        from steerstats.reporting import write_report
    except ImportError as exc:
        raise pip_dependency_error("steerstats report", [str(exc.name)], "report") from None
    typer.echo(str(write_report(results, out, renderer=renderer)))  # type: ignore[arg-type]


@app.command()
def analyze(
    results: str = typer.Argument(..., help="A results directory (generations/scores tables)."),
    out: str | None = typer.Option(None, "--out",
                                   help="Where to write the tables (default: RESULTS/analysis)."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap replicates."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstraps."),
) -> None:
    """Run every statistic that applies, write each table (CSV + JSON), print the main ones."""
    from pathlib import Path

    from steerstats.analyze import analyze_results
    from steerstats.analysis_print import print_tables

    target = Path(out) if out is not None else Path(results) / "analysis"
    tables = analyze_results(results, out=target, n_boot=n_boot, seed=seed)
    print_tables(tables)
    typer.echo(f"wrote {len(tables)} tables to {target}")


def _pairs(items: list[str], option: str) -> dict[str, str]:
    """Parse repeated ``NAME=VALUE`` options into a dict, naming the option on a bad item."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        out[name.strip()] = value.strip()
    return out


@app.command("import")
def import_(
    table: str | None = typer.Argument(
        None, help="A CSV/TSV/Parquet file of generations (and scores) made elsewhere."),
    out: str = typer.Option(..., "--out", help="Results directory to write."),
    map_: list[str] = typer.Option(
        [], "--map", help="TIDY=SOURCE column mapping, e.g. --map response=output "
        "--map method=system (repeatable); columns already named as in the tidy tables need none."),
    default: list[str] = typer.Option(
        [], "--default", help="COLUMN=VALUE for a column the table lacks, e.g. --default "
        "model=my-model (repeatable)."),
    score: list[str] = typer.Option(
        [], "--score", help="A wide score column to melt into the scores table (metric = its "
        "name), e.g. --score behavior --score coherence (repeatable)."),
    rater: str = typer.Option("imported", "--rater", help="Rater label where there is no rater "
                              "column (TABLE) or the seed study's judge."),
    seed_open: str | None = typer.Option(
        None, "--seed-open", help="The seed study's open-prompt results CSV."),
    seed_mmlu: str | None = typer.Option(
        None, "--seed-mmlu", help="The seed study's MMLU results CSV."),
    design: str | None = typer.Option(
        None, "--design", help="The seed study's design/ folder (queries, prompts, answer keys); "
        "default: the copies shipped with steerstats."),
    model: str = typer.Option("Llama-3.1-8B", "--model", help="Model label for the seed study."),
    extra_query: list[str] = typer.Option(
        [], "--extra-query", help="Import this seed-study query although the design lacks it."),
    keep_unmatched: bool = typer.Option(
        False, "--keep-unmatched", help="Keep rows that match no shipped query/prompt, under ids "
        "derived from their text (they are listed in unmatched.csv either way)."),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
) -> None:
    """Turn results made elsewhere into a results directory that analyze and report read.

    Either TABLE with a column mapping, or the seed study's CSVs (--seed-open / --seed-mmlu).
    Rows that cannot be placed are written to unmatched.csv and counted, never dropped silently.
    """
    from steerstats.importers import import_seed_study, import_table

    if (table is None) == (seed_open is None and seed_mmlu is None):
        raise typer.BadParameter("give either TABLE or --seed-open/--seed-mmlu (not both)")
    if table is not None:
        result = import_table(table, _pairs(map_, "--map"), defaults=_pairs(default, "--default"),
                              score_columns=score or None, rater=rater)
    else:
        result = import_seed_study(seed_open, seed_mmlu, model=model,
                                   rater="gpt-4o-mini" if rater == "imported" else rater,
                                   design_dir=design, extra_queries=extra_query,
                                   keep_unmatched=keep_unmatched)
    path = result.write(out, fmt=fmt)
    typer.echo(f"imported {len(result.generations)} responses and {len(result.scores)} scores "
               f"into {path}; {result.n_unmatched} source rows could not be placed"
               + (f" (see {path / 'unmatched.csv'})" if result.n_unmatched else ""))


# Commands of the collection side (init, collect, status, export) register on `app` on import.
from steerstats import _collect_cli  # noqa: E402,F401


@app.command("power")
def power_command(
    var_query: float | None = typer.Option(None, "--var-query", help="Query variance."),
    var_prompt: float | None = typer.Option(None, "--var-prompt", help="Prompt variance."),
    var_query_method: float | None = typer.Option(None, "--var-query-method",
                                                  help="Query x method variance."),
    var_residual: float | None = typer.Option(None, "--var-residual",
                                              help="Residual (per-response) variance."),
    from_csv: str | None = typer.Option(
        None, "--from", help="variance_components CSV (columns group, variance), e.g. written "
        "by `steerstats analyze`; replaces the --var-* options."),
    queries: list[int] = typer.Option(..., "--queries", help="Queries; repeat for several."),
    prompts: list[int] = typer.Option(..., "--prompts", help="Prompts per query; repeatable."),
    repeats: list[int] = typer.Option([1], "--repeats",
                                      help="Responses per query x prompt x method; repeatable."),
    effect: list[float] = typer.Option([], "--effect",
                                       help="True method difference; repeatable."),
    mde_: bool = typer.Option(False, "--mde", help="Report the minimum detectable effect "
                              "at --power instead of the power at --effect."),
    target_power: float = typer.Option(0.8, "--power", help="Target power for --mde."),
    alpha: float = typer.Option(0.05, "--alpha", help="Two-sided significance level."),
    n_sims: int = typer.Option(10_000, "--n-sims", help="Simulated studies per design."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulation."),
) -> None:
    """Power (or minimum detectable effect) of a paired method contrast for a design."""
    import pandas as pd

    from steerstats.stats.power import mde, power

    given = {"query": var_query, "prompt": var_prompt, "query:method": var_query_method,
             "residual": var_residual}
    if from_csv is not None:
        if any(v is not None for v in given.values()):
            raise typer.BadParameter("give either --from or the --var-* options, not both",
                                     param_hint="--from")
        try:
            components: pd.DataFrame | dict[str, float] = pd.read_csv(from_csv)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"cannot read {from_csv}: {exc}", param_hint="--from") from None
    else:
        missing = [f"--var-{k.replace(':', '-')}" for k, v in given.items() if v is None]
        if missing:
            raise typer.BadParameter(f"missing {', '.join(missing)} (or pass --from CSV)",
                                     param_hint="--var-*")
        components = {k: float(v) for k, v in given.items() if v is not None}
    if mde_ == bool(effect):
        raise typer.BadParameter("give --effect (power of that effect) or --mde, one of them",
                                 param_hint="--effect/--mde")
    try:
        if mde_:
            table = mde(components, queries, prompts, repeats, power=target_power, alpha=alpha,
                        n_sims=n_sims, seed=seed)
        else:
            table = power(components, queries, prompts, repeats, effect, alpha=alpha,
                          n_sims=n_sims, seed=seed)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
