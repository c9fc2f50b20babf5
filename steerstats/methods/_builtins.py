"""Imports the built-in method modules so their decorators register them."""

from steerstats.methods import (  # noqa: F401
    agentic,
    autosteer,
    autosteer_prompt,
    caa,
    control,
    features,
    prompt,
    random,
)
