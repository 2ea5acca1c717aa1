"""``sidecar version``."""

from __future__ import annotations

import platform
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from sidecar import __version__
from sidecar.errors import ExitCode
from sidecar.settings import Settings


@dataclass(frozen=True)
class VersionResult:
    version: str
    python: str
    sqlite: str

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        return f"sidecar {self.version} (python {self.python}, sqlite {self.sqlite})"


def version(settings: Settings) -> VersionResult:
    """Report the tool, Python and SQLite versions."""
    del settings
    return VersionResult(__version__, platform.python_version(), sqlite3.sqlite_version)
