"""Subcommands: backup, list, verify, restore, prune. Orchestration only: the work is in
:mod:`sidecar.backup`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar import alerts, checks, database, schedule
from sidecar.backup import retention, store
from sidecar.backup.create import create_backup
from sidecar.backup.names import CHANGED, same_file
from sidecar.backup.restore import RestoreOutcome, restore_backup
from sidecar.backup.retention import PruneOutcome, Retention
from sidecar.backup.store import BackupInfo
from sidecar.backup.verify import verify_backup
from sidecar.database import SIDE_FILES
from sidecar.errors import ConfigError, ExitCode, HealthError, RefusedError, UnavailableError
from sidecar.lease import hold_lease, remove_restore_partial_if_free
from sidecar.logs import get_logger
from sidecar.report import Result
from sidecar.settings import Settings
from sidecar.signals import Stop, stop_on_sigterm

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
    with stop_on_sigterm() as stop:
        first = take_backup(settings, reason=reason, no_prune=no_prune)
        run_scheduled(settings, stop, no_prune=no_prune)
    return first


def run_scheduled(settings: Settings, stop: Stop, *, no_prune: bool = False) -> None:
    """The long-running mode (``backup`` and ``deploy`` with SIDECAR_SCHEDULE): a backup at
    every slot, restore drills beside them (SIDECAR_DRILL_SCHEDULE), until ``stop``."""
    assert settings.schedule is not None  # noqa: S101 - callers check it
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
    with alerts.observing("backup") as run:
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
    pruned = None if no_prune else _prune_by_policy(settings, dry_run=False, protect=(info.id,))
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
    # Offsite (SIDECAR_OFFSITE): a failure raises (exit 5); the local backup stays.
    from sidecar.commands import offsite  # noqa: PLC0415

    return BackupResult(info, seconds, pruned, offsite.upload_backup(settings, info))


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
                _age(b.created_at, self.now),
                _size(b.size),
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

    @property
    def failure(self) -> HealthError | None:
        """The error line for the CLI when a backup failed (the details are the result)."""
        if not self.bad:
            return None
        first = self.bad[0]
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


@dataclass(frozen=True)
class RestoreResult:
    outcome: RestoreOutcome
    skipped: dict[str, list[str]] = field(default_factory=dict)  # newer backups that failed

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
            "skipped": [{"id": k, "problems": v} for k, v in self.skipped.items()],
            "seconds": round(o.seconds, 3),
        }

    def render(self) -> str:
        o = self.outcome
        skipped = "".join(
            f"\nskipped {backup_id}: {'; '.join(problems)}"
            for backup_id, problems in self.skipped.items()
        )
        if o.dry_run:
            return (
                "dry run, nothing changed; would:\n"
                + "\n".join(f"  {a}" for a in o.actions)
                + skipped
            )
        text = f"restored {o.backup.id} into {o.target}" + skipped
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
    from_other_database: bool = False,
    source: str = "local",
    **_: Any,
) -> RestoreResult:
    """Replace the database (or create ``to``) from a listed, verified backup of it
    (``source`` offsite: an offsite copy, downloaded and checked first).

    ``latest`` is the newest of this database's backups that passes verification: newer
    ones that fail are skipped, and named. A backup of another database (its manifest's
    source) replaces this one only with ``from_other_database``.
    """
    db = settings.database
    target = _restore_target(settings, to)
    skipped: dict[str, list[str]] = {}
    with ExitStack() as fetching:
        if source == "offsite":
            from sidecar.commands import offsite  # noqa: PLC0415

            info = fetching.enter_context(offsite.fetched(settings, backup_id))
        elif backup_id == "latest":
            info, skipped = _latest_passing(settings.backup_dir, db)
        else:
            info = store.find_backup(
                settings.backup_dir, backup_id, verified_only=True, database=db
            )
        if source == "offsite" or backup_id != "latest":
            _refuse_other_database(info, target, to=to, allowed=from_other_database)
        return _restore_from(
            settings,
            info,
            target,
            dry_run=dry_run,
            force=force,
            to=to,
            checked=source != "offsite" and backup_id == "latest",
            skipped=skipped,
        )


def _refuse_other_database(
    info: BackupInfo, target: Path, *, to: str | None, allowed: bool
) -> None:
    if to is None and not info.belongs_to(target) and not allowed:
        raise RefusedError(
            f"backup {info.id} is of {info.database}, not of {target}",
            hint="check SIDECAR_DATABASE and the ID (sidecar list); to put that "
            "database's data into this one on purpose, add --from-other-database",
        )


def _restore_from(
    settings: Settings,
    info: BackupInfo,
    target: Path,
    *,
    dry_run: bool,
    force: bool,
    to: str | None,
    checked: bool,
    skipped: dict[str, list[str]],
) -> RestoreResult:
    """The restore path for a verified ``info``: lease, safety backup, atomic replace."""
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
            verified=checked,
            lock_timeout=settings.wait_timeout,
        )
    if not dry_run:
        store.append_history(
            settings.backup_dir,
            {
                "event": "restore",
                "id": info.id,
                "target": str(target),
                "safety_backup": outcome.safety_backup.id if outcome.safety_backup else None,
                "skipped": list(skipped),
            },
            group=settings.backup_group,
        )
    return RestoreResult(outcome, skipped)


def _restore_target(settings: Settings, to: str | None) -> Path:
    """The database, or the new file ``to``: in an existing folder, and neither the live
    database nor one of its side files (a restored copy named like its -wal would be taken
    for the database's write-ahead log)."""
    if to is None:
        return settings.require_database()
    target = Path(to)
    if target.exists() or target.is_symlink():
        raise RefusedError(
            f"{target} already exists; --to only writes a new file",
            hint="choose a path that does not exist yet",
        )
    if not target.parent.is_dir():
        raise ConfigError(
            f"cannot restore into {target}: the folder {target.parent} does not exist",
            hint="create the folder first, or choose a path in an existing folder",
        )
    db = settings.database
    if db is not None and any(same_file(target, Path(f"{db}{side}")) for side in ("", *SIDE_FILES)):
        raise RefusedError(
            f"--to {target} is the live database {db} or one of its side files",
            hint="to replace the database itself, leave out --to; to inspect a backup, "
            "choose another file name",
        )
    return target


def _latest_passing(backup_dir: Path, db: Path | None) -> tuple[BackupInfo, dict[str, list[str]]]:
    """The newest backup of ``db`` that passes verification, and the newer ones that did
    not (each skip is logged). Without a configured database, the folder must hold the
    backups of one database only: `latest` never picks between databases."""
    backups = store.list_backups(backup_dir)
    ours = store.backups_of(backup_dir, db)
    if db is None and len({b.database for b in ours if b.manifest}) > 1:
        names = ", ".join(sorted({str(b.database) for b in ours if b.manifest}))
        raise ConfigError(
            f"{backup_dir} holds backups of several databases ({names}): which one's latest?",
            hint="set SIDECAR_DATABASE (or --database), or name the backup ID",
        )
    skipped: dict[str, list[str]] = {}
    for info in ours:
        if not info.manifest.get("verified"):
            continue
        # A recorded failure or a wrong size is known without reading the file again; a
        # file changed after its manifest is verified now, and may well pass.
        known = info.problem if info.problem != CHANGED else None
        problems = [known] if known else verify_backup(info)
        if not problems:
            return info, skipped
        skipped[info.id] = problems
        hint = "a newer backup failed verification; an older one is restored"
        log.warning("restore.skipped", id=info.id, problems=problems, hint=hint)
    if skipped:
        raise RefusedError(
            f"every backup of {db or 'the database'} in {backup_dir} fails verification "
            f"({len(skipped)}: {', '.join(skipped)})",
            hint="run sidecar verify; restore nothing until a good backup is found",
        )
    raise store.no_backups_of(db, backups, backup_dir, verified=True)


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
    outcome = _prune_by_policy(settings, dry_run=dry_run)
    if outcome.deleted and not dry_run:
        store.append_history(
            settings.backup_dir,
            {"event": "prune", "deleted": [b.id for b in outcome.deleted]},
            group=settings.backup_group,
        )
    return PruneResult(outcome)


def _prune_by_policy(
    settings: Settings, *, dry_run: bool, protect: tuple[str, ...] = ()
) -> PruneOutcome:
    """The settings' retention, per database (:func:`retention.prune_by_policy`)."""
    policy = Retention(
        settings.keep, settings.keep_daily, settings.keep_weekly, settings.keep_monthly
    )
    return retention.prune_by_policy(
        settings.backup_dir, policy, database=settings.database,
        environment=settings.environment, dry_run=dry_run, protect=protect,
    )  # fmt: skip


def _locked_out(exc: BaseException) -> bool:
    """The backup could not read the database because another connection holds its lock."""
    cause = exc.__cause__ if isinstance(exc, UnavailableError) else exc
    return cause is not None and checks.is_busy(cause)


def _create_with_app_stopped(settings: Settings, db: Path, reason: str) -> BackupInfo:
    """SIDECAR_BACKUP_STOP_APP: the app holds its database in exclusive locking mode, so
    stop it (gracefully, recorded on the data volume), back up, and start it again at once,
    under the lease as a deploy does."""
    from sidecar import appstop, containers  # noqa: PLC0415 (the Docker SDK only when needed)

    if not (settings.app or settings.app_label):
        raise ConfigError(
            "SIDECAR_BACKUP_STOP_APP is set, but no app is configured to stop",
            hint="set SIDECAR_APP (or SIDECAR_APP_LABEL) to the app's service or container",
        )
    apps = containers.connect(required=True)
    assert apps is not None  # noqa: S101 - required=True raises instead
    app = apps.find(settings.app, label=settings.app_label)
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
    )
