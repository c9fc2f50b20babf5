"""The layers look down only: reading results, analysing and reporting never load collection."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "steerstats"


def test_reading_analysing_and_reporting_never_import_the_collection_layer() -> None:
    code = (
        "import sys\n"
        "import steerstats.results, steerstats.stats, steerstats.analysis\n"
        "import steerstats.reporting, steerstats.importers\n"
        "bad = sorted(m for m in sys.modules if m.startswith('steerstats.collect')\n"
        "             or m in ('steerstats.config', 'diskcache'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "", f"collection code loaded: {out.stdout.strip()}"


def _imports(path: Path) -> list[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or node.level):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.append(module)
            names.extend(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


def test_no_module_imports_another_packages_underscore_modules() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        own = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
        for name in _imports(path):
            parts = name.split(".")
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__") and i > 0:
                    owner = ".".join(parts[:i])
                    if not (PACKAGE.parent / owner.replace(".", "/")).is_dir():
                        owner = owner.rpartition(".")[0]  # a private name in a module: its package
                    if owner != own and not own.startswith(owner + "."):
                        offenders.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
                    break
    assert offenders == []
