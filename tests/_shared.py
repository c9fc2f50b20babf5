"""Where the project's shared folder is (seed-study rows, the MMLU test file), for the tests
that read it and skip, saying so, without it."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_path(*parts: str) -> Path | None:
    """``parts`` under the shared folder, or None when absent.

    The shared folder is $STEERSTATS_SHARED when set, else the first ``shared`` folder beside
    the repository or beside a folder above it.
    """
    env = os.environ.get("STEERSTATS_SHARED")
    bases = [Path(env)] if env else [base.parent / "shared" for base in (ROOT, *ROOT.parents)]
    for base in bases:
        candidate = base.joinpath(*parts)
        if candidate.exists():
            return candidate
    return None
