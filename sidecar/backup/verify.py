"""Verifying backups: a new copy before it is published, and a stored backup at any time.

See docs/design.md, 'Verification'.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sidecar import database, sqlite
from sidecar.backup.compression import decompressed_chunks
from sidecar.backup.snapshot import Snapshot
from sidecar.backup.store import BackupInfo, folder_lock
from sidecar.backup.verification import record_verification
from sidecar.errors import HealthError, UnavailableError
from sidecar.fs import create_exclusive, pump, sha256_file
from sidecar.settings import VerifyLevel


@dataclass(frozen=True)
class FileFacts:
    """What :func:`inspect_file` found in a database file."""

    problems: list[str] = field(default_factory=list)
    page_size: int = 0
    page_count: int = 0
    schema_hash: str = ""
    row_counts: dict[str, int] = field(default_factory=dict)
    # SQLite could not read the file here (I/O, open, memory...): ``problems`` then say
    # nothing about its content.
    unread: bool = False


@dataclass(frozen=True)
class VerifiedCopy:
    """A new backup file, its ``-wal`` folded in, that passed verification."""

    size: int
    sha256: str
    page_size: int
    page_count: int
    schema_hash: str
    row_counts: dict[str, int]
    wal_frames: int
    checked_during_copy: bool  # the quick_check ran during the copy, not afterwards
    seconds: float


def inspect_file(path: Path, full: bool | None, *, count_rows: bool = True) -> FileFacts:
    """Facts about a database file we own; ``full`` None skips quick/integrity_check,
    ``count_rows`` False the row counts (each reads a whole b-tree).

    ``immutable=1``: no locks, no ``-wal``/``-shm`` created beside a backup.
    """
    facts = FileFacts()
    try:
        with sqlite.immutable(path) as conn:
            if full is not None:
                facts = replace(facts, problems=sqlite.quick_check(conn, full=full))
            facts = replace(
                facts,
                page_size=int(conn.execute("PRAGMA page_size").fetchone()[0]),
                page_count=int(conn.execute("PRAGMA page_count").fetchone()[0]),
                schema_hash=database.schema_hash(conn),
                row_counts=database.row_counts(conn) if count_rows else {},
            )
    except sqlite3.DatabaseError as exc:
        if sqlite.says_damaged(exc):
            facts = replace(facts, problems=[f"not a readable SQLite database: {exc}"])
        else:
            facts = replace(facts, problems=[f"SQLite could not read it: {exc}"], unread=True)
    return facts


class DamagedDatabaseError(HealthError):
    """A new backup failed verification although it holds exactly the bytes read: the
    database itself is damaged (a restore keeps its raw bytes instead, see
    :func:`sidecar.backup.restore.salvage`)."""


def verify_copy(db: Path, work: Path, snap: Snapshot, level: VerifyLevel) -> VerifiedCopy:
    """Fold the copied ``-wal`` (if any) into the copy ``work``, then verify it at ``level``;
    what was proved already during the copy is not redone. Raises HealthError.
    See docs/design.md, 'Verifying a new backup'.
    """
    t0 = time.monotonic()
    wal_frames = 0
    rehash: _Rehash | None = None
    if snap.wal_copied:
        wal_frames = _fold_wal(work)
        rehash = _Rehash(work)  # on a second core, while SQLite inspects the file
    during_copy = snap.quick_check
    if snap.wal_copied or during_copy is None or during_copy.get("level") != level:
        during_copy = None
    # Rows counted in the snapshot during a direct copy (of the db file alone, never with a
    # -wal folded in) hold for a copy proven identical to it.
    counted = snap.row_counts
    facts = inspect_file(
        work,
        None if level == "checksum" or during_copy else level == "full",
        count_rows=counted is None,
    )
    problems: list[str] = []
    if during_copy is not None:
        problems = [str(p) for p in during_copy.get("problems", ["the check gave no result"])]
    if rehash is not None:
        size, sha = rehash.result()
    else:
        size, sha = snap.db_bytes, snap.copied_sha256
    copied_wrong: list[str] = []
    # With no wal frames folded in, the file must be byte for byte what the copier read.
    if wal_frames == 0 and sha != snap.copied_sha256:
        copied_wrong.append("the written file differs from the bytes read from the database")
    if size != work.stat().st_size:
        copied_wrong.append(f"the file holds {work.stat().st_size} bytes, {size} were copied")
    # Once the copy holds exactly what was read, what is wrong with it is the database's;
    # a check that could not read the file says nothing about it.
    if facts.unread:
        copied_wrong += facts.problems
    elif during_copy is not None and during_copy.get("unread"):
        copied_wrong += problems
    damaged = [] if copied_wrong else problems + facts.problems
    if facts.page_size * facts.page_count != size:
        damaged.append(f"size {size} is not page_size x page_count")
    if copied_wrong or damaged:
        error = HealthError if copied_wrong else DamagedDatabaseError
        raise error(
            f"the new backup of {db} failed verification: {(copied_wrong + damaged)[0]}",
            hint="the database itself may be damaged: run sidecar health --full",
        )
    return VerifiedCopy(
        size=size,
        sha256=sha,
        page_size=facts.page_size,
        page_count=facts.page_count,
        schema_hash=facts.schema_hash,
        row_counts=facts.row_counts if counted is None else counted,
        wal_frames=wal_frames,
        checked_during_copy=during_copy is not None,
        seconds=time.monotonic() - t0,
    )


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


def verify_backup(info: BackupInfo, *, full: bool = False, record: bool = True) -> list[str]:
    """Problems with a stored backup ([] when it is good): manifest, sha256, quick_check
    (``integrity_check`` when ``full``). Compressed backups are checked decompressed.

    The result is recorded beside the manifest (:func:`verification.record_verification`), so that
    `list`, `health` and `restore latest` know it without reading the file again; not with
    ``record`` False (a dry run writes nothing)."""
    path, man = info.path, info.manifest
    if path.is_symlink() or not path.is_file():
        return ["backup file is missing" if not path.is_symlink() else "is a symlink"]
    if not man:
        return ["no manifest: not written (or not finished) by sidecar"]
    st = path.stat()
    problems = _verify_file(info, full=full)
    if record:
        record_verification(path, problems, level="full" if full else "quick", st=st)
    return problems


SHA_DIFFERS = "sha256 differs from the manifest: the file is corrupt"


def stored_problems(info: BackupInfo) -> list[str]:
    """The stored file's size and sha256 against its manifest's ([] when both match): what
    `verify` checks first, and `prune` of the backup it keeps. Raises OSError."""
    size, sha = sha256_file(info.path)
    problems = []
    if size != info.manifest.get("size"):
        problems.append(f"size {size} differs from the manifest's {info.manifest.get('size')}")
    if sha != info.manifest.get("stored_sha256"):
        problems.append(SHA_DIFFERS)
    return problems


def _verify_file(info: BackupInfo, *, full: bool) -> list[str]:
    path, man = info.path, info.manifest
    problems = stored_problems(info)
    if SHA_DIFFERS in problems:
        return problems
    if not info.compressed:
        return problems + inspect_file(path, full).problems
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
            problems += inspect_file(work, full).problems
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


def verify_decompresses_to(stored: Path, info: BackupInfo) -> None:
    """Raise HealthError unless the zstd file ``stored`` decompresses to the backup ``info``."""
    digest = hashlib.sha256()
    for chunk in decompressed_chunks(stored, zstd=True):
        digest.update(chunk)
    if digest.hexdigest() != info.manifest.get("sha256"):
        raise HealthError(
            f"the compressed copy of backup {info.id} does not decompress to it",
            hint="the plain backup is kept; run sidecar verify, check the backups volume",
        )
