"""What a table rebuild adds to the database file, the free-space check before it, and
giving the pages back afterwards (SIDECAR_COMPACT). See docs/design.md, "A rebuild's growth".
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar import sqlite
from sidecar.errors import HealthError, UnavailableError
from sidecar.logs import get_logger
from sidecar.schema.operations import Plan, RebuildTable

log = get_logger(__name__)


@dataclass(frozen=True)
class Growth:
    """Bytes the rebuilds of a plan add to the database file, by table."""

    tables: dict[str, int]
    wal: bool

    @property
    def file_bytes(self) -> int:
        return sum(self.tables.values())

    @property
    def peak_bytes(self) -> int:
        """Free space needed while the change runs: twice the growth in WAL mode."""
        return self.file_bytes * (2 if self.wal else 1)

    def to_dict(self) -> dict[str, Any]:
        return {"tables": self.tables, "file_bytes": self.file_bytes, "peak_bytes": self.peak_bytes}

    def __str__(self) -> str:
        names = ", ".join(f'"{t}"' for t in self.tables)
        return (
            f"the database file grows by about {_mib(self.file_bytes)} (rebuilding {names}: "
            "the old pages stay in the file as free pages)"
            + (
                f"; {_mib(self.peak_bytes)} free needed while the -wal holds them"
                if self.wal
                else ""
            )
        )


def of_plan(conn: sqlite3.Connection, plan: Plan) -> Growth | None:
    """The growth of ``plan``'s table rebuilds on the database of ``conn``; None without one."""
    tables = [op.table for op in plan.operations if isinstance(op, RebuildTable)]
    if not tables:
        return None
    wal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
    return Growth({table: _table_bytes(conn, table) for table in tables}, wal)


def _table_bytes(conn: sqlite3.Connection, table: str) -> int:
    """Pages of ``table`` and its indexes (``dbstat``), or the whole file where SQLite was
    built without it (an upper bound)."""
    names = [table] + [
        str(row[0])
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)
        )
    ]
    marks = ", ".join("?" for _ in names)
    try:
        row = conn.execute(
            f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})",
            names,
        ).fetchone()
        return int(row[0])
    except sqlite3.OperationalError:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        return pages * int(conn.execute("PRAGMA page_size").fetchone()[0])


MARGIN = 8 * 1024 * 1024  # kept free on the data volume beyond a rebuild's peak


def require_room(db: Path, growth: Growth | None, *, margin: int = MARGIN) -> None:
    """Exit 5 before any change when the data volume cannot hold the rebuild's growth."""
    if growth is None:
        return
    stat = os.statvfs(db.parent)
    free = stat.f_bavail * stat.f_frsize
    needed = growth.peak_bytes + margin
    log.info("migrate.growth", file_bytes=growth.file_bytes, peak_bytes=growth.peak_bytes,
             free_bytes=free, tables=growth.tables)  # fmt: skip
    if free < needed:
        raise UnavailableError(
            f"not enough free space on the data volume for the table rebuild: {_mib(free)} "
            f"free in {db.parent}, {_mib(needed)} needed ({growth}; plus "
            f"{_mib(margin)} to spare); nothing was changed",
            hint="grow the data volume or free space on it, then deploy again",
        )


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


@dataclass(frozen=True)
class Compaction:
    """What :func:`compact` did: the file's size before and after, and how long it held the lock."""

    before_bytes: int
    after_bytes: int
    seconds: float
    skipped: str = ""  # why nothing was done ("" when it ran)

    def to_dict(self) -> dict[str, Any]:
        return {
            "before_bytes": self.before_bytes,
            "after_bytes": self.after_bytes,
            "freed_bytes": self.before_bytes - self.after_bytes,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
        }


def compact(conn: sqlite3.Connection, db: Path, *, margin: int = MARGIN) -> Compaction:
    """``VACUUM`` the committed database on ``conn`` (no transaction open): the free pages a
    rebuild left go back to the volume. VACUUM is one transaction (a failure leaves the file
    as it was) and holds the write lock while it copies the database twice; it needs about the
    database's size free (its temporary copy) plus the journal. Skipped, with the reason, when
    there are no free pages or no room; a ``quick_check`` of the result follows."""
    started = time.monotonic()
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free_pages = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    before = pages * page_size
    if free_pages == 0:
        return Compaction(before, before, 0.0, skipped="no free pages")
    stat = os.statvfs(db.parent)
    room = stat.f_bavail * stat.f_frsize
    needed = 2 * (pages - free_pages) * page_size + margin
    if room < needed:
        log.warning(
            "compact.skipped",
            free_bytes=room,
            needed_bytes=needed,
            hint="grow the data volume; the free pages are reused by the app's next writes",
        )
        return Compaction(before, before, 0.0, skipped=f"{_mib(room)} free, {_mib(needed)} needed")
    conn.execute("VACUUM")
    after = int(conn.execute("PRAGMA page_count").fetchone()[0]) * page_size
    problems = sqlite.quick_check(conn)
    if problems:
        raise HealthError(  # the change is committed; the backup holds the state before it
            f"quick_check after VACUUM: {problems[0]}",
            hint="the schema change is committed; check the disk, then `sidecar verify` and "
            "`sidecar health`",
        )
    done = Compaction(before, after, time.monotonic() - started)
    log.info("compact.done", **done.to_dict())
    return done
