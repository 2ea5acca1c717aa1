"""File helpers written once: durable folders, exclusive create, streaming, sha256, modes.

Light on purpose: the copier child imports it (no sqlite3, subprocess or dataclasses here).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable

# The copier child imports this module and starts without typing or pathlib (its RSS, issue
# 16): names for the type checker only. Callers pass a Path or a str.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

    from _typeshed import StrPath

CHUNK = 1 << 20  # streaming (compression, restore, re-hashing): small and flat
COPY_CHUNK = 2 << 20  # the live copy and re-hashing: sha256 at full speed, few syscalls
SYNC_EVERY = 64 << 20  # without sync_file_range: fdatasync this often

# Called with the bytes done so far.
BytesDone = Callable[[int], None]


def file_mode(group: int | None) -> int:
    """The mode of a file sidecar writes: group-readable only when a group is given."""
    return 0o640 if group is not None else 0o600


def folder_mode(group: int | None) -> int:
    """The mode of a folder sidecar creates (see :func:`file_mode`)."""
    return 0o750 if group is not None else 0o700


def fsync_dir(path: StrPath) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: StrPath, mode: int, group: int | None, *, readable: bool = False) -> int:
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
    progress: BytesDone | None = None,
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
        if progress is not None:
            progress(written)
    os.fsync(dst_fd)
    return written, digest.hexdigest()


def write_exclusive(path: StrPath, data: bytes, mode: int, group: int | None) -> None:
    """Create ``path`` (never clobber) holding ``data``, fsynced."""
    fd = create_exclusive(path, mode, group)
    try:
        pump([data], fd)
    finally:
        os.close(fd)


def read_chunks(handle: IO[bytes] | int) -> Iterable[bytes]:
    """Stream a file (object or descriptor) in 1 MiB chunks."""
    while True:
        chunk = os.read(handle, CHUNK) if isinstance(handle, int) else handle.read(CHUNK)
        if not chunk:
            return
        yield chunk


def sha256_file(path: StrPath) -> tuple[int, str]:
    """(size, sha256) of a file we own. Never on a live database: closing our descriptor
    would drop this process's SQLite locks on it (see docs/design.md, 'The copier child')."""
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
