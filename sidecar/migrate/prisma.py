"""Prisma Migrate's own bookkeeping, the ``_prisma_migrations`` table in the app's database:
read, judged, and recorded as Prisma's schema engine writes it, in the change's transaction.
See docs/design.md, "Prisma's bookkeeping".
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from sidecar.errors import HealthError, RefusedError
from sidecar.logs import get_logger
from sidecar.schema.catalogue import Catalogue
from sidecar.schema.desired import Desired, Migration
from sidecar.schema.operations import Operation, Plan, Refusal

log = get_logger(__name__)

TABLE = "_prisma_migrations"
# Prisma's own DDL for SQLite, verbatim (indoc! strips the indentation of the Rust source).
CREATE_TABLE = """CREATE TABLE "_prisma_migrations" (
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
RESOLVE_HINT = (
    "a failed Prisma migration blocks every deploy (Prisma's P3009): fix the database, then "
    "`prisma migrate resolve --rolled-back {name}` (or `--applied {name}`), and deploy again"
)


@dataclass(frozen=True)
class Row:
    """One row of ``_prisma_migrations``, the columns ``prisma migrate deploy`` reads."""

    migration_name: str
    checksum: str
    finished_at: object
    rolled_back_at: object

    @property
    def failed(self) -> bool:
        return self.finished_at is None and self.rolled_back_at is None


@dataclass(frozen=True)
class RecordMigrations(Operation):
    """Record migrations as applied in ``_prisma_migrations``, as Prisma does."""

    kind: ClassVar[str] = "record_migrations"
    migrations: tuple[str, ...]
    checksums: tuple[str, ...]
    create_table: bool = False

    def __str__(self) -> str:
        created = " (creating it with Prisma's own DDL)" if self.create_table else ""
        return (
            f"record {len(self.migrations)} Prisma migration(s) as applied in {TABLE}"
            f"{created}: {', '.join(self.migrations)}"
        )


def has_table(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
        (TABLE,),
    ).fetchone()
    return found is not None


def rows(conn: sqlite3.Connection | None) -> list[Row]:
    """The rows of ``_prisma_migrations`` (none without the table, or without a database)."""
    if conn is None or not has_table(conn):
        return []
    try:
        found = conn.execute(
            f'SELECT migration_name, checksum, finished_at, rolled_back_at FROM "{TABLE}"'
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such column" not in str(exc):
            raise
        raise RefusedError(
            f"{TABLE} is not Prisma's migrations table: {exc}",
            hint=f"{TABLE} belongs to Prisma Migrate; rename the other table",
        ) from None
    return [Row(str(r[0]), str(r[1]), r[2], r[3]) for r in found]


def applied(recorded: Sequence[Row]) -> set[str]:
    """The migrations Prisma counts as applied: a row of that name not rolled back."""
    return {r.migration_name for r in recorded if r.rolled_back_at is None}


def pending(recorded: Sequence[Row], migrations: Sequence[Migration]) -> list[Migration]:
    """What ``prisma migrate deploy`` would apply, in its order."""
    done = applied(recorded)
    return [m for m in migrations if m.name not in done]


def failed_refusals(recorded: Sequence[Row]) -> list[Refusal]:
    return [
        Refusal(
            f"Prisma migration {r.migration_name}",
            f"recorded as failed in {TABLE} (finished_at and rolled_back_at are NULL)",
            RESOLVE_HINT.format(name=r.migration_name),
        )
        for r in recorded
        if r.failed
    ]


def missing_refusals(recorded: Sequence[Row], migrations: Sequence[Migration]) -> list[Refusal]:
    """The migrations Prisma would still apply whose folder lacks ``migration.sql``: Prisma's
    ``migrate deploy`` stops on each (P3015), and the desired schema lacks its changes."""
    return [
        Refusal(
            f"Prisma migration {m.name}",
            "its folder has no migration.sql: `prisma migrate deploy` fails on it (P3015), "
            "and the desired schema lacks its changes",
            f"restore {m.name}/migration.sql (from git), or delete the folder if the "
            "migration was abandoned",
        )
        for m in pending(recorded, migrations)
        if m.missing
    ]


def warn_changed(recorded: Sequence[Row], migrations: Sequence[Migration]) -> list[str]:
    """Migrations whose file no longer matches the checksum Prisma recorded, or is gone: a
    warning each."""
    files = {m.name: m for m in migrations}
    changed = []
    for row in recorded:
        migration = files.get(row.migration_name)
        if migration is None or row.rolled_back_at is not None:
            continue
        if migration.missing:
            changed.append(migration.name)
            log.warning(
                "prisma.migration_file_missing",
                migration=migration.name,
                hint="Prisma recorded it as applied and never reads it again; the desired "
                "schema lacks its changes, so what it made is reported as drift: restore its "
                "migration.sql",
            )
        elif row.checksum not in migration.checksums:
            changed.append(migration.name)
            log.warning(
                "prisma.checksum_changed",
                migration=migration.name,
                recorded=row.checksum,
                file=migration.checksum,
                hint="the migration was edited after it was applied; its changes are judged "
                "by the end state, and Prisma's row is kept as it is",
            )
    return changed


def bookkeeping(conn: sqlite3.Connection | None, desired: Catalogue) -> RecordMigrations | None:
    """The rows to record for ``desired``'s history, or None (nothing missing, or a failed
    row that must be resolved first)."""
    if not isinstance(desired, Desired) or not desired.migrations:
        return None
    recorded = rows(conn)
    missing = pending(recorded, desired.migrations)
    if not missing or any(r.failed for r in recorded) or any(m.missing for m in missing):
        return None
    return RecordMigrations(
        tuple(m.name for m in missing),
        tuple(m.checksum for m in missing),
        create_table=conn is None or not has_table(conn),
    )


def schema_changes(plan: Plan) -> Plan:
    """``plan`` without the bookkeeping, which :func:`record` applies after it."""
    kept = tuple(op for op in plan.operations if not isinstance(op, RecordMigrations))
    return replace(plan, operations=kept)


def record(conn: sqlite3.Connection, desired: Catalogue) -> list[str]:
    """Record every migration of ``desired``'s history that Prisma would still apply, in the
    caller's transaction, then check that none is left. The names recorded."""
    op = bookkeeping(conn, desired)
    if op is None:
        return []
    if not has_table(conn):
        conn.execute(CREATE_TABLE)
    last = 0
    for name, checksum in zip(op.migrations, op.checksums, strict=True):
        # Unix milliseconds, as Prisma stores them; strictly increasing, so that Prisma's
        # ORDER BY started_at lists them in the order they were applied.
        now = max(time.time_ns() // 1_000_000, last + 1)
        conn.execute(
            f'INSERT INTO "{TABLE}" (id, checksum, started_at, migration_name, '
            "applied_steps_count, finished_at) VALUES (?, ?, ?, ?, 1, ?)",
            (str(uuid.uuid4()), checksum, now, name, now),
        )
        last = now
    history = desired.migrations if isinstance(desired, Desired) else ()
    left = pending(rows(conn), history)
    if left:
        raise HealthError(
            f"{TABLE} still lacks migration {left[0].name} after recording it",
            hint="the change was rolled back; please report this as a bug",
        )
    log.info("prisma.recorded", table=TABLE, migrations=list(op.migrations))
    return list(op.migrations)
