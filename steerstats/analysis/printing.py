"""Print the main analysis tables in the terminal (rich), formatted like the report."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from steerstats import fmt

__all__ = ["print_tables"]


def _arm(row: pd.Series) -> str:
    return fmt.arm(row["method"], row.get("strength"))


_digits = fmt.metric_digits


def print_tables(tables: dict[str, pd.DataFrame], console: Console | None = None) -> None:
    """Means, paired contrasts, trade-offs and skipped analyses, one rich table each."""
    console = console or Console()
    summary = tables.get("summary")
    if summary is not None and len(summary):
        t = Table(title="Means (95% CI, two-way cluster bootstrap)")
        for c in ("model", "method", "metric", "n", "mean [95% CI]"):
            t.add_column(c, justify="right" if c == "n" else "left")
        for _, r in summary.iterrows():
            t.add_row(str(r["model"]), _arm(r), str(r["metric"]), fmt.count(r["n"]),
                      fmt.est_ci(r["mean"], r["ci_low"], r["ci_high"], _digits(r["metric"])))
        console.print(t)
    contrasts = tables.get("contrasts")
    if contrasts is not None and len(contrasts):
        t = Table(title="Paired contrasts (Holm-adjusted)")
        for c in ("model", "metric", "method", "baseline", "diff [95% CI]", "p_holm", "dz"):
            t.add_column(c)
        for _, r in contrasts.iterrows():
            t.add_row(str(r["model"]), str(r["metric"]), _arm(r), str(r["baseline"]),
                      fmt.est_ci(r["diff"], r["ci_low"], r["ci_high"], _digits(r["metric"])),
                      fmt.pval(r["p_holm"]), fmt.num(r["dz"]))
        console.print(t)
    tradeoff = tables.get("tradeoff")
    if tradeoff is not None and len(tradeoff):
        t = Table(title=f"Trade-off against {tradeoff['baseline'].iloc[0]}")
        for c in ("model", "method", "behaviour gain", "coherence loss", "accuracy loss",
                  "pareto", "P(good trade)"):
            t.add_column(c)
        for _, r in tradeoff.iterrows():
            t.add_row(
                str(r["model"]), _arm(r),
                fmt.est_ci(r["behavior_gain"], r["behavior_gain_ci_low"],
                           r["behavior_gain_ci_high"]),
                fmt.est_ci(r["coherence_loss"], r["coherence_loss_ci_low"],
                           r["coherence_loss_ci_high"]),
                fmt.est_ci(r["accuracy_loss"], r["accuracy_loss_ci_low"],
                           r["accuracy_loss_ci_high"], 3),
                "yes" if bool(r["pareto"]) else "no", fmt.num(r["p_good_trade"]),
            )
        console.print(t)
    skipped = tables.get("skipped")
    if skipped is not None and len(skipped):
        for _, r in skipped.iterrows():
            console.print(f"[yellow]skipped[/yellow] {r['analysis']}: {r['reason']}")
