"""The tidy tables' columns: the contract between collection (or import) and statistics.

Both sides import only this module, so neither needs the other. See DESIGN.md.
"""

from __future__ import annotations

GENERATION_COLUMNS: tuple[str, ...] = (
    "model",
    "method",
    "strength",
    "query_id",
    "query",
    "prompt_set",
    "prompt_id",
    "sample",
    "response",
    "n_tokens",
    "finish_reason",
    "latency_s",
    "cost_usd",
    "error",
    "key",
)

# ``reason`` is an addition to DESIGN.md's list: why ``value`` is NaN (e.g. "unparsed: no <score>
# tag"), empty when the value is fine. It keeps the reason next to the missing value.
SCORE_COLUMNS: tuple[str, ...] = (
    "model",
    "method",
    "strength",
    "query_id",
    "prompt_set",
    "prompt_id",
    "sample",
    "metric",
    "rater",
    "repeat",
    "value",
    "key",
    "reason",
)

# One row per judge call (judging occasion) with the judge's raw reply (DESIGN.md); ``key`` is
# the generation's, so a NaN score links to the reply that caused it. Absent for imports.
JUDGEMENT_COLUMNS: tuple[str, ...] = (
    "model",
    "method",
    "strength",
    "query_id",
    "prompt_set",
    "prompt_id",
    "sample",
    "judge",
    "rater",
    "repeat",
    "reply",
    "key",
)

PROMPT_SETS: tuple[str, ...] = ("open", "mmlu")
AUTO_RATER = "auto"
