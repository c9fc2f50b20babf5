"""Shipped data files: where they are, the index that records their source, and readers."""

from __future__ import annotations

import csv
import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

import pandas as pd

_PACKAGE = "steerstats.datasets"
INDEX_FILE = "datasets.csv"


def data_text(filename: str) -> str:
    """The text of a shipped data file."""
    return resources.files(_PACKAGE).joinpath(filename).read_text(encoding="utf-8")


def data_digest(filename: str) -> str:
    """SHA-256 of a shipped data file (recorded in manifests so a changed file is visible)."""
    return hashlib.sha256(data_text(filename).encode("utf-8")).hexdigest()


@cache
def data_json(filename: str) -> Any:
    """A shipped JSON file, parsed once per process (callers must not mutate the result)."""
    return json.loads(data_text(filename))


@cache
def dataset_index() -> tuple[dict[str, str], ...]:
    """Rows of ``datasets.csv``: name, file, description, source, licence."""
    return tuple(csv.DictReader(data_text(INDEX_FILE).splitlines()))


def dataset_names() -> list[str]:
    """Names accepted by :func:`read_dataset`."""
    return [row["name"] for row in dataset_index()]


def reference_text() -> str:
    """A ~300-word neutral encyclopedic passage (about rivers), written for this project.

    The local backend scores how well a steered model still predicts plain English on it, a cheap
    proxy for lost capability.
    """
    return data_text("reference_text.txt")


def reference_text_frame() -> pd.DataFrame:
    paragraphs = [p.strip() for p in reference_text().split("\n\n") if p.strip()]
    return pd.DataFrame({"paragraph": range(len(paragraphs)), "text": paragraphs})
