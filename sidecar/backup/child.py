"""The copier child: ``python -m sidecar.backup.child`` copies a live database for its parent.

Only this process opens the live ``.db`` and ``-wal``: closing any descriptor on a database
file drops every POSIX lock this process holds on it, SQLite's included. Keep it light: no
sqlite3, subprocess, dataclasses or argparse at start-up. The protocol: see docs/design.md,
'The copier child'.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from sidecar import codecache
from sidecar.backup import copy
from sidecar.backup.copy import (
    CopyMismatch,
    CopyStats,
    SyncRange,
    copy_verified,
    load_sync_file_range,
)
from sidecar.fs import create_exclusive

TYPE_CHECKING = False  # no typing or pathlib in this process (its RSS: issue 16)
if TYPE_CHECKING:
    from typing import Any

PROGRESS_EVERY = 0.5  # seconds between progress lines
# quick_check visits each page once and scans each table once: a page cache smaller than
# SQLite's 2 MiB default checks as fast or faster, in less RSS (issue 16).
QUICK_CHECK_CACHE_KIB = 512


class CopyAborted(Exception):
    """The parent died: stop writing a backup nobody will finish."""


class _SourceQuickCheck(threading.Thread):
    """``quick_check`` (``integrity_check`` at level "full") of the live database file while
    it is copied; the parent asks only where the file cannot change meanwhile.
    See docs/design.md, 'The quick_check during the copy'."""

    def __init__(self, path: str, level: str) -> None:
        super().__init__(name="copier-check", daemon=True)
        self.path = path
        self.level = level
        self.outcome: dict[str, Any] = {
            "level": level,
            "problems": ["check did not run"],
            "unread": True,
        }

    def run(self) -> None:
        started = time.monotonic()
        try:
            from sidecar import sqlite  # noqa: PLC0415 - sqlite3 only, only when asked

            with sqlite.immutable(self.path) as conn:
                if self.level != "full":  # its lookups from index to table want the cache
                    conn.execute(f"PRAGMA cache_size = -{QUICK_CHECK_CACHE_KIB}")
                problems = sqlite.quick_check(conn, full=self.level == "full")
        except Exception as exc:  # noqa: BLE001 - any failure is a failed check, reported
            from sidecar import sqlite  # noqa: PLC0415 - loaded above unless that failed

            if sqlite.says_damaged(exc):
                problems = [f"not a readable SQLite database: {exc}"]
            else:  # I/O, open, memory: nothing known about the file
                self.outcome = {"level": self.level, "problems": [f"check failed: {exc}"],
                                "unread": True}  # fmt: skip
                return
        self.outcome = {
            "level": self.level,
            "problems": problems,
            "seconds": round(time.monotonic() - started, 3),
        }


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _orphan_guard() -> Callable[[], None]:
    """Raises CopyAborted once the parent is gone: it can no longer hold the read
    transaction that makes this copy consistent, so the copy is worthless."""
    parent = os.getppid()

    def raise_if_orphaned() -> None:
        if os.getppid() != parent:
            raise CopyAborted("parent process died")

    return raise_if_orphaned


def _progress_lines(base: int, total: int) -> Callable[[int], None]:
    """Emits a progress line at most every PROGRESS_EVERY seconds."""
    last = [time.monotonic()]

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            _emit({"event": "progress", "done": base + done, "total": total})

    return progress


def _copy_one(
    src: str,
    dst: str,
    *,
    mode: int,
    group: int | None,
    optional: bool,
    total: int,
    base: int,
    on_read: Callable[[], None] | None,
    sync_range: SyncRange | None,
    kernel_copy: bool,
    direct_io: bool,
    stable: bool,
) -> dict[str, Any] | None:
    raise_if_orphaned = _orphan_guard()
    progress = _progress_lines(base, total)
    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if optional:
            return None
        raise
    try:
        # Bounded by the size now: a -wal keeps growing under a busy writer, and frames
        # appended after the read transaction began are not needed.
        size = os.fstat(src_fd).st_size
        dst_fd = create_exclusive(dst, mode, group, readable=True)
        stats = CopyStats()
        try:
            # Looked up on the module: the fault tests replace it.
            in_kernel = kernel_copy and copy.copies_bytes(dst_fd)
            copied, sha = copy_verified(
                src_fd,
                dst_fd,
                size=size,
                progress=progress,
                raise_if_aborted=raise_if_orphaned,
                on_read=on_read,
                sync_range=sync_range,
                kernel_copy=in_kernel,
                direct=direct_io,
                stable=stable,
                stats=stats,
            )
            raise_if_orphaned()
        except BaseException:
            os.unlink(dst)  # ours (O_EXCL): never leave a partial behind
            raise
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return {
        "src": src,
        "dst": dst,
        "bytes": copied,
        "sha256": sha,
        "method": stats.method,
        "repaired_chunks": stats.repaired,
    }


def _copy_pairs(
    job: dict[str, Any], sync_range: SyncRange | None, on_last_read: Callable[[], None] | None
) -> list[dict[str, Any]]:
    """Copy each (source, copy, may be absent[, stable]) pair of ``job``; on failure,
    remove the copies already made."""
    results: list[dict[str, Any]] = []
    created: list[str] = []
    base = 0
    pairs = job["pairs"]
    try:
        for index, (src, dst, optional, *rest) in enumerate(pairs):
            result = _copy_one(
                src,
                dst,
                mode=int(job["mode"]),
                group=job.get("group"),
                optional=bool(optional),
                total=int(job.get("total", 0)),
                base=base,
                on_read=on_last_read if index == len(pairs) - 1 else None,
                sync_range=sync_range,
                kernel_copy=bool(job.get("kernel_copy", True)),
                direct_io=bool(job.get("direct_io", False)),
                stable=bool(rest[0]) if rest else False,
            )
            if result is not None:
                created.append(dst)
                results.append(result)
                base += int(result["bytes"])
    except (OSError, CopyAborted, CopyMismatch):
        for path in created:
            with suppress(FileNotFoundError):
                os.unlink(path)
        raise
    return results


def _error_event(exc: OSError | CopyAborted | CopyMismatch) -> dict[str, Any]:
    code = exc.errno if isinstance(exc, OSError) else None
    return {
        "event": "error",
        "kind": "mismatch" if isinstance(exc, CopyMismatch) else "os",
        "errno": code,
        "code": errno.errorcode.get(code or 0, ""),
        "message": str(exc),
    }


def main() -> int:
    """The child: ``ready``, then one ``go <job>`` line on stdin, then the copy."""
    # Interpreter start-up (~50 ms) happens before the parent takes its read lock.
    _emit({"event": "ready", "code_cache": codecache.installed() is not None})
    line = sys.stdin.readline()
    if not line.startswith("go "):
        return 1
    job = json.loads(line[3:])
    sync_range = load_sync_file_range() if job.get("sync_file_range", True) else None
    level = job.get("quick_check")
    quick_check = _SourceQuickCheck(job["pairs"][0][0], str(level)) if level else None
    if quick_check is not None:
        quick_check.start()
    released = [False]

    def release() -> None:
        released[0] = True
        _emit({"event": "released"})

    try:
        # With a quick_check still reading the file, the lock is released after it.
        results = _copy_pairs(job, sync_range, release if quick_check is None else None)
    except (OSError, CopyAborted, CopyMismatch) as exc:
        _emit(_error_event(exc))
        return 1
    if quick_check is not None:
        quick_check.join()
    if not released[0]:  # the last source was an absent optional one, or it was checked
        release()
    done: dict[str, Any] = {
        "event": "done",
        "files": results,
        "writeback": "sync_file_range" if sync_range is not None else "fdatasync",
        "peak_rss_kib": _peak_rss(),
    }
    if quick_check is not None:
        done["quick_check"] = quick_check.outcome
    _emit(done)
    return 0


def _peak_rss() -> int | None:
    """This process's peak RSS in KiB (VmHWM: unlike getrusage, not inherited across exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    raise SystemExit(main())
