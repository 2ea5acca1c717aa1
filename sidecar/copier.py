"""Verified file copies, and the child process that copies a live database.

Why a child process: closing *any* file descriptor on a database file drops every POSIX lock
this process holds on it, including SQLite's (a caller may hold ``BEGIN IMMEDIATE`` on another
connection). So the live ``.db`` and ``-wal`` are only ever opened by ``python -m
sidecar.copier``; the parent holds the read transaction that makes the copy consistent.

How a live file is copied (:func:`copy_verified`). On ext4 and tmpfs the kernel copies
(``copy_file_range``, 8 MiB a call, no round trip through this process) while a verifier
thread reads each range from the source and from the backup, compares them and hashes the
source's bytes. Elsewhere (where ``copy_file_range`` might share blocks with the live database
instead of copying them, or is refused) every byte is read once into one of a few 2 MiB
buffers, written from it, hashed, read back and compared. Either way the sha256 returned is
of bytes read from the source and the backup file is proven to hold exactly those bytes, so
no second pass over the file is needed. Writeback of each chunk is queued at once
(``sync_file_range``) and the copier waits whenever more than 32 MiB are still on their way to
disk: dirty pages stay bounded, so the app's own fsyncs never queue behind a gigabyte of ours.

The read-back goes through the page cache, like every later reader of the file until it is
evicted: it catches short or misplaced writes and a kernel or file system that stores
something else, not a device that loses data after a successful ``fsync`` (an ``O_DIRECT``
re-read would, at the price of reading the whole file from the device again: ~1.6 s/GB here).

The protocol: the child prints ``ready`` on stdout, reads one ``go <json job>`` line from
stdin, then prints JSON lines: ``progress`` events, ``released`` once every source byte has
been read (the parent may end its read transaction: the rest is checking and syncing our own
file), then one ``done`` (or ``error``) event. Keep this module light: it is imported on
every child start-up (no argparse, dataclasses, subprocess or sqlite3 at module level).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from queue import SimpleQueue
from typing import IO, Any, NamedTuple, NoReturn

from sidecar.progress import Progress as Meter

CHUNK = 1 << 20  # streaming (compression, restore, re-hashing): small and flat
COPY_CHUNK = 2 << 20  # the live copy: sha256 at full speed, few syscalls, a small RSS
# Buffers in flight between reader and verifier: with the read-back buffer, ~10 MiB of RSS.
COPY_BUFFERS = 4
# With sync_file_range: the most data of ours still on its way to disk. The app's fsyncs may
# wait behind it (ext4 data=ordered), so it bounds their stall; too small starves the disk.
WRITEBACK_WINDOW = 32 << 20
SYNC_EVERY = 64 << 20  # without sync_file_range: fdatasync this often instead
PROGRESS_EVERY = 0.5  # seconds between progress lines from the child
# The module the child runs; tests point it at a fault-injecting wrapper.
CHILD_MODULE = "sidecar.copier"

KERNEL_STEP = 8 << 20  # bytes per copy_file_range call; the verifier reads them 2 MiB at a time
# copy_file_range refused for this pair of files (old kernel, other file systems, ...).
_CFR_UNSUPPORTED = (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)
# statfs f_type of file systems where copy_file_range always copies the bytes: on others
# (XFS, btrfs, NFS, ...) it may share blocks with the live database (reflink), and a backup
# must not: a later corrupt block would be corrupt in both, and every page the app then
# writes would be copied-on-write, fragmenting its database.
_COPYING_FILE_SYSTEMS = frozenset({0xEF53, 0x01021994})  # ext2/3/4, tmpfs
# <linux/fs.h>
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4
# sync_file_range is not there (or not for this file system): fall back to fdatasync.
_SFR_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP)

Progress = Callable[[int], None]


class CopyAborted(Exception):
    """The parent died: stop writing a backup nobody will finish."""


class CopyMismatch(Exception):
    """The backup file, read back, differs from the bytes read from the source."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"the backup file differs from the bytes read, near byte {offset}")
        self.offset = offset


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: Path, mode: int, group: int | None, *, readable: bool = False) -> int:
    """A new file descriptor for writing ``path``; fails if it exists (never clobber)."""
    access = os.O_RDWR if readable else os.O_WRONLY
    fd = os.open(path, access | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
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
    buf = bytearray(COPY_CHUNK)
    view = memoryview(buf)
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while n := os.readv(fd, [buf]):
            digest.update(view[:n])
            size += n
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def zstd_compress(src: Path, dst: Path, *, mode: int, group: int | None) -> tuple[int, str]:
    """Compress ``src`` into a new file ``dst`` (zstd level 1, streamed); (size, sha256).
    Shows its progress (:class:`sidecar.progress.Progress`) over the bytes of ``src`` read."""
    import zstandard  # noqa: PLC0415 - only compressed backups pay for the import

    fd = create_exclusive(dst, mode, group)
    try:
        compressor = zstandard.ZstdCompressor(level=1)
        with src.open("rb") as handle, Meter("compress", src.name, src.stat().st_size) as bar:
            chunks = compressor.read_to_iter(handle, read_size=CHUNK, write_size=CHUNK)
            return pump(chunks, fd, progress=lambda _: bar.to(handle.tell()))
    finally:
        os.close(fd)


def decompressed_chunks(path: Path, *, zstd: bool | None = None) -> Iterable[bytes]:
    """The content of a backup file, decompressed on the fly when it ends in ``.zst`` (or
    when ``zstd`` says so: a partial file's name does not)."""
    if path.name.endswith(".zst") if zstd is None else zstd:
        import zstandard  # noqa: PLC0415

        with path.open("rb") as handle:
            reader = zstandard.ZstdDecompressor().read_to_iter(
                handle, read_size=CHUNK, write_size=CHUNK
            )
            yield from reader
    else:
        with path.open("rb") as handle:
            yield from read_chunks(handle)


# ---- the verified copy -------------------------------------------------------------------

SyncRange = Callable[[int, int, int, int], None]


def _load_sync_file_range() -> SyncRange | None:
    """Linux's sync_file_range(2) through ctypes (the os module lacks it); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes  # noqa: PLC0415 - only the child needs it

        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int

    def sync_range(fd: int, offset: int, length: int, flags: int) -> None:
        if func(fd, offset, length, flags) != 0:  # ctypes drops the GIL for the call
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return sync_range


def copies_bytes(fd: int) -> bool:
    """Whether ``copy_file_range`` into ``fd`` is known to copy bytes, never share blocks.

    Reads ``statfs().f_type`` through ctypes (``os.statvfs`` lacks it); False when unsure.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # noqa: PLC0415 - only the child needs it

        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit
        if libc.fstatfs(fd, buf) != 0:
            return False
    except (OSError, AttributeError):
        return False
    # f_type is the first member, a C long (__fsword_t) on every Linux ABI.
    f_type = ctypes.c_long.from_buffer(buf).value
    return f_type in _COPYING_FILE_SYSTEMS


class Writeback:
    """Gets written data to disk early, so dirty pages never pile up.

    With ``sync_file_range``: writeback of each chunk starts as soon as it is written, and
    the writer waits whenever more than ``window`` bytes are still on their way to disk; no
    journal commit per chunk (the final ``fsync`` makes the metadata durable). Without it:
    ``fdatasync`` every 64 MiB.
    """

    def __init__(self, fd: int, sync_range: SyncRange | None, window: int) -> None:
        self.fd = fd
        self.sync_range = sync_range
        self.window = window
        self.started = 0  # writeback queued up to this offset
        self.done = 0  # and finished up to this one
        self.unsynced = 0

    @property
    def method(self) -> str:
        return "sync_file_range" if self.sync_range is not None else "fdatasync"

    def written(self, end: int) -> None:
        """The file is written up to ``end``: queue that for writeback, and wait while too
        much of it is still in flight."""
        if self._range(self.started, end - self.started, _SFR_WRITE):
            self.started = end
            if end - self.done > self.window:
                target = end - self.window
                flags = _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER
                if self._range(self.done, target - self.done, flags):
                    self.done = target
            return
        self.unsynced += end - self.started
        self.started = end
        if self.unsynced >= SYNC_EVERY:
            os.fdatasync(self.fd)
            self.unsynced = 0

    def _range(self, offset: int, length: int, flags: int) -> bool:
        sync_range = self.sync_range
        if sync_range is None:
            return False
        try:
            sync_range(self.fd, offset, length, flags)
        except OSError as exc:
            if exc.errno not in _SFR_UNSUPPORTED:
                raise
            self.sync_range = None  # e.g. a file system without it: fdatasync from now on
            return False
        return True


def _view(buf: bytearray, length: int) -> memoryview:
    return memoryview(buf)[:length]


def _pread_full(fd: int, buf: bytearray, offset: int, length: int) -> int:
    """Read up to ``length`` bytes at ``offset`` into ``buf``; fewer only at end of file."""
    view = memoryview(buf)
    got = 0
    while got < length:
        n = os.preadv(fd, [view[got:length]], offset + got)
        if n == 0:
            break
        got += n
    return got


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


class _Verifier(threading.Thread):
    """Hashes each chunk, reads it back from the destination and compares."""

    def __init__(self, dst_fd: int, free: SimpleQueue[bytearray | None]) -> None:
        super().__init__(name="copier-verify", daemon=True)
        self.dst_fd = dst_fd
        self.free = free
        self.todo: SimpleQueue[tuple[bytearray, int, int] | None] = SimpleQueue()
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None

    def run(self) -> None:
        back = bytearray(COPY_CHUNK)
        try:
            while (item := self.todo.get()) is not None:
                self._verify(*item, back)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, re-raised there
            self.error = exc
            self.free.put(None)  # wake the reader if it waits for a buffer

    def _verify(self, buf: bytearray, offset: int, length: int, back: bytearray) -> None:
        self.digest.update(memoryview(buf)[:length])
        got = _pread_full(self.dst_fd, back, offset, length)
        # bytearray == bytearray is a memcmp; comparing memoryviews is 40x slower, but only
        # the last, short chunk needs it, and slicing would copy (RSS).
        same = buf == back if length == len(buf) else _view(buf, length) == _view(back, length)
        if got != length or not same:
            raise CopyMismatch(offset)
        self.free.put(buf)


class CopyStats:
    """How a copy went: the method used, and chunks rewritten after a read-back mismatch."""

    def __init__(self) -> None:
        self.method = "read-write"
        self.repaired = 0


def copy_verified(
    src_fd: int,
    dst_fd: int,
    *,
    size: int | None = None,
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
    on_read: Callable[[], None] | None = None,
    sync_range: SyncRange | None = None,
    kernel_copy: bool = False,
    stable: bool = True,
    stats: CopyStats | None = None,
) -> tuple[int, str]:
    """Copy ``src_fd`` into ``dst_fd`` (opened read-write); return (bytes, sha256).

    The sha256 is of the bytes read from the source, and the destination was read back and
    found identical to them, chunk by chunk. ``size`` bounds the copy (None: to end of
    file); ``on_read`` runs once the source will not be read again, before the file is
    fsynced. Raises :class:`CopyMismatch` when the read-back differs.

    ``kernel_copy``: the kernel copies (``copy_file_range``: no round trip through this
    process) while a verifier thread reads the same range of source and destination,
    compares and hashes; falls back to read-write when the file systems refuse it. When the
    source may change under the copy (``stable`` False: a database file a checkpoint may
    still write to, a -wal), a differing chunk is rewritten from the verifier's read, which
    is what gets hashed; on a ``stable`` source a difference is an error.
    """
    stats = stats if stats is not None else CopyStats()
    with suppress(OSError, AttributeError):  # AttributeError: no posix_fadvise (macOS)
        os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # bigger readahead when cold
    writeback = Writeback(dst_fd, sync_range, WRITEBACK_WINDOW)
    if kernel_copy:
        try:
            result = _copy_in_kernel(
                src_fd,
                dst_fd,
                writeback,
                size=size,
                progress=progress,
                check=check,
                stable=stable,
                stats=stats,
            )
        except _KernelCopyRefused:
            pass
        else:
            if on_read is not None:
                on_read()
            os.fsync(dst_fd)  # data left in flight, the size, the block map
            return result
    return _copy_through_buffers(
        src_fd, dst_fd, writeback, size=size, progress=progress, check=check, on_read=on_read
    )


def _copy_through_buffers(
    src_fd: int,
    dst_fd: int,
    writeback: Writeback,
    *,
    size: int | None,
    progress: Progress | None,
    check: Callable[[], None] | None,
    on_read: Callable[[], None] | None,
) -> tuple[int, str]:
    """Each byte read once into a buffer, written from it, hashed, read back and compared."""
    free: SimpleQueue[bytearray | None] = SimpleQueue()
    for _ in range(COPY_BUFFERS):
        free.put(bytearray(COPY_CHUNK))
    verifier = _Verifier(dst_fd, free)
    verifier.start()
    offset = 0
    try:
        while size is None or offset < size:
            buf = free.get()
            if buf is None:  # the verifier failed: its error is raised below
                break
            want = COPY_CHUNK if size is None else min(COPY_CHUNK, size - offset)
            length = _pread_full(src_fd, buf, offset, want)
            if length:
                _pwrite_all(dst_fd, memoryview(buf)[:length], offset)
                verifier.todo.put((buf, offset, length))
                offset += length
                writeback.written(offset)
            if check is not None:
                check()
            if progress is not None:
                progress(offset)
            if length < want:  # end of file
                break
        if on_read is not None and verifier.error is None:
            on_read()
    finally:
        verifier.todo.put(None)
        verifier.join()
    if verifier.error is not None:
        raise verifier.error
    os.fsync(dst_fd)  # data left in flight, the size, the block map
    return offset, verifier.digest.hexdigest()


class _KernelCopyRefused(Exception):
    """copy_file_range is not available for these files: nothing was copied yet."""


class _RangeVerifier(threading.Thread):
    """Reads each copied range from source and destination, compares, hashes the source."""

    def __init__(self, src_fd: int, dst_fd: int, *, stable: bool, stats: CopyStats) -> None:
        super().__init__(name="copier-verify", daemon=True)
        self.src_fd = src_fd
        self.dst_fd = dst_fd
        self.stable = stable
        self.stats = stats
        self.todo: SimpleQueue[tuple[int, int] | None] = SimpleQueue()
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None

    def run(self) -> None:
        read, back = bytearray(COPY_CHUNK), bytearray(COPY_CHUNK)
        try:
            while (item := self.todo.get()) is not None:
                offset, end = item[0], item[0] + item[1]
                while offset < end:
                    length = min(COPY_CHUNK, end - offset)
                    self._verify(offset, length, read, back)
                    offset += length
        except BaseException as exc:  # noqa: BLE001 - handed to the copier, re-raised there
            self.error = exc

    def _verify(self, offset: int, length: int, read: bytearray, back: bytearray) -> None:
        if _pread_full(self.src_fd, read, offset, length) != length:
            raise CopyMismatch(offset)  # the source shrank under the copy
        if not _holds(self.dst_fd, back, offset, length, read):
            if self.stable:
                raise CopyMismatch(offset)
            # A checkpoint wrote this range of the source between the two reads (the copied
            # -wal replays any such page): keep, and hash, what was read last.
            _pwrite_all(self.dst_fd, _view(read, length), offset)
            self.stats.repaired += 1
            if not _holds(self.dst_fd, back, offset, length, read):
                raise CopyMismatch(offset)
        self.digest.update(_view(read, length))


def _holds(fd: int, back: bytearray, offset: int, length: int, expected: bytearray) -> bool:
    """Whether ``fd`` holds ``expected[:length]`` at ``offset``."""
    if _pread_full(fd, back, offset, length) != length:
        return False
    # bytearray == bytearray is a memcmp; memoryviews compare 40x slower (last chunk only).
    return (
        expected == back if length == len(back) else _view(expected, length) == _view(back, length)
    )


def _copy_in_kernel(
    src_fd: int,
    dst_fd: int,
    writeback: Writeback,
    *,
    size: int | None,
    progress: Progress | None,
    check: Callable[[], None] | None,
    stable: bool,
    stats: CopyStats,
) -> tuple[int, str]:
    verifier = _RangeVerifier(src_fd, dst_fd, stable=stable, stats=stats)
    verifier.start()
    offset = 0
    try:
        while (size is None or offset < size) and verifier.error is None:
            want = KERNEL_STEP if size is None else min(KERNEL_STEP, size - offset)
            try:
                copied = os.copy_file_range(src_fd, dst_fd, want, offset, offset)
            except OSError as exc:
                if offset == 0 and exc.errno in _CFR_UNSUPPORTED:
                    raise _KernelCopyRefused from exc
                raise
            if copied == 0:  # end of file
                break
            verifier.todo.put((offset, copied))
            offset += copied
            writeback.written(offset)
            if check is not None:
                check()
            if progress is not None:
                progress(offset)
    finally:
        verifier.todo.put(None)
        verifier.join()
    if verifier.error is not None:
        raise verifier.error
    stats.method = "copy_file_range"
    return offset, verifier.digest.hexdigest()


# ---- the child process -------------------------------------------------------------------


class _SourceCheck(threading.Thread):
    """``quick_check`` of the live database file while the copier copies it.

    Only where the file cannot change until the check is done: WAL mode with every frame of
    the parent's snapshot already in the file (the parent's read transaction keeps later
    frames out of it). ``immutable=1`` reads the file alone, never the ``-wal``, and takes no
    lock. The copy is proved byte-identical to the bytes read (read back and compared, chunk
    by chunk), so this is the check of the backup as well, run beside the copy on the other
    core instead of after it, while the deploy keeps the app waiting.
    """

    def __init__(self, path: str, level: str) -> None:
        super().__init__(name="copier-check", daemon=True)
        self.path = path
        self.level = level
        self.outcome: dict[str, Any] = {"level": level, "problems": ["check did not run"]}

    def run(self) -> None:
        started = time.monotonic()
        try:
            from sidecar import checks  # noqa: PLC0415 - sqlite3 only, only when asked

            with checks.immutable(Path(self.path)) as conn:
                problems = checks.quick_check(conn, full=self.level == "full")
        except Exception as exc:  # noqa: BLE001 - any failure is a failed check, reported
            problems = [f"not a readable SQLite database: {exc}"]
        self.outcome = {
            "level": self.level,
            "problems": problems,
            "seconds": round(time.monotonic() - started, 3),
        }


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


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
    stable: bool,
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
        # Bounded by the size now: a -wal keeps growing under a busy writer, and frames
        # appended after the read transaction began are not needed.
        size = os.fstat(src_fd).st_size
        dst_fd = create_exclusive(Path(dst), mode, group, readable=True)
        stats = CopyStats()
        try:
            copied, sha = copy_verified(
                src_fd,
                dst_fd,
                size=size,
                progress=progress,
                check=check,
                on_read=on_read,
                sync_range=sync_range,
                kernel_copy=kernel_copy and copies_bytes(dst_fd),
                stable=stable,
                stats=stats,
            )
            check()
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


def main() -> int:
    """The child: ``ready``, then one ``go <job>`` line on stdin, then the copy."""
    # Interpreter start-up (~50 ms) happens before the parent takes its read lock.
    _emit({"event": "ready"})
    line = sys.stdin.readline()
    if not line.startswith("go "):
        return 1
    job = json.loads(line[3:])
    sync_range = _load_sync_file_range() if job.get("sync_file_range", True) else None
    results: list[dict[str, Any]] = []
    created: list[str] = []
    released = [False]

    def release() -> None:
        released[0] = True
        _emit({"event": "released"})

    base = 0
    pairs = job["pairs"]
    checker = _SourceCheck(pairs[0][0], str(job["check"])) if job.get("check") else None
    if checker is not None:
        checker.start()
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
                # With a check still reading the file, the lock is released after it.
                on_read=release if index == len(pairs) - 1 and checker is None else None,
                sync_range=sync_range,
                kernel_copy=bool(job.get("kernel_copy", True)),
                stable=bool(rest[0]) if rest else False,
            )
            if result is not None:
                created.append(dst)
                results.append(result)
                base += int(result["bytes"])
    except (OSError, CopyAborted, CopyMismatch) as exc:
        for path in created:
            Path(path).unlink(missing_ok=True)
        code = exc.errno if isinstance(exc, OSError) else None
        _emit(
            {
                "event": "error",
                "kind": "mismatch" if isinstance(exc, CopyMismatch) else "os",
                "errno": code,
                "code": errno.errorcode.get(code or 0, ""),
                "message": str(exc),
            }
        )
        return 1
    if checker is not None:
        checker.join()
    if not released[0]:  # the last source was an absent optional one, or it was checked
        release()
    method = "sync_file_range" if sync_range is not None else "fdatasync"
    done: dict[str, Any] = {
        "event": "done",
        "files": results,
        "writeback": method,
        "peak_rss_kib": _peak_rss(),
    }
    if checker is not None:
        done["check"] = checker.outcome
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


class ProgressReporter(Meter):
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
    source_check: dict[str, Any] | None = None


def take_snapshot(
    db: Path,
    work: Path,
    *,
    mode: int,
    group: int | None,
    busy_timeout: float,
    on_progress: Callable[[int, int], None] | None = None,
    check: str | None = None,
) -> Snapshot:
    """Copy ``db`` (and, when needed, its ``-wal``) to ``work`` under a read transaction.

    The read transaction pins the database: in rollback-journal mode its SHARED lock keeps
    writers from changing the file at all (they wait, so it ends as soon as the child has
    read the last byte); in WAL mode checkpoints cannot overwrite pages it still needs nor
    restart the wal, so the db file then the wal copied in that order replay to a committed
    state at least as new as the transaction's. A PASSIVE checkpoint run *after* the
    transaction began tells whether the -wal is needed at all: when every frame of the wal
    is then backfilled, the db file alone holds the snapshot, and no later frame can be
    backfilled while the transaction lasts (it pins them), so only the db file is copied.

    ``check`` ("quick"): in that case, the file is also checked while it is copied (see
    :class:`_SourceCheck`). WAL writers never wait for a reader, so the longer read
    transaction costs them nothing; in rollback-journal mode they would, and the copy is
    checked afterwards instead.
    """
    import sqlite3  # noqa: PLC0415 - keeps the child's start-up light

    from sidecar import checks, database  # noqa: PLC0415
    from sidecar.errors import UnavailableError  # noqa: PLC0415

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
                overlap = check if journal == "wal" and not need_wal else None
                files, final = child.run(pairs, total, on_progress, release, check=overlap)
            finally:
                release()
    except sqlite3.OperationalError as exc:
        if checks.is_busy(exc):
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
        db_bytes=int(first["bytes"]),
        wal_copied=len(files) > 1,
        writeback=str(final.get("writeback", "")),
        copier_peak_rss_kib=final.get("peak_rss_kib"),
        copy_method=str(first.get("method", "")),
        repaired_chunks=sum(int(f.get("repaired_chunks", 0)) for f in files),
        source_check=final.get("check"),
    )


def _db_file_is_snapshot(db: Path, busy_timeout: float) -> bool:
    """Whether, inside our read transaction, every wal frame is now in the db file.

    Runs a PASSIVE checkpoint on a second connection (SQLite keeps the file open while another
    connection of this process holds locks, so closing it is safe). It backfills at most up
    to our snapshot; (0, n, n) means nothing in the wal is missing from the db file.
    """
    import sqlite3  # noqa: PLC0415

    from sidecar import database  # noqa: PLC0415

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


class _Child:
    """The copier process, started (and waiting) before the read lock is taken."""

    def __init__(self, *, mode: int, group: int | None) -> None:
        self.mode = mode
        self.group = group

    def __enter__(self) -> _Child:
        import subprocess  # noqa: PLC0415 - parent only

        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        # S603: our own interpreter and module, with paths we built; never user text.
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", CHILD_MODULE],
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

    def run(
        self,
        pairs: list[tuple[Path, Path, bool, bool]],
        total: int,
        on_progress: Callable[[int, int], None] | None,
        on_release: Callable[[], None],
        *,
        check: str | None = None,
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
            "check": check,
        }
        proc.stdin.write(b"go " + json.dumps(job).encode() + b"\n")
        proc.stdin.close()
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
            from sidecar.errors import HealthError  # noqa: PLC0415

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
