"""One sidecar per data volume: an ``flock`` on a lease file beside the database.

Why ``flock`` on a separate file:

- **Stale-lease recovery is the kernel's job.** An flock belongs to the open file
  description; when the holder exits, is SIGKILLed or its container is removed, the kernel
  closes the descriptor and drops the lock. There is no pid to check and no timestamp to
  expire, so a crashed sidecar can never wedge the next deploy, and a slow one is never
  robbed of a lease that it still holds.
- **It works across containers.** Two containers mounting the same local Docker volume (or a
  Kubernetes hostPath / local PersistentVolume) share one inode, and flock is enforced by the
  host kernel for every process on it. On NFS, Linux maps flock to NFS byte-range locks.
- **It is unrelated to SQLite's own locks** (POSIX locks on the database and its ``-shm``):
  closing this descriptor never drops a lock SQLite holds, and vice versa.
- **Threads and processes alike.** Each :func:`hold_lease` opens its own file description, so
  two holders in one process contend exactly like two processes.

The file also carries the holder's hostname, pid, command and start time as JSON, read only
for diagnostics (``lease.waiting``, the refusal message): the lock itself is the truth. The
file is never deleted: unlinking an flock file lets a newcomer lock a fresh inode while an old
holder still holds the unlinked one, which is exactly the race the lease exists to prevent.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError, RefusedError
from sidecar.logs import get_logger
from sidecar.signals import Aborted, Stop
from sidecar.waits import WaitProgress

log = get_logger(__name__)

LEASE_SUFFIX = ".sidecar-lease"
RESTORE_PARTIAL_SUFFIX = ".restore-partial"


@dataclass(frozen=True)
class Lease:
    """A lease being held: where, and for how long we waited to get it."""

    path: Path
    waited_s: float


def lease_path(db: Path) -> Path:
    """The lease file for a database: ``<db>.sidecar-lease`` in the database's folder."""
    return db.with_name(db.name + LEASE_SUFFIX)


def restore_partial_path(db: Path) -> Path:
    """Where a restore writes ``db``'s new content before renaming it into place: beside
    the file a symlinked ``db`` names, which the restore replaces."""
    real = Path(os.path.realpath(db))
    return real.with_name(f".{real.name}{RESTORE_PARTIAL_SUFFIX}")


def remove_restore_partial(db: Path) -> bool:
    """Delete what a killed restore of ``db`` left (``.<name>.restore-partial``, as large as
    the database), with a log line. Only the lease holder may: an in-place restore writes
    it while holding the lease (a ``--to`` restore calls this for its own new file)."""
    leftover = restore_partial_path(db)
    try:
        size = leftover.lstat().st_size
        leftover.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("restore.leftover_kept", path=str(leftover), error=exc.strerror)
        return False
    log.warning("restore.leftover_removed", path=str(leftover), bytes=size,
                reason="a restore was interrupted; the database was not replaced")  # fmt: skip
    return True


def remove_restore_partial_if_free(db: Path, *, command: str) -> None:
    """For commands that do not hold the lease (``backup``): remove a killed restore's
    leftover when the lease is free right now; while another sidecar holds it, that one may
    be the restore writing it, so it stays (and the lease holder's next run removes it)."""
    if not os.path.lexists(restore_partial_path(db)):
        return
    try:
        with hold_lease(db, wait=0, command=command):
            pass
    except (RefusedError, ConfigError) as exc:
        log.info("restore.leftover_kept", path=str(restore_partial_path(db)), reason=str(exc))


def read_holder(path: Path) -> dict[str, Any]:
    """The holder info last written into a lease file; ``{}`` when absent or unreadable.

    Diagnostics only: a holder may be mid-write, or gone (its lock freed by the kernel).
    """
    try:
        loaded = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    return (
        f"holder {holder.get('command', '?')} pid {holder.get('pid', '?')} "
        f"on {holder.get('hostname', '?')} since {holder.get('started_at', '?')}"
    )


@contextmanager
def hold_lease(
    db: Path, *, wait: float, command: str, poll_interval: float = 0.2, stop: Stop | None = None
) -> Iterator[Lease]:
    """Hold the data volume's lease for the block; wait up to ``wait`` seconds for it, or
    until ``stop`` is set (SIGTERM: raises :class:`Aborted`, nothing was started).

    Raises :class:`RefusedError` (exit 3) when another sidecar still holds it after ``wait``
    seconds, and :class:`ConfigError` (exit 2) when the lease file cannot be created (a
    missing or read-only data folder: a deploy has to write there anyway).
    """
    path = lease_path(db)
    fd = _open(path)
    try:
        started = time.monotonic()
        _acquire(fd, path, db, wait=wait, poll_interval=poll_interval, stop=stop)
        waited = time.monotonic() - started
        holder = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "command": command,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _write_holder(fd, holder)
        log.info("lease.acquired", lease=str(path), waited_s=round(waited, 3), command=command)
        remove_restore_partial(db)
        held_since = time.monotonic()
        try:
            yield Lease(path=path, waited_s=waited)
        finally:
            # Clear the diagnostics before unlocking, so a reader never sees a stale holder.
            _write_holder(fd, None)
            log.info(
                "lease.released", lease=str(path), held_s=round(time.monotonic() - held_since, 3)
            )
    finally:
        os.close(fd)  # drops the flock, whether or not we ever got it


def _open(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o660)
    except FileNotFoundError:
        raise ConfigError(
            f"cannot create the lease file {path}: the folder {path.parent} does not exist",
            hint="mount the data volume at the database's folder (SIDECAR_DATABASE)",
        ) from None
    except PermissionError:
        # A lease file left by a sidecar running as another user: flock needs no write access.
        if path.exists():
            with suppress(OSError):
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        raise ConfigError(
            f"cannot create the lease file {path}: permission denied",
            hint="run the sidecar as the user that owns the data volume (the app's uid)",
        ) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise ConfigError(
                f"cannot create the lease file {path}: {path.parent} is read-only",
                hint="mount the data volume read-write for the sidecar: a deploy writes there",
            ) from None
        raise ConfigError(
            f"cannot open the lease file {path}: {exc.strerror}",
            hint="check the data volume's mount and permissions",
        ) from None


def _acquire(
    fd: int, path: Path, db: Path, *, wait: float, poll_interval: float, stop: Stop | None
) -> None:
    deadline = time.monotonic() + wait
    announced = False
    progress = WaitProgress("lease.still_waiting", lease=str(path), wait_s=wait)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            return
        holder = read_holder(path)
        if not announced:
            log.info("lease.waiting", lease=str(path), wait_s=wait, holder=holder)
            announced = True
        progress.tick(holder=describe_holder(holder))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RefusedError(
                f"another sidecar holds the lease on {db} ({describe_holder(holder)})",
                hint="wait for it to finish, or raise SIDECAR_LEASE_WAIT; a crashed holder's "
                "lease is freed by the kernel, so there is nothing to clean up",
            )
        if stop is None:
            time.sleep(min(poll_interval, remaining))
        elif stop.wait(min(poll_interval, remaining)):
            log.warning("lease.wait_aborted", lease=str(path), reason=stop.reason)
            raise Aborted("lease")


def _write_holder(fd: int, holder: dict[str, Any] | None) -> None:
    """Best effort: a read-only descriptor (a foreign-owned lease file) cannot carry info."""
    data = json.dumps(holder).encode() + b"\n" if holder else b""
    with suppress(OSError):
        os.ftruncate(fd, 0)
        if data:
            os.pwrite(fd, data, 0)
