"""The report's content as plain values, independent of how it is rendered.

Section builders return these; ``render.py`` turns them into HTML, which both the built-in page
and the Quarto document carry, so each section is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from steerstats.plots import AnyChart


@dataclass(frozen=True)
class Text:
    """A paragraph or list in Markdown; inline math between single dollars (``$x_i$``).

    Data strings inside it must be escaped with ``escape.md`` by the section that writes it.
    """

    markdown: str


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells (strings), shown without an index.

    Cells are escaped when rendered. Beyond ``visible`` rows, the rest is collapsed in a
    ``<details>`` element (the first rows stay in view).
    """

    frame: pd.DataFrame
    caption: str = ""
    visible: int = 12


@dataclass(frozen=True)
class Figure:
    """An Altair chart, rendered to inline SVG, with a caption that also serves as alt text."""

    chart: AnyChart
    caption: str
    name: str
    wide: bool = False


@dataclass(frozen=True)
class Html:
    """Markup built by a section itself, every data string in it escaped with
    ``escape.html_text``; ``script`` is static JavaScript the markup needs (never data)."""

    markup: str
    script: str = ""


Block = Text | Table | Figure | Html


@dataclass(frozen=True)
class Section:
    """One report section: an anchor id, a heading and its blocks in order."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
