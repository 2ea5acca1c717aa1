"""Restore: replace a database with a verified backup, atomically, after a safety backup.

See docs/design.md, 'Restore'.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sidecar import database, sqlite
from sidecar.backup.compression import decompressed_chunks
from sidecar.backup.create import create_backup
from sidecar.backup.holders import holders, refuse_holders
from sidecar.backup.store import BackupInfo
from sidecar.backup.verify import DamagedDatabaseError, inspect_file, verify_backup
from sidecar.database import SIDE_FILES
from sidecar.errors import ConfigError, RefusedError, SidecarError, UnavailableError
from sidecar.fs import (
    create_exclusive,
    file_mode,
    folder_mode,
    fsync_dir,
    pump,
    read_chunks,
    sha256_file,
)
from sidecar.lease import remove_restore_partial, restore_partial_path
from sidecar.logs import get_logger
from sidecar.progress import Progress
from sidecar.settings import BackupIO, VerifyLevel

log = get_logger(__name__)

PRE_RESTORE = "pre-restore"  # the reason of the safety backup a restore takes


@dataclass(frozen=True)
class RestoreOutcome:
    """What a restore did (or, with ``dry_run``, would do)."""

    backup: BackupInfo
    target: Path
    dry_run: bool
    safety_backup: BackupInfo | None = None
    removed_side_files: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    salvaged: Path | None = None  # raw copies of files SQLite could not read


def _is_wal(db: Path) -> bool | None:
    """The journal mode from the header (bytes 18-19 are 2 in WAL mode); None if unreadable."""
    try:
        with db.open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return None
    if len(header) < 20 or not header.startswith(b"SQLite format 3\0"):
        return None
    return header[18] == 2


# long: ten options in its signature; the body is the restore's steps, in order
def restore_backup(
    info: BackupInfo,
    target: Path,
    *,
    backup_dir: Path,
    environment: str,
    dry_run: bool = False,
    force: bool = False,
    group: int | None = None,
    stop_app: Callable[[], AbstractContextManager[None]] | None = None,
    verified: bool = False,
    lock_timeout: float = 10.0,
    io: BackupIO = "direct",
    verify: VerifyLevel = "quick",
    min_free_margin: int = 64 << 20,
) -> RestoreOutcome:
    """Replace ``target`` with the verified backup ``info``, atomically.

    Refuses a backup that fails verification (``verified``: the caller just did it) and a
    target another process holds (``force`` passes only holders without a lock); backs up
    an existing target first (verified at ``verify``; a damaged one is salvaged as raw
    bytes); ``stop_app`` stops the app and starts it again at the end.
    See docs/design.md, 'Restore'.
    """
    started = time.monotonic()
    # A database path that is a symlink: SQLite follows it (the -wal is the real file's),
    # and so does the replace; renaming over the link would leave the file the app opens,
    # and its -wal, as they were. The safety backup is taken, and named, by the path
    # configured, as every backup of this database is.
    real = Path(os.path.realpath(target))
    problems = [] if verified else verify_backup(info, record=not dry_run)
    if problems:
        raise RefusedError(
            f"backup {info.id} failed verification: {'; '.join(problems)}",
            hint="pick another backup from: sidecar list",
        )
    exists = os.path.lexists(real)
    sides = [f"{real}{s}" for s in SIDE_FILES if os.path.lexists(f"{real}{s}")]
    actions = _actions(info, target, exists=exists, sides=sides)
    if dry_run:
        return RestoreOutcome(info, target, True, actions=actions, removed_side_files=sides)

    def refuse_if_held() -> None:
        refuse_holders(real, holders(real), force=force, can_stop=stop_app is not None)

    with stop_app() if stop_app is not None else nullcontext():
        refuse_if_held()
        with ExitStack() as held:
            rollback_mode = exists and _is_wal(real) is False
            if rollback_mode:
                rollback_mode = _write_locked(held, real, lock_timeout)
            safety, salvaged = _keep_current(
                target, sides, exists=exists, backup_dir=backup_dir,
                environment=environment, group=group, io=io, verify=verify,
                min_free_margin=min_free_margin,
            )  # fmt: skip
            # Under the rollback-journal write lock nobody can commit, nor switch to WAL,
            # and probing would open the file here: an open+close in this process drops
            # every POSIX lock it holds on the file, that write lock included.
            _replace(
                info,
                real,
                group,
                before_replace=(lambda: None) if rollback_mode else refuse_if_held,
            )
    log.info(
        "backup.restored",
        id=info.id,
        target=str(target),
        safety_backup=safety.id if safety else None,
        salvaged=str(salvaged) if salvaged else None,
        seconds=round(time.monotonic() - started, 3),
    )
    return RestoreOutcome(
        info, target, False, safety, [Path(s).name for s in sides], actions,
        time.monotonic() - started, salvaged,
    )  # fmt: skip


def _actions(info: BackupInfo, target: Path, *, exists: bool, sides: list[str]) -> list[str]:
    """What the restore does, in order (``--dry-run`` shows it)."""
    actions = [f"verified {info.id}"]
    if exists:
        actions.append(f"back up the current {target.name} (reason pre-restore)")
    actions += [f"remove {Path(side).name}" for side in sides]
    actions.append(f"replace {target} atomically")
    return actions


def _write_locked(held: ExitStack, target: Path, lock_timeout: float) -> bool:
    """Take the rollback-journal write lock on ``target`` into ``held``; False when the
    file is unreadable (no app can write to it either)."""
    try:
        held.enter_context(database.write_lock(target, lock_timeout))
    except sqlite3.DatabaseError as exc:
        # Unreadable (the very reason to restore): no app can write to it either.
        log.warning("backup.restore_unlocked", target=str(target), error=str(exc))
        return False
    return True


def _keep_current(
    target: Path,
    sides: list[str],
    *,
    exists: bool,
    backup_dir: Path,
    environment: str,
    group: int | None,
    io: BackupIO,
    verify: VerifyLevel,
    min_free_margin: int,
) -> tuple[BackupInfo | None, Path | None]:
    """Keep what ``target`` holds before it is replaced: a safety backup, verified like any
    other (it is listed, counted and restorable as one), or raw copies of files SQLite
    cannot read or that fail that verification; (safety backup, salvage folder)."""
    if exists:
        try:
            safety = create_backup(
                target, backup_dir, environment=environment, reason=PRE_RESTORE,
                verify=verify, group=group, io=io, min_free_margin=min_free_margin,
            )  # fmt: skip
        except (sqlite3.DatabaseError, DamagedDatabaseError) as exc:
            if isinstance(exc, sqlite3.DatabaseError):
                not_damaged = database.cannot_open(target, exc)
                if not_damaged is not None:  # locked, unreadable here, a hot journal...
                    raise not_damaged from exc
                if not sqlite.says_damaged(exc):
                    raise UnavailableError(
                        f"could not back up {target} before replacing it: {exc}",
                        hint=f"{target} is unchanged; check the data volume, then retry",
                    ) from exc
            # The database is damaged (the very reason to restore): a backup of it would
            # be called verified, or fail; keep its raw bytes instead.
            log.warning("backup.restore_target_damaged", target=str(target),
                        error=str(exc))  # fmt: skip
            return None, salvage(target, sides, backup_dir, group)
        return safety, None
    if sides:
        # Side files without their database (an orphan -wal holds committed data).
        return None, salvage(None, sides, backup_dir, group)
    return None, None


def salvage(target: Path | None, sides: list[str], backup_dir: Path, group: int | None) -> Path:
    """Copy files SQLite cannot read, byte for byte, into ``<backups>/salvage/<stamp>/``.

    Used by restore when the database it replaces is damaged, or when only its side files
    are left: whatever they hold is kept for a human to look at. The folder is never listed
    as a backup, never pruned, and never written into again.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = backup_dir / "salvage" / stamp
    folder.mkdir(parents=True, mode=folder_mode(group))
    sources = ([target] if target is not None else []) + [Path(s) for s in sides]
    mode = file_mode(group)
    for source in sources:
        kept = folder / source.name
        fd = create_exclusive(kept, mode, group)
        try:
            with source.open("rb") as handle:
                size, sha = pump(read_chunks(handle), fd)
        finally:
            os.close(fd)
        # Read back: nothing else keeps what is about to be replaced.
        if sha256_file(kept) != (size, sha):
            raise UnavailableError(
                f"the raw copy {kept} differs from {source} read back",
                hint=f"{target or source} is unchanged; check the backups volume, then retry",
            )
    fsync_dir(folder)
    fsync_dir(folder.parent)
    log.warning(
        "backup.salvaged",
        folder=str(folder),
        files=[p.name for p in sources],
        hint="raw copies of files SQLite could not read; inspect them before deleting",
    )
    return folder


def _replace(
    info: BackupInfo,
    target: Path,
    group: int | None,
    *,
    before_replace: Callable[[], None] = lambda: None,
) -> None:
    tmp = restore_partial_path(target)
    remove_restore_partial(target)  # a leftover of an interrupted restore: ours by its name
    try:
        old = target.stat()
        mode, owner = old.st_mode & 0o777, (old.st_uid, old.st_gid)
    except FileNotFoundError:
        mode, owner = file_mode(group), None
    try:
        fd = create_exclusive(tmp, mode, group)
    except OSError as exc:
        raise _cannot_write_restore(target, exc) from exc
    touched = False
    try:
        try:
            db_size = int(info.manifest.get("db_size") or info.size)
            with Progress("restore", info.id, db_size) as bar:
                _, sha = pump(decompressed_chunks(info.path), fd, progress=bar.to)
        finally:
            os.close(fd)
        _verify_restored(info, tmp, sha)
        if owner is not None and owner != (os.getuid(), os.getgid()):
            try:
                os.chown(tmp, *owner)
            except PermissionError:
                log.warning("backup.restore_owner_kept", target=str(target))
        before_replace()
        touched = True
        # The old -wal/-journal would be replayed onto the new file: remove them first.
        for side in SIDE_FILES:
            Path(f"{target}{side}").unlink(missing_ok=True)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _cannot_write_restore(target, exc, touched=touched) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cannot_write_restore(target: Path, exc: OSError, *, touched: bool = False) -> SidecarError:
    """A restore that cannot write beside ``target``: a full volume is exit 5, a folder
    that is read-only, not writable or not a place files can be made in is exit 2.
    ``touched``: the old side files were already removed (the target may be changed)."""
    state = "may be incomplete: retry" if touched else "is unchanged"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UnavailableError(
            f"the volume holding {target} filled up during the restore (partial removed; "
            f"{target} {state})",
            hint="free space on that volume (or grow it), then retry",
        )
    folder = target.parent
    if exc.errno == errno.EROFS:
        reason = f"{folder} is on a read-only file system"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = f"the folder {folder} is not writable by uid {os.geteuid()}"
    else:
        reason = f"cannot create a file in {folder}: {exc.strerror or exc}"
    return ConfigError(
        f"cannot restore to {target}: {reason} ({target} {state})",
        hint="restore to a writable folder (--to PATH), or mount the volume read-write and "
        "run the sidecar with the app's uid",
    )


def _verify_restored(info: BackupInfo, tmp: Path, sha: str) -> None:
    if sha != info.manifest.get("sha256"):
        raise RefusedError(
            f"backup {info.id} changed while it was restored (sha256 mismatch)",
            hint="run sidecar verify, then retry with a good backup",
        )
    problems = inspect_file(tmp, False).problems
    if problems:
        raise RefusedError(f"the restored copy fails quick_check: {problems[0]}", hint="retry")
