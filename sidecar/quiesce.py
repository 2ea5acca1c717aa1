"""Wait for a lull in the app's writes: the database and its side files unchanged for a while.

Quiet is a courtesy, not the safety mechanism: the write lock taken afterwards is what makes
the backup and the change consistent. Waiting for a lull first keeps the app's commits from
queueing behind the lock in the middle of a burst. An app that never pauses (a steady writer)
gets the lock after ``timeout``; that is logged, never silent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sidecar.logs import get_logger
from sidecar.signals import Stop
from sidecar.waits import WaitProgress

log = get_logger(__name__)

Signature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class QuietResult:
    quiet: bool
    waited_s: float


def signature(db: Path) -> Signature:
    """(mtime_ns, size, inode) of the database, -wal and -journal; zeros for missing files."""
    parts = []
    for suffix in ("", "-wal", "-journal"):
        try:
            stat = Path(f"{db}{suffix}").stat()
        except FileNotFoundError:
            parts.append((0, 0, 0))
        else:
            parts.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(parts)


def wait_quiet(
    db: Path,
    *,
    period: float,
    timeout: float,
    poll: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop: Stop | None = None,
) -> QuietResult:
    """Return once nothing changed for ``period`` seconds, or after ``timeout`` (quiet=False),
    or as soon as ``stop`` is set (SIGTERM: quiet=False, the caller aborts)."""
    started = clock()
    last = signature(db)
    quiet_since = started
    changes = 0
    progress = WaitProgress("quiesce.waiting", clock=clock, period_s=period, timeout_s=timeout)
    while stop is None or not stop.is_set():
        progress.tick(changes=changes, quiet_for_s=round(clock() - quiet_since, 1))
        now = clock()
        if now - quiet_since >= period:
            waited = now - started
            log.info("quiesce.quiet", waited_s=round(waited, 3), period_s=period)
            return QuietResult(True, waited)
        if now - started >= timeout:
            log.warning(
                "quiesce.still_busy",
                waited_s=round(now - started, 3),
                hint="the app never paused; taking the write lock anyway (it queues the app's "
                "commits briefly, it never loses them)",
            )
            return QuietResult(False, now - started)
        sleep(poll)
        current = signature(db)
        if current != last:
            last = current
            changes += 1
            quiet_since = clock()
    return QuietResult(False, clock() - started)
