"""Condition contamination: rows whose method sends no steering prompt, but whose own system
prompt holds their query's steering instruction.

The seed study's prompt method edited the shared message list in place, so the MMLU rows it
labelled "Auto Steer" carry the instruction ("When answering, please be funny.") in their
system prompt: that condition is really Auto Steer + prompt. The rows say so themselves, so
the importer reads it from them rather than trusting the label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from steerstats.datasets import normalize_text

__all__ = ["PROMPTLESS", "carries_instruction", "contaminated", "relabel"]

PROMPTLESS: dict[str, str] = {
    "control": "prompt",
    "autosteer": "autosteer+prompt",
    "agentic": "agentic+prompt",
}
"""Methods that send no steering instruction -> the method a row is once it carries one."""


def carries_instruction(
    instructions: Sequence[Sequence[str]] | pd.Series,
    system_prompts: Sequence[object] | pd.Series,
) -> np.ndarray:
    """Which rows' system prompt holds one of their steering instruction texts (matched
    case-insensitively with whitespace collapsed; a missing prompt holds none)."""
    out = np.zeros(len(system_prompts), dtype=bool)
    for i, (texts, system) in enumerate(zip(instructions, system_prompts, strict=True)):
        if system is None or pd.isna(system):  # type: ignore[arg-type]
            continue
        prompt = normalize_text(str(system)).lower()
        out[i] = any(t and normalize_text(t).lower() in prompt for t in texts)
    return out


def contaminated(
    methods: Sequence[str] | pd.Series,
    instructions: Sequence[Sequence[str]] | pd.Series,
    system_prompts: Sequence[object] | pd.Series,
) -> np.ndarray:
    """Which rows of a promptless method (:data:`PROMPTLESS`) carry one of their query's
    steering instructions in their system prompt.

    Parameters
    ----------
    methods
        Each row's steerstats method name (``control``, ``autosteer``, ...).
    instructions
        Each row's steering instruction texts (the query as the source wrote it, and as the
        design names it); matched case-insensitively with whitespace collapsed.
    system_prompts
        Each row's system prompt (missing counts as empty).

    Returns
    -------
    numpy.ndarray of bool, one per row.
    """
    promptless = np.array([m in PROMPTLESS for m in methods], dtype=bool)
    return promptless & carries_instruction(instructions, system_prompts)


def relabel(method: str) -> str:
    """The method a contaminated row of ``method`` really is."""
    return PROMPTLESS.get(method, f"{method}+prompt")
