"""The verified copy: every byte written is read back and compared, and hashed as read.

Imported by the copier child only (see :mod:`sidecar.backup.child`): keep it light. How it
works, and what the read-back proves: see docs/design.md, 'The verified copy'.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from queue import Empty, SimpleQueue

from sidecar.fs import COPY_CHUNK, SYNC_EVERY, BytesDone

# Buffers in flight between reader and verifier: with the read-back buffer, ~10 MiB of RSS.
COPY_BUFFERS = 4
# With sync_file_range: the most data of ours still on its way to disk. The app's fsyncs may
# wait behind it (ext4 data=ordered), so it bounds their stall; too small starves the disk.
WRITEBACK_WINDOW = 32 << 20
KERNEL_STEP = 8 << 20  # bytes per copy_file_range call; the verifier reads them 2 MiB at a time
# copy_file_range refused for this pair of files (old kernel, other file systems, ...).
_CFR_UNSUPPORTED = (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)
# statfs f_type of file systems where copy_file_range always copies the bytes: on others
# (XFS, btrfs, NFS, ...) it may share blocks with the live database (reflink), and a backup
# must not: a later corrupt block would be corrupt in both, and every page the app then
# writes would be copied-on-write, fragmenting its database.
_COPYING_FILE_SYSTEMS = frozenset({0xEF53, 0x01021994})  # ext2/3/4, tmpfs
# Direct I/O (O_DIRECT): offsets, lengths and buffer addresses are multiples of this, which
# every logical block size in use (512, 4096) divides; anonymous maps are page-aligned.
DIRECT_ALIGN = 4096
DIRECT_BUFFERS = 4  # chunks in flight between the workers and the hasher: 8 MiB
DIRECT_WORKERS = 2  # each reads, writes and reads back one chunk: two keep the disk busy
# Each worker reads its chunk back this much at a time, into a buffer of its own: a quarter
# of a chunk keeps the read-back's RSS small at no measurable cost in time (issue 16).
DIRECT_READBACK = 512 << 10
_O_DIRECT = getattr(os, "O_DIRECT", 0)
# <linux/fs.h>
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4
# sync_file_range is not there (or not for this file system): fall back to fdatasync.
_SFR_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP)

SyncRange = Callable[[int, int, int, int], None]


class CopyMismatch(Exception):
    """The backup file, read back, differs from the bytes read from the source."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"the backup file differs from the bytes read, near byte {offset}")
        self.offset = offset


def load_sync_file_range() -> SyncRange | None:
    """Linux's sync_file_range(2) through ctypes (the os module lacks it); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
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
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit
        if libc.fstatfs(fd, buf) != 0:
            return False
    except (OSError, AttributeError):
        return False
    # f_type is the first member, a C long (__fsword_t) on every Linux ABI.
    f_type = ctypes.c_long.from_buffer(buf).value
    return f_type in _COPYING_FILE_SYSTEMS


def direct_mode(fd: int, on: bool = True) -> bool:
    """Turn direct I/O (``O_DIRECT``: no page cache) on or off for ``fd``; False when the
    system or the file system has none (tmpfs before Linux 6.6, FUSE, ...)."""
    if not _O_DIRECT:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    return True


class Writeback:
    """Gets written data to disk early, so dirty pages never pile up: ``sync_file_range``
    with at most ``window`` bytes in flight, else ``fdatasync`` every 64 MiB.
    See docs/design.md, 'Writeback'."""

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


def _view(buf: bytearray | mmap.mmap, length: int) -> memoryview:
    return memoryview(buf)[:length]


def _pread_full(fd: int, buf: bytearray | mmap.mmap, offset: int, length: int) -> int:
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
        self.digest.update(_view(buf, length))
        if not _holds(self.dst_fd, back, offset, length, buf):
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
    progress: BytesDone | None = None,
    raise_if_aborted: Callable[[], None] | None = None,
    on_read: Callable[[], None] | None = None,
    sync_range: SyncRange | None = None,
    kernel_copy: bool = False,
    direct: bool = False,
    stable: bool = True,
    stats: CopyStats | None = None,
) -> tuple[int, str]:
    """Copy ``src_fd`` into ``dst_fd`` (opened read-write); (bytes, sha256 of the bytes read).

    ``size`` bounds the copy (None: to end of file); ``on_read`` runs once the source will
    not be read again; ``direct``: written and read back with direct I/O where the file
    system has it (:func:`direct_mode`), else ``kernel_copy``: by ``copy_file_range``;
    ``stable`` False: a chunk the source changed under the copy is rewritten. Raises
    :class:`CopyMismatch`. See docs/design.md, 'The verified copy'.
    """
    stats = stats if stats is not None else CopyStats()
    with suppress(OSError, AttributeError):  # AttributeError: no posix_fadvise (macOS)
        os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # bigger readahead when cold
    if direct and stable:  # a chunk is read once: a source that may change is not for it
        try:
            result = _copy_direct(
                src_fd, dst_fd, size=size, progress=progress, raise_if_aborted=raise_if_aborted
            )
        except _DirectRefused:
            pass
        else:
            stats.method = "direct"
            if on_read is not None:
                on_read()
            os.fsync(dst_fd)  # the tail, the size, the block map, the disk's cache
            return result
    writeback = Writeback(dst_fd, sync_range, WRITEBACK_WINDOW)
    if kernel_copy:
        try:
            result = _copy_in_kernel(
                src_fd,
                dst_fd,
                writeback,
                size=size,
                progress=progress,
                raise_if_aborted=raise_if_aborted,
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
        src_fd,
        dst_fd,
        writeback,
        size=size,
        progress=progress,
        raise_if_aborted=raise_if_aborted,
        on_read=on_read,
    )


def _copy_through_buffers(
    src_fd: int,
    dst_fd: int,
    writeback: Writeback,
    *,
    size: int | None,
    progress: BytesDone | None,
    raise_if_aborted: Callable[[], None] | None,
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
            if raise_if_aborted is not None:
                raise_if_aborted()
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
    # bytearray == bytearray is a memcmp; comparing memoryviews is 40x slower, but only the
    # last, short chunk needs it, and slicing would copy (RSS).
    return (
        expected == back if length == len(back) else _view(expected, length) == _view(back, length)
    )


def _copy_in_kernel(
    src_fd: int,
    dst_fd: int,
    writeback: Writeback,
    *,
    size: int | None,
    progress: BytesDone | None,
    raise_if_aborted: Callable[[], None] | None,
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
            if raise_if_aborted is not None:
                raise_if_aborted()
            if progress is not None:
                progress(offset)
    finally:
        verifier.todo.put(None)
        verifier.join()
    if verifier.error is not None:
        raise verifier.error
    stats.method = "copy_file_range"
    return offset, verifier.digest.hexdigest()


class _DirectRefused(Exception):
    """Direct I/O is not available for this copy: nothing of it is left in the file."""


def _copy_direct(
    src_fd: int,
    dst_fd: int,
    *,
    size: int | None,
    progress: BytesDone | None,
    raise_if_aborted: Callable[[], None] | None,
) -> tuple[int, str]:
    """Each byte read once from the source into an aligned buffer, written from it with
    direct I/O, read back from the disk (not from the page cache) and compared, then hashed
    in order; the tail after the last aligned block goes through the page cache.
    Raises _DirectRefused where direct I/O cannot be used. See docs/design.md, 'Direct I/O'."""
    before = os.fstat(src_fd)
    end = before.st_size if size is None else size
    aligned = end - end % DIRECT_ALIGN
    if aligned == 0 or not direct_mode(dst_fd):
        raise _DirectRefused
    digest = hashlib.sha256()
    workers = _DirectWorkers(src_fd, dst_fd, aligned)
    try:
        try:
            done = workers.hash_in_order(digest, progress, raise_if_aborted)
        finally:
            workers.stop()
    except OSError as exc:
        if exc.errno != errno.EINVAL or workers.verified:
            raise
        # The file system took the flag but refuses these I/Os: start again without it.
        direct_mode(dst_fd, on=False)
        os.ftruncate(dst_fd, 0)
        raise _DirectRefused from exc
    direct_mode(dst_fd, on=False)
    if end > done:  # the unaligned tail (a -wal's, or a short file's): a few KiB
        tail = bytearray(end - done)
        if _pread_full(src_fd, tail, done, len(tail)) != len(tail):
            raise CopyMismatch(done)  # the source shrank under the copy
        _pwrite_all(dst_fd, memoryview(tail), done)
        if not _holds(dst_fd, bytearray(len(tail)), done, len(tail), tail):
            raise CopyMismatch(done)
        digest.update(tail)
    after = os.fstat(src_fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        # Each byte was read once: a stable source that was written meanwhile (a writer
        # that ignores SQLite's locks) may have been copied torn.
        raise CopyMismatch(0)
    if progress is not None:
        progress(end)
    return end, digest.hexdigest()


_libc_memcmp: Callable[[int, int, int], int] | None = None


def _same_bytes(a: mmap.mmap, b: mmap.mmap, length: int, at: int = 0) -> bool:
    """memcmp of ``a[at:at + length]`` and ``b[:length]`` (ctypes drops the GIL for the call;
    no copy of either)."""
    global _libc_memcmp  # noqa: PLW0603 - looked up once
    if _libc_memcmp is None:
        func = ctypes.CDLL(None).memcmp
        func.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        func.restype = ctypes.c_int
        _libc_memcmp = func
    first = ctypes.addressof(ctypes.c_char.from_buffer(a)) + at
    second = ctypes.addressof(ctypes.c_char.from_buffer(b))
    return _libc_memcmp(first, second, length) == 0


class _DirectWorkers:
    """``DIRECT_WORKERS`` threads, each taking the next chunk: read from the source, written
    with direct I/O, read back into a buffer of its own and compared. The caller hashes the
    verified chunks in order (:meth:`hash_in_order`) and hands their buffers back."""

    def __init__(self, src_fd: int, dst_fd: int, end: int) -> None:
        self.src_fd, self.dst_fd, self.end = src_fd, dst_fd, end
        self.free: SimpleQueue[mmap.mmap | None] = SimpleQueue()
        self.done: SimpleQueue[tuple[int, mmap.mmap, int] | BaseException] = SimpleQueue()
        self.claim = threading.Lock()
        self.next = 0
        self.stopping = False
        self.verified = 0  # bytes hashed: once any, a later error is not a refusal
        # Every buffer exists before any thread starts (an mmap that fails fails here).
        for _ in range(DIRECT_BUFFERS):
            self.free.put(mmap.mmap(-1, COPY_CHUNK))
        backs = [mmap.mmap(-1, DIRECT_READBACK) for _ in range(DIRECT_WORKERS)]
        self.threads = [
            threading.Thread(target=self._work, args=(back,), name="copier-direct", daemon=True)
            for back in backs
        ]
        try:
            for thread in self.threads:
                thread.start()
        except BaseException:
            self.stop()
            raise

    def _work(self, back: mmap.mmap) -> None:
        try:
            while (buf := self.free.get()) is not None and self._copy_next(buf, back):
                pass
        except BaseException as exc:  # noqa: BLE001 - handed to the hasher, raised there
            self.done.put(exc)

    def _copy_next(self, buf: mmap.mmap, back: mmap.mmap) -> bool:
        """Copy and verify the next chunk in ``buf``; False once there is none left."""
        with self.claim:
            offset = self.next
            self.next += COPY_CHUNK
        if offset >= self.end or self.stopping:
            self.free.put(buf)
            return False
        length = min(COPY_CHUNK, self.end - offset)
        if _pread_full(self.src_fd, buf, offset, length) != length:
            raise CopyMismatch(offset)  # the source shrank under the copy
        _pwrite_all(self.dst_fd, _view(buf, length), offset)
        for at in range(0, length, DIRECT_READBACK):
            piece = min(DIRECT_READBACK, length - at)
            if _pread_full(self.dst_fd, back, offset + at, piece) != piece:
                raise CopyMismatch(offset + at)
            if not _same_bytes(buf, back, piece, at):
                raise CopyMismatch(offset + at)
        self.done.put((offset, buf, length))
        return True

    def hash_in_order(
        self,
        digest: hashlib._Hash,
        progress: BytesDone | None,
        raise_if_aborted: Callable[[], None] | None,
    ) -> int:
        """Hash every verified chunk in file order; the bytes done (``end``)."""
        waiting: dict[int, tuple[mmap.mmap, int]] = {}
        while self.verified < self.end:
            item = self._next_done()
            if isinstance(item, BaseException):
                raise item
            waiting[item[0]] = item[1:]
            while self.verified in waiting:
                buf, length = waiting.pop(self.verified)
                digest.update(_view(buf, length))
                self.free.put(buf)
                self.verified += length
            if raise_if_aborted is not None:
                raise_if_aborted()
            if progress is not None:
                progress(self.verified)
        return self.verified

    def _next_done(self) -> tuple[int, mmap.mmap, int] | BaseException:
        """The next chunk a worker finished, or its error; never a wait on dead workers."""
        while True:
            try:
                return self.done.get(timeout=1.0)
            except Empty:
                if not any(thread.is_alive() for thread in self.threads):
                    break
        try:  # whatever the last of them put just before it ended
            return self.done.get_nowait()
        except Empty:
            return RuntimeError("the copier's direct I/O workers stopped early")

    def stop(self) -> None:
        self.stopping = True
        for _ in self.threads:
            self.free.put(None)
        for thread in self.threads:
            if thread.ident is not None:  # started
                thread.join()
