"""Imports the built-in method modules so their decorators register them."""

from steerstats.methods import control, prompt  # noqa: F401
from steerstats.methods import agentic, autosteer, autosteer_prompt, features  # noqa: F401
