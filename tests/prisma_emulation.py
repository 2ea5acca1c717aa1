"""How ``prisma migrate deploy`` decides what to apply, emulated for the tests.

Prisma cannot run on these machines (no npm registry), so the tests check the sidecar's
bookkeeping against this emulation, written from prisma-engines' own source:

* ``packages/migrate/src/utils/listMigrations.ts`` (prisma/prisma): the migrations are the
  folders of ``migrations/`` (name order), every one of them; only its ``migration.sql`` is
  read, and reading a missing one fails when it is applied (P3015).
* ``schema-engine/core/src/commands/apply_migrations.rs``: the persistence is
  initialized; a row with ``finished_at`` NULL and ``rolled_back_at`` NULL is a failed
  migration and stops everything (P3009); a folder is applied unless a row with its
  ``migration_name`` has ``rolled_back_at`` NULL. Each one applied: a row is inserted (v4
  UUID, checksum, ``started_at``), the script runs, ``applied_steps_count`` + 1, then
  ``finished_at``.
* ``sql-schema-connector/src/sql_migration_persistence.rs`` (``initialize``): without a
  ``_prisma_migrations`` table, a database holding any table is refused (P3005, "the database
  schema is not empty": it needs baselining); an empty one gets the table, created with the
  DDL of ``flavour/sqlite.rs``. Which tables count: every table but SQLite's own
  (``sqlite_*``), an approximation of Prisma's filter.
* ``migration_lock.toml``: ``provider`` must be ``sqlite`` (``error_on_changed_provider``).
* Timestamps: quaint binds a ``DateTime`` as unix milliseconds in SQLite.

It is deliberately independent of ``sidecar.prisma``: its DDL is copied from Prisma again
here, so a test comparing the two compares the sidecar against Prisma's text, not itself.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import tomllib
import uuid
from pathlib import Path

PRISMA_DDL = """CREATE TABLE "_prisma_migrations" (
    "id"                    TEXT PRIMARY KEY NOT NULL,
    "checksum"              TEXT NOT NULL,
    "finished_at"           DATETIME,
    "migration_name"        TEXT NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        DATETIME,
    "started_at"            DATETIME NOT NULL DEFAULT current_timestamp,
    "applied_steps_count"   INTEGER UNSIGNED NOT NULL DEFAULT 0
);
"""


class PrismaError(Exception):
    """A refusal of ``prisma migrate deploy``, with Prisma's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def migration_folders(migrations: Path) -> list[Path]:
    return sorted(d for d in migrations.iterdir() if d.is_dir())


def _check_lock(migrations: Path) -> None:
    lock = migrations / "migration_lock.toml"
    if lock.exists():
        provider = tomllib.loads(lock.read_text()).get("provider")
        if provider != "sqlite":
            raise PrismaError("P3019", f"the migrations are for {provider}, not sqlite")


def _initialize(conn: sqlite3.Connection) -> None:
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "_prisma_migrations" in tables:
        return
    if any(not name.startswith("sqlite_") for name in tables):
        raise PrismaError("P3005", "the database schema is not empty")
    conn.execute(PRISMA_DDL)


def to_apply(db: Path, migrations: Path) -> list[str]:
    """The names ``prisma migrate deploy`` would apply to ``db``, in order (it writes only
    what Prisma's ``initialize`` writes: the table, into an empty database)."""
    _check_lock(migrations)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        _initialize(conn)
        rows = conn.execute(
            "SELECT migration_name, finished_at, rolled_back_at FROM _prisma_migrations "
            "ORDER BY started_at ASC"
        ).fetchall()
    finally:
        conn.close()
    failed = [
        name for name, finished, rolled_back in rows if finished is None and rolled_back is None
    ]
    if failed:
        raise PrismaError("P3009", f"migrate found failed migrations: {', '.join(failed)}")
    applied = {name for name, _, rolled_back in rows if rolled_back is None}
    return [d.name for d in migration_folders(migrations) if d.name not in applied]


def deploy(db: Path, migrations: Path) -> list[str]:
    """Apply what :func:`to_apply` finds, recording each as Prisma does; the names applied."""
    names = to_apply(db, migrations)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for name in names:
            path = migrations / name / "migration.sql"
            if not path.is_file():
                raise PrismaError("P3015", f"Could not find the migration file at {path}")
            script = path.read_bytes()
            row_id = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) "
                "VALUES (?, ?, ?, ?)",
                (row_id, hashlib.sha256(script).hexdigest(), time.time_ns() // 10**6, name),
            )
            conn.executescript(script.decode())
            conn.execute(
                "UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, "
                "finished_at = ? WHERE id = ?",
                (time.time_ns() // 10**6, row_id),
            )
    finally:
        conn.close()
    return names
