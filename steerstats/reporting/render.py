"""Turn report sections into HTML: one self-contained page, or Markdown for Quarto.

Every block becomes HTML here, once: prose through markdown-it (raw HTML off) with ``$...$``
math as MathML, tables as plain escaped tables, charts as inline SVG (vl-convert). The
built-in page and the Markdown that ``report/index.qmd`` prints carry the same HTML (in the
Markdown as raw-HTML blocks), so pandoc never parses a data string. The built-in page loads
nothing from the network; a Content-Security-Policy allows only its own script.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from datetime import UTC, datetime
from importlib import resources

import jinja2
import latex2mathml.converter
import vl_convert as vlc
from markdown_it import MarkdownIt
from markupsafe import Markup

from steerstats import __version__
from steerstats.reporting.content import Block, Figure, Html, Section, Table, Text
from steerstats.reporting.data import ReportData
from steerstats.reporting.escape import html_text

__all__ = ["block_html", "chart_svg", "section_html", "section_markdown", "table_html",
           "to_html"]

_MATH = re.compile(r"(?<![\\$\w])\$(?=\S)(.+?)(?<=\S)\$(?![\w$])")
_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]")
# Braces, backticks and dollars as character references: inert in HTML, invisible to Quarto's
# shortcodes and pandoc's Markdown when the HTML travels in a raw block.
_INERT = str.maketrans({"{": "&#123;", "}": "&#125;", "`": "&#96;", "$": "&#36;"})


def _id(text: str) -> str:
    return _SAFE_ID.sub("-", text) or "section"


@functools.lru_cache(maxsize=64)
def _svg(spec_json: str) -> str:
    return vlc.vegalite_to_svg(json.loads(spec_json))


def chart_svg(figure: Figure) -> str:
    """The figure's chart as an inline SVG string, its ids prefixed so several can share a page.

    vl-convert writes data strings as escaped SVG text; braces, backticks and dollars become
    character references too.
    """
    svg = _svg(json.dumps(figure.chart.to_dict(), sort_keys=True))
    svg = re.sub(r"^<\?xml[^>]*\?>\s*", "", svg)
    prefix = f"{_id(figure.name)}-"
    for ident in set(_SVG_ID.findall(svg)):
        svg = svg.replace(f'id="{ident}"', f'id="{prefix}{ident}"')
        svg = svg.replace(f"url(#{ident})", f"url(#{prefix}{ident})")
        svg = svg.replace(f'href="#{ident}"', f'href="#{prefix}{ident}"')
    svg = svg.translate(_INERT)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{html_text(figure.caption)}" ', 1)


def figure_html(figure: Figure) -> str:
    """A <figure> with the chart's SVG and its caption."""
    wide = " wide" if figure.wide else ""
    name = _id(figure.name)
    return (
        f'<figure class="chart{wide}" id="fig-{name}" data-chart="{name}">\n'
        f"{chart_svg(figure)}\n<figcaption>{html_text(figure.caption)}</figcaption>\n</figure>"
    )


def _rows_html(frame: object) -> str:
    return "\n".join(
        "<tr>" + "".join(f"<td>{html_text(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)  # type: ignore[attr-defined]
    )


def table_html(table: Table) -> str:
    """A plain HTML table (no index, no script, cells escaped); rows beyond ``table.visible``
    go into a ``<details>`` element below the first rows."""
    frame = table.frame
    head = "<thead><tr>" + "".join(f"<th>{html_text(c)}</th>" for c in frame.columns) + \
        "</tr></thead>"
    caption = f"<caption>{html_text(table.caption)}</caption>" if table.caption else ""
    shown = frame if len(frame) <= table.visible + 3 else frame.iloc[: table.visible]
    out = (f'<div class="table-wrap"><table class="table">{caption}{head}\n<tbody>\n'
           f"{_rows_html(shown)}\n</tbody></table>")
    rest = frame.iloc[len(shown):]
    if len(rest):
        out += (f'<details class="more-rows"><summary>Show the other {len(rest):,} of '
                f"{len(frame):,} rows</summary>\n<table class=\"table\">{head}\n<tbody>\n"
                f"{_rows_html(rest)}\n</tbody></table></details>")
    return out + "</div>"


_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).disable(["image"])


def _math(tex: str) -> str:
    try:
        return str(latex2mathml.converter.convert(tex))
    except Exception:  # noqa: BLE001 - malformed math is shown as text, never a crash
        return f"<code>{html_text(tex)}</code>"


def markdown_html(text: str) -> str:
    """Markdown prose to HTML (raw HTML and images off) with ``$...$`` math as MathML."""
    maths: list[str] = []

    def stash(match: re.Match[str]) -> str:
        maths.append(_math(match.group(1)))
        return f"\ue000{len(maths) - 1}\ue001"

    rendered = _MD.render(_MATH.sub(stash, text)).translate(_INERT)
    for i, mathml in enumerate(maths):
        rendered = rendered.replace(f"\ue000{i}\ue001", mathml)
    return rendered


def block_html(block: Block, *, scripts: bool = True) -> str:
    """One block as HTML; an Html block's script inline only when ``scripts``."""
    if isinstance(block, Text):
        return markdown_html(block.markdown)
    if isinstance(block, Table):
        return table_html(block)
    if isinstance(block, Figure):
        return figure_html(block)
    if isinstance(block, Html):
        if scripts and block.script:
            return f"{block.markup}\n<script>{block.script}</script>"
        return block.markup
    raise TypeError(f"not a report block: {type(block).__name__}")


def _fenced(html_text_: str) -> str:
    """A pandoc raw-HTML block whose fence is longer than any backtick run inside."""
    longest = max((len(m) for m in re.findall(r"`+", html_text_)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{{=html}}\n{html_text_}\n{fence}"


def _heading_markdown(title: str) -> str:
    return re.sub(r"([\\`*_{}\[\]()#+!<>$|~&])", r"\\\1", title)


def section_markdown(section: Section, level: int = 2) -> str:
    """A section as Quarto Markdown: a Markdown heading (for Quarto's table of contents) and
    the section's HTML in one raw block, so pandoc passes it through unparsed."""
    heading = f"{'#' * level} {_heading_markdown(section.title)} {{#{_id(section.id)}}}"
    body = "\n".join(block_html(b) for b in section.blocks)
    return f"{heading}\n\n{_fenced(body)}\n"


def section_html(section: Section) -> str:
    """A section as an HTML <section> element (scripts left to the page)."""
    parts = [f'<section id="{_id(section.id)}" class="report-section">',
             f"<h2>{html_text(section.title)}</h2>"]
    parts.extend(block_html(b, scripts=False) for b in section.blocks)
    parts.append("</section>")
    return "\n".join(parts)


def _template() -> jinja2.Template:
    source = resources.files("steerstats").joinpath("report_assets/report.html.j2")
    css = resources.files("steerstats").joinpath("report_assets/report.css")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals["css"] = css.read_text(encoding="utf-8")
    return env.from_string(source.read_text(encoding="utf-8"))


def _scripts(sections: list[Section]) -> list[str]:
    seen: list[str] = []
    for s in sections:
        for b in s.blocks:
            if isinstance(b, Html) and b.script and b.script not in seen:
                seen.append(b.script)
    return seen


def _csp(scripts: list[str]) -> str:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    )
    return ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
            f"script-src {hashes or chr(39) + 'none' + chr(39)}; base-uri 'none'; "
            "form-action 'none'")


LEAD = "finding"


def to_html(data: ReportData, sections: list[Section]) -> str:
    """The whole report as one self-contained HTML page; a section with id ``finding`` comes
    right after the title, before the table of contents."""
    lead = [s for s in sections if s.id == LEAD]
    rest = [s for s in sections if s.id != LEAD]
    scripts = _scripts(sections)
    return _template().render(
        title=data.title,
        source=data.source,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        csp=Markup(_csp(scripts)),  # ours: quotes and hashes, no data
        toc=[(_id(s.id), s.title) for s in rest],
        lead=Markup("\n".join(section_html(s) for s in lead)),
        body=Markup("\n".join(section_html(s) for s in rest)),
        scripts=[Markup(s) for s in scripts],
    )
