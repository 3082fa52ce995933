"""User-facing errors: each names what was wrong, the value given, and what is allowed."""

from __future__ import annotations

from typing import Any


class ScalingError(Exception):
    """Base class for errors caused by user input; the CLI prints them as one line."""


class ConfigError(ScalingError, ValueError):
    """A bad value for a named field (config key, CLI flag, sweep key, fit input, path)."""

    def __init__(self, field: str, value: Any, allowed: str, *, context: str | None = None):
        self.field = field
        self.value = value
        self.allowed = allowed
        self.context = context
        where = f"{context}: " if context else ""
        super().__init__(f"{where}{field} = {value!r} is invalid; allowed: {allowed}")


class DataError(ScalingError, ValueError):
    """A data source or results file that cannot be used (missing, empty, wrong type)."""


class FitError(ScalingError, ValueError):
    """A fit that cannot be run on the data given (too few points, bad values, no minimum)."""
