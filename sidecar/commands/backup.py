"""``sidecar backup``: a verified backup now, then prune; with SIDECAR_SCHEDULE, one at every
slot until SIGTERM. The work is in :mod:`sidecar.backup`."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar import alerts, database, sqlite
from sidecar.backup import snapshot, store
from sidecar.backup.create import create_backup
from sidecar.backup.retention import PruneOutcome
from sidecar.backup.store import BackupInfo
from sidecar.commands import display
from sidecar.commands.prune import apply_retention
from sidecar.errors import ConfigError, ExitCode, SidecarError, UnavailableError
from sidecar.lease import hold_lease, remove_restore_partial_if_free
from sidecar.logs import get_logger
from sidecar.settings import Settings
from sidecar.signals import Stop, stop_on_sigterm

log = get_logger(__name__)


@dataclass(frozen=True)
class BackupResult:
    backup: BackupInfo
    seconds: float
    pruned: PruneOutcome | None = None
    offsite: dict[str, Any] | None = None  # the proved upload (sidecar.commands.offsite)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup": {**self.backup.to_dict(), "manifest": self.backup.manifest},
            "seconds": round(self.seconds, 3),
            "pruned": [b.id for b in self.pruned.deleted] if self.pruned else [],
            "offsite": self.offsite,
        }

    def render(self) -> str:
        level = self.backup.manifest.get("verify_level", "?")
        text = (
            f"backup {self.backup.id}: {display.size(self.backup.size)}, verified ({level}), "
            f"{self.seconds:.1f}s"
        )
        if self.pruned and self.pruned.deleted:
            text += f"\npruned {len(self.pruned.deleted)}: " + ", ".join(
                b.id for b in self.pruned.deleted
            )
        if self.offsite:
            o = self.offsite
            text += (
                f"\noffsite: {o['key']}, {display.size(o['size'])}, "
                f"{'encrypted' if o['encrypted'] else 'NOT encrypted'}, proved ({o['proof']})"
            )
        return text


@dataclass(frozen=True)
class FirstBackupFailed:
    """The long-running mode stopped (SIGTERM) after its first backup failed: announced then,
    as any scheduled backup's failure is; the stop itself exits 0, as it always does."""

    error: Exception

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        error = self.error
        if isinstance(error, SidecarError):
            failed = {"message": error.message, "hint": error.hint,
                      "exit_code": int(error.exit_code)}  # fmt: skip
        else:
            failed = {"message": f"unexpected {type(error).__name__}: {error}",
                      "hint": "this is a bug in sidecar; please report it with the log",
                      "exit_code": int(ExitCode.BUG)}  # fmt: skip
        return {"backup": None, "first_backup_failed": failed}

    def render(self) -> str:
        failed = self.to_dict()["first_backup_failed"]
        return (
            f"the first backup failed (exit {failed['exit_code']}): {failed['message']}; "
            "the scheduled backups ran until SIGTERM"
        )


def backup(
    settings: Settings, *, reason: str = "manual", no_prune: bool = False, **_: Any
) -> BackupResult | FirstBackupFailed:
    """A verified backup now, then prune (unless ``no_prune``); with SIDECAR_SCHEDULE, then one
    at every slot until SIGTERM. See docs/design.md, 'The long-running backup mode'."""
    if not settings.schedule:
        return take_backup(settings, reason=reason, no_prune=no_prune)
    # The long-running mode only: croniter's import runs `file` on the interpreter.
    from sidecar import schedule  # noqa: PLC0415

    schedule.validate(settings.schedule)
    with stop_on_sigterm() as stop:
        # The first backup is one of the schedule's: a failure (the database locked, the
        # offsite store away) is announced and logged, and the process stays up. Only a
        # configuration error (exit 2), which no later slot can mend, ends it now.
        first = schedule.run_once(
            lambda: take_backup(settings, reason=reason, no_prune=no_prune),
            fatal=frozenset({ExitCode.USAGE}),
        )
        run_scheduled(settings, stop, no_prune=no_prune)
    return first if isinstance(first, BackupResult) else FirstBackupFailed(first)


def run_scheduled(settings: Settings, stop: Stop, *, no_prune: bool = False) -> None:
    """The long-running mode (``backup`` and ``deploy`` with SIDECAR_SCHEDULE): a backup at
    every slot, restore drills beside them (SIDECAR_DRILL_SCHEDULE), until ``stop``."""
    assert settings.schedule is not None  # noqa: S101 - callers check it
    from sidecar import schedule  # noqa: PLC0415 - the long-running mode only
    from sidecar.commands import offsite  # noqa: PLC0415 - only offsite pays for it

    with offsite.drills_scheduled(settings, stop):
        schedule.run_forever(
            settings.schedule,
            lambda: take_backup(settings, reason="scheduled", no_prune=no_prune),
            stop,
        )


def take_backup(settings: Settings, *, reason: str, no_prune: bool) -> BackupResult:
    """One verified backup, then prune (unless ``no_prune``) and a history record; observed
    by :mod:`sidecar.alerts` (pings, metrics, notifications), every scheduled run too."""
    # The copier child, started now: its start-up overlaps the checks and the folder's
    # preparation instead of delaying the copy (unused, e.g. a refused file, it is stopped).
    with snapshot.copier_ahead(settings.database), alerts.observing("backup") as run:
        result = run.result = _take_backup(settings, reason=reason, no_prune=no_prune)
    return result


def _take_backup(settings: Settings, *, reason: str, no_prune: bool) -> BackupResult:
    started = time.monotonic()
    db = settings.require_database()
    # Refuse what is not a readable SQLite database before the copy: an empty or foreign
    # file must never become a "verified" backup that retention then counts.
    database.check_database_file(db)
    remove_restore_partial_if_free(db, command="backup")
    try:
        try:
            # Allowed to stop the app: try briefly first, rather than a whole wait timeout.
            first_wait = min(settings.wait_timeout, 5.0) if settings.backup_stop_app else None
            info = _create(settings, db, reason, busy_timeout=first_wait)
        except (sqlite3.DatabaseError, UnavailableError) as exc:
            if not _locked_out(exc):
                raise
            if not settings.backup_stop_app:
                raise UnavailableError(
                    f"database {db} stayed locked for {settings.wait_timeout:g}s: an app in "
                    "exclusive locking mode keeps every backup out while it runs",
                    hint="set SIDECAR_APP and SIDECAR_BACKUP_STOP_APP=1 to let the sidecar stop "
                    "the app briefly for each backup (it is started again at once)",
                ) from None
            info = _create_with_app_stopped(settings, db, reason)
    except sqlite3.DatabaseError as exc:
        raise database.damaged(db, exc) from None
    # Prune only now that a new backup exists and passed verification.
    pruned = None if no_prune else apply_retention(settings, dry_run=False, protect=(info.id,))
    seconds = time.monotonic() - started
    store.append_history(
        settings.backup_dir,
        {
            "event": "backup",
            "id": info.id,
            "reason": reason,
            "bytes": info.size,
            "sha256": info.manifest.get("sha256"),
            "seconds": round(seconds, 3),
            "pruned": [b.id for b in pruned.deleted] if pruned else [],
        },
        group=settings.backup_group,
    )
    if settings.offsite is None:
        return BackupResult(info, seconds, pruned)
    # Offsite (SIDECAR_OFFSITE): a failure raises (exit 5); the local backup stays. Imported
    # only then: ~40 ms of modules a backup without offsite copies would load for nothing.
    from sidecar.commands import offsite  # noqa: PLC0415

    return BackupResult(info, seconds, pruned, offsite.upload_backup(settings, info))


def _locked_out(exc: BaseException) -> bool:
    """The backup could not read the database because another connection holds its lock."""
    cause = exc.__cause__ if isinstance(exc, UnavailableError) else exc
    return cause is not None and sqlite.is_busy(cause)


def _create_with_app_stopped(settings: Settings, db: Path, reason: str) -> BackupInfo:
    """SIDECAR_BACKUP_STOP_APP: the app holds its database in exclusive locking mode, so
    stop it (gracefully, recorded on the data volume), back up, and start it again at once,
    under the lease as a deploy does."""
    from sidecar import appstop  # noqa: PLC0415 (only with SIDECAR_BACKUP_STOP_APP)
    from sidecar.containers.engine import find_app  # noqa: PLC0415 (the Docker SDK only here)

    if not (settings.app or settings.app_label):
        raise ConfigError(
            "SIDECAR_BACKUP_STOP_APP is set, but no app is configured to stop",
            hint="set SIDECAR_APP (or SIDECAR_APP_LABEL) to the app's service or container",
        )
    apps, app = find_app(settings.app, label=settings.app_label)
    with hold_lease(db, wait=settings.lease_wait, command="backup"):
        appstop.start_recorded(db, apps, app)
        log.info("backup.stopping_app", container=app.name,
                 reason="the app holds the database in exclusive locking mode")  # fmt: skip
        with appstop.stopped(db, apps, app, timeout=settings.stop_timeout, command="backup"):
            return _create(settings, db, reason)


def _create(
    settings: Settings, db: Path, reason: str, *, busy_timeout: float | None = None
) -> BackupInfo:
    return create_backup(
        db,
        settings.backup_dir,
        environment=settings.environment,
        reason=reason,
        verify=settings.verify,
        compress=settings.compress,
        group=settings.backup_group,
        min_free_margin=settings.min_free_margin,
        busy_timeout=settings.wait_timeout if busy_timeout is None else busy_timeout,
        io=settings.backup_io,
    )
