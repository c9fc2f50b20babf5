"""Open a local HTML file in headless Chromium and record what it fetched and logged.

Used by the report tests: Debian's chromium and chromium-driver (at /usr/bin), driven through
selenium; network requests come from Chromium's performance log (DevTools Network events).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--disable-extensions", "--window-size=1280,900",
)


def _apt_install(binaries: tuple[str, ...], packages: tuple[str, ...]) -> str | None:
    """None when every path in ``binaries`` exists, else why not (after trying apt-get)."""
    if all(Path(b).exists() for b in binaries):
        return None
    what = "/".join(packages)
    if shutil.which("apt-get") is None:
        return f"{what} missing and apt-get is not available to install them"
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            return f"could not install {what}: {' '.join(cmd)} -> {done.stderr.strip()[-300:]}"
    if all(Path(b).exists() for b in binaries):
        return None
    return f"apt-get ran but {', '.join(binaries)} is still missing"


def ensure_chromium() -> str | None:
    """None when chromium and chromedriver are usable, else why not (after trying apt-get)."""
    return _apt_install((CHROMIUM, CHROMEDRIVER), ("chromium", "chromium-driver"))


PANDOC = "/usr/bin/pandoc"


def ensure_pandoc() -> str | None:
    """None when Debian's pandoc (the engine Quarto runs) is usable, else why not."""
    return _apt_install((PANDOC,), ("pandoc",))


@dataclass
class PageVisit:
    """What happened while a page was open."""

    requests: list[str] = field(default_factory=list)
    console: list[dict[str, object]] = field(default_factory=list)
    dom: dict[str, object] = field(default_factory=dict)


def visit(page: Path, script: str, screenshot: Path | None = None,
          screenshot_height: float | None = None, section: str | None = None) -> PageVisit:
    """Load ``page``, run ``script`` (its return value is the visit's ``dom``), then close.

    ``requests`` lists every URL the page's document asked for, other than the page itself;
    ``console`` holds the browser log entries (console messages and load errors). The
    screenshot starts at the top of the page, or at the element with id ``section``.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="steerstats-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get("about:blank")
        driver.get_log("performance")  # drop what the browser did before the page
        url = page.resolve().as_uri()
        driver.get(url)
        dom = driver.execute_script(script)
        result = PageVisit(dom=dom or {})
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                requested = message["params"]["request"]["url"]
                if requested != url:
                    result.requests.append(requested)
        result.console = driver.get_log("browser")
        if screenshot is not None:
            metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
            size = metrics["cssContentSize"]
            top = 0.0
            if section is not None:
                top = driver.execute_script(
                    "const e = document.getElementById(arguments[0]);"
                    "return e ? e.getBoundingClientRect().top + window.scrollY : null;", section)
                if top is None:
                    raise ValueError(f"no element with id {section!r} in {page}")
            height = min(size["height"] - top, screenshot_height or size["height"])
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": top, "width": size["width"], "height": height,
                         "scale": 1},
            })
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return result
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python tests/browser.py PAGE OUT.png [--section ID] [--height PX] [--no-full]``: a
    1280 px wide screenshot of PAGE's first screen (900 px; from the section with id ID if
    given) and, unless --no-full, ``OUT-full.png`` of the whole page; prints any network
    request or console message the page caused (there should be none)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--section", help="id of the element the screenshot starts at")
    parser.add_argument("--height", type=float, default=900, help="screenshot height (px)")
    parser.add_argument("--no-full", action="store_true", help="skip the whole-page shot")
    args = parser.parse_args(argv)
    why = ensure_chromium()
    if why:
        print(why)
        return 1
    seen = visit(args.page, "return document.title", screenshot=args.out,
                 screenshot_height=args.height, section=args.section)
    where = f"section #{args.section}" if args.section else "first screen"
    print(f"{args.out} ({where}, {args.height:g} px)")
    if not args.no_full:
        full = args.out.with_name(args.out.stem + "-full.png")
        visit(args.page, "return document.title", screenshot=full)
        print(f"{full} (whole page)")
    print(f"requests: {seen.requests or 'none'}; console: {seen.console or 'none'}")
    return 0 if not seen.requests and not seen.console else 1


if __name__ == "__main__":
    raise SystemExit(main())
