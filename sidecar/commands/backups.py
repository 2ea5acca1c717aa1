"""Subcommands: backup, list, verify, restore, prune. Orchestration only: the work is in
:mod:`sidecar.backup` and :mod:`sidecar.catalog`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar import catalog, checks, database, schedule
from sidecar.backup import RestoreOutcome, create_backup, restore_backup, verify_backup
from sidecar.catalog import BackupInfo, PruneOutcome
from sidecar.errors import ExitCode, RefusedError, UnavailableError
from sidecar.lease import hold_lease
from sidecar.logs import get_logger
from sidecar.report import Result
from sidecar.settings import Settings
from sidecar.signals import stop_on_sigterm

log = get_logger(__name__)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _age(created: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - created).total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


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
            f"backup {self.backup.id}: {_size(self.backup.size)}, verified ({level}), "
            f"{self.seconds:.1f}s"
        )
        if self.pruned and self.pruned.deleted:
            text += f"\npruned {len(self.pruned.deleted)}: " + ", ".join(
                b.id for b in self.pruned.deleted
            )
        if self.offsite:
            o = self.offsite
            text += (
                f"\noffsite: {o['key']}, {_size(o['size'])}, "
                f"{'encrypted' if o['encrypted'] else 'NOT encrypted'}, proved ({o['proof']})"
            )
        return text


def backup(
    settings: Settings, *, reason: str = "manual", no_prune: bool = False, **_: Any
) -> BackupResult:
    """Take a verified backup now, then prune by the retention policy (unless ``no_prune``).

    With SIDECAR_SCHEDULE (``--schedule``) it then stays up and takes a backup at every slot
    until SIGTERM, as a Kubernetes native sidecar or a Compose service does. A failed
    scheduled backup is logged and retried at the next slot; it never ends the process.
    """
    if not settings.schedule:
        return take_backup(settings, reason=reason, no_prune=no_prune)
    schedule.validate(settings.schedule)
    from sidecar.commands import offsite  # noqa: PLC0415 - only offsite pays for it

    with stop_on_sigterm() as stop, offsite.drills_scheduled(settings, stop):
        first = take_backup(settings, reason=reason, no_prune=no_prune)
        schedule.run_forever(
            settings.schedule,
            lambda: take_backup(settings, reason="scheduled", no_prune=no_prune),
            stop,
        )
    return first


def take_backup(settings: Settings, *, reason: str, no_prune: bool) -> BackupResult:
    """One verified backup, then prune (unless ``no_prune``) and a history record."""
    started = time.monotonic()
    db = settings.require_database()
    # Refuse what is not a readable SQLite database before the copy: an empty or foreign
    # file must never become a "verified" backup that retention then counts.
    database.check_database_file(db)
    try:
        info = _create(settings, db, reason)
    except sqlite3.DatabaseError as exc:
        if checks.is_busy(exc):
            raise UnavailableError(
                f"database {db} stayed locked: {exc}",
                hint="the app may hold SQLite in exclusive mode; stop it or retry",
            ) from None
        raise database.damaged(db, exc) from None
    # Prune only now that a new backup exists and passed verification.
    pruned = (
        None if no_prune else catalog.prune_by_policy(settings, dry_run=False, protect=(info.id,))
    )
    seconds = time.monotonic() - started
    catalog.append_history(
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
    # Offsite (SIDECAR_OFFSITE): a failure raises (exit 5); the local backup stays.
    from sidecar.commands import offsite  # noqa: PLC0415

    return BackupResult(info, seconds, pruned, offsite.upload_backup(settings, info))


@dataclass(frozen=True)
class ListResult:
    backups: list[BackupInfo]
    missing: list[str] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {"backups": [b.to_dict() for b in self.backups], "missing": self.missing}

    def render(self) -> str:
        if not self.backups and not self.missing:
            return "no backups"
        # Backups that a newer one names as the last holding data since lost (retention keeps them).
        anchors = {
            str(lost.get("since")) for b in self.backups if (lost := b.rows_vanished) is not None
        }
        rows = [("ID", "STATUS", "AGE", "SIZE", "REASON", "NOTE")]
        rows += [
            (
                b.id,
                "verified" if b.verified else "UNVERIFIED",
                _age(b.created_at, self.now),
                _size(b.size),
                b.reason,
                _note(b, kept=b.id in anchors),
            )
            for b in self.backups
        ]
        rows += [(m, "MISSING", "", "", "", "") for m in self.missing]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )


def _note(info: BackupInfo, *, kept: bool) -> str:
    """Where most of the data vanished (catalog.rows_vanished), and the backup kept for it."""
    if kept:
        return "kept: the last backup before the data vanished"
    lost = info.rows_vanished
    if lost is None:
        return ""
    return f"{lost.get('rows_now')} of {lost.get('rows_before')} rows left"


def list_backups(settings: Settings, *, remote: bool = False, **_: Any) -> Result:
    """The backups in the backups folder, newest first (``remote``: the offsite copies)."""
    if remote:
        from sidecar.commands import offsite  # noqa: PLC0415

        return offsite.list_remote(settings)
    result = ListResult(
        catalog.list_backups(settings.backup_dir), catalog.missing_backups(settings.backup_dir)
    )
    log.info("backup.listed", count=len(result.backups), missing=len(result.missing))
    return result


@dataclass(frozen=True)
class VerifyResult:
    checked: dict[str, list[str]]  # id -> problems ([] when good)
    level: str

    @property
    def bad(self) -> list[str]:
        return [backup_id for backup_id, problems in self.checked.items() if problems]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.HEALTH if self.bad else ExitCode.OK

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
    """Verify one backup (or ``latest``), or all of them and report any that are missing.
    ``remote``: restore drills of the offsite copies (the newest, one, or ``every`` one)."""
    if remote:
        from sidecar.commands import offsite  # noqa: PLC0415

        return offsite.verify_remote(settings, backup_id=backup_id, every=every)
    if latest:
        backup_id = "latest"
    full = settings.verify == "full"
    if backup_id is not None:
        targets = [catalog.find_backup(settings.backup_dir, backup_id)]
        missing: list[str] = []
    else:
        targets = catalog.list_backups(settings.backup_dir)
        missing = catalog.missing_backups(settings.backup_dir)
    checked = {info.id: verify_backup(info, full=full) for info in targets}
    checked |= {m: ["backup file is missing (its manifest exists)"] for m in missing}
    result = VerifyResult(checked, "full" if full else "quick")
    log.info("backup.verified", checked=len(checked), bad=result.bad, level=result.level)
    return result


@dataclass(frozen=True)
class RestoreResult:
    outcome: RestoreOutcome

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "backup": o.backup.to_dict(),
            "target": str(o.target),
            "dry_run": o.dry_run,
            "safety_backup": o.safety_backup.id if o.safety_backup else None,
            "removed_side_files": o.removed_side_files,
            "actions": o.actions,
            "seconds": round(o.seconds, 3),
        }

    def render(self) -> str:
        o = self.outcome
        if o.dry_run:
            return "dry run, nothing changed; would:\n" + "\n".join(f"  {a}" for a in o.actions)
        text = f"restored {o.backup.id} into {o.target}"
        if o.safety_backup:
            text += f"\nthe previous database is saved as {o.safety_backup.id}"
        return text


def restore(
    settings: Settings,
    *,
    backup_id: str,
    dry_run: bool = False,
    force: bool = False,
    to: str | None = None,
    source: str = "local",
    **_: Any,
) -> RestoreResult:
    """Replace the database (or create ``to``) from a listed, verified backup
    (``source`` offsite: an offsite copy, downloaded and checked first)."""
    if source == "offsite":
        from sidecar.commands import offsite  # noqa: PLC0415

        with offsite.fetched(settings, backup_id) as fetched:
            return restore_from(settings, fetched, dry_run=dry_run, force=force, to=to)
    info = catalog.find_backup(settings.backup_dir, backup_id, verified_only=True)
    return restore_from(settings, info, dry_run=dry_run, force=force, to=to)


def restore_from(
    settings: Settings, info: BackupInfo, *, dry_run: bool, force: bool, to: str | None
) -> RestoreResult:
    """The restore path for a verified ``info``: lease, safety backup, atomic replace."""
    if to is not None:
        target = Path(to)
        if target.exists() or target.is_symlink():
            raise RefusedError(
                f"{target} already exists; --to only writes a new file",
                hint="choose a path that does not exist yet",
            )
    else:
        target = settings.require_database()
    in_place = to is None and not dry_run
    with ExitStack() as stack:
        stop_app = None
        if in_place:
            # One sidecar per data volume: never replace the file under a running deploy.
            stack.enter_context(hold_lease(target, wait=settings.lease_wait, command="restore"))
            stop_app = _app_stopper(settings)
        outcome = restore_backup(
            info,
            target,
            backup_dir=settings.backup_dir,
            environment=settings.environment,
            dry_run=dry_run,
            force=force,
            group=settings.backup_group,
            stop_app=stop_app,
        )
    if not dry_run:
        catalog.append_history(
            settings.backup_dir,
            {
                "event": "restore",
                "id": info.id,
                "target": str(target),
                "safety_backup": outcome.safety_backup.id if outcome.safety_backup else None,
            },
            group=settings.backup_group,
        )
    return RestoreResult(outcome)


def _app_stopper(settings: Settings) -> Callable[[], AbstractContextManager[None]] | None:
    """With SIDECAR_APP set, restore stops the app through Docker and starts it again at
    the end, whatever happens. Imported here only: the backup commands never need Docker."""
    if not (settings.app or settings.app_label):
        return None
    from sidecar import containers  # noqa: PLC0415 (keeps the Docker SDK out of `backup`)

    apps = containers.connect(required=True)
    assert apps is not None  # noqa: S101 - required=True raises instead of returning None
    app = apps.find(settings.app, label=settings.app_label)
    return lambda: apps.stopped(app, timeout=settings.stop_timeout)


@dataclass(frozen=True)
class PruneResult:
    outcome: PruneOutcome

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "dry_run": o.dry_run,
            "deleted": [b.id for b in o.deleted],
            "kept": [b.id for b in o.kept],
            "freed_bytes": o.freed_bytes,
        }

    def render(self) -> str:
        o = self.outcome
        verb = "would delete" if o.dry_run else "deleted"
        if not o.deleted:
            return f"nothing to prune ({len(o.kept)} kept)"
        return (
            f"{verb} {len(o.deleted)} ({_size(o.freed_bytes)}), kept {len(o.kept)}:\n"
            + "\n".join(f"  {b.id}" for b in o.deleted)
        )


def prune(settings: Settings, *, dry_run: bool = False, **_: Any) -> PruneResult:
    """Delete old backups by the retention policy (``dry_run``: only say which)."""
    outcome = catalog.prune_by_policy(settings, dry_run=dry_run)
    if outcome.deleted and not dry_run:
        catalog.append_history(
            settings.backup_dir,
            {"event": "prune", "deleted": [b.id for b in outcome.deleted]},
            group=settings.backup_group,
        )
    return PruneResult(outcome)


def _create(settings: Settings, db: Path, reason: str) -> BackupInfo:
    return create_backup(
        db,
        settings.backup_dir,
        environment=settings.environment,
        reason=reason,
        verify=settings.verify,
        compress=settings.compress,
        group=settings.backup_group,
        min_free_margin=settings.min_free_margin,
        busy_timeout=settings.wait_timeout,
    )
