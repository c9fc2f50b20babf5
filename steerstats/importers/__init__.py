"""Turn results made elsewhere into the two tidy tables (``schema.GENERATION_COLUMNS`` and
``schema.SCORE_COLUMNS``), so the statistics and the report serve them too.

Two entry points: :func:`import_seed_study` for the seed study's CSVs (``seed.py``; queries,
prompts and answer keys from the shipped design data or the study's own design folder) and
:func:`import_table` for any CSV/TSV/Parquet/Excel table with a column mapping (``table.py``).
Files are read by ``read.py``; condition contamination is detected by ``contamination.py``.
Rows that cannot be placed are returned in ``unmatched`` and rows or cells imported other than
as they stood in ``flagged``, never dropped or changed silently.
"""

from steerstats.importers._common import (
    FLAGGED_COLUMNS,
    NOTE_COLUMNS,
    UNMATCHED_COLUMNS,
    ImportResult,
    row_key,
)
from steerstats.importers.contamination import (
    PROMPTLESS,
    carries_instruction,
    contaminated,
    relabel,
)
from steerstats.importers.read import read_source, read_table
from steerstats.importers.seed import (
    METHOD_NAMES,
    SEED_STUDY_ALIASES,
    import_seed_study,
    normalize_method,
)
from steerstats.importers.table import DECLARED_RANGES, describe_summary, import_table

__all__ = [
    "DECLARED_RANGES",
    "FLAGGED_COLUMNS",
    "METHOD_NAMES",
    "NOTE_COLUMNS",
    "PROMPTLESS",
    "SEED_STUDY_ALIASES",
    "UNMATCHED_COLUMNS",
    "ImportResult",
    "carries_instruction",
    "contaminated",
    "describe_summary",
    "import_seed_study",
    "import_table",
    "normalize_method",
    "read_source",
    "read_table",
    "relabel",
    "row_key",
]
