"""``steerstats cache check``: is a cache readable, what does it hold, and rebuild its indexes.

Read-only unless asked to rebuild; the rebuild is SQLite's ``REINDEX`` (indexes are derived
data, so rebuilding them cannot lose a record). A file that fails the integrity check is named
with what to do: restore it from a backup.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CacheReport", "check_cache"]

_FILES = ("cache.db", "failures/cache.db", "ledger.db")


@dataclass
class CacheReport:
    """Per file: ``ok`` or the integrity problem; counts of what the cache holds."""

    directory: Path
    files: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    rebuilt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v == "ok" or v.startswith("absent") for v in self.files.values())


def check_cache(directory: str | Path, rebuild: bool = False) -> CacheReport:
    """Integrity-check every SQLite file of the cache at ``directory``, count its entries and,
    with ``rebuild``, rebuild the indexes of the files that are readable."""
    d = Path(directory)
    rep = CacheReport(d)
    for name in _FILES:
        path = d / name
        if not path.is_file():
            rep.files[name] = "absent"
            continue
        if path.stat().st_size == 0:
            rep.files[name] = "empty file (0 bytes): restore it from a backup"
            continue
        try:
            con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
            try:
                problems = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
                if problems != ["ok"]:
                    rep.files[name] = ("damaged: " + "; ".join(problems[:3])
                                       + " - restore it from a backup")
                    continue
                rep.files[name] = "ok"
                _count(con, name, rep.counts)
                if rebuild:
                    con.execute("REINDEX")
                    con.commit()
                    rep.rebuilt.append(name)
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            rep.files[name] = f"damaged: {exc} - restore it from a backup"
    return rep


def _count(con: sqlite3.Connection, name: str, counts: dict[str, int]) -> None:
    if name == "cache.db":
        for (key, raw) in con.execute("SELECT key, value FROM Cache"):
            if not isinstance(key, str):
                continue
            if key.startswith("m/"):
                counts["resolutions"] = counts.get("resolutions", 0) + 1
            elif key.startswith("r/"):
                try:
                    kind = json.loads(raw).get("kind", "other") if raw else "other"
                except ValueError:
                    kind = "unreadable"
                counts[f"{kind}s"] = counts.get(f"{kind}s", 0) + 1
    elif name == "failures/cache.db":
        counts["failures"] = int(con.execute("SELECT COUNT(*) FROM Cache").fetchone()[0])
    else:
        for table in ("attempts", "claims"):
            counts[f"ledger {table}"] = int(
                con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
