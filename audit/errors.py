"""User-facing errors. Each maps to one clear message and exit code 2 in the CLI."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AuditInputError(Exception):
    """Invalid spec, data or model: the user's input is wrong, not our code."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class SpecError(AuditInputError):
    """The spec file is malformed or names something that does not exist."""


class DataError(AuditInputError):
    """A dataset is missing, malformed or inconsistent with the model."""


class ModelError(AuditInputError):
    """The model cannot be loaded or does not fit the data."""


class SkipCheck(Exception):
    """Raised by a check whose requirements are not met; the check becomes `skipped`."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix naming the closest choice, or the list of choices."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{close[0]}'?"
    if choices and len(choices) <= 12:
        return " Choose from: " + ", ".join(choices) + "."
    return ""


def env_limit(name: str, default: float) -> float:
    """A positive limit from environment variable `name`; an unusable value (not a
    number, zero or negative) keeps `default` rather than breaking every command."""
    import os

    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default
