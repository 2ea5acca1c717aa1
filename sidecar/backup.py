"""Online backups: a consistent copy of a live database, verified, with a manifest; restore.

The copy method (see DESIGN.md, "SQLite facts we verified"): hold a read transaction on a
second connection (after a PASSIVE checkpoint in WAL mode) while a child process copies the
database file and then its ``-wal``; end the transaction; open the copy and checkpoint it into
one self-contained file. It runs at about ``cp`` speed, never restarts under a writer (unlike
stepped backups), and is safe while the caller holds ``BEGIN IMMEDIATE`` on another connection.

Crash safety: everything is written under ``.<id>.partial`` names that listing never shows
and the next run removes; the data file is renamed into place first and its manifest last,
so a backup without a manifest is never "verified".
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar import __version__, checks, copier, database
from sidecar.catalog import (
    BACKUP_NAME,
    MANIFEST_FORMAT,
    PARTIAL_NAME,
    BackupInfo,
    backups_of,
    check_path,
    clean_partials,
    folder_lock,
    manifest_path,
    new_backup_path,
    partial_path,
    record_check,
    rows_vanished,
)
from sidecar.copier import create_exclusive, decompressed_chunks, fsync_dir, pump, sha256_file
from sidecar.errors import (
    ConfigError,
    HealthError,
    RefusedError,
    SidecarError,
    UnavailableError,
)
from sidecar.lease import remove_restore_partial, restore_partial_path
from sidecar.logs import get_logger
from sidecar.progress import Progress
from sidecar.settings import Compression, VerifyLevel

__all__ = [
    "BACKUP_NAME",
    "PARTIAL_NAME",
    "BackupInfo",
    "RestoreOutcome",
    "create_backup",
    "restore_backup",
    "verify_backup",
]

log = get_logger(__name__)

SIDE_FILES = ("-wal", "-shm", "-journal")


def _preflight_space(db: Path, backup_dir: Path, margin: int) -> int:
    # os.stat, never open(): an open+close here would drop the caller's SQLite locks.
    needed = db.stat().st_size + margin
    with suppress(FileNotFoundError):
        needed += Path(f"{db}-wal").stat().st_size
    free = _free_bytes(backup_dir)
    if free < needed:
        raise UnavailableError(
            f"not enough free space in {backup_dir}: {free >> 20} MiB free, "
            f"{needed >> 20} MiB needed (database + wal + SIDECAR_MIN_FREE_MARGIN)",
            hint="free space (sidecar prune, or lower SIDECAR_KEEP) or grow the backups volume",
        )
    return needed


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


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
) -> BackupInfo:
    """Take a verified, consistent backup of the live database ``db`` into ``backup_dir``.

    ``folder_locked``: the caller already holds :func:`catalog.folder_lock` (the deploy takes
    it before the database write lock, so the app is never blocked behind another backup).

    Safe while the caller holds ``BEGIN IMMEDIATE`` on another connection in this process:
    the live files are only opened by SQLite and by a child copier process.
    Raises UnavailableError (exit 5) when the disk is too full or the database stays locked,
    HealthError (exit 4) when the copy fails verification; leaves no file behind either way.
    """
    started = time.monotonic()
    try:
        if not db.is_file():
            raise FileNotFoundError(db)
    except OSError:
        raise ConfigError(
            f"database {db} does not exist",
            hint="check SIDECAR_DATABASE and that the data volume is mounted",
        ) from None
    mode = 0o640 if group is not None else 0o600
    reporter = on_progress or copier.ProgressReporter(db.name)
    prepare_folder(backup_dir, group)
    with nullcontext() if folder_locked else folder_lock(backup_dir):
        clean_partials(backup_dir)
        _preflight_space(db, backup_dir, min_free_margin)
        final = new_backup_path(db, backup_dir, environment, now or datetime.now(UTC), compress)
        plain = final.with_name(final.name.removesuffix(".zst"))
        work = partial_path(plain)
        written: list[Path] = [work, Path(f"{work}-wal"), Path(f"{work}-shm")]
        try:
            snap = copier.take_snapshot(
                db,
                work,
                mode=mode,
                group=group,
                busy_timeout=busy_timeout,
                on_progress=reporter,
                check="quick" if verify == "quick" else None,
            )
            if isinstance(reporter, copier.ProgressReporter):
                reporter.finish()
            facts = _finish_and_verify(db, work, snap, verify)
            stored, stored_size, stored_sha = work, facts["size"], facts["sha256"]
            if compress == "zstd":
                stored = partial_path(final)
                written.append(stored)
                stored_size, stored_sha = copier.zstd_compress(work, stored, mode=mode, group=group)
                work.unlink()
            manifest = {
                "format": MANIFEST_FORMAT,
                "id": final.name,
                "source": os.path.abspath(db),  # never relative: see catalog.is_source
                "environment": environment,
                "reason": reason,
                "created_at": datetime.now(UTC).isoformat(),
                "verified": True,
                "verify_level": verify,
                # quick_check ran on the bytes as they were copied (proved identical to the
                # file), beside the copy, rather than on the file afterwards.
                "checked_during_copy": facts["checked_during_copy"],
                "compression": compress,
                "size": stored_size,
                "stored_sha256": stored_sha,
                "db_size": facts["size"],
                "sha256": facts["sha256"],
                "page_size": facts["page_size"],
                "page_count": facts["page_count"],
                "journal_mode": snap.journal_mode,
                "wal_frames_folded": facts["wal_frames"],
                "wal_copied": snap.wal_copied,
                "copier": {
                    "method": snap.copy_method,
                    "writeback": snap.writeback,
                    "repaired_chunks": snap.repaired_chunks,
                    "peak_rss_kib": snap.copier_peak_rss_kib,
                },
                "sqlite_version": sqlite3.sqlite_version,
                "schema_hash": facts["schema_hash"],
                "row_counts": facts["row_counts"],
                "tool_version": __version__,
                "durations": {
                    "read_lock_s": round(snap.lock_seconds, 3),
                    "copy_s": round(snap.copy_seconds, 3),
                    "verify_s": round(facts["seconds"], 3),
                    "total_s": round(time.monotonic() - started, 3),
                },
            }
            vanished = _vanished_since_last(backup_dir, db, environment, facts["row_counts"])
            if vanished is not None:
                manifest["rows_vanished"] = vanished
            man_partial = partial_path(manifest_path(final))
            written.append(man_partial)
            _publish(stored, man_partial, final, manifest, mode=mode, group=group)
        except BaseException as exc:
            hint = "check the permissions and health of the data and backups volumes"
            error = _undo_write(exc, written, backup_dir, f"backup of {db}", hint)
            if error is exc:
                raise
            raise error from exc
    info = BackupInfo.load(final)
    assert info is not None  # noqa: S101 - the name was built from the same pattern
    if vanished is not None:
        log.warning(
            "backup.rows_vanished",
            id=info.id,
            rows_now=vanished["rows_now"],
            rows_before=vanished["rows_before"],
            tables=vanished["tables"],
            since=vanished["since"],
            hint=f"the database holds {vanished['rows_now']} rows, against "
            f"{vanished['rows_before']} in {vanished['since']}; if the volume was wiped or "
            f"re-created, restore the data: `sidecar restore {vanished['since']}` (that "
            "backup is kept until you delete it by hand)",
        )
    log.info(
        "backup.created",
        id=info.id,
        reason=reason,
        bytes=info.size,
        db_bytes=facts["size"],
        sha256=facts["sha256"],
        verify=verify,
        journal_mode=snap.journal_mode,
        lock_s=round(snap.lock_seconds, 3),
        seconds=round(time.monotonic() - started, 3),
    )
    return info


def compress_backup(info: BackupInfo, *, group: int | None = None) -> BackupInfo:
    """Replace the plain backup ``info`` with its zstd-compressed form; the new BackupInfo.

    For the deploy: its backup must be complete before COMMIT, and compressing (~4 s/GB at
    zstd level 1) while the app's writes wait would multiply the window, so the deploy takes
    a plain backup and compresses it once the change is committed and the app restarted.
    The compressed file is decompressed and hashed against the manifest's sha256 before it
    replaces anything; it and its manifest are renamed into place before the plain file and
    its manifest are removed: a crash in between leaves both backups, each complete and
    verified. Raises UnavailableError (exit 5) when the disk fills up, HealthError (exit 4)
    when the compressed file does not decompress to the backup; the plain backup stays, and
    nothing else is left behind.
    """
    if info.compressed:
        return info
    started = time.monotonic()
    backup_dir = info.path.parent
    mode = 0o640 if group is not None else 0o600
    final = info.path.with_name(info.path.name + ".zst")
    with folder_lock(backup_dir):
        stored, man_partial = partial_path(final), partial_path(manifest_path(final))
        try:
            size, sha = copier.zstd_compress(info.path, stored, mode=mode, group=group)
            _check_decompresses_to(stored, info)
            durations = {**info.manifest.get("durations", {}),
                         "compress_s": round(time.monotonic() - started, 3)}  # fmt: skip
            manifest = {**info.manifest, "id": final.name, "compression": "zstd", "size": size,
                        "stored_sha256": sha, "durations": durations}  # fmt: skip
            _publish(stored, man_partial, final, manifest, mode=mode, group=group)
        except BaseException as exc:
            hint = "check the permissions and health of the backups volume"
            error = _undo_write(
                exc, [stored, man_partial], backup_dir, f"compressing backup {info.id}", hint
            )
            if error is exc:
                raise
            raise error from exc
        try:
            # The manifest first, as catalog.prune does: a crash in between leaves a file
            # without a manifest (unverified), never a manifest `verify` reports as missing.
            info.manifest_path.unlink()
            check_path(info.path).unlink(missing_ok=True)
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


def _check_decompresses_to(stored: Path, info: BackupInfo) -> None:
    """Raise HealthError unless the zstd file ``stored`` decompresses to the backup ``info``."""
    digest = hashlib.sha256()
    for chunk in decompressed_chunks(stored, zstd=True):
        digest.update(chunk)
    if digest.hexdigest() != info.manifest.get("sha256"):
        raise HealthError(
            f"the compressed copy of backup {info.id} does not decompress to it",
            hint="the plain backup is kept; run sidecar verify, check the backups volume",
        )


def _vanished_since_last(
    backup_dir: Path, db: Path, environment: str, row_counts: dict[str, int]
) -> dict[str, Any] | None:
    """:func:`rows_vanished` against the newest verified backup of this database; None
    once the backup it would name is gone (deleted by hand: the user has decided)."""
    ours = [b for b in backups_of(backup_dir, db) if b.verified and b.environment == environment]
    found = rows_vanished(ours[0], row_counts) if ours else None
    if found is None or found["since"] not in {b.id for b in ours}:
        return None
    return found


def _publish(
    stored: Path,
    man_partial: Path,
    final: Path,
    manifest: dict[str, Any],
    *,
    mode: int,
    group: int | None,
) -> None:
    """Write ``manifest`` to ``man_partial``, then rename the data and the manifest into
    place: data first, manifest last, so a crash between the two leaves an unverified file,
    never a manifest without its file."""
    _write_manifest(man_partial, manifest, mode, group)
    os.replace(stored, final)
    os.replace(man_partial, manifest_path(final))
    fsync_dir(final.parent)


def _undo_write(
    exc: BaseException, written: list[Path], backup_dir: Path, what: str, hint: str
) -> BaseException:
    """Remove what a failed write into ``backup_dir`` left; the error to raise for ``exc``:
    a full disk and other OS errors become UnavailableError (exit 5), anything else stays."""
    for path in written:
        path.unlink(missing_ok=True)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _disk_full(backup_dir)
    if isinstance(exc, OSError):
        return UnavailableError(f"{what} failed: {exc.strerror or exc}", hint=hint)
    return exc


def _disk_full(backup_dir: Path) -> UnavailableError:
    return UnavailableError(
        f"the backups volume {backup_dir} filled up during the backup (partial removed)",
        hint="free space (sidecar prune, or lower SIDECAR_KEEP) or grow the backups volume",
    )


def prepare_folder(backup_dir: Path, group: int | None) -> None:
    """Create the backups folder if needed; refuse one we cannot write to (exit 2)."""
    try:
        backup_dir.mkdir(parents=True, exist_ok=True, mode=0o750 if group is not None else 0o700)
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


def _write_manifest(path: Path, manifest: dict[str, Any], mode: int, group: int | None) -> None:
    fd = create_exclusive(path, mode, group)
    try:
        pump([json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"], fd)
    finally:
        os.close(fd)


def _finish_and_verify(
    db: Path, work: Path, snap: copier.Snapshot, level: VerifyLevel
) -> dict[str, Any]:
    """Fold the copied ``-wal`` (if any) into the copy, then check it at ``level``.

    The checksum: the copier proved, chunk by chunk, that the file holds exactly the bytes
    it read from the database, and hashed them. So without a ``-wal`` to fold the file is
    not read again (its sha256 is known); after a fold it is re-hashed as it now is.
    The quick_check: when the copier already ran it on the very bytes it copied (WAL mode,
    nothing to fold), its result stands for the copy and the file is not checked again.
    Raises HealthError.
    """
    t0 = time.monotonic()
    wal_frames = 0
    rehash: _Rehash | None = None
    if snap.wal_copied:
        wal_frames = _fold_wal(work)
        rehash = _Rehash(work)  # on a second core, while SQLite inspects the file
    checked = snap.source_check
    if snap.wal_copied or checked is None or checked.get("level") != level:
        checked = None
    facts = inspect_file(work, None if level == "checksum" or checked else level == "full")
    if checked is not None:
        ran = [str(p) for p in checked.get("problems", ["the check gave no result"])]
        facts["problems"] = ran + facts["problems"]
    facts["checked_during_copy"] = checked is not None
    if rehash is not None:
        size, sha = rehash.result()
    else:
        size, sha = snap.db_bytes, snap.copied_sha256
    problems: list[str] = []
    # With no wal frames folded in, the file must be byte for byte what the copier read.
    if wal_frames == 0 and sha != snap.copied_sha256:
        problems.append("the written file differs from the bytes read from the database")
    if size != work.stat().st_size:
        problems.append(f"the file holds {work.stat().st_size} bytes, {size} were copied")
    problems += facts.pop("problems")
    if facts["page_size"] * facts["page_count"] != size:
        problems.append(f"size {size} is not page_size x page_count")
    if problems:
        raise HealthError(
            f"the new backup of {db} failed verification: {problems[0]}",
            hint="the database itself may be damaged: run sidecar health --full",
        )
    return {**facts, "size": size, "sha256": sha, "wal_frames": wal_frames,
            "seconds": time.monotonic() - t0}  # fmt: skip


class _Rehash(threading.Thread):
    """sha256 of a file in a thread (hashlib and sqlite3 both release the GIL)."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="backup-rehash", daemon=True)
        self.path = path
        self.outcome: tuple[int, str] | BaseException = OSError(errno.EIO, "not hashed")
        self.start()

    def run(self) -> None:
        try:
            self.outcome = sha256_file(self.path)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.outcome = exc

    def result(self) -> tuple[int, str]:
        self.join()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def _fold_wal(work: Path) -> int:
    """Checkpoint the copied ``-wal`` into the copy; the number of frames folded."""
    conn = sqlite3.connect(str(work), isolation_level=None)
    try:
        # A first read opens the -wal; before it, wal_checkpoint reports (0, 0, 0) and the
        # folding would only happen silently at close.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        # (busy, frames in the wal, frames checkpointed). Nobody else uses the copy, so a
        # FULL checkpoint folds every frame; closing the last connection removes the -wal.
        busy, wal_frames, folded = conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        if busy or folded < wal_frames:  # both are -1 when the copy is not in WAL mode
            raise HealthError(
                f"could not fold the copied -wal into the backup ({folded}/{wal_frames} frames)",
                hint="retry the backup",
            )
    finally:
        conn.close()
    for side in ("-wal", "-shm"):
        Path(f"{work}{side}").unlink(missing_ok=True)
    return max(int(wal_frames), 0)


def inspect_file(path: Path, full: bool | None) -> dict[str, Any]:
    """Facts about a database file we own; ``full`` None skips quick/integrity_check.

    ``immutable=1``: no locks, no ``-wal``/``-shm`` created beside a backup.
    """
    facts: dict[str, Any] = {"problems": [], "page_size": 0, "page_count": 0}
    try:
        with checks.immutable(path) as conn:
            if full is not None:
                facts["problems"] = checks.quick_check(conn, full=full)
            facts["page_size"] = int(conn.execute("PRAGMA page_size").fetchone()[0])
            facts["page_count"] = int(conn.execute("PRAGMA page_count").fetchone()[0])
            facts["schema_hash"] = database.schema_hash(conn)
            facts["row_counts"] = database.row_counts(conn)
    except sqlite3.DatabaseError as exc:
        facts["problems"] = [f"not a readable SQLite database: {exc}"]
    return facts


def verify_backup(info: BackupInfo, *, full: bool = False) -> list[str]:
    """Problems with a stored backup ([] when it is good): manifest, sha256, quick_check
    (``integrity_check`` when ``full``). Compressed backups are checked decompressed.

    The result is recorded beside the manifest (:func:`catalog.record_check`), so that
    `list`, `health` and `restore latest` know it without reading the file again."""
    path, man = info.path, info.manifest
    if path.is_symlink() or not path.is_file():
        return ["backup file is missing" if not path.is_symlink() else "is a symlink"]
    if not man:
        return ["no manifest: not written (or not finished) by sidecar"]
    st = path.stat()
    problems = _verify_file(info, full=full)
    record_check(path, problems, level="full" if full else "quick", st=st)
    return problems


def _verify_file(info: BackupInfo, *, full: bool) -> list[str]:
    path, man = info.path, info.manifest
    problems: list[str] = []
    size, sha = sha256_file(path)
    if size != man.get("size"):
        problems.append(f"size {size} differs from the manifest's {man.get('size')}")
    if sha != man.get("stored_sha256"):
        return [*problems, "sha256 differs from the manifest: the file is corrupt"]
    if not info.compressed:
        found: list[str] = inspect_file(path, full)["problems"]
        return problems + found
    # A name of its own: a verify killed earlier, or one running beside us, never collides.
    work = path.with_name(f".{info.id}.verify{os.getpid()}x{secrets.token_hex(4)}.partial")
    with folder_lock(path.parent, shared=True):
        try:
            fd = create_exclusive(work, 0o600, None)
            try:
                _, raw_sha = pump(decompressed_chunks(path), fd)
            finally:
                os.close(fd)
            if raw_sha != man.get("sha256"):
                problems.append("decompressed sha256 differs from the manifest")
            problems += inspect_file(work, full)["problems"]
        except OSError as exc:
            # No room (or no right) for the scratch copy says nothing about the backup.
            raise UnavailableError(
                f"cannot verify {info.id}: no scratch copy in {path.parent}: {exc.strerror}",
                hint="free space in the backups volume (a compressed backup is checked "
                "decompressed), then verify again",
            ) from exc
        except Exception as exc:  # noqa: BLE001 - any decoder error means a corrupt file
            problems.append(f"cannot decompress: {exc}")
        finally:
            work.unlink(missing_ok=True)
    return problems


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


# SQLite's unix VFS locks (os_unix.c). On the database file: PENDING, RESERVED and the
# 510-byte SHARED range from 1 GiB on; a rollback-journal connection holds one only inside a
# transaction, a WAL-mode one holds SHARED for as long as it is open. On the -shm: every
# WAL-mode connection read-locks the "DMS" byte (128) for as long as it has it open.
_LOCK_BYTES = (0x40000000, 512)
_SHM_DMS = (128, 1)


@dataclass(frozen=True)
class Holder:
    """A process holding the database: by a SQLite lock (``locked``), or only an open file."""

    how: str
    pid: int | None = None  # None: not visible from here (another container's PID namespace)
    command: str = ""
    locked: bool = True

    def describe(self) -> str:
        who = f"pid {self.pid}" + (f" ({self.command})" if self.command else "")
        if self.pid is None:
            who = "a process this sidecar cannot see (another container?)"
        return f"{who}: {self.how}"


def holders(db: Path) -> list[Holder]:
    """Who else holds ``db``, as far as this process can tell (never ourselves).

    Reliable, across containers on one volume (the kernel's POSIX locks): every WAL-mode
    connection (its lock on the ``-shm``), and a rollback-journal connection inside a
    transaction (its lock on the database). Only in this PID namespace, and for processes
    we may inspect (/proc/<pid>/fd): a process that merely has a file open, such as an idle
    rollback-journal connection, which holds no lock between transactions.
    """
    found: list[Holder] = []
    probes = (
        (Path(f"{db}-shm"), _SHM_DMS, "a WAL-mode connection (its lock on the -shm)"),
        (db, _LOCK_BYTES, "a connection inside a transaction (a lock on the database)"),
    )
    for path, (start, length), how in probes:
        pid = _lock_holder(path, start, length)
        if pid is not None and (pid or None) not in {h.pid for h in found}:
            found.append(Holder(how, pid or None, _command(pid) if pid else ""))
    seen = {h.pid for h in found}
    for pid in _open_by([db, *(Path(f"{db}{s}") for s in SIDE_FILES)]):
        if pid not in seen:
            found.append(Holder("has the database open", pid, _command(pid), locked=False))
    return found


def database_in_use(db: Path) -> bool:
    """Whether another connection holds a SQLite lock on ``db`` (see :func:`holders`)."""
    return any(h.locked for h in holders(db))


def _lock_holder(path: Path, start: int, length: int) -> int | None:
    """The pid holding a POSIX lock on ``path``'s bytes (0: not visible here), else None.
    F_GETLK only asks: it takes no lock, and an fd opened only for it drops none of ours
    (this process holds no SQLite connection to the file when it asks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else max(pid, 0)


def _open_by(paths: list[Path]) -> list[int]:
    """Other processes with one of ``paths`` open (by inode), from /proc/<pid>/fd."""
    inodes = set()
    for path in paths:
        with suppress(OSError):
            st = path.stat()
            inodes.add((st.st_dev, st.st_ino))
    if not inodes:
        return []
    found = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to inspect
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in inodes:
                found.append(pid)
                break
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    text = "".join(c if c.isprintable() else " " for c in raw.decode(errors="replace"))
    return " ".join(text.split())[:60]


def _refuse_holders(target: Path, found: list[Holder], *, force: bool, can_stop: bool) -> None:
    """Refuse to replace ``target`` under another process. A lock holder is refused even
    with ``force``: a WAL-mode app would go on committing into the replaced file's inode,
    and every one of those commits would be lost without an error. ``force`` only passes
    processes that hold no lock (an idle rollback-journal connection: its next write fails,
    SQLite refuses to write to a moved database, and it reads the old data until reopened)."""
    locked = [h for h in found if h.locked]
    if not locked and (not found or force):
        if found:
            log.warning("backup.restore_forced", target=str(target),
                        holders=[h.describe() for h in found])  # fmt: skip
        return
    shown = "; ".join(h.describe() for h in (locked or found)[:3])
    if can_stop:
        hint = "something besides the app holds it (SIDECAR_APP was stopped): stop that too"
    else:
        hint = (
            "stop the app first (docker compose stop <app>), or set SIDECAR_APP so that "
            "restore stops it and starts it again"
        )
    if locked:
        hint += "; --force cannot override this: the app's later commits would be lost"
    else:
        hint += "; or pass --force (its next write then fails instead of being kept)"
    raise RefusedError(f"{target} is in use: {shown}", hint=hint)


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
    checked: bool = False,
    lock_timeout: float = 10.0,
) -> RestoreOutcome:
    """Replace ``target`` with the verified backup ``info``, atomically.

    Refuses a backup that fails verification (``checked``: the caller just verified it), and
    a target that another process holds (:func:`holders`; ``force`` passes only holders
    without a lock, see :func:`_refuse_holders`); ``stop_app`` gives a context manager that
    stops the app and starts it again at the end whatever happens. An existing target is
    first backed up (reason ``pre-restore``). In rollback-journal mode the write lock is held
    from that backup to the replace, so a writer that was not seen waits, then fails on the
    moved file, instead of committing into the old file after its safety backup; in WAL mode
    the holders are looked for again just before the replace (a connection opened between
    that look and the rename is the one case left: microseconds).
    """
    started = time.monotonic()
    problems = [] if checked else verify_backup(info)
    if problems:
        raise RefusedError(
            f"backup {info.id} failed verification: {'; '.join(problems)}",
            hint="pick another backup from: sidecar list",
        )
    exists = os.path.lexists(target)
    sides = [f"{target}{s}" for s in SIDE_FILES if os.path.lexists(f"{target}{s}")]
    actions = [f"verified {info.id}"]
    if exists:
        actions.append(f"back up the current {target.name} (reason pre-restore)")
    actions += [f"remove {Path(s).name}" for s in sides]
    actions.append(f"replace {target} atomically")
    if dry_run:
        return RestoreOutcome(info, target, True, actions=actions, removed_side_files=sides)
    safety = None
    salvaged: Path | None = None

    def recheck() -> None:
        _refuse_holders(target, holders(target), force=force, can_stop=stop_app is not None)

    with stop_app() if stop_app is not None else nullcontext():
        recheck()
        with ExitStack() as held:
            rollback_mode = exists and _is_wal(target) is False
            if rollback_mode:
                try:
                    held.enter_context(database.write_lock(target, lock_timeout))
                except sqlite3.DatabaseError as exc:
                    # Unreadable (the very reason to restore): no app can write to it either.
                    log.warning("backup.restore_unlocked", target=str(target), error=str(exc))
                    rollback_mode = False
            if exists:
                # checksum level: the database being replaced may well be the damaged one.
                try:
                    safety = create_backup(
                        target, backup_dir, environment=environment, reason="pre-restore",
                        verify="checksum", group=group,
                    )  # fmt: skip
                except sqlite3.DatabaseError as exc:
                    if checks.is_busy(exc):
                        raise
                    # SQLite cannot read it (the very reason to restore): keep its raw bytes.
                    log.warning("backup.restore_target_damaged", target=str(target),
                                error=str(exc))  # fmt: skip
                    salvaged = salvage(target, sides, backup_dir, group)
            elif sides:
                # Side files without their database (an orphan -wal holds committed data).
                salvaged = salvage(None, sides, backup_dir, group)
            # Under the rollback-journal write lock nobody can commit, nor switch to WAL,
            # and probing would open the file here: an open+close in this process drops
            # every POSIX lock it holds on the file, that write lock included.
            _replace(
                info, target, group, before_replace=(lambda: None) if rollback_mode else recheck
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


def salvage(target: Path | None, sides: list[str], backup_dir: Path, group: int | None) -> Path:
    """Copy files SQLite cannot read, byte for byte, into ``<backups>/salvage/<stamp>/``.

    Used by restore when the database it replaces is damaged, or when only its side files
    are left: whatever they hold is kept for a human to look at. The folder is never listed
    as a backup, never pruned, and never written into again.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = backup_dir / "salvage" / stamp
    folder.mkdir(parents=True, mode=0o750 if group is not None else 0o700)
    sources = ([target] if target is not None else []) + [Path(s) for s in sides]
    mode = 0o640 if group is not None else 0o600
    for source in sources:
        fd = create_exclusive(folder / source.name, mode, group)
        try:
            with source.open("rb") as handle:
                pump(iter(lambda: handle.read(copier.CHUNK), b""), fd)
            os.fsync(fd)
        finally:
            os.close(fd)
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
        mode, owner = (0o640 if group is not None else 0o600), None
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
        _check_restored(info, tmp, sha)
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


def _check_restored(info: BackupInfo, tmp: Path, sha: str) -> None:
    if sha != info.manifest.get("sha256"):
        raise RefusedError(
            f"backup {info.id} changed while it was restored (sha256 mismatch)",
            hint="run sidecar verify, then retry with a good backup",
        )
    problems = inspect_file(tmp, False)["problems"]
    if problems:
        raise RefusedError(f"the restored copy fails quick_check: {problems[0]}", hint="retry")
