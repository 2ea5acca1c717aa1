"""The result contract every command returns: data for ``--json``, text for people."""

from __future__ import annotations

from typing import Any, Protocol

from sidecar.errors import ExitCode


class Result(Protocol):
    """What a command gives back. ``to_dict`` fields only ever grow (the ``--json`` contract)."""

    @property
    def exit_code(self) -> ExitCode: ...

    def to_dict(self) -> dict[str, Any]: ...

    def render(self) -> str:
        """Human-readable text for stdout (a table, a plan, a one-line summary)."""
        ...
