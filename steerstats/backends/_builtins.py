"""Imports the built-in backend modules so their decorators register them.

Each module imports its heavy dependencies (torch, goodfire) only when a backend is created.
"""

from steerstats.backends import goodfire, local, mock, nnsight_backend, openai_compat  # noqa: F401
