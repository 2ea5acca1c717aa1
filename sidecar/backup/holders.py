"""Who else holds a database: SQLite's POSIX locks, and open files under /proc.

Restore asks before it replaces a database. See docs/design.md, 'Who holds the database'.
"""

from __future__ import annotations

import fcntl
import os
import struct
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from sidecar.database import SIDE_FILES
from sidecar.errors import RefusedError
from sidecar.logs import get_logger

log = get_logger(__name__)


# SQLite's unix VFS locks (os_unix.c). On the database file: PENDING, RESERVED and the
# 510-byte SHARED range from 1 GiB on; a rollback-journal connection holds one only inside a
# transaction, a WAL-mode one holds SHARED for as long as it is open. On the -shm: every
# WAL-mode connection read-locks the "DMS" byte (128) for as long as it has it open.
_LOCK_BYTES = (0x40000000, 512)
_SHM_DMS = (128, 1)


@dataclass(frozen=True)
class Holder:
    """A process holding the database: by a SQLite lock (``locked``), or only an open file."""

    how: str
    pid: int | None = None  # None: not visible from here (another container's PID namespace)
    command: str = ""
    locked: bool = True

    def describe(self) -> str:
        who = f"pid {self.pid}" + (f" ({self.command})" if self.command else "")
        if self.pid is None:
            who = "a process this sidecar cannot see (another container?)"
        return f"{who}: {self.how}"


def holders(db: Path) -> list[Holder]:
    """Who else holds ``db``, as far as this process can tell (never ourselves): lock
    holders across containers, open files only in this PID namespace.
    See docs/design.md, 'Who holds the database'."""
    found: list[Holder] = []
    probes = (
        (Path(f"{db}-shm"), _SHM_DMS, "a WAL-mode connection (its lock on the -shm)"),
        (db, _LOCK_BYTES, "a connection inside a transaction (a lock on the database)"),
    )
    for path, (start, length), how in probes:
        pid = _lock_holder(path, start, length)
        if pid is not None and (pid or None) not in {h.pid for h in found}:
            found.append(Holder(how, pid or None, _command(pid) if pid else ""))
    seen = {h.pid for h in found}
    for pid in _open_by([db, *(Path(f"{db}{s}") for s in SIDE_FILES)]):
        if pid not in seen:
            found.append(Holder("has the database open", pid, _command(pid), locked=False))
    return found


def database_in_use(db: Path) -> bool:
    """Whether another connection holds a SQLite lock on ``db`` (see :func:`holders`)."""
    return any(h.locked for h in holders(db))


def _lock_holder(path: Path, start: int, length: int) -> int | None:
    """The pid holding a POSIX lock on ``path``'s bytes (0: not visible here), else None.
    F_GETLK only asks: it takes no lock, and an fd opened only for it drops none of ours
    (this process holds no SQLite connection to the file when it asks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else max(pid, 0)


def _open_by(paths: list[Path]) -> list[int]:
    """Other processes with one of ``paths`` open (by inode), from /proc/<pid>/fd."""
    inodes = set()
    for path in paths:
        with suppress(OSError):
            st = path.stat()
            inodes.add((st.st_dev, st.st_ino))
    if not inodes:
        return []
    found = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to inspect
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in inodes:
                found.append(pid)
                break
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    text = "".join(c if c.isprintable() else " " for c in raw.decode(errors="replace"))
    return " ".join(text.split())[:60]


def refuse_holders(target: Path, found: list[Holder], *, force: bool, can_stop: bool) -> None:
    """Refuse to replace ``target`` under another process; ``force`` passes only holders
    without a lock. See docs/design.md, 'Who holds the database'."""
    locked = [h for h in found if h.locked]
    if not locked and (not found or force):
        if found:
            log.warning("backup.restore_forced", target=str(target),
                        holders=[h.describe() for h in found])  # fmt: skip
        return
    shown = "; ".join(h.describe() for h in (locked or found)[:3])
    if can_stop:
        hint = "something besides the app holds it (SIDECAR_APP was stopped): stop that too"
    else:
        hint = (
            "stop the app first (docker compose stop <app>), or set SIDECAR_APP so that "
            "restore stops it and starts it again"
        )
    if locked:
        hint += "; --force cannot override this: the app's later commits would be lost"
    else:
        hint += "; or pass --force (its next write then fails instead of being kept)"
    raise RefusedError(f"{target} is in use: {shown}", hint=hint)
