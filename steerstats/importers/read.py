"""Read a source table (CSV, TSV, Parquet, Excel) without guessing: cells stay text until an
importer converts them, rows whose field count differs from the header are rejected with their
line numbers (never shifted), and every unreadable file is one error naming it."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from steerstats.errors import DataError

__all__ = ["RejectedRow", "SourceTable", "describe_rejected", "read_source", "read_table"]

TEXT_SUFFIXES = {".csv": ",", ".txt": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls")
CONVERSION_HINT = (
    "save the sheet as CSV (Excel: File > Save As > CSV UTF-8; LibreOffice: "
    "soffice --headless --convert-to csv FILE) and import that"
)


@dataclass(frozen=True)
class RejectedRow:
    """A source row that was not read: its 0-based data row, file line, and field counts."""

    row: int
    line: int | None
    fields: int
    expected: int

    @property
    def reason(self) -> str:
        return (
            f"rejected: {self.fields} fields where the header has {self.expected}; "
            "the row is not read (its columns cannot be placed)"
        )


@dataclass
class SourceTable:
    """A table as read: the cells (text for CSV/TSV), each frame row's 0-based source data row,
    and the rows that were rejected."""

    frame: pd.DataFrame
    label: str
    path: Path | None = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rejected: list[RejectedRow] = field(default_factory=list)
    n_rows: int = 0
    _lines: np.ndarray | None = None

    def lines(self, rows: Iterable[int]) -> list[int | None]:
        """The 1-based file line where each 0-based data row starts (None when not a text
        file). Rows may hold quoted line breaks, so the file is scanned once, when asked."""
        wanted = list(rows)
        if self.path is None or self.path.suffix.lower() not in TEXT_SUFFIXES:
            return [None] * len(wanted)
        if wanted and (self._lines is None or max(wanted) >= len(self._lines)):
            self._lines = _record_lines(self.path, max(wanted) + 1)
        if self._lines is None:
            return []
        return [int(self._lines[r]) if 0 <= r < len(self._lines) else None for r in wanted]


def _record_lines(path: Path, upto: int) -> np.ndarray:
    """1-based start line of the first ``upto`` non-empty data records (header excluded)."""
    delimiter = TEXT_SUFFIXES[path.suffix.lower()]
    starts: list[int] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        line = 1
        for record in reader:
            if record:
                starts.append(line)
                if len(starts) > upto:
                    break
            line = reader.line_num + 1
    return np.asarray(starts[1:], dtype=np.int64)


def _text_records(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Header and (data row, start line, field count) of every non-empty record."""
    records: list[tuple[int, int, int]] = []
    header: list[str] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        line, row = 1, -1
        for record in reader:
            if record:
                if row < 0:
                    header = record
                else:
                    records.append((row, line, len(record)))
                row += 1
            line = reader.line_num + 1
    return header, records


def read_source(source: str | Path | pd.DataFrame) -> SourceTable:
    """Read a CSV/TSV (cells as text), Parquet or Excel file, or take a DataFrame.

    CSV and TSV are parsed by Arrow (multi-threaded) with every column read as text, so no
    cell is coerced before an importer decides what it is; a row with more or fewer fields
    than the header is rejected (listed in ``rejected`` with its line), never shifted into
    other columns. ``.xlsx`` is read with openpyxl when installed, otherwise refused with the
    conversion hint. Every problem raises one :class:`DataError` naming the file.
    """
    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True)
        n = len(frame)
        return SourceTable(frame, "<DataFrame>", None, np.arange(n, dtype=np.int64), [], n)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a header line naming the columns")
    if suffix in PARQUET_SUFFIXES:
        frame = _read_parquet(path)
    elif suffix in EXCEL_SUFFIXES:
        frame = _read_excel(path)
    elif suffix in TEXT_SUFFIXES:
        return _read_text(path, TEXT_SUFFIXES[suffix])
    else:
        raise DataError(
            f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .parquet or .xlsx"
        )
    _check_header(path, [str(c) for c in frame.columns])
    n = len(frame)
    return SourceTable(frame, str(path), path, np.arange(n, dtype=np.int64), [], n)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV, Parquet or Excel file by its suffix; rows whose field count differs
    from the header raise a :class:`DataError` naming their lines (see :func:`read_source`)."""
    table = read_source(path)
    if table.rejected:
        raise DataError(f"{table.label}: {describe_rejected(table.rejected)}")
    return table.frame


def describe_rejected(rejected: list[RejectedRow], first: int = 5) -> str:
    """One line: how many rows were rejected, and the first lines with their field counts."""
    shown = ", ".join(
        f"line {'?' if r.line is None else r.line} ({r.fields} fields)" for r in rejected[:first]
    )
    more = f" and {len(rejected) - first} more" if len(rejected) > first else ""
    return (
        f"{len(rejected)} row(s) with a field count different from the header's "
        f"{rejected[0].expected}: {shown}{more}"
    )


def _check_header(path: Path, names: list[str]) -> None:
    if not names:
        raise DataError(f"{path}: no columns; expected a header line naming the columns")
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dupes:
        raise DataError(
            f"{path}: column name(s) {', '.join(map(repr, dupes))} appear more than once in the "
            "header; each column needs its own name"
        )


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable Parquet file ({first})") from None


def _read_excel(path: Path) -> pd.DataFrame:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        raise DataError(
            f"{path}: Excel files are read with openpyxl, which is not installed "
            f"(pip install openpyxl); or {CONVERSION_HINT}"
        ) from None
    try:
        frame = pd.read_excel(path, sheet_name=0, dtype=object)
    except Exception as exc:  # openpyxl raises many types for a damaged workbook
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: not a readable Excel workbook ({first}); or {CONVERSION_HINT}"
        ) from None
    return frame.astype(object).where(frame.notna(), None)


def _read_text(path: Path, delimiter: str) -> SourceTable:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        try:
            header = next(csv.reader(handle, delimiter=delimiter), [])
        except csv.Error as exc:
            raise DataError(f"{path}: the header line cannot be read as CSV ({exc})") from None
    if not any(h.strip() for h in header):
        raise DataError(f"{path}: the first line is empty; expected a header naming the columns")
    _check_header(path, header)
    bad: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append(row.actual_columns)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        first = str(exc).splitlines()[0]
        kind = delimiter_name(delimiter)
        raise DataError(f"{path}: cannot be read as {kind} ({first})") from None
    frame = table.to_pandas(self_destruct=True)
    del table
    pa.default_memory_pool().release_unused()  # parsing buffers: give them back to the system
    if not bad:
        n = len(frame)
        if n == 0:
            raise DataError(f"{path}: a header but no data rows")
        return SourceTable(frame, str(path), path, np.arange(n, dtype=np.int64), [], n)
    # Rows were rejected: find them (and every row's source index) with one csv pass.
    _, records = _text_records(path, delimiter)
    expected = len(header)
    rejected = [RejectedRow(r, line, f, expected) for r, line, f in records if f != expected]
    kept = np.asarray([r for r, _, f in records if f == expected], dtype=np.int64)
    if len(kept) != len(frame):
        raise DataError(
            f"{path}: {len(frame)} rows read but {len(kept)} expected; the file's quoting "
            "is inconsistent (check for unbalanced double quotes)"
        )
    if len(frame) == 0:
        raise DataError(f"{path}: no readable data rows; {describe_rejected(rejected)}")
    return SourceTable(frame, str(path), path, kept, rejected, len(records))


def delimiter_name(delimiter: str) -> str:
    return "TSV" if delimiter == "\t" else "CSV"

