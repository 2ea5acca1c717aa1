"""Apply a plan inside the caller's transaction and verify it there, before COMMIT.

Nothing here commits or rolls back: the caller holds ``BEGIN IMMEDIATE`` and rolls back on
any exception. See docs/design.md, "Applying a plan" and "The check after the change".
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from sidecar import database, sqlite
from sidecar.errors import HealthError, RefusedError, and_more
from sidecar.logs import get_logger
from sidecar.migrate.conflicts import Rows, duplicates_refusal, find_duplicates, row_conflicts
from sidecar.migrate.rebuild import rebuild_table, verify_copy
from sidecar.schema.catalogue import Catalogue, read_catalogue
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
    ReplaceView,
)
from sidecar.schema.sql import fold
from sidecar.sqlite import quote_ident

log = get_logger(__name__)

# A check of the user's (health queries) run on the changed database before COMMIT.
Guard = Callable[[sqlite3.Connection], None]
# The foreign-key violations from before a change: rows of database.foreign_key_problems.
# The violations from before the change, of these tables' keys (None: every table's).
FkBefore = Callable[[set[str] | None], Iterable[tuple[str, int | None, str, int]]]


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
        fk_before = lambda _tables: scanned  # noqa: E731 - a value, asked for like the lazy one
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
        not sqlite.CHECKS_ONE_TABLE
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
    fk_before: FkBefore = lambda _tables: (),
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
        problems = sqlite.quick_check(conn)
    else:
        problems = [
            p for t in sorted(quick_check_tables) for p in sqlite.quick_check(conn, table=t)
        ]
    if problems:
        raise HealthError(f"quick_check failed after the change: {problems[0]}", hint=hint)
    after = Counter(p[:3] for p in database.foreign_key_problems(conn, foreign_key_tables))
    known = Counter(p[:3] for p in fk_before(foreign_key_tables)) if after else Counter()
    new_fk = list((after - known).elements())
    if new_fk:
        table, rowid, parent = new_fk[0]
        raise HealthError(
            f"foreign_key_check: {table} rowid {rowid} has no parent row in {parent}"
            + and_more(new_fk),
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
    elif isinstance(op, ReplaceView):
        # DROP VIEW deletes the triggers on it too: they are created again as they were.
        conn.execute(f"DROP VIEW {quote_ident(op.name)}")
        for sql in (op.sql, *op.triggers):
            conn.execute(sql)
    elif isinstance(op, CreateTable | CreateView | CreateTrigger):
        conn.execute(op.sql)
    else:  # pragma: no cover (every operation type is handled above)
        raise TypeError(f"unknown operation {op!r}")
