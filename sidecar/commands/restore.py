"""``sidecar restore``: replace the database (or create ``--to``) from a verified backup,
after a safety backup. The work is in :mod:`sidecar.backup.restore`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar import alerts
from sidecar.backup import store
from sidecar.backup.names import CHANGED, same_file
from sidecar.backup.restore import PRE_RESTORE, RestoreOutcome, restore_backup
from sidecar.backup.store import BackupInfo
from sidecar.backup.verify import verify_backup
from sidecar.database import SIDE_FILES
from sidecar.errors import ConfigError, ExitCode, RefusedError
from sidecar.lease import hold_lease
from sidecar.logs import get_logger
from sidecar.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class RestoreResult:
    outcome: RestoreOutcome
    skipped: dict[str, list[str]] = field(default_factory=dict)  # newer backups that failed
    # newer safety backups `latest` passed over: each holds a database a restore replaced
    passed_over: list[str] = field(default_factory=list)

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
            "salvaged": str(o.salvaged) if o.salvaged else None,
            "removed_side_files": o.removed_side_files,
            "actions": o.actions,
            "skipped": [{"id": k, "problems": v} for k, v in self.skipped.items()],
            "passed_over": self.passed_over,
            "seconds": round(o.seconds, 3),
        }

    def render(self) -> str:
        o = self.outcome
        skipped = "".join(
            f"\nskipped {backup_id}: {'; '.join(problems)}"
            for backup_id, problems in self.skipped.items()
        ) + "".join(
            f"\npassed over {backup_id}: the database an earlier restore replaced "
            f"(to bring it back: sidecar restore {backup_id})"
            for backup_id in self.passed_over
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
        if o.salvaged:
            text += f"\nwhat SQLite could not read is kept, byte for byte, in {o.salvaged}"
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
    """Replace the database (or create ``to``) from a verified backup of it, or an offsite
    copy; the people responsible hear how it went (:mod:`sidecar.alerts`, not a dry run).
    See docs/design.md, 'Which backup a restore takes'."""
    with alerts.observing("restore", enabled=not dry_run, by_hand=True) as run:
        result = run.result = _restore(
            settings, backup_id=backup_id, dry_run=dry_run, force=force, to=to,
            from_other_database=from_other_database, source=source,
        )  # fmt: skip
    return result


def _restore(
    settings: Settings,
    *,
    backup_id: str,
    dry_run: bool,
    force: bool,
    to: str | None,
    from_other_database: bool,
    source: str,
) -> RestoreResult:
    if from_other_database and backup_id == "latest":
        raise ConfigError(
            "--from-other-database needs a backup ID: `latest` is only ever this database's",
            hint="name the other database's backup: sidecar restore <id> --from-other-database",
        )
    db = settings.database
    target = _restore_target(settings, to)
    skipped: dict[str, list[str]] = {}
    passed_over: list[str] = []
    with ExitStack() as fetching:
        if source == "offsite":
            from sidecar.commands import offsite  # noqa: PLC0415

            info = fetching.enter_context(offsite.fetched(settings, backup_id, skipped=skipped))
        elif backup_id == "latest":
            info, skipped, passed_over = _latest_passing(settings.backup_dir, db, dry_run)
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
            verified=source != "offsite" and backup_id == "latest",
            skipped=skipped,
            passed_over=passed_over,
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
    verified: bool,
    skipped: dict[str, list[str]],
    passed_over: list[str],
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
            verified=verified,
            lock_timeout=settings.wait_timeout,
            io=settings.backup_io,
            verify=settings.verify,
            min_free_margin=settings.min_free_margin,
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
    return RestoreResult(outcome, skipped, passed_over)


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


def _latest_passing(
    backup_dir: Path, db: Path | None, dry_run: bool
) -> tuple[BackupInfo, dict[str, list[str]], list[str]]:
    """The newest backup of ``db`` that passes verification, the newer ones that did not
    (each skip is logged), and the newer safety backups passed over: a ``pre-restore``
    backup holds the database a restore replaced, which `latest` never brings back (run
    twice, a restore would otherwise undo itself); it is restored by its ID. Without a
    configured database, the folder must hold the backups of one database only: `latest`
    never picks between databases. See docs/design.md, 'Which backup a restore takes'."""
    backups = store.list_backups(backup_dir)
    ours = store.backups_of(backup_dir, db)
    if db is None and len({b.database for b in ours if b.manifest}) > 1:
        names = ", ".join(sorted({str(b.database) for b in ours if b.manifest}))
        raise ConfigError(
            f"{backup_dir} holds backups of several databases ({names}): which one's latest?",
            hint="set SIDECAR_DATABASE (or --database), or name the backup ID",
        )
    skipped: dict[str, list[str]] = {}
    passed_over: list[str] = []
    for info in ours:
        if not info.manifest.get("verified"):
            continue
        # A recorded failure or a wrong size is known without reading the file again; a
        # file changed after its manifest is verified now, and may well pass.
        known = info.problem if info.problem != CHANGED else None
        if info.manifest.get("reason") == PRE_RESTORE and known is None:
            passed_over.append(info.id)
            continue
        problems = [known] if known else verify_backup(info, record=not dry_run)
        if not problems:
            if passed_over:
                log.info("restore.passed_over", ids=passed_over, hint=_PASSED_OVER)
            return info, skipped, passed_over
        skipped[info.id] = problems
        hint = "a newer backup failed verification; an older one is restored"
        log.warning("restore.skipped", id=info.id, problems=problems, hint=hint)
    if skipped:
        raise RefusedError(
            f"every backup of {db or 'the database'} in {backup_dir} fails verification "
            f"({len(skipped)}: {', '.join(skipped)})",
            hint="run sidecar verify; restore nothing until a good backup is found",
        )
    if passed_over:
        raise RefusedError(
            f"the only verified backups of {db or 'the database'} in {backup_dir} are of "
            f"databases a restore replaced ({', '.join(passed_over)})",
            hint=f"{_PASSED_OVER}: sidecar restore {passed_over[0]}",
        )
    raise store.no_backups_of(db, backups, backup_dir, verified=True)


_PASSED_OVER = "`latest` never brings back what a restore replaced; to do so, name it"


def _app_stopper(settings: Settings) -> Callable[[], AbstractContextManager[None]] | None:
    """With SIDECAR_APP set, restore stops the app through Docker and starts it again at
    the end, whatever happens. Imported here only: the backup commands never need Docker."""
    if not (settings.app or settings.app_label):
        return None
    from sidecar.containers.engine import find_app  # noqa: PLC0415 (the Docker SDK only here)

    apps, app = find_app(settings.app, label=settings.app_label)
    return lambda: apps.stopped(app, timeout=settings.stop_timeout)
