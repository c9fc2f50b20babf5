"""Exceptions the CLI prints as one clear message instead of a traceback."""

from __future__ import annotations


class SteerstatsError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(SteerstatsError, ValueError):
    """The experiment file is invalid: the message names the file, the field and what was
    expected."""


class PrerequisiteError(SteerstatsError):
    """An optional dependency or outside service is missing; the message ends with the fix."""


class BudgetExceeded(SteerstatsError):
    """A call was not made because it could push spend or call count past the configured budget."""


class DataError(SteerstatsError, ValueError):
    """An input file or table is malformed: the message names the file/column and the row."""


def pip_dependency_error(feature: str, packages: list[str], extra: str) -> PrerequisiteError:
    """Error for a missing optional dependency, ending with the install line."""
    return PrerequisiteError(
        f"{feature} needs {', '.join(packages)}, which is not installed. "
        f"Install it with: pip install 'steerstats[{extra}]'"
    )
