"""The report's content as plain values, independent of how it is rendered.

Section builders return these; ``render.py`` turns them into Markdown for Quarto or into one
self-contained HTML page, so each section is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from steerstats.plots import AnyChart


@dataclass(frozen=True)
class Text:
    """A paragraph or list in Markdown; inline math between single dollars (``$x_i$``)."""

    markdown: str


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells (strings), shown without an index."""

    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """An Altair chart, rendered to inline SVG, with a caption that also serves as alt text."""

    chart: AnyChart
    caption: str
    name: str


@dataclass(frozen=True)
class Section:
    """One report section: an anchor id, a heading and its blocks in order."""

    id: str
    title: str
    blocks: list[Text | Table | Figure] = field(default_factory=list)
