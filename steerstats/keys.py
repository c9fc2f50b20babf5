"""Canonical JSON and SHA-256 cache keys (DESIGN.md: same request, same key, in any process).

A low module: the experiment spec digests itself with it and the collection layer keys its
tasks with it, so neither needs the other to compute a key.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["KEY_VERSION", "Fragment", "cache_key", "canonical_json", "fragment"]

KEY_VERSION = 1




class Fragment(str):
    """Canonical JSON already encoded (see :func:`fragment`): spliced into keys verbatim, so
    parts shared by many keys (a judge's identity, a backend's) are encoded once."""

    __slots__ = ()


def fragment(obj: Any) -> Fragment:
    """``obj`` encoded once as canonical JSON, for reuse inside many keys."""
    return Fragment(canonical_json(obj))


_encode_str = json.encoder.encode_basestring  # C-accelerated, keeps UTF-8 as is


def _float(x: float) -> str:
    if math.isnan(x):
        return '"NaN"'
    if math.isinf(x):
        return '"Infinity"' if x > 0 else '"-Infinity"'
    if x.is_integer():
        return str(int(x))
    return repr(float(f"{x:.15g}"))


def _encode(obj: Any) -> str:
    t = type(obj)
    if t is str:
        return _encode_str(obj)
    if t is Fragment:
        return str.__str__(obj)
    if obj is None:
        return "null"
    if t is bool:
        return "true" if obj else "false"
    if t is int:
        return str(obj)
    if t is float:
        return _float(obj)
    if isinstance(obj, Mapping):
        parts = []
        for k in sorted(obj):
            if not isinstance(k, str):
                raise TypeError(f"cache key data must have string keys, got {k!r}")
            parts.append(_encode_str(k) + ":" + _encode(obj[k]))
        return "{" + ",".join(parts) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(map(_encode, obj)) + "]"
    if isinstance(obj, str):  # str subclasses (enums)
        return _encode_str(str(obj))
    if isinstance(obj, bool | int):
        return _encode(int(obj)) if not isinstance(obj, bool) else _encode(bool(obj))
    if isinstance(obj, float):
        return _float(float(obj))
    if hasattr(obj, "canonical"):
        return _encode(obj.canonical())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars and similar
        return _encode(obj.item())
    raise TypeError(f"cannot put {type(obj).__name__} into a cache key: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, UTF-8 kept as is, tuples as lists,
    floats normalised (integral floats as ints, others rounded to 15 significant digits,
    NaN/inf as strings, -0.0 as 0)."""
    return _encode(obj)


def cache_key(obj: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``obj`` — the same request gives the same key
    in any process and for any dict ordering; any change to an input changes it."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
