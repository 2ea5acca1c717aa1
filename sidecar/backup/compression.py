"""zstd for backup files: compress into a new file, stream a backup's content back out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sidecar.fs import CHUNK, create_exclusive, pump, read_chunks
from sidecar.progress import Progress


def zstd_compress(src: Path, dst: Path, *, mode: int, group: int | None) -> tuple[int, str]:
    """Compress ``src`` into a new file ``dst`` (zstd level 1, streamed); (size, sha256).
    Shows its progress (:class:`sidecar.progress.Progress`) over the bytes of ``src`` read."""
    import zstandard  # noqa: PLC0415 - only compressed backups pay for the import

    fd = create_exclusive(dst, mode, group)
    try:
        compressor = zstandard.ZstdCompressor(level=1)
        with src.open("rb") as handle, Progress("compress", src.name, src.stat().st_size) as bar:
            chunks = compressor.read_to_iter(handle, read_size=CHUNK, write_size=CHUNK)
            return pump(chunks, fd, progress=lambda _: bar.to(handle.tell()))
    finally:
        os.close(fd)


def decompressed_chunks(path: Path, *, zstd: bool | None = None) -> Iterable[bytes]:
    """The content of a backup file, decompressed on the fly when it ends in ``.zst`` (or
    when ``zstd`` says so: a partial file's name does not)."""
    if path.name.endswith(".zst") if zstd is None else zstd:
        import zstandard  # noqa: PLC0415 - only compressed backups pay for the import

        with path.open("rb") as handle:
            reader = zstandard.ZstdDecompressor().read_to_iter(
                handle, read_size=CHUNK, write_size=CHUNK
            )
            yield from reader
    else:
        with path.open("rb") as handle:
            yield from read_chunks(handle)
