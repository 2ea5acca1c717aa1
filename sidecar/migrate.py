"""Apply a plan inside the caller's transaction and verify it there; verified rebuilds.

Nothing here commits or rolls back: the caller holds ``BEGIN IMMEDIATE`` and rolls back on
any exception. See docs/design.md, "Applying a plan" and "Verified table rebuilds".
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from sidecar import checks, database, prisma
from sidecar.checks import quote_ident
from sidecar.conflicts import Rows, duplicates_refusal, find_duplicates, row_conflicts
from sidecar.errors import HealthError, RefusedError
from sidecar.fs import fsync_dir
from sidecar.logs import get_logger
from sidecar.schema.catalogue import Catalogue, Table, read_catalogue
from sidecar.schema.clauses import drop_not_null
from sidecar.schema.diff import make_plan
from sidecar.schema.operations import (
    AddColumn,
    CopyColumn,
    CreateIndex,
    CreateTable,
    CreateTrigger,
    CreateView,
    Operation,
    Plan,
    RebuildTable,
)
from sidecar.schema.sql import fold

log = get_logger(__name__)

# A check of the user's (health queries) run on the changed database before COMMIT.
Guard = Callable[[sqlite3.Connection], None]
# The foreign-key violations from before a change: rows of database.foreign_key_problems.
FkBefore = Callable[[], Iterable[tuple[str, int | None, str, int]]]


def apply_plan(
    conn: sqlite3.Connection,
    plan: Plan,
    desired: Catalogue,
    *,
    guards: Sequence[Guard] = (),
    fk_before: FkBefore | None = None,
    quick_checked_before: bool = False,
) -> None:
    """Screen the rows, apply every operation of ``plan``, then verify, all in the caller's
    transaction. Raises :class:`RefusedError` or :class:`HealthError`; the caller rolls back.

    ``fk_before``: the foreign-key violations from before the change, asked for only when
    the check after it finds some (None: scanned here first). ``quick_checked_before``: the
    state before passed ``quick_check`` elsewhere, so only the :func:`written_tables` are
    checked after. See docs/design.md, "Applying a plan".
    """
    if not conn.in_transaction:
        raise RuntimeError("apply_plan needs the caller's transaction (BEGIN IMMEDIATE)")
    if plan.refused:
        first = plan.refused[0]
        raise RefusedError(f"refused: {first}", hint=first.hint)
    started = time.monotonic()
    counts = database.row_counts(conn)
    if fk_before is None:
        scanned = database.foreign_key_problems(conn)
        fk_before = lambda: scanned  # noqa: E731 - a value, asked for like the lazy one
    conflicts, _ = row_conflicts(conn, plan, desired)
    if conflicts:
        _, refusal = conflicts[0]
        raise RefusedError(f"refused: {refusal}", hint=refusal.hint)
    rebuilds = [op for op in plan.operations if isinstance(op, RebuildTable)]
    if rebuilds and conn.execute("PRAGMA foreign_keys").fetchone()[0]:
        # PRAGMA foreign_keys cannot change inside a transaction, and with it on, dropping
        # the old table would run ON DELETE actions on the child tables.
        raise RefusedError(
            "foreign key enforcement is on for the migration connection; a table rebuild "
            "needs it off",
            hint="this SQLite is built with foreign keys on by default; report it as a bug",
        )
    for op in plan.operations:
        _apply_logged(conn, op)
    written = written_tables(conn, plan, tables_before=counts) if quick_checked_before else None
    verify(
        conn, desired, counts, fk_before, guards,
        foreign_key_tables=foreign_key_scope(conn, plan), quick_check_tables=written,
    )  # fmt: skip
    log.info(
        "migrate.verified",
        operations=len(plan.operations),
        quick_check="whole database" if written is None else sorted(written),
        seconds=round(time.monotonic() - started, 3),
    )


def _apply_logged(conn: sqlite3.Connection, op: Operation) -> None:
    """One operation; SQLite's errors become a refusal (a constraint) or a failed change."""
    started = time.monotonic()
    try:
        apply_operation(conn, op)
    except sqlite3.IntegrityError as exc:
        raise RefusedError(
            f"cannot {op}: {exc}",
            hint="existing rows do not satisfy the new constraint; nothing was changed",
        ) from None
    except sqlite3.Error as exc:
        raise HealthError(
            f"applying `{op}` failed: {exc}",
            hint="the change was rolled back; nothing was changed",
        ) from None
    log.info("migrate.applied", op=str(op), seconds=round(time.monotonic() - started, 3))


def written_tables(
    conn: sqlite3.Connection, plan: Plan, *, tables_before: Iterable[str]
) -> set[str] | None:
    """The tables (with their indexes) an applied ``plan`` wrote, for ``PRAGMA
    quick_check(t)``; None when only a check of the whole database covers the change (a
    rebuild, ``auto_vacuum``). See docs/design.md, "The check after the change"."""
    if (
        not checks.CHECKS_ONE_TABLE
        or any(isinstance(op, RebuildTable) for op in plan.operations)
        or conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 0
    ):
        return None
    internal = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'sqlite\\_%' ESCAPE '\\'"
    )
    scope = {"sqlite_schema", *(str(row[0]) for row in internal)}
    scope |= set(database.user_tables(conn)) - set(tables_before)
    for op in plan.operations:
        if isinstance(op, (CreateTable, CreateIndex, CopyColumn)):
            scope.add(op.table)  # a copy's UPDATE writes every row of its table
    return scope


def foreign_key_scope(conn: sqlite3.Connection, plan: Plan) -> set[str]:
    """The tables whose foreign keys the change could have broken, as seen after it: new
    and rebuilt tables, a rebuilt table's children, a new column with REFERENCES. See
    docs/design.md, "The check after the change"."""

    def parents(table: str) -> list[tuple[str, str]]:  # (parent table, child column)
        sql = f"PRAGMA foreign_key_list({quote_ident(table)})"
        return [(str(r[2]), str(r[3])) for r in conn.execute(sql)]

    ops = plan.operations
    rebuilt = {fold(op.table) for op in ops if isinstance(op, RebuildTable)}
    scope = {op.table for op in ops if isinstance(op, (CreateTable, RebuildTable))}
    for op in ops:
        if isinstance(op, AddColumn | CopyColumn) and any(
            fold(column) == fold(op.column) for _, column in parents(op.table)
        ):
            scope.add(op.table)
    if rebuilt:
        for table in database.user_tables(conn):
            if any(fold(parent) in rebuilt for parent, _ in parents(table)):
                scope.add(table)
    return scope


def verify(
    conn: sqlite3.Connection,
    desired: Catalogue,
    counts_before: dict[str, int],
    fk_before: FkBefore = lambda: (),
    guards: Sequence[Guard] = (),
    *,
    foreign_key_tables: set[str] | None = None,
    quick_check_tables: set[str] | None = None,
) -> None:
    """The checks after the change, in its transaction; :class:`HealthError` on the first
    failure. The ``*_tables`` limit a check (None: the whole database); foreign-key
    violations from before (``fk_before``) are logged, never blamed on the change."""
    hint = "the change was rolled back; the database is as it was"
    if quick_check_tables is None:
        problems = checks.quick_check(conn)
    else:
        problems = [
            p for t in sorted(quick_check_tables) for p in checks.quick_check(conn, table=t)
        ]
    if problems:
        raise HealthError(f"quick_check failed after the change: {problems[0]}", hint=hint)
    after = Counter(p[:3] for p in database.foreign_key_problems(conn, foreign_key_tables))
    known = Counter(p[:3] for p in fk_before()) if after else Counter()
    new_fk = list((after - known).elements())
    if new_fk:
        table, rowid, parent = new_fk[0]
        raise HealthError(
            f"foreign_key_check: {table} rowid {rowid} has no parent row in {parent}"
            + (f" (and {len(new_fk) - 1} more)" if len(new_fk) > 1 else ""),
            hint=hint,
        )
    if known:
        log.warning(
            "migrate.foreign_key_problems_before",
            count=known.total(),
            hint="these violations existed before the change; run PRAGMA foreign_key_check",
        )
    counts = database.row_counts(conn)
    for table, rows in counts_before.items():
        if counts.get(table) != rows:
            raise HealthError(
                f"table {quote_ident(table)} had {rows} rows, now {counts.get(table)}", hint=hint
            )
    again = make_plan(read_catalogue(conn), desired, row_counts=counts)
    if again.operations:
        raise HealthError(
            f"the schema does not match the desired one after the change: {again.operations[0]}",
            hint=hint,
        )
    for guard in guards:
        guard(conn)


def apply_operation(conn: sqlite3.Connection, op: Operation) -> None:
    """Apply one operation (no checks around it: :func:`apply_plan` is the safe entry)."""
    if isinstance(op, AddColumn):
        conn.execute(f"ALTER TABLE {quote_ident(op.table)} ADD COLUMN {op.definition}")
    elif isinstance(op, CopyColumn):
        conn.execute(f"ALTER TABLE {quote_ident(op.table)} ADD COLUMN {op.definition}")
        new, old = quote_ident(op.column), quote_ident(op.source)
        conn.execute(f"UPDATE {quote_ident(op.table)} SET {new} = {old}")
        verify_copy(conn, op.table, op.source, op.column)
    elif isinstance(op, RebuildTable):
        rebuild_table(conn, op)
    elif isinstance(op, CreateIndex):
        try:
            conn.execute(op.sql)
        except sqlite3.IntegrityError:
            table = read_catalogue(conn).table(op.table)
            duplicates = find_duplicates(conn, op, rows=Rows(table, []) if table else None)
            refusal = duplicates_refusal(op, duplicates)
            raise RefusedError(f"refused: {refusal}", hint=refusal.hint) from None
    elif isinstance(op, CreateTable | CreateView | CreateTrigger):
        conn.execute(op.sql)
    else:  # pragma: no cover (every operation type is handled above)
        raise TypeError(f"unknown operation {op!r}")


# --------------------------------------------------------------------------- rebuild


def rebuild_table(conn: sqlite3.Connection, op: RebuildTable) -> None:
    """SQLite's 12-step rebuild, inside the caller's transaction, proven lossless."""
    started = time.monotonic()
    live = read_catalogue(conn)
    table = live.table(op.table)
    if table is None:
        raise HealthError(
            f"table {quote_ident(op.table)} vanished before its rebuild",
            hint="the change was rolled back",
        )
    # Step 3: remember the indexes and triggers (dropped with the table) to recreate them.
    remembered = [
        e.sql for e in (*live.indexes, *live.triggers) if fold(e.table) == fold(table.name)
    ]
    sequence = _sequence(conn, table.name)
    statistics = _statistics(conn, table.name)
    before = column_hashes(conn, table)
    expected = _kept_definitions(table, op)
    _swap_in_new_table(conn, table, op, list(expected.values()))
    # Step 8: indexes and triggers, as they were.
    for sql in remembered:
        conn.execute(sql)
    if sequence is not None:
        _restore_sequence(conn, table.name, sequence)
    _restore_statistics(conn, statistics)
    _prove_rebuild(conn, table, op, before, expected)
    log.info(
        "migrate.rebuilt",
        table=table.name,
        relaxed=list(op.relax),
        rows=op.rows,
        seconds=round(time.monotonic() - started, 3),
    )


def _kept_definitions(table: Table, op: RebuildTable) -> dict[str, str]:
    """Folded name -> definition of every live column, verbatim (a relaxed one without its
    NOT NULL, nothing else changed)."""
    relax = {fold(c) for c in op.relax}
    return {
        fold(c.name): drop_not_null(c.definition) if fold(c.name) in relax else c.definition
        for c in table.columns
        if c.hidden != 1
    }


def _swap_in_new_table(
    conn: sqlite3.Connection, table: Table, op: RebuildTable, columns: list[str]
) -> None:
    """Steps 4 to 7: the new table (the kept columns, then the new ones), the rows copied,
    the old table dropped and the new one given its name."""
    name = quote_ident(table.name)
    temp = _temp_name(conn, table.name)
    body = ",\n  ".join((*columns, *op.columns, *table.constraints, *op.constraints))
    conn.execute(f"CREATE TABLE {quote_ident(temp)} (\n  {body}\n) {table.options}".rstrip())
    # Step 5: copy. Generated columns are computed, never copied; rowids are kept.
    copied = [quote_ident(c.name) for c in table.columns if c.hidden == 0]
    alias = _rowid_alias(table)
    if alias:
        copied.insert(0, alias)
    names = ", ".join(copied)
    # A rename made safe: the new column is given the old one's value in every row.
    into = ", ".join([names, *(quote_ident(new) for new, _ in op.copies)])
    values = ", ".join([names, *(quote_ident(old) for _, old in op.copies)])
    conn.execute(f"INSERT INTO {quote_ident(temp)} ({into}) SELECT {values} FROM {name}")
    # Steps 6-7: drop the old table, give the new one its name. legacy_alter_table keeps the
    # rename from re-parsing views and triggers that mention the (momentarily missing) table:
    # their text refers to it by name and is valid again once the rename is done.
    legacy = int(conn.execute("PRAGMA legacy_alter_table").fetchone()[0])
    conn.execute(f"DROP TABLE {name}")
    conn.execute("PRAGMA legacy_alter_table = ON")
    try:
        conn.execute(f"ALTER TABLE {quote_ident(temp)} RENAME TO {name}")
    finally:
        conn.execute(f"PRAGMA legacy_alter_table = {legacy}")


def _prove_rebuild(
    conn: sqlite3.Connection,
    table: Table,
    op: RebuildTable,
    before: dict[str, str],
    expected: dict[str, str],
) -> None:
    """Same rows, same values in every old column, in the same order; every old column
    defined as before (a relaxed one as before but nullable); every copy exact."""
    name = quote_ident(table.name)
    relax = {fold(c) for c in op.relax}
    rebuilt = read_catalogue(conn).table(table.name)
    after = column_hashes(conn, table if rebuilt is None else rebuilt, only=list(before))
    if after != before:
        changed = sorted(col for col in before if before[col] != after.get(col))
        raise HealthError(
            f"rebuild of {name} changed the values of column(s) {', '.join(changed)}",
            hint="the change was rolled back; please report this as a bug",
        )
    defined = {fold(c.name): c for c in (rebuilt.columns if rebuilt else ())}
    for folded, definition in expected.items():
        column = defined.get(folded)
        if (
            column is None
            or column.definition != definition
            or (folded in relax and column.notnull)
        ):
            raise HealthError(
                f"rebuild of {name} changed the definition of column {folded}",
                hint="the change was rolled back; please report this as a bug",
            )
    for new, old in op.copies:
        verify_copy(conn, table.name, old, new)


def verify_copy(conn: sqlite3.Connection, table: str, old: str, new: str) -> None:
    """Prove a rename's copy: the new column holds exactly the old column's value (type
    included: 1, 1.0 and '1' differ) in every row, in key order; else the change rolls back."""
    live = read_catalogue(conn).table(table)
    hashes = column_hashes(conn, live, only=[old, new]) if live is not None else {}
    if len(hashes) != 2 or hashes[old] != hashes[new]:
        raise HealthError(
            f"the copy of {quote_ident(table)}.{quote_ident(old)} into {quote_ident(new)} "
            "does not hold every old value",
            hint="the change was rolled back; does the new column's type or a constraint "
            "change the values?",
        )
    log.info("migrate.copied", table=table, old=old, new=new)


def _temp_name(conn: sqlite3.Connection, name: str) -> str:
    existing = {fold(str(r[0])) for r in conn.execute("SELECT name FROM sqlite_master")}
    candidate = f"_sidecar_new_{name}"
    n = 1
    while fold(candidate) in existing:
        n += 1
        candidate = f"_sidecar_new{n}_{name}"
    return candidate


def _rowid_alias(table: Table) -> str | None:
    """A name for the rowid that no column shadows; None for WITHOUT ROWID tables."""
    if table.without_rowid:
        return None
    names = {fold(c.name) for c in table.columns}
    return next((a for a in ("rowid", "_rowid_", "oid") if a not in names), None)


def _order(table: Table) -> str:
    alias = _rowid_alias(table)
    if alias:
        return alias
    keys = sorted((c for c in table.columns if c.pk), key=lambda c: c.pk)
    return ", ".join(quote_ident(c.name) for c in keys or table.columns)


def column_hashes(
    conn: sqlite3.Connection, table: Table, *, only: list[str] | None = None
) -> dict[str, str]:
    """sha256 per column over its values in key order (rowid, or the primary key).

    One scan of the table; each batch is transposed and every column's values are hashed
    through ``repr``, which keeps 1, 1.0, '1' and b'1' apart, at C speed."""
    columns = [c.name for c in table.columns if c.hidden != 1]
    if only is not None:
        wanted = {fold(n) for n in only}
        columns = [c for c in columns if fold(c) in wanted]
    if not columns:
        return {}
    digests = [hashlib.sha256() for _ in columns]
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples, whatever the connection's factory
    selected = ", ".join(quote_ident(c) for c in columns)
    cursor.execute(f"SELECT {selected} FROM {quote_ident(table.name)} ORDER BY {_order(table)}")
    while batch := cursor.fetchmany(10_000):
        for digest, values in zip(digests, zip(*batch, strict=True), strict=True):
            digest.update(repr(values).encode())
    # Keys are the names as given in `only` (the old table's spelling) for a direct compare.
    spelled = {fold(n): n for n in (only or columns)}
    return {spelled[fold(c)]: d.hexdigest() for c, d in zip(columns, digests, strict=True)}


def _sequence(conn: sqlite3.Connection, table: str) -> int | None:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    if not exists:
        return None
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return None if row is None else int(row[0])


def _restore_sequence(conn: sqlite3.Connection, table: str, value: int) -> None:
    """AUTOINCREMENT never reuses an id: keep the old high-water mark (it may exceed max(id))."""
    updated = conn.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (value, table)
    ).rowcount
    if not updated:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, value))


# The planner's statistics (ANALYZE): DROP TABLE deletes the table's rows from them.
_STAT_TABLES = ("sqlite_stat1", "sqlite_stat4")


def _statistics(conn: sqlite3.Connection, table: str) -> dict[str, list[tuple[object, ...]]]:
    """The rows ANALYZE keeps about ``table`` and its indexes, to put back after a rebuild:
    the same rows under the same index names, so the statistics stay true, and the app's
    queries keep their plans instead of waiting for the next ANALYZE."""
    found: dict[str, list[tuple[object, ...]]] = {}
    for stat in _STAT_TABLES:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (stat,)).fetchone():
            sql = f"SELECT * FROM {stat} WHERE tbl = ? COLLATE NOCASE"  # a name from _STAT_TABLES
            found[stat] = [tuple(row) for row in conn.execute(sql, (table,))]
    return found


def _restore_statistics(
    conn: sqlite3.Connection, statistics: dict[str, list[tuple[object, ...]]]
) -> None:
    for stat, rows in statistics.items():
        for row in rows:
            marks = ", ".join("?" * len(row))
            conn.execute(f"INSERT INTO {stat} VALUES ({marks})", row)


# --------------------------------------------------------------------------- fresh database


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
