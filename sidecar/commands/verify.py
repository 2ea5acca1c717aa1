"""``sidecar verify``: check one backup, or all of this database's, against their manifests
(``--remote``: restore drills of the offsite copies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.backup import store
from sidecar.backup.verify import verify_backup
from sidecar.errors import ExitCode, HealthError
from sidecar.logs import get_logger
from sidecar.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class VerifyResult:
    checked: dict[str, list[str]]  # id -> problems ([] when good)
    level: str
    remote: bool = False  # restore drills of offsite copies

    @property
    def bad(self) -> list[str]:
        return [backup_id for backup_id, problems in self.checked.items() if problems]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.HEALTH if self.bad else ExitCode.OK

    @property
    def failure(self) -> HealthError | None:
        """The error line for the CLI when a backup failed (the details are the result)."""
        if not self.bad:
            return None
        first = self.bad[0]
        if self.remote:
            return HealthError(
                f"{len(self.bad)} of {len(self.checked)} offsite copies failed the restore "
                f"drill: {first}: " + "; ".join(self.checked[first][:2]),
                hint=f"never restore {first}; take a new backup (sidecar backup uploads it) "
                "and drill it (sidecar verify --remote); sidecar list --remote shows the "
                "copies that passed",
            )
        return HealthError(
            f"{len(self.bad)} of {len(self.checked)} backup(s) failed verification: {first}: "
            + "; ".join(self.checked[first][:2]),
            hint=f"never restore a bad backup; delete {first} (and its .json) once a newer "
            "backup verifies, or restore an older one that passes (sidecar verify <id>)",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "backups": [{"id": k, "ok": not v, "problems": v} for k, v in self.checked.items()],
            "bad": self.bad,
        }

    def render(self) -> str:
        if not self.checked:
            return "no backups to verify"
        lines = [
            f"{'ok ' if not problems else 'BAD'}  {backup_id}"
            + (f": {'; '.join(problems)}" if problems else "")
            for backup_id, problems in self.checked.items()
        ]
        if self.bad:
            lines.append(
                f"{len(self.bad)} of {len(self.checked)} backups failed: " + ", ".join(self.bad)
            )
        return "\n".join(lines)


def verify(
    settings: Settings,
    *,
    backup_id: str | None = None,
    remote: bool = False,
    every: bool = False,
    latest: bool = False,
    **_: Any,
) -> VerifyResult:
    """Verify one backup (or this database's ``latest``), or all of this database's (all in
    the folder when none is configured) and report any that are missing. ``remote``: restore
    drills of the offsite copies (the newest, one, or ``every`` one)."""
    if remote:
        from sidecar.commands import offsite  # noqa: PLC0415

        return offsite.verify_remote(settings, backup_id=backup_id, every=every)
    if latest:
        backup_id = "latest"
    full = settings.verify == "full"
    db = settings.database
    if backup_id is not None:
        targets = [store.find_backup(settings.backup_dir, backup_id, database=db)]
        missing: list[str] = []
    else:
        targets = store.backups_of(settings.backup_dir, db)
        missing = store.missing_backups(settings.backup_dir, db)
    checked = {info.id: verify_backup(info, full=full) for info in targets}
    checked |= {m: ["backup file is missing (its manifest exists)"] for m in missing}
    result = VerifyResult(checked, "full" if full else "quick")
    log.info("backup.verified", checked=len(checked), bad=result.bad, level=result.level)
    return result
