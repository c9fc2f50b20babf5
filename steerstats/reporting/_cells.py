"""Cell formatting and small helpers shared by the report's section modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from steerstats import fmt
from steerstats.reporting.content import Section, Table, Text
from steerstats.reporting.data import ReportData
from steerstats.reporting.escape import md

ALPHA = 0.05

Column = tuple[str, Callable[[pd.Series], str]]


def _display(table: pd.DataFrame, columns: Sequence[Column], caption: str = "") -> Table:
    """A Table of formatted strings: one (header, row -> text) pair per column; a ``note``
    column in the analysis table (e.g. "too few queries") is shown as a last column."""
    columns = list(columns)
    if "note" in table and table["note"].notna().any() and "Note" not in [h for h, _ in columns]:
        columns.append(("Note", _text("note")))
    rows = [{header: f(row) for header, f in columns} for _, row in table.iterrows()]
    return Table(pd.DataFrame(rows, columns=[h for h, _ in columns]), caption)


def _ms(items: Sequence[object] | pd.Series) -> list[str]:
    """Data names escaped for Markdown prose."""
    return [md(i) for i in items]


def _notes(table: pd.DataFrame, what: str) -> Text | None:
    """The distinct notes of a table's ``note`` column (e.g. inference withheld with too few
    queries), as one line, or None."""
    if "note" not in table:
        return None
    notes = sorted({str(n) for n in table["note"].dropna() if str(n).strip()})
    if not notes:
        return None
    return Text(f"Notes on the {what}: " + "; ".join(md(n) for n in notes) + ".")


def _sorted(table: pd.DataFrame, by: Sequence[str], ascending: Sequence[bool]) -> pd.DataFrame:
    """``table`` sorted by the columns of ``by`` that it has (missing values last)."""
    keys = [(c, a) for c, a in zip(by, ascending, strict=True) if c in table]
    if not keys:
        return table
    return table.sort_values([c for c, _ in keys], ascending=[a for _, a in keys],
                             na_position="last", kind="stable")


def _with_arms(table: pd.DataFrame) -> pd.DataFrame:
    """A copy whose ``method`` column carries the strength too ("caa @ 4"), for charts and
    tables; its ``strength`` is then cleared, so applying it twice changes nothing."""
    out = table.copy()
    if "strength" in out and out["strength"].notna().any():
        out["method"] = [fmt.arm(m, s) for m, s in zip(out["method"], out["strength"],
                                                      strict=True)]
        out["strength"] = float("nan")
    return out


def _missing(data: ReportData, name: str, what: str) -> Text:
    reason = data.skipped(name)
    if reason:
        return Text(f"Not computed: {md(reason)}.")
    return Text(f"The analysis tables hold no {what} (table `{name}` is absent or empty).")


def _start(
    data: ReportData, section_id: str, title: str, name: str, what: str
) -> tuple[Section, pd.DataFrame | None]:
    """A new section and table ``name``; without the table, the section already says why."""
    section = Section(section_id, title)
    table = data.get(name)
    if table is None:
        section.blocks.append(_missing(data, name, what))
    return section, table


def _col(name: str, digits: int = 2) -> Callable[[pd.Series], str]:
    return lambda r: fmt.num(r[name], digits)


def _count_col(name: str) -> Callable[[pd.Series], str]:
    return lambda r: fmt.count(r[name])


def _ci_col(est: str, digits: int = 2) -> Callable[[pd.Series], str]:
    return lambda r: fmt.est_ci(r[est], r["ci_low"], r["ci_high"], digits)


def _metric_ci_col(est: str) -> Callable[[pd.Series], str]:
    """Estimate [CI] with the row's metric's digits (3 for accuracy, else 2)."""
    return lambda r: fmt.est_ci(r[est], r["ci_low"], r["ci_high"], _digits(r["metric"]))


def _p_col(name: str) -> Callable[[pd.Series], str]:
    return lambda r: fmt.pval(r[name])


def _text(name: str) -> Callable[[pd.Series], str]:
    return lambda r: "" if pd.isna(r[name]) else str(r[name])


_digits = fmt.metric_digits



def holm_family(table: pd.DataFrame) -> str:
    """One sentence naming the family the table's Holm-adjusted p-values were taken over.

    A ``holm_family`` column, when the analysis writes one, is quoted; otherwise the family is
    what ``stats.holm_by_family`` uses for ``analyze``'s contrasts: one model x metric x
    baseline (the arms and strengths compared with that baseline), auxiliary metrics in
    families of their own.
    """
    if "holm_family" in table and table["holm_family"].notna().any():
        families = sorted({str(f) for f in table["holm_family"].dropna()})
        return ("Holm family: " + "; ".join(md(f) for f in families) + ".")
    n = (table.groupby([c for c in ("model", "metric", "baseline") if c in table],
                       dropna=False).ngroups
         if any(c in table for c in ("model", "metric", "baseline")) else 1)
    return ("Holm family: one per model x metric x baseline, over the arms and strengths "
            f"compared with that baseline ({fmt.plural(n, 'family', 'families')} here); a "
            "p-value does not depend on the other models or metrics in the table.")
