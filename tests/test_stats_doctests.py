"""The Examples sections of the stats modules run as doctests (they use shipped simulated data)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "steerstats.stats.bootstrap",
    "steerstats.stats.contrasts",
    "steerstats.stats.accuracy",
    "steerstats.stats.tradeoff",
    "steerstats.stats.examples",
    "steerstats.stats.mixed",
    "steerstats.stats.reliability",
    "steerstats.stats.dose",
    "steerstats.stats.power",
    "steerstats.stats.ranges",
    "steerstats.stats.roles",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
