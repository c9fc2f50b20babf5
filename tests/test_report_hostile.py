"""Data never executes: a results folder whose every name and text is hostile (script tags,
event handlers, Markdown images and links to a local server, ``$...$`` math, Quarto
shortcodes, backtick fences, very long strings) renders, on both paths, as text.

Both pages are opened in headless Chromium with a listening server on 127.0.0.1: no request
may leave the page, no script from the data may run (``document.title`` and a sentinel global
stay untouched), and the console stays empty. The second path is the Markdown the qmd prints,
rendered by pandoc (the engine Quarto uses).
"""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_tables

from steerstats.reporting import build_sections, load_report, write_report

ROOT = Path(__file__).resolve().parents[1]
QMD = ROOT / "report" / "index.qmd"


class _Hits(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        _Hits.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        del args


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A server on 127.0.0.1 that counts what reaches it; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hits)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def payloads(url: str) -> dict[str, str]:
    """Hostile strings, each aimed at one way a page can be made to run or fetch something."""
    return {
        "model": "<script>document.title='pwned';window.__pwned='model'</script>",
        "method": f"![leak]({url}/method.png) <img src=x onerror=\"window.__pwned='method'\">",
        "steer": "a $\\frac{$ b {{< meta title >}} {{ x }}",
        "query_id": f"[click]({url}/query) $x^2$ ``` `tick`",
        "query": "<iframe src=\"" + url + "/frame\"></iframe>" + " very long" * 600,
        "prompt_id": "\"><svg onload=\"window.__pwned='prompt'\">",
        "response": ("<script>window.__pwned='response'</script></details></article>"
                     "</pre></code> ```{=html}\n<img src=" + url + "/r.png>\n```\n" + "x" * 6000),
        "reason": f"<img src=\"{url}/reason.png\"> *bold* $\\$",
        "rater": "judge <b onmouseover=\"window.__pwned='rater'\">a</b>",
        "rater2": f"judge $b$ {{{{< meta title >}}}} ![j]({url}/judge.png) <script>x</script>",
        "reply": (f"<score>3</score><script>window.__pwned='reply'</script>![x]({url}/j.png)"
                  "{{< include /etc/passwd >}}"),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, server: str) -> tuple[Path, dict[str, str]]:
    """A results folder built from the report fixture with every string replaced."""
    p = payloads(server)
    gens, scores = report_tables.tidy()
    for table in (gens, scores):
        table["model"] = table["model"].replace({"m-large": p["model"]})
        table["method"] = table["method"].replace({"prompt": p["method"], "caa": p["steer"]})
        table["query_id"] = table["query_id"].replace({"be-funny": p["query_id"]})
        table["prompt_id"] = table["prompt_id"].replace({"common-00": p["prompt_id"]})
    gens["query"] = np.where(gens["query_id"] == p["query_id"], p["query"], gens["query"])
    gens["response"] = np.where(gens["prompt_id"] == p["prompt_id"], p["response"],
                                gens["response"])
    # Two judges, so the Judges section draws its tables and chart from hostile names too.
    scores = report_tables.with_second_judge(scores, name=p["rater2"])
    scores["rater"] = scores["rater"].replace({"judge-a": p["rater"]})
    scores["reason"] = np.where(scores["value"].isna(), p["reason"], scores["reason"])
    folder = tmp_path_factory.mktemp("hostile") / "run <b>$x$ {{ y }}"
    report_tables.write_folder(folder, gens, scores, with_judgements=False)
    judged = report_tables.judgements(scores)
    judged["reply"] = p["reply"]
    judged.to_parquet(folder / "judgements.parquet", index=False)
    manifest = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(manifest.replace('"test"', '"<script>x</script>"'))
    return folder, p


PROBE = """
  return {
    title: document.title,
    pwned: typeof window.__pwned === 'undefined' ? null : String(window.__pwned),
    text: document.body.innerText,
    images: document.querySelectorAll('img, iframe, object, embed').length,
    links: Array.from(document.querySelectorAll('[href], [src], [action]')).map(
      e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action'))
      .filter(u => !u.startsWith('#') && !u.startsWith('data:')),
    handlers: Array.from(document.querySelectorAll('*')).flatMap(
      e => Array.from(e.attributes).map(a => a.name)).filter(n => n.startsWith('on')),
    scripts: Array.from(document.querySelectorAll('script')).map(s => s.textContent.length),
  };"""


def _check_page(page: Path, p: dict[str, str], hits: list[str], title: str) -> None:
    import browser

    why = browser.ensure_chromium()
    if why:
        pytest.skip(why)
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"<(img|iframe|object|embed)\b", html)
    visit = browser.visit(page, PROBE)
    assert visit.requests == [], visit.requests
    assert hits == [], hits
    assert visit.console == [], visit.console
    assert visit.dom["pwned"] is None
    assert visit.dom["title"] == title
    assert visit.dom["images"] == 0 and visit.dom["handlers"] == []
    assert visit.dom["links"] == []  # nothing points outside the page
    text = str(visit.dom["text"])
    # The data are there, as text.
    for key in ("model", "method", "rater", "rater2"):
        assert p[key] in text, key
    assert "{{< meta title >}}" in text and "$\\frac{$" in text


@pytest.mark.browser
def test_builtin_page_shows_hostile_data_as_text(hostile: tuple[Path, dict[str, str]],
                                                 tmp_path: Path) -> None:
    folder, p = hostile
    sections = build_sections(load_report(folder))
    assert not any("could not be built" in getattr(b, "markdown", "") for s in sections
                   for b in s.blocks)
    page = write_report(folder, tmp_path / "out", renderer="builtin")
    html = page.read_text(encoding="utf-8")
    assert html.count("<script") == 1  # the samples filter, nothing from the data
    _check_page(page, p, _Hits.hits, load_report(folder).title)


@pytest.mark.browser
def test_qmd_markdown_through_pandoc_shows_hostile_data_as_text(
    hostile: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    import browser

    why = browser.ensure_pandoc()
    if why:
        pytest.skip(why)
    folder, p = hostile
    markdown = "".join(report_tables.run_qmd(QMD, folder))
    source = tmp_path / "index.md"
    source.write_text("---\ntitle: steerstats report\n---\n\n" + markdown, encoding="utf-8")
    page = tmp_path / "index.html"
    done = subprocess.run([browser.PANDOC, str(source), "-f", "markdown", "-t", "html5",
                           "--standalone", "--mathml", "-o", str(page)],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    html = page.read_text(encoding="utf-8")
    assert html.count("<script") == 1  # the samples filter
    _check_page(page, p, _Hits.hits, "steerstats report")


def test_hostile_names_reach_no_markdown_or_math_parser(
    hostile: tuple[Path, dict[str, str]],
) -> None:
    """Outside raw-HTML blocks, the qmd's Markdown holds only the section headings."""
    folder, _ = hostile
    markdown = "".join(report_tables.run_qmd(QMD, folder))
    outside, fence = [], None
    for line in markdown.splitlines():
        if fence is None:
            m = re.match(r"^(`{3,})\{=html\}$", line)
            if m:
                fence = m.group(1)
            elif line.strip():
                outside.append(line)
        elif line == fence:
            fence = None
    assert fence is None
    assert outside and all(line.startswith("## ") for line in outside), outside[:5]
    assert "$" not in pd.Series(outside).str.cat()
