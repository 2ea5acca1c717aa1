"""The parent side of the copy: a consistent snapshot of a live database, copied by the child.

The parent holds the read transaction that makes the copy consistent; the child
(:mod:`sidecar.backup.child`) opens the live files. See docs/design.md, 'The snapshot'.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from sidecar import database, sqlite
from sidecar.errors import HealthError, UnavailableError
from sidecar.progress import Progress

# The module the child runs; tests point it at a fault-injecting wrapper.
CHILD_MODULE = "sidecar.backup.child"
# How the child starts: the image's code cache first, then the module as ``-m`` would run it
# (docs/design.md, "Start-up: the code cache").
CHILD_START = (
    "from sidecar import codecache\n"
    "codecache.install()\n"
    "import runpy, sys\n"
    "runpy.run_module(sys.argv[1], run_name='__main__', alter_sys=True)\n"
)


class ProgressReporter(Progress):
    """The copy's progress: :class:`sidecar.progress.Progress` for ``backup``."""

    def __init__(self, name: str) -> None:
        super().__init__("backup", name)


# ---- the parent side: a consistent snapshot of a live database ------------------------------


class Snapshot(NamedTuple):
    """What :func:`take_snapshot` copied: ``<work>`` and maybe ``<work>-wal``, not yet folded."""

    journal_mode: str
    copied_bytes: int  # database file and -wal together
    copied_sha256: str  # of the database file bytes read (not the -wal)
    lock_seconds: float  # the read transaction, from BEGIN until every byte was read
    copy_seconds: float
    db_bytes: int = 0  # the database file alone
    wal_copied: bool = False  # a -wal was copied beside it and must be folded in
    writeback: str = ""  # how the child kept its dirty pages few
    copier_peak_rss_kib: int | None = None
    copy_method: str = ""  # copy_file_range or read-write
    repaired_chunks: int = 0  # rewritten because a checkpoint changed them mid-copy
    # The source's quick_check, run during the copy ({"level", "problems", "seconds"}); None
    # when the copy is checked afterwards.
    quick_check: dict[str, Any] | None = None
    # Rows of each table in the snapshot, counted during a direct I/O copy (of the db file
    # alone, so exactly the copy's); None: count them in the copy.
    row_counts: dict[str, int] | None = None


def take_snapshot(
    db: Path,
    work: Path,
    *,
    mode: int,
    group: int | None,
    busy_timeout: float,
    on_progress: Callable[[int, int], None] | None = None,
    quick_check: str | None = None,
    direct_io: bool = False,
) -> Snapshot:
    """Copy ``db`` (and, when needed, its ``-wal``) to ``work`` under a read transaction.

    ``quick_check`` ("quick" or "full"): also run it on the file while it is copied, where
    nothing waits for it (WAL mode, no -wal needed). ``direct_io``: copy with direct I/O
    unless the copy is read again whole afterwards (a -wal folded in, a check of the copy).
    See docs/design.md, 'The snapshot'.
    """
    started = time.monotonic()
    conn = database.connect(db, busy_timeout=busy_timeout)
    lock_seconds = 0.0
    try:
        journal = database.journal_mode(conn)
        with _Child(mode=mode, group=group) as child:
            locked_at = time.monotonic()
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot

            def release() -> None:
                nonlocal lock_seconds
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                    lock_seconds = time.monotonic() - locked_at

            try:
                wal = Path(f"{db}-wal")
                need_wal = journal == "wal" and not _db_file_is_snapshot(db, busy_timeout)
                # (source, copy, may be absent, cannot change while copied): the db file
                # is frozen unless its -wal is needed (a checkpoint may then still write it).
                pairs = [(db, work, False, not need_wal)]
                if need_wal:
                    pairs.append((wal, Path(f"{work}-wal"), True, False))
                total = sum(_size_or_zero(pair[0]) for pair in pairs)
                overlap = quick_check if journal == "wal" and not need_wal else None
                direct = direct_io and not need_wal and (quick_check is None or bool(overlap))
                counted: dict[str, int] | None = None

                def count_rows() -> None:
                    # A copy written with direct I/O is not in the page cache: its rows are
                    # those of this very snapshot (its db file alone), counted here from
                    # pages in the page cache while the child copies.
                    nonlocal counted
                    # A damaged b-tree: left to the check of the copy, which names it.
                    with suppress(sqlite3.DatabaseError):
                        counted = database.row_counts(conn)

                files, final = child.run(
                    pairs, total, on_progress, release, quick_check=overlap, direct_io=direct,
                    while_copying=count_rows if direct else None,
                )  # fmt: skip
            finally:
                release()
    except sqlite3.OperationalError as exc:
        if sqlite.is_busy(exc):
            raise UnavailableError(
                f"could not read the database within {busy_timeout:g}s: {exc}",
                hint="the app may hold SQLite in exclusive mode: stop it, or retry later",
            ) from exc
        raise
    finally:
        conn.close()
    snap = _snapshot(journal, files, final, lock_seconds, time.monotonic() - started)
    return snap._replace(row_counts=counted)


def _snapshot(
    journal: str,
    files: list[dict[str, Any]],
    final: dict[str, Any],
    lock_seconds: float,
    copy_seconds: float,
) -> Snapshot:
    """The Snapshot from the child's ``done`` event (``final``) and its ``files``."""
    first = files[0]
    return Snapshot(
        journal_mode=journal,
        copied_bytes=sum(int(f["bytes"]) for f in files),
        copied_sha256=str(first["sha256"]),
        lock_seconds=lock_seconds,
        copy_seconds=copy_seconds,
        db_bytes=int(first["bytes"]),
        wal_copied=len(files) > 1,
        writeback=str(final.get("writeback", "")),
        copier_peak_rss_kib=final.get("peak_rss_kib"),
        copy_method=str(first.get("method", "")),
        repaired_chunks=sum(int(f.get("repaired_chunks", 0)) for f in files),
        quick_check=final.get("quick_check"),
    )


def _db_file_is_snapshot(db: Path, busy_timeout: float) -> bool:
    """Whether, inside our read transaction, every wal frame is now in the db file.

    Runs a PASSIVE checkpoint on a second connection (SQLite keeps the file open while another
    connection of this process holds locks, so closing it is safe). It backfills at most up
    to our snapshot; (0, n, n) means nothing in the wal is missing from the db file.
    """
    other = database.connect(db, busy_timeout=busy_timeout)
    try:
        busy, frames, backfilled = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.OperationalError:
        # A read-only database (file mode, volume) cannot be checkpointed: copying the
        # -wal as well is always correct, only slower.
        return False
    finally:
        other.close()
    return bool(busy == 0 and frames == backfilled)


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _spawn() -> subprocess.Popen[bytes]:
    """Start a copier child; it says ``ready`` and waits for its job on stdin."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    if root not in {os.path.realpath(entry) for entry in sys.path if entry}:
        # A checkout run by path: the child must find it too. (Installed, it is on the
        # path already, and the search path stays the one the code cache was built for.)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # S603: our own interpreter and module, with paths we built; never user text.
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", CHILD_START, CHILD_MODULE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


# A child started ahead by copier_ahead, for the next snapshot of this process.
_ahead: list[subprocess.Popen[bytes]] = []


@contextmanager
def copier_ahead(db: Path | None) -> Iterator[None]:
    """Start the copier child now, for a snapshot of ``db`` taken later in this block: its
    start-up (~50-80 ms) then overlaps the work before it instead of the copy. Nothing when
    there is nothing to back up (``db`` None or not a file). One left unused is stopped at
    the end of the block. See docs/design.md, 'The copier child'."""
    if db is None or not db.is_file():
        yield
        return
    proc = _spawn()
    _ahead.append(proc)
    try:
        yield
    finally:
        if proc in _ahead:
            _ahead.remove(proc)
            _discard(proc)


def _discard(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child that got no job: end of its stdin is its signal to exit."""
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


class _Child:
    """The copier process, started (and waiting) before the read lock is taken."""

    def __init__(self, *, mode: int, group: int | None) -> None:
        self.mode = mode
        self.group = group

    def __enter__(self) -> _Child:
        ahead = _ahead.pop() if _ahead else None
        if ahead is not None and ahead.poll() is not None:  # it died waiting: start anew
            _discard(ahead)
            ahead = None
        self.proc = ahead or _spawn()
        assert self.proc.stdout is not None  # noqa: S101 - stdout=PIPE above
        first = self.proc.stdout.readline()
        if not first or json.loads(first)["event"] != "ready":
            self._fail(None)
        return self

    def run(
        self,
        pairs: list[tuple[Path, Path, bool, bool]],
        total: int,
        on_progress: Callable[[int, int], None] | None,
        on_release: Callable[[], None],
        *,
        quick_check: str | None = None,
        direct_io: bool = False,
        while_copying: Callable[[], None] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        proc = self.proc
        assert proc.stdin is not None  # noqa: S101 - PIPE
        assert proc.stdout is not None  # noqa: S101
        job = {
            "pairs": [
                [str(src), str(dst), optional, stable] for src, dst, optional, stable in pairs
            ],
            "mode": self.mode,
            "group": self.group,
            "total": total,
            "quick_check": quick_check,
            "direct_io": direct_io,
        }
        proc.stdin.write(b"go " + json.dumps(job).encode() + b"\n")
        proc.stdin.close()
        if while_copying is not None:
            while_copying()  # its events wait in the pipe meanwhile
        final: dict[str, Any] | None = None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "progress" and on_progress is not None:
                on_progress(int(event["done"]), int(event["total"]))
            elif event["event"] == "released":
                on_release()
            elif event["event"] in ("done", "error"):
                final = event
        if final is None or final["event"] == "error" or proc.wait() != 0:
            self._fail(final)
        files: list[dict[str, Any]] = final["files"]
        return files, final

    def _fail(self, final: dict[str, Any] | None) -> NoReturn:
        self.proc.kill()
        code = self.proc.wait()
        stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        detail = final or {"errno": None, "message": stderr.strip()[-500:] or f"exit {code}"}
        if detail.get("kind") == "mismatch":
            raise HealthError(
                f"the new backup failed verification: {detail['message']}",
                hint="check the backups volume (dmesg, free space, file system errors), "
                "then retry the backup",
            )
        raise OSError(detail.get("errno") or errno.EIO, f"copy failed: {detail['message']}")

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
