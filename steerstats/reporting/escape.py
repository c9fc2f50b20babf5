"""Escaping of data strings for each place they go: Markdown prose, HTML, chart labels.

Every string read from results (queries, prompts, responses, model, method, metric and judge
names, reasons) passes through one of these before it reaches a page, so data is shown as
text and never parsed as Markdown, LaTeX, HTML, or a Quarto shortcode.
"""

from __future__ import annotations

import html
import re
import string

__all__ = ["html_text", "label", "md", "neutral"]

_PUNCT = re.compile("([" + re.escape(string.punctuation) + "])")
_SPACE = re.compile(r"\s+")
# Characters the renderers use as placeholders (Unicode private use) and control characters.
_ODD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000-\uf8ff]")


def neutral(value: object) -> str:
    """``value`` as one line of text without control or private-use characters."""
    text = "" if value is None else str(value)
    return _ODD.sub("\ufffd", text)


def md(value: object) -> str:
    """A data string for Markdown prose: every ASCII punctuation character backslash-escaped
    and whitespace collapsed to single spaces, so it reads literally (no emphasis, links,
    images, raw HTML, math, list markers or headings)."""
    return _PUNCT.sub(r"\\\1", _SPACE.sub(" ", neutral(value)).strip())


_BRACES = str.maketrans({"{": "&#123;", "}": "&#125;", "`": "&#96;", "$": "&#36;"})


def html_text(value: object) -> str:
    """A data string for HTML text or an attribute value: ``& < > " '`` escaped, and braces,
    backticks and dollars as character references, so neither Quarto's shortcodes nor pandoc's
    Markdown see them when the HTML travels inside a raw block."""
    return html.escape(neutral(value), quote=True).translate(_BRACES)


def label(value: object, limit: int = 40) -> str:
    """A data string for a chart label: one line, at most ``limit`` characters (an ellipsis
    marks a cut). Vega renders labels as text, so no markup is interpreted."""
    text = _SPACE.sub(" ", neutral(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
