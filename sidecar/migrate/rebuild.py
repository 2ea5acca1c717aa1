"""Verified table rebuilds: SQLite's 12-step procedure, inside the caller's transaction,
proven lossless by hashing every old column before and after.
See docs/design.md, "Verified table rebuilds".
"""

from __future__ import annotations

import hashlib
import sqlite3
import time

from sidecar.errors import HealthError
from sidecar.logs import get_logger
from sidecar.schema.catalogue import Table, read_catalogue
from sidecar.schema.clauses import drop_not_null
from sidecar.schema.operations import (
    RebuildTable,
)
from sidecar.schema.sql import fold
from sidecar.sqlite import quote_ident

log = get_logger(__name__)


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
    NOT NULL, one whose foreign key changes with it changed, nothing else)."""
    relax = {fold(c) for c in op.relax}
    changed = dict(op.foreign_keys)
    kept = {}
    for column in table.columns:
        if column.hidden == 1:
            continue
        definition = changed.get(column.definition, column.definition)
        kept[fold(column.name)] = (
            drop_not_null(definition) if fold(column.name) in relax else definition
        )
    return kept


def _kept_constraints(table: Table, op: RebuildTable) -> list[str]:
    """The live table constraints, verbatim (a foreign key the plan changes changed, or left
    out when the plan drops it), then the new ones."""
    changed = dict(op.foreign_keys)
    kept = [changed.get(text, text) for text in table.constraints]
    return [text for text in (*kept, *op.constraints) if text]


def _swap_in_new_table(
    conn: sqlite3.Connection, table: Table, op: RebuildTable, columns: list[str]
) -> None:
    """Steps 4 to 7: the new table (the kept columns, then the new ones), the rows copied,
    the old table dropped and the new one given its name."""
    name = quote_ident(table.name)
    temp = _temp_name(conn, table.name)
    body = ",\n  ".join((*columns, *op.columns, *_kept_constraints(table, op)))
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
    if rebuilt is None or list(rebuilt.constraints) != _kept_constraints(table, op):
        raise HealthError(
            f"rebuild of {name} changed its table constraints beyond the plan",
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
