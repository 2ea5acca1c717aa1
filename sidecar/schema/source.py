"""The desired schema from a local path or the app's own image (``app:/app/prisma/migrations``).

The folder is read through the Docker API's archive endpoint (nothing runs in the container)
as an untrusted tar stream. See docs/design.md, 'The schema from the app's own image'.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Protocol

from sidecar.errors import ConfigError, UnavailableError
from sidecar.schema import desired
from sidecar.schema.catalogue import Catalogue

if TYPE_CHECKING:
    from sidecar.containers.apps import AppRef
from sidecar.logs import get_logger

log = get_logger(__name__)

# A schema folder is text: a few hundred KiB even for a long Prisma history.
MAX_BYTES = 16 * 1024 * 1024
MAX_ENTRIES = 10_000
_SOURCE = re.compile(r"(?P<container>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<path>/.*)")
_HINT = "set SIDECAR_SCHEMA to <service>:<absolute folder>, e.g. app:/app/prisma/migrations"


@dataclass(frozen=True)
class ContainerPath:
    """A path inside a container: ``app:/app/prisma/migrations``."""

    container: str
    path: PurePosixPath

    def __str__(self) -> str:
        return f"{self.container}:{self.path}"


class Archives(Protocol):
    """The part of the Docker seam this module needs (:class:`AppControl` has it)."""

    def find(self, app: str | None, *, label: str | None = None) -> AppRef: ...

    def get_archive(self, app: AppRef, path: str) -> Iterable[bytes]: ...


def parse(spec: str) -> ContainerPath | None:
    """The container path ``spec`` names, or None for a local path (``/schema``,
    ``./app:/x``). Raises :class:`ConfigError` for a container path that is not a clean
    absolute path."""
    match = _SOURCE.fullmatch(spec)
    if match is None:
        return None
    raw = match["path"]
    parts = raw.split("/")
    if ".." in parts or "." in parts[1:] or raw.rstrip("/") == "" or "\x00" in raw:
        raise ConfigError(
            f"SIDECAR_SCHEMA: {spec!r} must name a folder or file below / without '.' or '..'",
            hint=_HINT,
        )
    return ContainerPath(match["container"], PurePosixPath(raw))


def load_desired(
    spec: Path, apps: Archives | None = None, *, found: AppRef | None = None
) -> Catalogue:
    """:func:`desired.load_desired` for a local path or a container path (``apps`` reaches
    Docker; without one, the engine from the environment is required). ``found``: the
    container, when the caller has already looked it up."""
    source = parse(str(spec))
    if source is None:
        return desired.load_desired(spec)
    # Only here: `health --backups-only` (the image's HEALTHCHECK) never loads the Docker SDK.
    import docker.errors  # noqa: PLC0415

    from sidecar.containers.engine import connect  # noqa: PLC0415

    if apps is None:
        apps = connect(required=True)
        if apps is None:  # pragma: no cover (required=True raises instead)
            raise UnavailableError("no Docker API", hint="mount the Docker socket")
    ref = found or apps.find(source.container)
    with tempfile.TemporaryDirectory(prefix="sidecar-schema-") as tmp:
        root = Path(tmp)
        try:
            chunks = apps.get_archive(ref, str(source.path))
            files = extract(chunks, root, source.path.name)
        except docker.errors.NotFound:
            raise ConfigError(
                f"SIDECAR_SCHEMA: {source.path} does not exist in container {ref.name}",
                hint="check the path inside the app's image (docker compose run --rm "
                "--entrypoint ls app <folder>), or the image the app runs",
            ) from None
        except (docker.errors.DockerException, OSError) as exc:
            raise UnavailableError(
                f"Docker API: reading {source.path} from {ref.name} failed: {exc}",
                hint="check that the Docker engine is up; a socket proxy must allow "
                "GET /containers/{id}/archive (CONTAINERS=1)",
            ) from exc
        log.info("schema.fetched", source=str(source), container=ref.name, files=files)
        try:
            return desired.load_desired(root / source.path.name)
        except ConfigError as exc:
            # Name the file as the user knows it, not by our temporary folder.
            raise ConfigError(
                exc.message.replace(str(root), f"{source.container}:{source.path.parent}"),
                hint=exc.hint,
            ) from None


def extract(chunks: Iterable[bytes], dest: Path, top: str) -> int:
    """Write the tar stream ``chunks`` into the empty folder ``dest``; the number of files.

    Every entry must be ``top`` or below it, a regular file or a folder; anything else is a
    :class:`ConfigError` (the caller's temporary folder is then removed whole)."""
    stream = _CappedStream(iter(chunks))
    count = files = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                count += 1
                if count > MAX_ENTRIES:
                    raise _refused(f"more than {MAX_ENTRIES} entries")
                target = dest.joinpath(*_safe_parts(member.name, top))
                if member.isdir():
                    target.mkdir(mode=0o700, exist_ok=True)
                elif member.isfile():
                    source = archive.extractfile(member)
                    if source is None:  # pragma: no cover (a regular file always has data)
                        raise _refused(f"{member.name}: no data")
                    _write_file(target, source)
                    files += 1
                else:
                    kind = _KINDS.get(member.type, f"type {member.type!r}")
                    raise _refused(
                        f"{member.name} is a {kind}"
                        + (f" (to {member.linkname})" if member.linkname else "")
                    )
    except tarfile.TarError as exc:
        raise _refused(f"not a readable tar stream ({exc})") from None
    if count == 0:
        raise _refused("empty archive")
    return files


_KINDS = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


def _safe_parts(name: str, top: str) -> list[str]:
    if name.startswith("/") or "\\" in name:
        raise _refused(f"absolute or odd entry name {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or parts[0] != top or any("\x00" in p for p in parts):
        raise _refused(f"entry {name!r} is outside {top!r}")
    return parts


def _write_file(target: Path, source: IO[bytes]) -> None:
    if not target.parent.is_dir():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        raise _refused(f"entry {target.name!r} appears twice") from None
    with os.fdopen(fd, "wb") as out:
        while block := source.read(64 * 1024):
            out.write(block)


def _refused(reason: str) -> ConfigError:
    return ConfigError(
        f"SIDECAR_SCHEMA: the container's schema archive is refused: {reason}",
        hint="point SIDECAR_SCHEMA at a folder of plain .sql files (no links) inside the "
        f"app's image, under {MAX_BYTES // (1024 * 1024)} MiB",
    )


class _CappedStream:
    """A file-like view of an iterator of byte chunks that refuses past :data:`MAX_BYTES`."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._total = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._total += len(chunk)
            if self._total > MAX_BYTES:
                raise _refused(f"more than {MAX_BYTES} bytes")
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data
