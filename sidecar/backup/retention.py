"""Retention: which backups to keep (pure), and prune, which deletes the others.

Only verified backups sidecar named are ever deleted; the newest verified one never is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from sidecar.backup.names import verification_path
from sidecar.backup.store import BackupInfo, backups_of, folder_lock, list_backups
from sidecar.backup.verification import record_verification
from sidecar.fs import fsync_dir
from sidecar.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Retention:
    """How many backups to keep: the newest ``keep``, and one a day, week and month."""

    keep: int
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0


def _bucket(kind: str, when: datetime) -> tuple[int, ...]:
    if kind == "daily":
        return (when.year, when.month, when.day)
    if kind == "weekly":
        iso = when.isocalendar()
        return (iso.year, iso.week)
    return (when.year, when.month)


def retention(
    backups: Sequence[BackupInfo],
    *,
    keep: int,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    now: datetime,
) -> tuple[list[BackupInfo], list[BackupInfo]]:
    """Split ``backups`` into (keep, delete). Pure: reads nothing, deletes nothing.

    Never deletes an unverified file, the newest verified backup, the newest one that is not
    a restore's safety backup, one dated in the future, or one a kept backup names as the
    last holding data since lost.
    See docs/design.md, 'Retention'.
    """
    verified = sorted((b for b in backups if b.verified), key=lambda b: b.sort_key, reverse=True)
    kept = {b.id for b in verified[: max(keep, 1)]}
    # And the newest that `restore latest` would take: a restore's safety backup, newest
    # right after it, must not push that out (the restore it replaced is never taken again).
    regular = next((b for b in verified if b.reason != "pre-restore"), None)
    if regular is not None:
        kept.add(regular.id)
    kept |= {b.id for b in verified if b.taken_at > now}
    for kind, count in (("daily", keep_daily), ("weekly", keep_weekly), ("monthly", keep_monthly)):
        seen: set[tuple[int, ...]] = set()
        for info in verified:
            bucket = _bucket(kind, info.taken_at.astimezone(UTC))
            if bucket in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(bucket)
            kept.add(info.id)
    for info in verified:
        if info.id in kept and (lost := info.rows_vanished) is not None:
            kept.add(str(lost.get("since")))
    keep_list = [b for b in backups if not b.verified or b.id in kept]
    delete_list = [b for b in backups if b.verified and b.id not in kept]
    return keep_list, delete_list


@dataclass(frozen=True)
class PruneOutcome:
    kept: list[BackupInfo] = field(default_factory=list)
    deleted: list[BackupInfo] = field(default_factory=list)
    dry_run: bool = False
    freed_bytes: int = 0


def prune(
    backup_dir: Path,
    *,
    keep: int,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    database: Path | None = None,
    environment: str | None = None,
    protect: Sequence[str] = (),
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneOutcome:
    """Apply :func:`retention` to the backups of one ``database`` (:func:`backups_of`) and
    ``environment``.

    Backups of other databases or environments in the same folder are left alone; IDs in
    ``protect`` (the backup just taken) are never deleted.
    """
    backups = [b for b in backups_of(backup_dir, database) if environment in (None, b.environment)]
    at = now or datetime.now(UTC)
    while True:
        keep_list, delete_list = retention(
            backups,
            keep=keep,
            keep_daily=keep_daily,
            keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
            now=at,
        )
        if not delete_list:
            break
        # Nothing goes while the newest backup kept is not proven intact now: "verified"
        # is known from size and mtime alone, and a backup that rotted in place (or was
        # changed and its mtime put back) would otherwise push out the good ones.
        newest = max((b for b in keep_list if b.verified), key=lambda b: b.sort_key)
        problems = [] if newest.id in protect else _checksum(newest, record=not dry_run)
        if not problems:
            break
        backups = [replace(b, problem=problems[0]) if b is newest else b for b in backups]
    keep_list += [b for b in delete_list if b.id in protect]
    delete_list = [b for b in delete_list if b.id not in protect]
    freed = sum(b.size for b in delete_list)
    if delete_list and not dry_run:
        with folder_lock(backup_dir):
            for info in delete_list:
                # Manifest first: a crash in between leaves an unverified file, not a
                # manifest that `verify` would report as a missing backup.
                verification_path(info.path).unlink(missing_ok=True)
                info.manifest_path.unlink(missing_ok=True)
                info.path.unlink(missing_ok=True)
            fsync_dir(backup_dir)
    log.info(
        "backup.pruned",
        deleted=[b.id for b in delete_list],
        kept=len(keep_list),
        freed_bytes=freed,
        dry_run=dry_run,
    )
    return PruneOutcome(kept=keep_list, deleted=delete_list, dry_run=dry_run, freed_bytes=freed)


def _checksum(info: BackupInfo, *, record: bool) -> list[str]:
    """Whether ``info``'s file still holds what its manifest says (size, sha256 of the stored
    bytes); a failure is recorded (``record``) and logged, as `verify` would."""
    from sidecar.backup.verify import stored_problems  # noqa: PLC0415 - only with deletions

    try:
        st = info.path.stat()
        problems = stored_problems(info)
    except OSError as exc:
        problems = [f"the file cannot be read: {exc.strerror or exc}"]
    else:
        if problems and record:
            record_verification(info.path, problems, level="checksum", st=st)
    if problems:
        log.warning(
            "backup.corrupt_found",
            id=info.id,
            problems=problems,
            hint="prune keeps the older backups; run sidecar verify",
        )
    return problems


def prune_by_policy(
    backup_dir: Path,
    policy: Retention,
    *,
    database: Path | None,
    environment: str,
    dry_run: bool,
    protect: Sequence[str] = (),
) -> PruneOutcome:
    """``policy`` per database: each database's backups form their own group (only
    ``database``'s when one is given)."""
    if database is not None:
        databases = {database}
    else:
        databases = {b.database for b in list_backups(backup_dir)}
    kept: list[BackupInfo] = []
    deleted: list[BackupInfo] = []
    for each in sorted(databases):
        outcome = prune(
            backup_dir,
            keep=policy.keep,
            keep_daily=policy.keep_daily,
            keep_weekly=policy.keep_weekly,
            keep_monthly=policy.keep_monthly,
            database=each,
            environment=environment,
            protect=protect,
            dry_run=dry_run,
        )
        kept += outcome.kept
        deleted += outcome.deleted
    return PruneOutcome(kept, deleted, dry_run, sum(b.size for b in deleted))
