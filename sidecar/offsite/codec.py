"""The bytes of an offsite object, streamed both ways: zstd, then age.

Memory stays flat whatever the size: every stage passes chunks of about 1 MiB, and age runs
in a worker thread between two bounded queues (pyrage's streaming ``encrypt_io`` and
``decrypt_io`` read from and write to file-like objects).
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

from sidecar.errors import ConfigError
from sidecar.fs import CHUNK, read_chunks

_DONE = object()
_QUEUE_DEPTH = 2  # chunks of ~1 MiB between the age thread and its consumer


def parse_recipients(text: str) -> list[str]:
    """age recipients (``age1...`` or ``ssh-ed25519 ...``) from text: one per line, or
    separated by commas; ``#`` comments and blank lines skipped. Raises ValueError."""
    found: list[str] = []
    for line in text.replace(",", "\n").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        _recipient(entry)  # raises ValueError on a bad key
        found.append(entry)
    if not found:
        raise ValueError("no age recipient found")
    return found


def _recipient(entry: str) -> Any:
    import pyrage  # noqa: PLC0415 - only offsite copies pay for the import

    try:
        if entry.startswith("ssh-"):
            return pyrage.ssh.Recipient.from_str(entry)
        return pyrage.x25519.Recipient.from_str(entry)
    except pyrage.RecipientError as exc:
        raise ValueError(f"not an age recipient: {entry[:24]}...: {exc}") from None


def load_identities(path: Path) -> list[Any]:
    """The age identities in ``path`` (an ``age-keygen`` file). Raises ConfigError."""
    import pyrage  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"SIDECAR_AGE_IDENTITY_FILE: cannot read {path}: {exc.strerror}",
            hint="mount the age identity file (age-keygen's output) and check its permissions",
        ) from None
    identities = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(entry))
        except pyrage.IdentityError:
            raise ConfigError(
                f"SIDECAR_AGE_IDENTITY_FILE: {path} holds a line that is not an age identity",
                hint="use the file age-keygen wrote (AGE-SECRET-KEY-1... lines)",
            ) from None
    if not identities:
        raise ConfigError(
            f"SIDECAR_AGE_IDENTITY_FILE: no identity in {path}",
            hint="use the file age-keygen wrote (AGE-SECRET-KEY-1... lines)",
        )
    return identities


class CodecError(Exception):
    """The bytes do not decrypt (wrong key, damaged) or do not decompress."""


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks. An error of the iterator (the store
    went away) is kept in ``failure``: pyrage reports it as its own OSError."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self.failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # A view, not a slice of bytes: age reads 8 KiB at a time from 1 MiB chunks, and
        # slicing would copy the rest of the chunk on every read.
        while not self._pending:
            try:
                chunk = next(self._chunks, b"")
            except BaseException as exc:
                self.failure = exc
                raise
            if not chunk:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _QueueWriter(io.RawIOBase):
    """A write-only file that hands ~1 MiB chunks to a bounded queue."""

    def __init__(self, out: queue.Queue[object], cancelled: threading.Event) -> None:
        self._out = out
        self._cancelled = cancelled
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self.flush_chunk()
        return len(data)

    def flush_chunk(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()

    def _put(self, item: object) -> None:
        while True:
            if self._cancelled.is_set():
                raise _Cancelled
            try:
                self._out.put(item, timeout=0.1)
            except queue.Full:
                continue
            return


class _Cancelled(Exception):
    """The consumer went away: the worker stops."""


def _through(work: Callable[[Any, Any], None], chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Run ``work(reader, writer)`` in a thread, reading ``chunks``; yield what it writes."""
    out: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
    cancelled = threading.Event()
    writer = _QueueWriter(out, cancelled)
    reader = _ChunkReader(chunks)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work(reader, writer)
            writer.flush_chunk()
        except _Cancelled:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            failure.append(reader.failure or CodecError(f"{type(exc).__name__}: {exc}"))
        try:
            writer._put(_DONE)
        except _Cancelled:
            return

    worker = threading.Thread(target=run, name="offsite-age", daemon=True)
    worker.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                break
            assert isinstance(item, bytes)  # noqa: S101 - only bytes and _DONE are queued
            yield item
        if failure:
            raise failure[0]
    finally:
        cancelled.set()
        worker.join(timeout=30)


def encode(path: Path, *, compressed: bool, recipients: Sequence[str]) -> Iterator[bytes]:
    """The object bytes for the backup file ``path``: zstd (unless ``compressed`` says the
    file already is), then age to ``recipients`` (none: not encrypted)."""
    stream = _zstd_of(path) if not compressed else _file_chunks(path)
    if not recipients:
        return stream
    import pyrage  # noqa: PLC0415

    keys = [_recipient(r) for r in recipients]
    return _through(lambda src, dst: pyrage.encrypt_io(src, dst, keys), stream)


def decode(chunks: Iterable[bytes], *, identities: Sequence[Any] | None) -> Iterator[bytes]:
    """The database bytes from an object's ``chunks``: age-decrypted (when ``identities``
    is given), then zstd-decompressed."""
    import zstandard  # noqa: PLC0415

    if identities is not None:
        import pyrage  # noqa: PLC0415

        keys = list(identities)
        chunks = _through(lambda src, dst: pyrage.decrypt_io(src, dst, keys), chunks)
    reader = _ChunkReader(chunks)
    return _zstd_errors(
        zstandard.ZstdDecompressor().read_to_iter(
            cast(IO[bytes], reader), read_size=CHUNK, write_size=CHUNK
        )
    )


def _zstd_errors(chunks: Iterable[bytes]) -> Iterator[bytes]:
    import zstandard  # noqa: PLC0415

    try:
        yield from chunks
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd: {exc}") from None


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from read_chunks(handle)


def _zstd_of(path: Path) -> Iterator[bytes]:
    import zstandard  # noqa: PLC0415

    with path.open("rb") as handle:
        yield from zstandard.ZstdCompressor(level=1).read_to_iter(
            handle, read_size=CHUNK, write_size=CHUNK
        )
