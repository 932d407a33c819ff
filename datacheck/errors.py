"""The exception hierarchy users see. Each error carries the exit code the CLI maps it to."""

from __future__ import annotations


class DatacheckError(Exception):
    """Base of every error datacheck raises on purpose; its message says what to do."""

    exit_code: int = 2


class UsageError(DatacheckError):
    """Bad options, parameters or configuration (exit code 2)."""

    exit_code = 2


class DatasetUnreadableError(DatacheckError):
    """The dataset could not be read at all (exit code 3)."""

    exit_code = 3
