"""Subcommands: plan, migrate (not implemented yet)."""

from __future__ import annotations

from typing import Any

from sidecar.errors import NotAvailableError
from sidecar.report import Result
from sidecar.settings import Settings


def plan(settings: Settings, **options: Any) -> Result:
    raise NotAvailableError(
        "this subcommand is not available in this build yet",
        hint="see the README for the subcommands that work today",
    )


def migrate(settings: Settings, **options: Any) -> Result:
    raise NotAvailableError(
        "this subcommand is not available in this build yet",
        hint="see the README for the subcommands that work today",
    )
