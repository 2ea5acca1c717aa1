"""``sidecar list``: this database's backups, newest first, with their verified status."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar.backup import store
from sidecar.backup.names import CHANGED
from sidecar.backup.store import BackupInfo
from sidecar.commands import display
from sidecar.errors import ExitCode
from sidecar.logs import get_logger
from sidecar.report import Result
from sidecar.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class ListResult:
    backups: list[BackupInfo]
    missing: list[str] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    database: Path | None = None
    others: dict[str, int] = field(default_factory=dict)  # other databases -> backups

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": str(self.database) if self.database else None,
            "backups": [b.to_dict() for b in self.backups],
            "missing": self.missing,
            "other_databases": self.others,
        }

    def render(self) -> str:
        others = "".join(
            f"\n(also {n} backup(s) of {db} in this folder: SIDECAR_DATABASE={db} sidecar list)"
            for db, n in self.others.items()
        )
        if not self.backups and not self.missing:
            return ("no backups" + (f" of {self.database}" if self.database else "")) + others
        # Backups that a newer one names as the last holding data since lost (retention keeps them).
        anchors = {
            str(lost.get("since")) for b in self.backups if (lost := b.rows_vanished) is not None
        }
        rows = [("ID", "STATUS", "AGE", "SIZE", "REASON", "NOTE")]
        rows += [
            (
                b.id,
                _status(b),
                display.age(b.taken_at, self.now),
                display.size(b.size),
                b.reason,
                _note(b, kept=b.id in anchors),
            )
            for b in self.backups
        ]
        rows += [(m, "MISSING", "", "", "", "") for m in self.missing]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        return (
            "\n".join(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                for row in rows
            )
            + others
        )


def _status(info: BackupInfo) -> str:
    """verified; CORRUPT (a failed verify, a wrong size); CHANGED (modified after its
    manifest, not verified since); UNVERIFIED (no manifest)."""
    if info.verified:
        return "verified"
    if not info.manifest:
        return "UNVERIFIED"
    return "CHANGED" if info.problem == CHANGED else "CORRUPT"


def _note(info: BackupInfo, *, kept: bool) -> str:
    """Why a backup cannot be trusted; where most of the data vanished
    (store.rows_vanished), and the backup kept for it."""
    if info.problem and info.manifest:
        return info.problem
    if kept:
        return "kept: the last backup before the data vanished"
    lost = info.rows_vanished
    if lost is None:
        return ""
    return f"{lost.get('rows_now')} of {lost.get('rows_before')} rows left"


def list_backups(settings: Settings, *, remote: bool = False, **_: Any) -> Result:
    """The configured database's backups (every backup when none is), newest first, and how
    many of other databases share the folder (``remote``: the offsite copies instead)."""
    if remote:
        from sidecar.commands import offsite  # noqa: PLC0415

        return offsite.list_remote(settings)
    db = settings.database
    every = store.list_backups(settings.backup_dir)
    ours = store.backups_of(settings.backup_dir, db)
    others: dict[str, int] = {}
    for info in every:
        if db is not None and not info.belongs_to(db):
            others[str(info.database)] = others.get(str(info.database), 0) + 1
    result = ListResult(
        ours, store.missing_backups(settings.backup_dir, db), database=db, others=others
    )
    log.info("backup.listed", count=len(result.backups), missing=len(result.missing),
             corrupt=[b.id for b in ours if b.manifest and not b.verified],
             other_databases=len(others))  # fmt: skip
    return result
