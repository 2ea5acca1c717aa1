"""Streaming file copies with periodic fsync; also the child process that copies a live database.

Why a child process: closing *any* file descriptor on a database file drops every POSIX lock
this process holds on it, including SQLite's (a caller may hold ``BEGIN IMMEDIATE`` on another
connection). So the live ``.db`` and ``-wal`` are only ever opened by ``python -m
sidecar.copier``; the parent holds the read transaction that makes the copy consistent.

The child prints JSON lines on stdout: ``progress`` events, then one ``done`` (or ``error``)
event. Keep this module light: it is imported on every child start-up.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

CHUNK = 1 << 20  # 1 MiB reads keep the RSS flat whatever the database size
SYNC_EVERY = 64 << 20  # one big fsync at the end stalls the app's commits; sync as we go
PROGRESS_EVERY = 0.5  # seconds between progress lines from the child
# The module the child runs; tests point it at a fault-injecting wrapper.
CHILD_MODULE = "sidecar.copier"

Progress = Callable[[int], None]


class CopyAborted(Exception):
    """The parent died: stop writing a backup nobody will finish."""


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: Path, mode: int, group: int | None) -> int:
    """A new file descriptor for writing ``path``; fails if it exists (never clobber)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    # The umask may have narrowed the mode; widen it back to exactly what was asked for.
    os.fchmod(fd, mode)
    if group is not None:
        os.fchown(fd, -1, group)
    return fd


def pump(
    chunks: Iterable[bytes],
    dst_fd: int,
    *,
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """Write ``chunks`` to ``dst_fd`` with an fsync every 64 MiB; return (bytes, sha256)."""
    digest = hashlib.sha256()
    written = 0
    unsynced = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.write(dst_fd, view)
            view = view[n:]
        digest.update(chunk)
        written += len(chunk)
        unsynced += len(chunk)
        if unsynced >= SYNC_EVERY:
            os.fdatasync(dst_fd)
            unsynced = 0
        if check is not None:
            check()
        if progress is not None:
            progress(written)
    os.fsync(dst_fd)
    return written, digest.hexdigest()


def read_chunks(handle: IO[bytes] | int) -> Iterable[bytes]:
    """Stream a file (object or descriptor) in 1 MiB chunks."""
    while True:
        chunk = os.read(handle, CHUNK) if isinstance(handle, int) else handle.read(CHUNK)
        if not chunk:
            return
        yield chunk


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file we own. Never call it on a live database (see module doc)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for chunk in read_chunks(handle):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def zstd_compress(src: Path, dst: Path, *, mode: int, group: int | None) -> tuple[int, str]:
    """Compress ``src`` into a new file ``dst`` (zstd level 1, streamed); (size, sha256)."""
    import zstandard  # noqa: PLC0415 - only compressed backups pay for the import

    fd = create_exclusive(dst, mode, group)
    try:
        compressor = zstandard.ZstdCompressor(level=1)
        with src.open("rb") as handle:
            chunks = compressor.read_to_iter(handle, read_size=CHUNK, write_size=CHUNK)
            return pump(chunks, fd)
    finally:
        os.close(fd)


def decompressed_chunks(path: Path) -> Iterable[bytes]:
    """The content of a backup file, decompressed on the fly when it ends in ``.zst``."""
    if path.name.endswith(".zst"):
        import zstandard  # noqa: PLC0415

        with path.open("rb") as handle:
            reader = zstandard.ZstdDecompressor().read_to_iter(
                handle, read_size=CHUNK, write_size=CHUNK
            )
            yield from reader
    else:
        with path.open("rb") as handle:
            yield from read_chunks(handle)


# ---- the child process -------------------------------------------------------------------


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _copy_one(
    src: Path, dst: Path, *, mode: int, group: int | None, optional: bool, total: int, base: int
) -> dict[str, Any] | None:
    parent = os.getppid()

    def check() -> None:
        # Orphaned (the parent was killed): the parent can no longer hold the read
        # transaction that makes this copy consistent, so the copy is worthless.
        if os.getppid() != parent:
            raise CopyAborted("parent process died")

    last = [time.monotonic()]

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            _emit({"event": "progress", "done": base + done, "total": total})

    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if optional:
            return None
        raise
    try:
        dst_fd = create_exclusive(dst, mode, group)
        try:
            size, sha = pump(read_chunks(src_fd), dst_fd, progress=progress, check=check)
        except BaseException:
            dst.unlink(missing_ok=True)  # ours (O_EXCL): never leave a partial behind
            raise
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return {"src": str(src), "dst": str(dst), "bytes": size, "sha256": sha}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.copier")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("SRC", "DST"), required=True)
    parser.add_argument("--optional", nargs="*", default=[], help="sources that may be absent")
    parser.add_argument("--mode", type=lambda v: int(v, 8), default=0o600)
    parser.add_argument("--group", type=int, default=None)
    parser.add_argument("--total", type=int, default=0, help="expected bytes, for progress")
    parser.add_argument("--wait", action="store_true", help="start on a line from stdin")
    args = parser.parse_args(argv)
    if args.wait:
        # Start-up (~50 ms of interpreter) happens before the parent takes its read lock.
        _emit({"event": "ready"})
        if sys.stdin.readline().strip() != "go":
            return 1
    results: list[dict[str, Any]] = []
    created: list[Path] = []
    base = 0
    try:
        for src, dst in args.pair:
            result = _copy_one(
                Path(src),
                Path(dst),
                mode=args.mode,
                group=args.group,
                optional=src in args.optional,
                total=args.total,
                base=base,
            )
            if result is not None:
                created.append(Path(dst))
                results.append(result)
                base += int(result["bytes"])
    except (OSError, CopyAborted) as exc:
        for path in created:
            path.unlink(missing_ok=True)
        code = exc.errno if isinstance(exc, OSError) else None
        _emit(
            {
                "event": "error",
                "errno": code,
                "code": errno.errorcode.get(code or 0, ""),
                "message": str(exc),
            }
        )
        return 1
    _emit({"event": "done", "files": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


class ProgressReporter:
    """``backup.progress`` events every few seconds on long copies; a bar when on a TTY."""

    EVERY = 3.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.last_log = self.started
        self.tty = sys.stderr.isatty()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        percent = min(100.0, 100.0 * done / total) if total else 100.0
        mb_s = done / max(now - self.started, 1e-6) / 1e6
        if self.tty:
            bar = "#" * int(percent // 4)
            sys.stderr.write(f"\r{self.name} [{bar:<25}] {percent:5.1f}% {mb_s:7.1f} MB/s")
            sys.stderr.flush()
            self.drawn = True
        if now - self.last_log >= self.EVERY:
            self.last_log = now
            from sidecar.logs import get_logger  # noqa: PLC0415 - not in the child

            get_logger(__name__).info(
                "backup.progress", db=self.name, percent=round(percent, 1), mb_s=round(mb_s, 1)
            )

    def finish(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---- the parent side: a consistent snapshot of a live database ------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What :func:`take_snapshot` copied: ``<work>`` and maybe ``<work>-wal``, not yet folded."""

    journal_mode: str
    copied_bytes: int
    copied_sha256: str | None  # of the database file bytes read (not the -wal)
    lock_seconds: float
    copy_seconds: float


def take_snapshot(
    db: Path,
    work: Path,
    *,
    mode: int,
    group: int | None,
    busy_timeout: float,
    on_progress: Callable[[int, int], None] | None = None,
) -> Snapshot:
    """Copy ``db`` (and its ``-wal``) to ``work`` under a read transaction, via a child process.

    The read transaction pins the database: in WAL mode checkpoints cannot overwrite pages
    it still needs nor restart the wal, so the db file then the wal copied in that order
    replay to a committed state at least as new as the transaction's; in rollback-journal
    mode its SHARED lock keeps writers from changing the file at all (they wait).
    """
    from sidecar import database  # noqa: PLC0415 - keeps the child's start-up light
    from sidecar.errors import UnavailableError  # noqa: PLC0415

    started = time.monotonic()
    total = db.stat().st_size + _size_or_zero(Path(f"{db}-wal"))
    conn = database.connect(db, busy_timeout=busy_timeout)
    try:
        journal = database.journal_mode(conn)
        with _Child(db, work, mode=mode, group=group, total=total, journal=journal) as child:
            if journal == "wal":
                # Moves committed frames into the db file first, so the wal to copy is short.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            locked_at = time.monotonic()
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot
            try:
                files = child.run(on_progress)
            finally:
                conn.execute("ROLLBACK")
            lock_seconds = time.monotonic() - locked_at
    except sqlite3.OperationalError as exc:
        if database._is_busy(exc):
            raise UnavailableError(
                f"could not read the database within {busy_timeout:g}s: {exc}",
                hint="the app may hold SQLite in exclusive mode: stop it, or retry later",
            ) from exc
        raise
    finally:
        conn.close()
    first = files[0]
    return Snapshot(
        journal_mode=journal,
        copied_bytes=sum(int(f["bytes"]) for f in files),
        copied_sha256=str(first["sha256"]),
        lock_seconds=lock_seconds,
        copy_seconds=time.monotonic() - started,
    )


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class _Child:
    """The copier process, started (and waiting) before the read lock is taken."""

    def __init__(
        self, db: Path, work: Path, *, mode: int, group: int | None, total: int, journal: str
    ) -> None:
        argv = [sys.executable, "-m", CHILD_MODULE, "--wait", "--pair", str(db), str(work)]
        if journal == "wal":
            wal = f"{db}-wal"
            argv += ["--pair", wal, f"{work}-wal", "--optional", wal]
        argv += ["--mode", f"{mode:o}", "--total", str(total)]
        if group is not None:
            argv += ["--group", str(group)]
        self.argv = argv

    def __enter__(self) -> _Child:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        # S603: our own interpreter and module, with paths we built; never user text.
        self.proc = subprocess.Popen(  # noqa: S603
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None  # noqa: S101 - stdout=PIPE above
        first = self.proc.stdout.readline()
        if not first or json.loads(first)["event"] != "ready":
            self._fail(None)
        return self

    def run(self, on_progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
        proc = self.proc
        assert proc.stdin is not None  # noqa: S101 - PIPE
        assert proc.stdout is not None  # noqa: S101
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        final: dict[str, Any] | None = None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "progress" and on_progress is not None:
                on_progress(int(event["done"]), int(event["total"]))
            elif event["event"] in ("done", "error"):
                final = event
        if final is None or final["event"] == "error" or proc.wait() != 0:
            self._fail(final)
        files: list[dict[str, Any]] = final["files"]
        return files

    def _fail(self, final: dict[str, Any] | None) -> NoReturn:
        self.proc.kill()
        code = self.proc.wait()
        stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        detail = final or {"errno": None, "message": stderr.strip()[-500:] or f"exit {code}"}
        raise OSError(detail.get("errno") or errno.EIO, f"copy failed: {detail['message']}")

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
