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
        t = Table(title="Means (95% CI, two-way cluster-robust, inside the metric's range)")
        for c in ("model", "method", "metric", "n", "mean [95% CI]"):
            t.add_column(c, justify="right" if c == "n" else "left")
        for _, r in summary.iterrows():
            t.add_row(str(r["model"]), _arm(r), str(r["metric"]), fmt.count(r["n"]),
                      fmt.est_ci(r["mean"], r["ci_low"], r["ci_high"], _digits(r["metric"])))
        console.print(t)
    contrasts = tables.get("contrasts")
    if contrasts is not None and len(contrasts):
        t = Table(title="Paired contrasts (Holm per model x metric x baseline)")
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
    _print_notes(tables, console)
    skipped = tables.get("skipped")
    if skipped is not None and len(skipped):
        for _, r in skipped.iterrows():
            console.print(f"[yellow]skipped[/yellow] {r['analysis']}: {r['reason']}")


def _print_notes(tables: dict[str, pd.DataFrame], console: Console) -> None:
    """Withheld inference (too few queries) and singular mixed-model fits, once each."""
    notes = set()
    for name in ("summary", "contrasts"):
        table = tables.get(name)
        if table is not None and "note" in table:
            notes |= {n for n in table["note"].dropna().astype(str) if n}
    for n in sorted(notes):
        console.print(f"[yellow]note[/yellow] {n}")
    vc = tables.get("variance_components")
    if vc is not None and "singular" in vc:
        singular = sorted(vc.loc[vc["singular"].astype(bool), "metric"].astype(str).unique())
        if singular:
            console.print(f"[yellow]note[/yellow] singular mixed-model fit (a variance at 0) for "
                          f"{', '.join(singular)}: read its df and SEs with care")
