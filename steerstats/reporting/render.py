"""Turn report sections into Markdown for Quarto, or into one self-contained HTML page.

Both renderers share the block renderers below: tables become plain HTML tables, charts become
inline SVG (vl-convert), so the two outputs differ only in how prose and math are handled:
Quarto (pandoc) reads the Markdown and renders math as MathML itself; the built-in renderer
uses markdown-it and latex2mathml. The page loads nothing from the network and runs no script.
"""

from __future__ import annotations

import functools
import html
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
from steerstats.reporting.content import Figure, Section, Table, Text
from steerstats.reporting.data import ReportData

__all__ = ["chart_svg", "section_markdown", "table_html", "to_html"]

_MATH = re.compile(r"(?<![\\$\w])\$(?=\S)(.+?)(?<=\S)\$(?![\w$])")
_SVG_ID = re.compile(r'\bid="([^"]+)"')


@functools.lru_cache(maxsize=64)
def _svg(spec_json: str) -> str:
    return vlc.vegalite_to_svg(json.loads(spec_json))


def chart_svg(figure: Figure) -> str:
    """The figure's chart as an inline SVG string, its ids prefixed so several can share a page."""
    svg = _svg(json.dumps(figure.chart.to_dict(), sort_keys=True))
    svg = re.sub(r"^<\?xml[^>]*\?>\s*", "", svg)
    prefix = f"{figure.name}-"
    for ident in set(_SVG_ID.findall(svg)):
        svg = svg.replace(f'id="{ident}"', f'id="{prefix}{ident}"')
        svg = svg.replace(f"url(#{ident})", f"url(#{prefix}{ident})")
        svg = svg.replace(f'href="#{ident}"', f'href="#{prefix}{ident}"')
    return svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(figure.caption)}" ', 1)


def figure_html(figure: Figure) -> str:
    """A <figure> with the chart's SVG and its caption."""
    return (
        f'<figure class="chart" id="fig-{figure.name}" data-chart="{figure.name}">\n'
        f"{chart_svg(figure)}\n<figcaption>{html.escape(figure.caption)}</figcaption>\n</figure>"
    )


def table_html(table: Table) -> str:
    """A plain HTML table (no index, no script, cells escaped)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.frame.columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in table.frame.itertuples(index=False)
    )
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return (f'<div class="table-wrap"><table class="table">{caption}<thead><tr>{head}</tr>'
            f"</thead>\n<tbody>\n{body}\n</tbody></table></div>")


def _raw(html_text: str) -> str:
    """A pandoc raw-HTML block, so Quarto passes the markup through untouched."""
    return f"```{{=html}}\n{html_text}\n```"


def section_markdown(section: Section, level: int = 2) -> str:
    """A section as Quarto Markdown: heading, prose as Markdown, tables and charts as raw HTML."""
    parts = [f"{'#' * level} {section.title} {{#{section.id}}}"]
    for block in section.blocks:
        if isinstance(block, Text):
            parts.append(block.markdown)
        elif isinstance(block, Table):
            parts.append(_raw(table_html(block)))
        else:
            parts.append(_raw(figure_html(block)))
    return "\n\n".join(parts) + "\n"


_MD = MarkdownIt("commonmark", {"html": False})


def markdown_html(text: str) -> str:
    """Markdown prose to HTML with ``$...$`` math converted to MathML."""
    maths: list[str] = []

    def stash(match: re.Match[str]) -> str:
        maths.append(latex2mathml.converter.convert(match.group(1)))
        return f"MATHPLACEHOLDER{len(maths) - 1}Z"

    rendered = _MD.render(_MATH.sub(stash, text))
    for i, mathml in enumerate(maths):
        rendered = rendered.replace(f"MATHPLACEHOLDER{i}Z", mathml)
    return rendered


def section_html(section: Section) -> str:
    """A section as an HTML <section> element."""
    parts = [f'<section id="{section.id}" class="report-section">',
             f"<h2>{html.escape(section.title)}</h2>"]
    for block in section.blocks:
        if isinstance(block, Text):
            parts.append(markdown_html(block.markdown))
        elif isinstance(block, Table):
            parts.append(table_html(block))
        else:
            parts.append(figure_html(block))
    parts.append("</section>")
    return "\n".join(parts)


def _template() -> jinja2.Template:
    source = resources.files("steerstats").joinpath("report_assets/report.html.j2")
    css = resources.files("steerstats").joinpath("report_assets/report.css")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals["css"] = css.read_text(encoding="utf-8")
    return env.from_string(source.read_text(encoding="utf-8"))


def to_html(data: ReportData, sections: list[Section]) -> str:
    """The whole report as one self-contained HTML page."""
    return _template().render(
        title=data.title,
        source=data.source,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        toc=[(s.id, s.title) for s in sections],
        body=Markup("\n".join(section_html(s) for s in sections)),
    )
