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
