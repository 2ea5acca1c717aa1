"""A missing database created from the desired schema, atomically (built beside it,
verified, fsynced, then linked into place), never over an orphan -wal or -journal.
"""

from __future__ import annotations

import os
from pathlib import Path

from sidecar import database
from sidecar.errors import RefusedError
from sidecar.fs import fsync_dir
from sidecar.logs import get_logger
from sidecar.migrate import prisma
from sidecar.migrate.apply import verify
from sidecar.schema.catalogue import Catalogue

log = get_logger(__name__)


def refuse_orphan_sides(db: Path) -> None:
    """A -wal or -journal without its database holds committed data or a rollback: a new
    database beside it would adopt (or be damaged by) it."""
    if Path(f"{db}-wal").exists() or Path(f"{db}-journal").exists():
        raise RefusedError(
            f"database {db} is missing but its -wal or -journal file exists",
            hint="restore the database file (sidecar restore latest) before deploying",
        )


def create_fresh(db: Path, desired: Catalogue) -> None:
    """Create the database from the desired schema, atomically: build it in a temporary file
    in the same folder, verify, fsync, then link it into place. A crash leaves no half-made
    database, and an existing database is never replaced."""
    refuse_orphan_sides(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    temp = db.with_name(f".{db.name}.sidecar-new-{os.getpid()}")
    for suffix in ("", "-journal"):
        Path(f"{temp}{suffix}").unlink(missing_ok=True)
    try:
        conn = database.connect(temp)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("BEGIN IMMEDIATE")
            for sql in desired.statements:
                conn.execute(sql)
            verify(conn, desired, {})
            prisma.record(conn, desired)  # Prisma's own rows, in the same transaction
            conn.execute("COMMIT")
        finally:
            conn.close()
        with temp.open("rb+") as handle:
            os.fsync(handle.fileno())
        _place(temp, db)
        fsync_dir(db.parent)
    finally:
        temp.unlink(missing_ok=True)
    log.info("migrate.created", database=str(db), tables=len(desired.tables))


def _place(temp: Path, db: Path) -> None:
    try:
        os.link(temp, db)  # fails if a database appeared meanwhile: never overwrite one
    except FileExistsError:
        raise RefusedError(
            f"database {db} appeared while it was being created",
            hint="run the deploy again; it will migrate the new file",
        ) from None
    except OSError:
        # A file system without hard links: a rename, after one more look for a newcomer.
        if db.exists():
            raise RefusedError(
                f"database {db} appeared while it was being created",
                hint="run the deploy again; it will migrate the new file",
            ) from None
        os.replace(temp, db)
