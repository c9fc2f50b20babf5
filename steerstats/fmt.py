"""Number formatting for report text and tables (formatting only; values come from tables)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def num(x: object, digits: int = 2) -> str:
    """A number with ``digits`` decimals; "n/a" for missing."""
    if x is None:
        return "n/a"
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    text = f"{v:.{digits}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def count(x: object) -> str:
    """An integer count with thousands separators; "n/a" for missing."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if math.isnan(v) else f"{int(round(v)):,}"


def pct(x: object, digits: int = 1) -> str:
    """A 0-1 share as a percentage."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if math.isnan(v) else f"{100 * v:.{digits}f}%"


def ci(low: object, high: object, digits: int = 2) -> str:
    """An interval as "[low, high]"."""
    return f"[{num(low, digits)}, {num(high, digits)}]"


def est_ci(est: object, low: object, high: object, digits: int = 2) -> str:
    """An estimate with its interval: "3.10 [2.95, 3.24]"."""
    return f"{num(est, digits)} {ci(low, high, digits)}"


def pval(p: object) -> str:
    """A p-value: three decimals, or "< 0.001"."""
    try:
        v = float(p)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(p)
    if math.isnan(v):
        return "n/a"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def metric_digits(metric: object) -> int:
    """Decimals for a metric's values: 3 for accuracy (a proportion), 2 for 1-5 ratings."""
    return 3 if str(metric) == "accuracy" else 2


def arm(method: object, strength: object = None) -> str:
    """A method's label, with its steering strength when it has one ("caa @ 4")."""
    try:
        s = float(strength)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(method)
    return str(method) if math.isnan(s) else f"{method} @ {s:g}"


def listing(items: Iterable[object]) -> str:
    """Items joined as "a, b and c"."""
    words = [str(i) for i in items]
    if not words:
        return "none"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def plural(n: object, word: str, words: str | None = None) -> str:
    """"1 query" / "3 queries"; "n/a queries" when ``n`` is missing."""
    try:
        k = int(float(n))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return f"n/a {words or word + 's'}"
    return f"{k:,} {word if k == 1 else (words or word + 's')}"
