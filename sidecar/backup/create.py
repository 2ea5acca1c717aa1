"""Creating a backup: a consistent copy of a live database, verified, with its manifest.

Everything is written under ``.<id>.partial`` names that listing never shows and the next run
removes; the data file is renamed into place first and its manifest last, so a backup without
a manifest is never "verified". See docs/design.md, 'Creating a backup'.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar import __version__
from sidecar.backup import compression
from sidecar.backup.manifest import CopierStats, Durations, Manifest, manifest_bytes
from sidecar.backup.names import manifest_path, new_backup_path, partial_path, verification_path
from sidecar.backup.snapshot import ProgressReporter, Snapshot, take_snapshot
from sidecar.backup.store import (
    BackupInfo,
    backups_of,
    clean_partials,
    folder_lock,
    rows_vanished,
)
from sidecar.backup.verify import VerifiedCopy, verify_copy, verify_decompresses_to
from sidecar.errors import ConfigError, UnavailableError
from sidecar.fs import file_mode, folder_mode, fsync_dir, write_exclusive
from sidecar.logs import get_logger
from sidecar.settings import BackupIO, Compression, VerifyLevel

log = get_logger(__name__)


def create_backup(
    db: Path,
    backup_dir: Path,
    *,
    environment: str,
    reason: str,
    verify: VerifyLevel = "quick",
    compress: Compression = "none",
    group: int | None = None,
    min_free_margin: int = 64 << 20,
    busy_timeout: float = 10.0,
    now: datetime | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    folder_locked: bool = False,
    io: BackupIO = "direct",
) -> BackupInfo:
    """Take a verified, consistent backup of the live database ``db`` into ``backup_dir``.

    ``folder_locked``: the caller holds :func:`store.folder_lock` already (the deploy).
    ``io``: SIDECAR_BACKUP_IO (docs/design.md, 'Direct I/O').
    Safe while the caller holds ``BEGIN IMMEDIATE`` on another connection. Raises
    UnavailableError (exit 5: disk full, database locked), HealthError (exit 4: the copy
    fails verification); leaves no file behind either way.
    """
    started = time.monotonic()
    try:
        if not db.is_file():
            raise FileNotFoundError(db)
    except OSError:
        what = "is a folder, not a SQLite file" if db.is_dir() else "does not exist"
        raise ConfigError(
            f"database {db} {what}",
            hint="check SIDECAR_DATABASE and that the data volume is mounted",
        ) from None
    prepare_folder(backup_dir, group)
    with nullcontext() if folder_locked else folder_lock(backup_dir):
        clean_partials(backup_dir)
        _preflight_space(db, backup_dir, min_free_margin)
        final = new_backup_path(db, backup_dir, environment, now or datetime.now(UTC), compress)
        manifest = _write_backup(
            db, final, environment=environment, reason=reason, verify=verify,
            compress=compress, group=group, busy_timeout=busy_timeout,
            on_progress=on_progress, started=started, io=io,
        )  # fmt: skip
    info = BackupInfo.load(final)
    assert info is not None  # noqa: S101 - the name was built from the same pattern
    if manifest.rows_vanished is not None:
        _warn_rows_vanished(info.id, manifest.rows_vanished)
    log.info(
        "backup.created",
        id=info.id,
        reason=reason,
        bytes=info.size,
        db_bytes=manifest.db_size,
        sha256=manifest.sha256,
        verify=verify,
        journal_mode=manifest.journal_mode,
        lock_s=manifest.durations.read_lock_s,
        seconds=round(time.monotonic() - started, 3),
    )
    return info


def _write_backup(
    db: Path,
    final: Path,
    *,
    environment: str,
    reason: str,
    verify: VerifyLevel,
    compress: Compression,
    group: int | None,
    busy_timeout: float,
    on_progress: Callable[[int, int], None] | None,
    started: float,
    io: BackupIO,
) -> Manifest:
    """Copy, verify, maybe compress, then publish ``final`` and its manifest."""
    # long: the manifest's fields, one a line
    backup_dir, mode = final.parent, file_mode(group)
    reporter = on_progress or ProgressReporter(db.name)
    work = partial_path(final.with_name(final.name.removesuffix(".zst")))
    written: list[Path] = [work, Path(f"{work}-wal"), Path(f"{work}-shm")]
    hint = "check the permissions and health of the data and backups volumes"
    with _removed_on_failure(written, backup_dir, f"backup of {db}", hint):
        snap = take_snapshot(
            db, work, mode=mode, group=group, busy_timeout=busy_timeout,
            on_progress=reporter, quick_check="quick" if verify == "quick" else None,
            # Direct I/O leaves the copy out of the page cache: not for a copy read again whole.
            direct_io=io == "direct" and verify != "full" and compress == "none",
        )  # fmt: skip
        if isinstance(reporter, ProgressReporter):
            reporter.finish()
        copy = verify_copy(db, work, snap, verify)
        stored, stored_size, stored_sha = work, copy.size, copy.sha256
        if compress == "zstd":
            stored = partial_path(final)
            written.append(stored)
            stored_size, stored_sha = compression.zstd_compress(
                work, stored, mode=mode, group=group
            )
            work.unlink()
        manifest = Manifest(
            id=final.name,
            source=os.path.abspath(db),  # never relative: see names.is_source
            environment=environment,
            reason=reason,
            created_at=datetime.now(UTC).isoformat(),
            verify_level=verify,
            checked_during_copy=copy.checked_during_copy,
            compression=compress,
            size=stored_size,
            stored_sha256=stored_sha,
            db_size=copy.size,
            sha256=copy.sha256,
            page_size=copy.page_size,
            page_count=copy.page_count,
            journal_mode=snap.journal_mode,
            wal_frames_folded=copy.wal_frames,
            wal_copied=snap.wal_copied,
            copier=_copier_stats(snap),
            sqlite_version=sqlite3.sqlite_version,
            schema_hash=copy.schema_hash,
            row_counts=copy.row_counts,
            tool_version=__version__,
            durations=_durations(snap, copy, started),
            rows_vanished=_vanished_since_last(backup_dir, db, environment, copy.row_counts),
        )
        man_partial = partial_path(manifest_path(final))
        written.append(man_partial)
        _publish(stored, man_partial, final, manifest.to_dict(), mode=mode, group=group)
    return manifest


def _copier_stats(snap: Snapshot) -> CopierStats:
    return CopierStats(
        method=snap.copy_method,
        writeback=snap.writeback,
        repaired_chunks=snap.repaired_chunks,
        peak_rss_kib=snap.copier_peak_rss_kib,
    )


def _durations(snap: Snapshot, copy: VerifiedCopy, started: float) -> Durations:
    return Durations(
        read_lock_s=round(snap.lock_seconds, 3),
        copy_s=round(snap.copy_seconds, 3),
        verify_s=round(copy.seconds, 3),
        total_s=round(time.monotonic() - started, 3),
    )


def _warn_rows_vanished(backup_id: str, vanished: dict[str, Any]) -> None:
    log.warning(
        "backup.rows_vanished",
        id=backup_id,
        rows_now=vanished["rows_now"],
        rows_before=vanished["rows_before"],
        tables=vanished["tables"],
        since=vanished["since"],
        hint=f"the database holds {vanished['rows_now']} rows, against "
        f"{vanished['rows_before']} in {vanished['since']}; if the volume was wiped or "
        f"re-created, restore the data: `sidecar restore {vanished['since']}` (that "
        "backup is kept until you delete it by hand)",
    )


def compress_backup(info: BackupInfo, *, group: int | None = None) -> BackupInfo:
    """Replace the plain backup ``info`` with its zstd-compressed form; the new BackupInfo.

    For the deploy, once the app is back. The compressed backup is published before the
    plain one is removed. Raises UnavailableError (exit 5), HealthError (exit 4); the plain
    backup stays. See docs/design.md, 'Compressing after the deploy'.
    """
    if info.compressed:
        return info
    started = time.monotonic()
    backup_dir = info.path.parent
    mode = file_mode(group)
    final = info.path.with_name(info.path.name + ".zst")
    with folder_lock(backup_dir):
        stored, man_partial = partial_path(final), partial_path(manifest_path(final))
        hint = "check the permissions and health of the backups volume"
        written = [stored, man_partial]
        with _removed_on_failure(written, backup_dir, f"compressing backup {info.id}", hint):
            size, sha = compression.zstd_compress(info.path, stored, mode=mode, group=group)
            verify_decompresses_to(stored, info)
            durations = {**info.manifest.get("durations", {}),
                         "compress_s": round(time.monotonic() - started, 3)}  # fmt: skip
            manifest = {**info.manifest, "id": final.name, "compression": "zstd", "size": size,
                        "stored_sha256": sha, "durations": durations}  # fmt: skip
            _publish(stored, man_partial, final, manifest, mode=mode, group=group)
        try:
            # The manifest first, as retention.prune does: a crash in between leaves a file
            # without a manifest (unverified), never a manifest `verify` reports as missing.
            info.manifest_path.unlink()
            verification_path(info.path).unlink(missing_ok=True)
            info.path.unlink()
            fsync_dir(backup_dir)
        except OSError as exc:
            hint = f"the compressed copy is in place; delete {info.id} by hand"
            log.warning("backup.plain_left", id=info.id, error=str(exc), hint=hint)
    compressed = BackupInfo.load(final)
    assert compressed is not None  # noqa: S101 - the name was built from a listed one
    log.info("backup.compressed", id=compressed.id, was=info.id, bytes=size,
             db_bytes=info.size, seconds=round(time.monotonic() - started, 3))  # fmt: skip
    return compressed


def prepare_folder(backup_dir: Path, group: int | None) -> None:
    """Create the backups folder if needed; refuse one we cannot write to (exit 2)."""
    try:
        backup_dir.mkdir(parents=True, exist_ok=True, mode=folder_mode(group))
    except OSError as exc:
        raise ConfigError(
            f"cannot create the backups folder {backup_dir}: {exc.strerror}",
            hint="mount a writable volume at SIDECAR_BACKUP_DIR",
        ) from exc
    if not os.access(backup_dir, os.W_OK):
        raise ConfigError(
            f"the backups folder {backup_dir} is not writable",
            hint="fix the volume's owner or run the sidecar with a user that may write to it",
        )


def _preflight_space(db: Path, backup_dir: Path, margin: int) -> int:
    # os.stat, never open(): an open+close here would drop the caller's SQLite locks.
    needed = db.stat().st_size + margin
    with suppress(FileNotFoundError):
        needed += Path(f"{db}-wal").stat().st_size
    st = os.statvfs(backup_dir)
    free = st.f_bavail * st.f_frsize
    if free < needed:
        raise UnavailableError(
            f"not enough free space in {backup_dir}: {free >> 20} MiB free, "
            f"{needed >> 20} MiB needed (database + wal + SIDECAR_MIN_FREE_MARGIN)",
            hint="free space (sidecar prune, or lower SIDECAR_KEEP) or grow the backups volume",
        )
    return needed


def _vanished_since_last(
    backup_dir: Path, db: Path, environment: str, row_counts: dict[str, int]
) -> dict[str, Any] | None:
    """:func:`store.rows_vanished` against the newest verified backup of this database;
    None once the backup it would name is gone (deleted by hand: the user has decided)."""
    ours = [b for b in backups_of(backup_dir, db) if b.verified and b.environment == environment]
    found = rows_vanished(ours[0], row_counts) if ours else None
    if found is None or found["since"] not in {b.id for b in ours}:
        return None
    return found


def _publish(
    stored: Path,
    man_partial: Path,
    final: Path,
    manifest: Mapping[str, Any],
    *,
    mode: int,
    group: int | None,
) -> None:
    """Write ``manifest`` to ``man_partial``, then rename the data and the manifest into
    place: data first, manifest last, so a crash between the two leaves an unverified file,
    never a manifest without its file."""
    write_exclusive(man_partial, manifest_bytes(manifest), mode, group)
    os.replace(stored, final)
    os.replace(man_partial, manifest_path(final))
    fsync_dir(final.parent)


@contextmanager
def _removed_on_failure(
    written: list[Path], backup_dir: Path, what: str, hint: str
) -> Iterator[None]:
    """On failure, remove ``written`` (as it is then); a full disk and other OS errors
    become UnavailableError (exit 5), anything else is raised as it is."""
    try:
        yield
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UnavailableError(
                f"the backups volume {backup_dir} filled up during the backup (partial removed)",
                hint="free space (sidecar prune, or lower SIDECAR_KEEP) or grow the backups volume",
            ) from exc
        if isinstance(exc, OSError):
            raise UnavailableError(f"{what} failed: {exc.strerror or exc}", hint=hint) from exc
        raise
