"""The README's Python examples run as written (a README example that fails is a defect)."""

from __future__ import annotations

import re

import pytest
from _shared import ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code: str):
    exec(compile(code, "README.md", "exec"), {})


# The README's TOML snippets are parts of an experiment file: each is completed with the
# sections it leaves out, must load, and its backends must accept their options.
TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
_REST = {
    "[experiment]": '[experiment]\nname = "readme"\n',
    "[[models]]": '[[models]]\nbackend = "mock"\nmodel = "m"\n',
    "[[methods]]": '[[methods]]\nname = "control"\n',
    "[queries]": '[queries]\nitems = [{ text = "be brief" }]\n',
    "[prompts.open]": '[prompts.open]\nitems = [{ text = "Say something." }]\n',
}


@pytest.mark.parametrize("snippet", TOML_BLOCKS, ids=[f"toml{i}" for i in range(len(TOML_BLOCKS))])
def test_readme_toml_block_loads(snippet: str, tmp_path, monkeypatch: pytest.MonkeyPatch):
    from steerstats.backends import create_backend
    from steerstats.config import parse_config

    monkeypatch.setenv("NDIF_API_KEY", "readme-test-not-a-key")  # remote = true checks for one
    text = snippet + "".join(rest for head, rest in _REST.items() if head not in snippet)
    cfg = parse_config(text, tmp_path / "readme.toml")
    for m in cfg.models:
        if m.backend == "nnsight":
            pytest.importorskip("nnsight")
        create_backend(m.backend, m.model, dict(m.options))  # options checked; nothing loaded
