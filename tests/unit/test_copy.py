"""The verified copy: every byte read once, hashed, written, read back and compared."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar import fs
from sidecar.backup import copy
from tests.unit.conftest import has_direct_io

CHUNK = fs.COPY_CHUNK


@pytest.fixture
def open_pair(tmp_path: Path) -> Iterator[Callable[[bytes], tuple[int, int, Path]]]:
    """``open_pair(data)`` -> (source fd, destination fd opened read-write, destination)."""
    fds: list[int] = []

    def make(data: bytes) -> tuple[int, int, Path]:
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.write_bytes(data)
        fds.append(os.open(src, os.O_RDONLY))
        fds.append(fs.create_exclusive(dst, 0o600, None, readable=True))
        return fds[-2], fds[-1], dst

    yield make
    for fd in fds:
        os.close(fd)


class FakeSyncRange:
    """Records sync_file_range calls; ``fail`` makes every call raise that errno."""

    def __init__(self, fail: int | None = None) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.fail = fail

    def __call__(self, fd: int, offset: int, length: int, flags: int) -> None:
        self.calls.append((offset, length, flags))
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))


SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345, 9 * CHUNK]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sync", ["real", "none"])
@pytest.mark.parametrize("kernel", [True, False])
def test_copy_is_exact_and_hashes_the_bytes_read(
    open_pair: Callable[[bytes], tuple[int, int, Path]], size: int, sync: str, kernel: bool
) -> None:
    data = os.urandom(size)
    src, dst, path = open_pair(data)
    sync_range = copy.load_sync_file_range() if sync == "real" else None
    stats = copy.CopyStats()
    copied, sha = copy.copy_verified(
        src, dst, sync_range=sync_range, kernel_copy=kernel, stats=stats
    )
    assert copied == size
    assert sha == hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data
    if not kernel:
        assert stats.method == "read-write"
    assert stats.repaired == 0


@pytest.fixture
def direct_io(tmp_path: Path) -> None:
    if not has_direct_io(tmp_path):
        pytest.skip("this file system has no direct I/O")


@pytest.mark.usefixtures("direct_io")
@pytest.mark.parametrize(
    "size", [*SIZES, copy.DIRECT_ALIGN - 1, copy.DIRECT_ALIGN, copy.DIRECT_ALIGN + 1]
)
def test_the_direct_copy_is_exact_and_hashes_the_bytes_read(
    open_pair: Callable[[bytes], tuple[int, int, Path]], size: int
) -> None:
    data = os.urandom(size)
    src, dst, path = open_pair(data)
    stats = copy.CopyStats()
    read: list[bool] = []
    copied, sha = copy.copy_verified(
        src, dst, direct=True, kernel_copy=True, stats=stats, on_read=lambda: read.append(True)
    )
    assert (copied, sha) == (size, hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data
    assert read == [True]
    # A file shorter than one aligned block has nothing to write directly.
    assert stats.method == ("direct" if size >= copy.DIRECT_ALIGN else "copy_file_range")
    assert os.stat(path).st_size == size


@pytest.mark.usefixtures("direct_io")
@pytest.mark.parametrize("at", [7, copy.DIRECT_READBACK + 1, CHUNK - 5])
def test_a_direct_write_the_disk_got_wrong_is_caught_by_the_read_back(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    """The bytes that reached the disk differ from the buffer (flipped for the write, then
    flipped back): the read-back from the disk, not the buffer, decides, in whichever piece
    of the chunk it reads back (``at``: the chunk's first, second or last)."""
    src, dst, _ = open_pair(os.urandom(5 * CHUNK + 3))
    real = os.pwrite
    flipped: list[int] = []

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        if offset == 2 * CHUNK:
            data[at] ^= 0x10
            try:
                return real(fd, data, offset)
            finally:
                data[at] ^= 0x10
                flipped.append(offset)
        return real(fd, data, offset)

    real_preadv = os.preadv
    back_reads: list[bool] = []

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        if fd == dst:  # the read-back: from the disk, past the page cache
            back_reads.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT))
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "preadv", preadv)
    with pytest.raises(copy.CopyMismatch) as caught:
        copy.copy_verified(src, dst, direct=True)
    assert flipped == [2 * CHUNK]
    assert caught.value.offset == 2 * CHUNK + at - at % copy.DIRECT_READBACK
    assert back_reads
    assert all(back_reads)


@pytest.mark.usefixtures("direct_io")
def test_a_source_shorter_than_its_size_fails_the_direct_copy(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
) -> None:
    src, dst, _ = open_pair(os.urandom(3 * CHUNK))
    with pytest.raises(copy.CopyMismatch):
        copy.copy_verified(src, dst, size=4 * CHUNK, direct=True)


@pytest.mark.usefixtures("direct_io")
def test_direct_io_refused_at_the_first_write_falls_back_to_the_kernel_copy(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that takes the flag but refuses the I/O (EINVAL): nothing of the
    attempt is left, and the copy is made the other way."""
    data = os.urandom(4 * CHUNK + 5)
    src, dst, path = open_pair(data)
    real = os.pwrite

    def pwrite(fd: int, buf: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, buf, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    stats = copy.CopyStats()
    copied, sha = copy.copy_verified(src, dst, direct=True, kernel_copy=True, stats=stats)
    assert (copied, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert stats.method == "copy_file_range"
    assert path.read_bytes() == data
    assert not fcntl.fcntl(dst, fcntl.F_GETFL) & os.O_DIRECT


def _pwrite_fails_from(monkeypatch: pytest.MonkeyPatch, start: int, code: int) -> None:
    """os.pwrite fails with ``code`` at every offset from ``start`` on."""
    real = os.pwrite

    def pwrite(fd: int, buf: memoryview, offset: int) -> int:
        if offset >= start:
            raise OSError(code, os.strerror(code))
        return real(fd, buf, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)


@pytest.mark.usefixtures("direct_io")
def test_einval_after_chunks_were_verified_is_an_error_not_a_fallback(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst, _ = open_pair(os.urandom(12 * CHUNK))
    _pwrite_fails_from(monkeypatch, 8 * CHUNK, errno.EINVAL)
    stats = copy.CopyStats()
    with pytest.raises(OSError, match="Invalid argument"):
        copy.copy_verified(src, dst, direct=True, kernel_copy=True, stats=stats)
    assert stats.method == "read-write"  # unset: no other way was tried


@pytest.mark.usefixtures("direct_io")
def test_a_source_written_during_the_direct_copy_fails_it(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that ignores SQLite's locks: each byte was read once, so a change anywhere
    in the source during the copy fails it rather than risk a torn copy."""
    src, dst, path = open_pair(os.urandom(6 * CHUNK))
    writer = os.open(path.with_name("src"), os.O_WRONLY)
    real = os.pwrite

    def pwrite(fd: int, buf: memoryview, offset: int) -> int:
        if offset == 3 * CHUNK:
            time.sleep(0.01)  # the file's mtime has a clock tick's resolution
            real(writer, b"x", 10)  # a write to the source, behind the copy
        return real(fd, buf, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    try:
        with pytest.raises(copy.CopyMismatch):
            copy.copy_verified(src, dst, direct=True)
    finally:
        os.close(writer)


@pytest.mark.usefixtures("direct_io")
def test_workers_that_stop_without_a_word_fail_the_copy_instead_of_hanging(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst, _ = open_pair(os.urandom(3 * CHUNK))
    monkeypatch.setattr(copy._DirectWorkers, "_work", lambda self, back: None)
    with pytest.raises(RuntimeError, match="stopped early"):
        copy.copy_verified(src, dst, direct=True)


@pytest.mark.usefixtures("direct_io")
def test_a_direct_write_error_midway_is_raised_not_retried(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst, _ = open_pair(os.urandom(8 * CHUNK))
    _pwrite_fails_from(monkeypatch, 4 * CHUNK, errno.ENOSPC)
    with pytest.raises(OSError, match="No space"):
        copy.copy_verified(src, dst, direct=True, kernel_copy=True)


def test_the_kernel_copies_on_ext4_and_tmpfs(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
) -> None:
    """copy_file_range is only used where it cannot share blocks with the database."""
    src, dst, _ = open_pair(b"x")
    if sys.platform.startswith("linux") and _fs_type(dst) in {"ext2", "ext3", "ext4", "tmpfs"}:
        assert copy.copies_bytes(dst)
        stats = copy.CopyStats()
        copy.copy_verified(src, dst, kernel_copy=True, stats=stats)
        assert stats.method == "copy_file_range"
    else:
        assert not copy.copies_bytes(dst)


def _fs_type(fd: int) -> str:
    """The mount's file system type, from /proc/self/mountinfo (longest matching mount)."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    best, kind = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ")
        mount = left.split()[4]
        if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, kind = mount, right.split()[0]
    return kind


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL])
def test_without_copy_file_range_it_reads_and_writes(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    def refuse(*args: int) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    data = os.urandom(3 * CHUNK + 5)
    src, dst, path = open_pair(data)
    stats = copy.CopyStats()
    copied, sha = copy.copy_verified(src, dst, kernel_copy=True, stats=stats)
    assert (copied, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data
    assert stats.method == "read-write"


def test_a_copy_file_range_error_midway_is_raised(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.copy_file_range

    def failing(src: int, dst: int, count: int, off_src: int, off_dst: int) -> int:
        if off_src > 0:
            raise OSError(errno.EIO, "disk says no")
        return real(src, dst, count, off_src, off_dst)

    monkeypatch.setattr(os, "copy_file_range", failing)
    src, dst, _ = open_pair(os.urandom(3 * copy.KERNEL_STEP))
    with pytest.raises(OSError, match="disk says no"):
        copy.copy_verified(src, dst, kernel_copy=True)


def _kernel_copy_then(
    monkeypatch: pytest.MonkeyPatch, after: Callable[[int, int, int], None]
) -> None:
    """os.copy_file_range, then ``after(src, dst, offset)`` before the verifier reads."""
    real = os.copy_file_range

    def copy(src: int, dst: int, count: int, off_src: int, off_dst: int) -> int:
        copied = real(src, dst, count, off_src, off_dst)
        after(src, dst, off_dst)
        return copied

    monkeypatch.setattr(os, "copy_file_range", copy)


@pytest.mark.parametrize("stable", [True, False])
def test_kernel_copy_a_flipped_byte_is_caught(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
    monkeypatch: pytest.MonkeyPatch,
    stable: bool,
) -> None:
    """The destination differs from a source that did not change: always an error (on a
    source that may change, once rewriting the chunk from the source did not help)."""
    data = os.urandom(2 * copy.KERNEL_STEP)
    src, dst, _ = open_pair(data)
    at = copy.KERNEL_STEP + 777

    def flip(src_fd: int, dst_fd: int, offset: int) -> None:
        if offset <= at < offset + copy.KERNEL_STEP:
            os.pwrite(dst_fd, bytes([data[at] ^ 0x04]), at)

    _kernel_copy_then(monkeypatch, flip)
    if not stable:  # a write path that damages the rewrite as well
        real_pwrite = os.pwrite

        def pwrite(fd: int, buf: Any, offset: int) -> int:
            n = real_pwrite(fd, buf, offset)
            if fd == dst and offset <= at < offset + n:
                real_pwrite(fd, bytes([data[at] ^ 0x04]), at)
            return n

        monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(copy.CopyMismatch) as caught:
        copy.copy_verified(src, dst, kernel_copy=True, stable=stable)
    assert caught.value.offset == at - at % CHUNK


def test_kernel_copy_a_source_changed_by_a_checkpoint_is_recopied(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """WAL mode, -wal needed: a checkpoint may write the db file mid-copy. The chunk that
    changed is rewritten from the verifier's read, and the hash is of what the file holds."""
    data = bytearray(os.urandom(2 * copy.KERNEL_STEP))
    src, dst, path = open_pair(bytes(data))

    def checkpoint(src_fd: int, dst_fd: int, offset: int) -> None:
        if offset == 0:  # after the first step was copied, before it was verified
            new = os.urandom(4096)
            data[4096:8192] = new
            with open(os.readlink(f"/proc/self/fd/{src_fd}"), "r+b") as handle:
                handle.seek(4096)
                handle.write(new)

    _kernel_copy_then(monkeypatch, checkpoint)
    stats = copy.CopyStats()
    with pytest.raises(copy.CopyMismatch):  # not allowed on a frozen source
        copy.copy_verified(src, dst, kernel_copy=True, stable=True)
    os.ftruncate(dst, 0)
    _, sha = copy.copy_verified(src, dst, kernel_copy=True, stable=False, stats=stats)
    assert stats.repaired == 1
    assert path.read_bytes() == bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()


def test_size_bounds_the_copy(open_pair: Callable[[bytes], tuple[int, int, Path]]) -> None:
    """A -wal grows while it is copied: only what was there when the copy began is taken."""
    data = os.urandom(2 * CHUNK + 10)
    src, dst, path = open_pair(data)
    copied, sha = copy.copy_verified(src, dst, size=CHUNK + 5)
    assert copied == CHUNK + 5
    assert path.read_bytes() == data[: CHUNK + 5]
    assert sha == hashlib.sha256(data[: CHUNK + 5]).hexdigest()


def test_a_source_shorter_than_size_stops_at_its_end(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
) -> None:
    data = os.urandom(CHUNK + 7)
    src, dst, path = open_pair(data)
    copied, _ = copy.copy_verified(src, dst, size=10 * CHUNK)
    assert copied == len(data)
    assert path.read_bytes() == data


def test_writeback_is_queued_per_chunk_and_waited_for_beyond_the_window(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copy, "WRITEBACK_WINDOW", 2 * CHUNK)
    data = os.urandom(8 * CHUNK)
    src, dst, path = open_pair(data)
    fake = FakeSyncRange()
    copy.copy_verified(src, dst, sync_range=fake)
    assert path.read_bytes() == data
    wait = copy._SFR_WAIT_BEFORE | copy._SFR_WRITE | copy._SFR_WAIT_AFTER
    queued = [(o, n) for o, n, f in fake.calls if f == copy._SFR_WRITE]
    assert queued == [(i * CHUNK, CHUNK) for i in range(8)]
    # Each time the file got more than the window ahead of what is on disk, the writer
    # waited up to (end - window): never more than the window in flight.
    waited = [(o, n) for o, n, f in fake.calls if f == wait]
    assert waited == [(i * CHUNK, CHUNK) for i in range(6)]


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP])
def test_without_sync_file_range_it_falls_back_to_fdatasync(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    monkeypatch.setattr(copy, "SYNC_EVERY", CHUNK)
    synced: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    data = os.urandom(4 * CHUNK)
    src, dst, path = open_pair(data)
    fake = FakeSyncRange(fail=code)
    copied, sha = copy.copy_verified(src, dst, sync_range=fake)
    assert (copied, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data
    assert len(fake.calls) == 1  # tried once, then never again
    assert synced == [dst] * 4


def test_a_real_writeback_error_is_not_swallowed(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
) -> None:
    src, dst, _ = open_pair(os.urandom(2 * CHUNK))
    with pytest.raises(OSError, match="Input/output") as caught:
        copy.copy_verified(src, dst, sync_range=FakeSyncRange(fail=errno.EIO))
    assert caught.value.errno == errno.EIO


@pytest.mark.parametrize("at", [0, CHUNK + 3, 5 * CHUNK - 1])
def test_a_byte_flipped_between_write_and_read_back_is_caught(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
    monkeypatch: pytest.MonkeyPatch,
    at: int,
) -> None:
    """What the file holds is compared with what was read, not with what was meant."""
    data = os.urandom(5 * CHUNK)
    src, dst, _ = open_pair(data)
    real = os.pwrite

    def flipping(fd: int, buf: Any, offset: int) -> int:  # Any: any buffer
        n = real(fd, buf, offset)
        if offset <= at < offset + n:
            real(fd, bytes([data[at] ^ 0x10]), at)  # after the write, before the read-back
        return n

    monkeypatch.setattr(os, "pwrite", flipping)
    with pytest.raises(copy.CopyMismatch) as caught:
        copy.copy_verified(src, dst)
    assert caught.value.offset == at - at % CHUNK


def test_a_short_read_back_is_caught(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * CHUNK)
    src, dst, _ = open_pair(data)
    truncated = [False]
    real_pread = os.preadv

    def preadv(fd: int, buffers: Any, offset: int) -> int:
        if fd == dst and offset >= 2 * CHUNK and not truncated[0]:
            truncated[0] = True
            os.ftruncate(dst, 2 * CHUNK)  # the file lost its tail before the read-back
        return real_pread(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    with pytest.raises(copy.CopyMismatch):
        copy.copy_verified(src, dst)


def test_a_read_error_stops_the_verifier_and_is_raised(
    open_pair: Callable[[bytes], tuple[int, int, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst, _ = open_pair(os.urandom(4 * CHUNK))
    real = os.preadv

    def failing(fd: int, buffers: Any, offset: int) -> int:
        if fd == src and offset >= 2 * CHUNK:
            raise OSError(errno.EIO, "disk says no")
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", failing)
    with pytest.raises(OSError, match="disk says no"):
        copy.copy_verified(src, dst)


def test_on_read_runs_once_after_the_last_byte_is_read(
    open_pair: Callable[[bytes], tuple[int, int, Path]],
) -> None:
    data = os.urandom(3 * CHUNK + 1)
    src, dst, _ = open_pair(data)
    seen: list[int] = []
    progress: list[int] = []
    copy.copy_verified(src, dst, progress=progress.append, on_read=lambda: seen.append(1))
    assert seen == [1]
    assert progress[-1] == len(data)


def _child(job: dict[str, Any] | None, line: str | None = None) -> list[dict[str, Any]]:
    root = Path(__file__).resolve().parents[2]
    text = line if line is not None else "go " + json.dumps(job) + "\n"
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.backup.child"],
        input=text,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=False,
    )
    return [json.loads(x) for x in done.stdout.splitlines()]


def test_the_child_copies_pairs_and_skips_absent_optional_ones(tmp_path: Path) -> None:
    data = os.urandom(CHUNK + 99)
    (tmp_path / "a").write_bytes(data)
    job = {
        "pairs": [
            [str(tmp_path / "a"), str(tmp_path / "a.copy"), False],
            [str(tmp_path / "absent"), str(tmp_path / "b.copy"), True],
        ],
        "mode": 0o600,
        "total": len(data),
    }
    events = _child(job)
    kinds = [e["event"] for e in events if e["event"] != "progress"]
    assert kinds == ["ready", "released", "done"]
    done = events[-1]
    assert len(done["files"]) == 1
    assert done["files"][0] | {"method": "?"} == {
        "src": str(tmp_path / "a"),
        "dst": str(tmp_path / "a.copy"),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "method": "?",
        "repaired_chunks": 0,
    }
    assert done["files"][0]["method"] in ("copy_file_range", "read-write")  # not asked: cached
    assert done["peak_rss_kib"] is None or done["peak_rss_kib"] < 64 << 10
    assert (tmp_path / "a.copy").read_bytes() == data
    assert (tmp_path / "a.copy").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "b.copy").exists()


def test_the_child_removes_what_it_wrote_when_a_source_is_missing(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1000)
    job = {
        "pairs": [
            [str(tmp_path / "a"), str(tmp_path / "a.copy"), False],
            [str(tmp_path / "gone"), str(tmp_path / "g.copy"), False],
        ],
        "mode": 0o600,
    }
    events = _child(job)
    assert events[-1]["event"] == "error"
    assert events[-1]["code"] == "ENOENT"
    assert not (tmp_path / "a.copy").exists()


def test_the_child_does_nothing_without_go(tmp_path: Path) -> None:
    # A checkout has no code cache (the image's: tests/integration/test_smoke.py).
    assert _child(None, line="") == [{"event": "ready", "code_cache": False}]
