"""Imports the built-in judge modules so their decorators register them."""

from steerstats.judges import local, mmlu, rubric, sentiment  # noqa: F401
