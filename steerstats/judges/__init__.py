"""Judges: rubric judges on chat backends and computed metrics, with a registry."""

from steerstats.judges._registry import create_judge, default_repeats, judge, registry
from steerstats.judges.base import Judge, JudgeInput, Prompt, Score

__all__ = ["Judge", "JudgeInput", "Prompt", "Score", "create_judge", "default_repeats", "judge",
           "registry"]
