"""What every benchmark result records about where it ran, and how it is written."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def machine_info() -> dict[str, Any]:
    """Python, numpy and pandas versions and the CPU architecture."""
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "machine": platform.machine(),
    }


def write_result(out: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` plus the machine info as indented JSON and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**payload, **machine_info()}, indent=2) + "\n")
    print(f"wrote {out}")
