"""The results directory (DESIGN.md): the tidy tables, the manifest and the spec, written and read.

It knows nothing of collection: ``collect.export`` and the importers write through it, and the
analysis and the report read through it, without loading the cache or the experiment spec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd

from steerstats import __version__
from steerstats.schema import GENERATION_COLUMNS, JUDGEMENT_COLUMNS, SCORE_COLUMNS

__all__ = ["Format", "Results", "package_versions", "read_results", "write_results"]

Format = Literal["parquet", "csv"]
_KEY_PACKAGES = ("numpy", "pandas", "pyarrow", "scipy", "statsmodels", "pingouin", "pydantic",
                 "diskcache", "openai", "torch", "transformers", "goodfire")

_GEN_DTYPES = {"strength": "float64", "sample": "int64", "n_tokens": "Int64",
               "latency_s": "float64", "cost_usd": "float64"}
_SCORE_DTYPES = {"strength": "float64", "sample": "int64", "repeat": "int64", "value": "float64"}
_JUDGEMENT_DTYPES = {"strength": "float64", "sample": "int64", "repeat": "int64"}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results, for manifests."""
    out = {}
    for name in _KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _check_columns(df: pd.DataFrame, columns: tuple[str, ...], name: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name} table lacks column(s) {', '.join(missing)}; it needs exactly "
            f"{', '.join(columns)} (see steerstats.schema)"
        )
    return df[list(columns)]


def write_results(out_dir: str | Path, generations: pd.DataFrame, scores: pd.DataFrame,
                  manifest: Mapping[str, Any], fmt: Format = "parquet",
                  experiment_toml: str | None = None,
                  judgements: pd.DataFrame | None = None) -> Path:
    """Write a results directory: ``generations`` and ``scores`` (Parquet or CSV),
    ``judgements`` (the judges' raw replies) if given, ``manifest.json`` (row counts and
    format filled in) and ``experiment.toml`` if given."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gens = _check_columns(generations, GENERATION_COLUMNS, "generations")
    scs = _check_columns(scores, SCORE_COLUMNS, "scores")
    jud = None if judgements is None else _check_columns(judgements, JUDGEMENT_COLUMNS,
                                                          "judgements")
    for stale in ("generations", "scores", "judgements"):
        for ext in ("parquet", "csv"):
            if ext != fmt:
                (out / f"{stale}.{ext}").unlink(missing_ok=True)
            if ext == fmt and jud is None and stale == "judgements":
                (out / f"{stale}.{ext}").unlink(missing_ok=True)
    tables = {"generations": gens, "scores": scs}
    if jud is not None:
        tables["judgements"] = jud
    for name, df in tables.items():
        if fmt == "parquet":
            df.to_parquet(out / f"{name}.parquet", index=False)
        else:
            df.to_csv(out / f"{name}.csv", index=False)
    man = dict(manifest)
    man["format"] = fmt
    man["row_counts"] = {name: len(df) for name, df in tables.items()}
    man.setdefault("created_at", pd.Timestamp.now(tz="UTC").isoformat())
    man.setdefault("steerstats_version", __version__)
    (out / "manifest.json").write_text(json.dumps(man, indent=2, default=str) + "\n",
                                       encoding="utf-8")
    if experiment_toml is not None:
        (out / "experiment.toml").write_text(experiment_toml, encoding="utf-8")
    return out


class Results(NamedTuple):
    """A results directory read back: the tidy tables, the manifest, and the judges' raw
    replies (None where the directory has none, e.g. imports)."""

    generations: pd.DataFrame
    scores: pd.DataFrame
    manifest: dict[str, Any]
    judgements: pd.DataFrame | None = None


def _read_csv(path: Path, dtypes: Mapping[str, str], columns: tuple[str, ...]) -> pd.DataFrame:
    string_cols = {c: "str" for c in columns if c not in dtypes}
    df = pd.read_csv(path, dtype={**string_cols, **{k: v for k, v in dtypes.items()}},
                     keep_default_na=False, na_values={c: [""] for c in columns})
    return df


def read_results(directory: str | Path) -> Results:
    """Read a results directory written by :func:`write_results` (Parquet or CSV)."""
    d = Path(directory)
    man_path = d / "manifest.json"
    if not man_path.is_file():
        raise FileNotFoundError(
            f"{d} is not a results directory (no manifest.json); create one with "
            "`steerstats export my.toml --out DIR`"
        )
    manifest = json.loads(man_path.read_text(encoding="utf-8"))
    jud = None
    if (d / "generations.parquet").is_file():
        gens = pd.read_parquet(d / "generations.parquet")
        scs = pd.read_parquet(d / "scores.parquet")
        if (d / "judgements.parquet").is_file():
            jud = pd.read_parquet(d / "judgements.parquet")
    elif (d / "generations.csv").is_file():
        gens = _read_csv(d / "generations.csv", _GEN_DTYPES, GENERATION_COLUMNS)
        scs = _read_csv(d / "scores.csv", _SCORE_DTYPES, SCORE_COLUMNS)
        if (d / "judgements.csv").is_file():
            jud = _read_csv(d / "judgements.csv", _JUDGEMENT_DTYPES, JUDGEMENT_COLUMNS)
    else:
        raise FileNotFoundError(f"{d}: no generations.parquet or generations.csv")
    return Results(_check_columns(gens, GENERATION_COLUMNS, "generations"),
                   _check_columns(scs, SCORE_COLUMNS, "scores"), manifest,
                   None if jud is None else _check_columns(jud, JUDGEMENT_COLUMNS, "judgements"))
