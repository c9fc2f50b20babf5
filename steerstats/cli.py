"""The `steerstats` command: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

from typing import Annotated

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


@app.command("power")
def power_command(
    queries: Annotated[list[int], typer.Option("--queries",
                                               help="Queries; repeat for several.")],
    prompts: Annotated[list[int], typer.Option("--prompts",
                                               help="Prompts per query; repeatable.")],
    var_query: float | None = typer.Option(None, "--var-query", help="Query variance."),
    var_prompt: float | None = typer.Option(None, "--var-prompt", help="Prompt variance."),
    var_query_method: float | None = typer.Option(None, "--var-query-method",
                                                  help="Query x method variance."),
    var_residual: float | None = typer.Option(None, "--var-residual",
                                              help="Residual (per-response) variance."),
    from_csv: str | None = typer.Option(
        None, "--from", help="variance_components CSV (columns group, variance), e.g. written "
        "by `steerstats analyze`; replaces the --var-* options."),
    repeats: Annotated[list[int] | None, typer.Option(
        "--repeats", help="Responses per query x prompt x method (default 1); repeatable."
    )] = None,
    effect: Annotated[list[float] | None, typer.Option(
        "--effect", help="True method difference; repeatable.")] = None,
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
            raise typer.BadParameter(f"cannot read {from_csv}: {exc}",
                                     param_hint="--from") from None
    else:
        missing = [f"--var-{k.replace(':', '-')}" for k, v in given.items() if v is None]
        if missing:
            raise typer.BadParameter(f"missing {', '.join(missing)} (or pass --from CSV)",
                                     param_hint="--var-*")
        components = {k: float(v) for k, v in given.items() if v is not None}
    repeats = repeats or [1]
    if mde_ == bool(effect):
        raise typer.BadParameter("give --effect (power of that effect) or --mde, one of them",
                                 param_hint="--effect/--mde")
    try:
        if mde_:
            table = mde(components, queries, prompts, repeats, power=target_power, alpha=alpha,
                        n_sims=n_sims, seed=seed)
        else:
            table = power(components, queries, prompts, repeats, effect or [], alpha=alpha,
                          n_sims=n_sims, seed=seed)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


# Commands of the collection side (init, collect, status, export) register on `app` on import.
from steerstats import _collect_cli  # noqa: E402,F401
