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


# Commands of the collection side (init, collect, status, export) register on `app` on import.
from steerstats import _collect_cli  # noqa: E402,F401
