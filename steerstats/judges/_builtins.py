"""Imports the built-in judge modules so their decorators register them."""

from steerstats.judges import mmlu, rubric  # noqa: F401
