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


# Commands of the collection side (init, collect, status, export) register on `app` on import.
from steerstats import _collect_cli  # noqa: E402,F401
