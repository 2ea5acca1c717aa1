"""One error root carrying an exit code and a hint; the exit-code table lives here.

The CLI catches :class:`SidecarError` only. Anything else is a bug: it is logged with its
traceback and the process exits 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """The one exit-code table, mirrored in the README."""

    OK = 0  # done, or nothing to do
    BUG = 1  # an unexpected error: a bug in sidecar, please report it
    USAGE = 2  # bad usage or configuration, or a subcommand that is not available
    REFUSED = 3  # refused by a safety rule: drift under --strict, impossible change, lease held
    HEALTH = 4  # a health check failed; any change was rolled back
    UNAVAILABLE = 5  # a dependency stayed unavailable after retries (database locked, Docker API)
    PENDING = 6  # `plan --check` found changes to apply


class SidecarError(Exception):
    """Root of every expected failure: a one-line message, a hint, an exit code."""

    exit_code: ExitCode = ExitCode.BUG

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(SidecarError):
    """Invalid configuration or usage; names the bad field."""

    exit_code = ExitCode.USAGE


class NotAvailableError(SidecarError):
    """A subcommand or feature that this build cannot do (yet): never pretend success."""

    exit_code = ExitCode.USAGE


class RefusedError(SidecarError):
    """A safety rule said no. Nothing was changed."""

    exit_code = ExitCode.REFUSED


class HealthError(SidecarError):
    """A health check failed. Any change made in this run was rolled back."""

    exit_code = ExitCode.HEALTH


class UnavailableError(SidecarError):
    """A dependency (database lock, Docker API, disk) stayed unavailable after retries."""

    exit_code = ExitCode.UNAVAILABLE


class PendingChangesError(SidecarError):
    """`plan --check`: there are changes to apply."""

    exit_code = ExitCode.PENDING


def and_more(items: Sequence[object]) -> str:
    """`` (and N more)`` after the first of ``items`` named in a message; "" for one."""
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""
