"""Column roles: one vocabulary for every stats function, and ``as_scores`` for other names.

Every stats function names the columns it reads by the same keywords: ``model``, ``method``,
``strength``, ``metric`` (always the column of metric names), ``value``, ``clusters`` (query
and prompt columns, in that order), ``sample``, and, where used, ``rater``, ``repeat`` and
``generation``. ``None`` means the role is absent (``model=None``: one model). Outputs keep the
caller's column names. :func:`as_scores` renames a table once instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._data import numeric_values, require_columns

__all__ = ["ROLES", "as_scores", "numeric_values", "require_columns"]

# Role -> the tidy scores column (steerstats.schema.SCORE_COLUMNS) it becomes.
ROLES: dict[str, str] = {
    "model": "model",
    "method": "method",
    "strength": "strength",
    "metric": "metric",
    "value": "value",
    "query": "query_id",
    "prompt": "prompt_id",
    "sample": "sample",
    "rater": "rater",
    "repeat": "repeat",
    "generation": "key",
}
# What an absent role (None) becomes: one level, so every function's defaults apply.
_ABSENT: dict[str, object] = {
    "model": "model", "strength": np.nan, "sample": 0, "rater": "judge", "prompt": "prompt",
}
_REQUIRED = ("method", "metric", "value", "query")


def as_scores(data: pd.DataFrame, **roles: str | None) -> pd.DataFrame:
    """A copy of ``data`` with its columns renamed to the tidy scores names, by role.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per rating, with whatever column names.
    **roles : str or None
        ``role=column`` for each role whose column is named differently (roles: ``model``,
        ``method``, ``strength``, ``metric``, ``value``, ``query``, ``prompt``, ``sample``,
        ``rater``, ``repeat``, ``generation``). A role left out keeps its tidy name if that
        column exists; ``role=None`` says it is absent: ``model``, ``strength``, ``sample``,
        ``rater`` and ``prompt`` then get one level (``"model"``, NaN, 0, ``"judge"``,
        ``"prompt"``), and ``repeat`` numbers the ratings of each response 0, 1, ...

    Returns
    -------
    pandas.DataFrame
        The table with tidy column names (other columns kept), ready for every stats function
        with default arguments.

    Raises
    ------
    ValueError
        An unknown role, a named column that is missing, or no column for a required role
        (``method``, ``metric``, ``value``, ``query``).

    Examples
    --------
    A table from elsewhere, with its own names and no model or strength:

    >>> import pandas as pd
    >>> from steerstats.stats import as_scores, summarize
    >>> raw = pd.DataFrame({
    ...     "condition": ["base", "steered"] * 12,
    ...     "concept": [f"c{i // 4}" for i in range(24)],
    ...     "item": [f"c{i // 4}-p{i % 4 // 2}" for i in range(24)],
    ...     "score": [2, 4, 1, 5, 2, 3, 3, 4, 1, 4, 2, 5, 2, 4, 3, 3, 1, 5, 2, 4, 2, 3, 1, 4],
    ...     "measure": "behavior",
    ... })
    >>> scores = as_scores(raw, method="condition", query="concept", prompt="item",
    ...                    value="score", metric="measure", model=None, strength=None,
    ...                    sample=None)
    >>> summarize(scores)[["method", "n", "mean", "ci_low", "ci_high"]].round(2)
        method   n  mean  ci_low  ci_high
    0     base  12  1.83    1.41     2.50
    1  steered  12  4.00    3.33     4.46
    """
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; roles are {sorted(ROLES)}")
    out = data.copy()
    rename = {}
    for role, col in roles.items():
        if col is None:
            continue
        require_columns(data, {role: col})
        rename[col] = ROLES[role]
    clash = [c for c in rename.values() if c in out.columns and c not in rename]
    out = out.drop(columns=clash).rename(columns=rename)
    for role in _REQUIRED:
        if ROLES[role] not in out.columns:
            raise ValueError(f"no column for role {role!r}: pass {role}='<your column>' "
                             f"(columns present: {', '.join(map(str, data.columns))})")
    for role, fill in _ABSENT.items():
        if ROLES[role] not in out.columns and (role not in roles or roles[role] is None):
            out[ROLES[role]] = fill
    if "repeat" not in out.columns:
        keys = [c for c in ("model", "method", "strength", "metric", "query_id", "prompt_id",
                            "sample", "rater") if c in out.columns]
        out["repeat"] = out.groupby(keys, dropna=False).cumcount()
    return out
