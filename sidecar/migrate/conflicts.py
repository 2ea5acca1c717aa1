"""What the existing rows rule out (duplicates under a new UNIQUE, a CHECK the rows fail, a
REFERENCES without a parent), found read-only before a plan writes anything.
See docs/design.md, "What the rows rule out".
"""

from __future__ import annotations

import functools
import itertools
import sqlite3

from sidecar import sqlite
from sidecar.schema.catalogue import Catalogue, Column, Table, read_catalogue
from sidecar.schema.clauses import (
    check_expressions,
    column_words,
    index_parts,
    new_column_value,
    references,
    unique_terms,
)
from sidecar.schema.operations import (
    AddColumn,
    CopyColumn,
    CreateIndex,
    CreateTable,
    Operation,
    Plan,
    RebuildTable,
    Refusal,
)
from sidecar.schema.sql import fold, names_in, tokenize, tokens_of
from sidecar.sqlite import quote_ident

Conflict = tuple[Operation, Refusal]


def row_conflicts(
    conn: sqlite3.Connection, plan: Plan, desired: Catalogue
) -> tuple[list[Conflict], list[str]]:
    """The operations the existing rows rule out, with their refusals, and what could not be
    evaluated here (checked when applied). The rows are evaluated as they will be once the
    plan's new columns exist (their DEFAULT, generated expression, or NULL)."""
    live = read_catalogue(conn)
    fresh = {fold(op.table) for op in plan.operations if isinstance(op, CreateTable)}
    new: dict[str, list[Column]] = {}
    copies: dict[str, dict[str, str]] = {}  # table -> new column -> the old one it copies
    for op in plan.operations:
        wanted = desired.table(getattr(op, "table", ""))
        pairs = _copies(op)
        if pairs:
            copies[fold(getattr(op, "table", ""))] = {fold(n): o for n, o in pairs}
        if isinstance(op, New) and wanted is not None:
            names = (
                [op.column]
                if isinstance(op, AddColumn | CopyColumn)
                else [tokenize(d)[0].value for d in op.columns]
            )
            for name in names:
                column = wanted.column(name)
                if column is not None:
                    new.setdefault(fold(op.table), []).append(column)
    found: list[Conflict] = []
    unchecked: list[str] = []
    for op in plan.operations:
        table = live.table(getattr(op, "table", ""))
        if table is None or fold(table.name) in fresh:
            continue
        try:
            folded = fold(table.name)
            rows = Rows(table, new.get(folded, []), copies.get(folded, {}))
            refusal = _conflict(conn, op, rows, live)
        except _Unknown as unknown:
            unchecked.append(f"{op}: {unknown} (checked when applied)")
            continue
        if refusal is not None:
            found.append((op, refusal))
    return found, unchecked


def required_nulls(conn: sqlite3.Connection, live: Catalogue, desired: Catalogue) -> list[Refusal]:
    """Kept columns that the desired schema makes NOT NULL while rows hold NULL in them: the
    new app reads a required field as NULL (Prisma's client fails the query), so refused. The
    column itself is never tightened (drift); only its rows are counted. With the backfill
    a migration's table rebuild computes for it (``coalesce``), the hint gives it."""
    backfills = {
        (fold(item.table), fold(item.column)): item.statement
        for item in getattr(desired, "not_executed", ())
        if item.column
    }
    found = []
    for wanted in desired.tables:
        table = live.table(wanted.name)
        if table is None or table.virtual or wanted.virtual:
            continue
        for column in wanted.columns:
            current = table.column(column.name)
            if not column.notnull or current is None or current.notnull or current.hidden:
                continue
            name = quote_ident(current.name)
            sql = f"SELECT count(*) FROM {quote_ident(table.name)} WHERE {name} IS NULL"
            nulls = int(conn.execute(sql).fetchone()[0])
            if not nulls:
                continue
            backfill = backfills.get((fold(table.name), fold(column.name)))
            how = (
                f"`{backfill.rstrip(';')} WHERE {name} IS NULL;` (the migration's own backfill)"
                if backfill
                else f"`UPDATE {quote_ident(table.name)} SET {name} = ... WHERE {name} IS NULL;`"
            )
            found.append(
                Refusal(
                    f"{quote_ident(table.name)}.{name}",
                    f"{nulls} row(s) hold NULL, and the desired schema makes the column NOT "
                    "NULL (a required field): the new app cannot read them",
                    f"backfill them before deploying, {how}, or keep the field optional",
                )
            )
    return found


New = AddColumn | CopyColumn | RebuildTable  # operations adding columns


def _copies(op: Operation) -> list[tuple[str, str]]:
    """(new column, old column) of the renames ``op`` copies (SIDECAR_RENAMES=copy)."""
    if isinstance(op, CopyColumn):
        return [(op.column, op.source)]
    if isinstance(op, RebuildTable):
        return list(op.copies)
    return []


class _Unknown(Exception):
    """A check the preview cannot evaluate (SQLite enforces it when the change is applied)."""


class Rows:
    """The rows of a live table as they will be once the plan's new columns exist: a
    subquery giving every live column and, for each new one, what existing rows hold."""

    def __init__(
        self,
        table: Table,
        new: list[Column],
        copies: dict[str, str] | None = None,
    ) -> None:
        self.table = table
        self.new = new
        self.copies = copies or {}  # folded new column -> the live column it copies
        self.columns = {fold(c.name) for c in (*table.columns, *new)}

    @functools.cached_property
    def _source(self) -> tuple[str, list[object]]:
        """(subquery, its parameters); made when a check first needs it, so a default that
        cannot be evaluated leaves unchecked only the checks that read it."""
        params: list[object] = []
        values = []
        for column in self.new:
            expression, collate = new_column_value(column.definition)
            source = self.copies.get(fold(column.name))
            if source is not None:
                expression = quote_ident(source)  # a rename's copy: the old column's value
            elif column.generated:
                expression = self.only_columns(expression)
            elif expression != "NULL":
                params.append(_stored_default(column, expression))
                expression = "?"
            collation = f" COLLATE {quote_ident(collate)}" if collate else ""
            values.append(f"({expression}){collation} AS {quote_ident(column.name)}")
        source = quote_ident(self.table.name)
        return (f"(SELECT *, {', '.join(values)} FROM {source})" if values else source), params

    @property
    def sql(self) -> str:
        return self._source[0]

    @property
    def params(self) -> list[object]:
        return self._source[1]

    def mentions_new(self, sql: str) -> list[str]:
        names = set(names_in(tokens_of(sql)))
        return [c.name for c in self.new if fold(c.name) in names]

    def only_columns(self, sql: str) -> str:
        """``sql`` with each double-quoted name that is no column here written as the string
        it is to SQLite (its double-quoted-string fallback, made explicit): the query then
        means the same with the fallback on or off."""
        tokens = tokenize(sql)
        out, pos = [], 0
        for i, token in enumerate(tokens):
            before = tokens[i - 1] if i else None
            after = tokens[i + 1] if i + 1 < len(tokens) else None
            if (
                token.kind == "ident"
                and token.text.startswith('"')
                and fold(token.value) not in self.columns
                and not (after is not None and after.text in ("(", "."))
                and not (before is not None and (before.text == "." or before.is_word("collate")))
            ):
                out += [sql[pos : token.start], "'" + token.value.replace("'", "''") + "'"]
                pos = token.end
        return "".join([*out, sql[pos:]])


# SQLite's built-in functions whose value differs from one call to the next within a
# statement (https://www.sqlite.org/deterministic.html); date and time functions with 'now'
# are stable within one statement, so a rebuild's copy gives every row the same value.
_PER_ROW = frozenset({"random", "randomblob", "changes", "total_changes", "last_insert_rowid"})


def _stored_default(column: Column, expression: str) -> object:
    """The value a DEFAULT stores in ``column`` (its type affinity applied), computed once in
    an in-memory database. A default that differs per row (``random()``) is unknown here."""
    tokens = tokenize(expression)
    for token, after in itertools.pairwise(tokens):
        if token.is_name and after.text == "(" and token.norm in _PER_ROW:
            raise _Unknown(
                f"the default {expression} of {quote_ident(column.name)} differs per row"
            )
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute(f"CREATE TABLE p (x {column.type} DEFAULT {expression})")
        probe.execute("INSERT INTO p DEFAULT VALUES")
        return probe.execute("SELECT x FROM p").fetchone()[0]
    except sqlite3.Error as exc:
        raise _Unknown(f"the default of {quote_ident(column.name)}: {exc}") from None
    finally:
        probe.close()


def _conflict(
    conn: sqlite3.Connection, op: Operation, rows: Rows, live: Catalogue
) -> Refusal | None:
    try:
        if isinstance(op, CreateIndex) and op.unique:
            return _unique_conflict(conn, op, rows)
        for column, _ in _copies(op):
            refusal = _copy_conflict(conn, getattr(op, "table", ""), column, rows)
            if refusal is not None:
                return refusal
        if isinstance(op, RebuildTable):
            return _rebuild_conflict(conn, op, rows, live)
        if isinstance(op, AddColumn | CopyColumn):
            return _reference_conflict(conn, op.table, op.definition, rows, live)
    except sqlite3.OperationalError as exc:
        if sqlite.is_busy(exc):
            raise
        raise _Unknown(str(exc)) from None
    return None


def _unique_conflict(conn: sqlite3.Connection, op: CreateIndex, rows: Rows) -> Refusal | None:
    duplicates = find_duplicates(conn, op, rows=rows)
    if not duplicates:
        return None
    refusal = duplicates_refusal(op, duplicates)
    added = rows.mentions_new(op.sql)
    if added:
        names = ", ".join(quote_ident(n) for n in added)
        reason = f"{refusal.reason}, from the new column(s) {names} (their value in every row)"
        refusal = Refusal(refusal.object, reason, refusal.hint)
    return refusal


def _rebuild_conflict(
    conn: sqlite3.Connection, op: RebuildTable, rows: Rows, live: Catalogue
) -> Refusal | None:
    """The rebuild copies every row into a table with every CHECK (old and new) and the new
    UNIQUE and REFERENCES clauses: the rows that copy would reject."""
    table = quote_ident(op.table)
    texts = [
        *(c.definition for c in rows.table.columns),
        *rows.table.constraints,
        *op.columns,
        *op.constraints,
    ]
    expressions = [e for text in texts for e in check_expressions(text)]
    if expressions:  # one scan for all of them: this also runs under the write lock
        counts = ", ".join(
            f"coalesce(sum(CASE WHEN NOT {rows.only_columns(e)} THEN 1 END), 0)"
            for e in expressions
        )
        failing = conn.execute(f"SELECT {counts} FROM {rows.sql}", rows.params).fetchone()
        for expression, count in zip(expressions, failing, strict=True):
            if count:
                return Refusal(
                    table,
                    f"CHECK {expression} fails for {count} existing row(s) once the rebuild "
                    "copies them",
                    "give the new column a DEFAULT that satisfies the CHECK, or fix those rows",
                )
    for text in op.constraints:
        terms = unique_terms(text)
        if terms is not None:
            index = CreateIndex(
                f"{op.table} {text}", op.table, f"CREATE UNIQUE INDEX x ON {table} {terms}", True
            )
            refusal = _unique_conflict(conn, index, rows)
            if refusal is not None:
                return Refusal(table, f"`{text}`: {refusal.reason}", refusal.hint)
    for text in (*op.columns, *op.constraints):
        refusal = _reference_conflict(conn, op.table, text, rows, live)
        if refusal is not None:
            return refusal
    return None


def _copy_conflict(conn: sqlite3.Connection, table: str, name: str, rows: Rows) -> Refusal | None:
    """A rename's copy that the new column's NOT NULL or inline UNIQUE would reject (its
    CHECK, UNIQUE table constraints and REFERENCES are checked over the copied values as for
    any new column)."""
    column = next((c for c in rows.new if fold(c.name) == fold(name)), None)
    if column is None:
        return None
    target = f"{quote_ident(table)}.{quote_ident(column.name)}"
    if column.notnull:
        sql = f"SELECT count(*) FROM {rows.sql} WHERE {quote_ident(column.name)} IS NULL"
        nulls = int(conn.execute(sql, rows.params).fetchone()[0])
        if nulls:
            return Refusal(
                target,
                f"NOT NULL, but the column it copies holds NULL in {nulls} row(s)",
                "fill those rows first, or make the new column optional",
            )
    if "unique" in column_words(column.definition):
        index = CreateIndex(
            f"{table} UNIQUE ({column.name})",
            table,
            f"CREATE UNIQUE INDEX x ON {quote_ident(table)} ({quote_ident(column.name)})",
            True,
        )
        return _unique_conflict(conn, index, rows)
    return None


def _reference_conflict(
    conn: sqlite3.Connection, table: str, definition: str, rows: Rows, live: Catalogue
) -> Refusal | None:
    """A new REFERENCES column whose value in existing rows names no parent row: the check
    after the change would fail (foreign_key_check), so it is refused before."""
    target = references(definition)
    if target is None:
        return None
    children, parent_name, parent_columns = target
    parent = live.table(parent_name)
    if parent is not None and not parent_columns:
        parent_columns = [c.name for c in sorted(parent.columns, key=lambda c: c.pk) if c.pk]
    known = parent is None or (len(parent_columns) == 1 and parent.column(parent_columns[0]))
    if len(children) != 1 or not known:
        raise _Unknown(f"the foreign key ({', '.join(children)}) -> {quote_ident(parent_name)}")
    column = quote_ident(children[0])
    if parent is None:  # a new (empty) table, or none at all
        sql = f"SELECT count(*) FROM {rows.sql} WHERE {column} IS NOT NULL"
    else:
        sql = (
            f"SELECT count(*) FROM {rows.sql} AS s WHERE s.{column} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {quote_ident(parent.name)} AS p "
            f"WHERE p.{quote_ident(parent_columns[0])} = s.{column})"
        )
    orphans = int(conn.execute(sql, rows.params).fetchone()[0])
    if not orphans:
        return None
    return Refusal(
        f"{quote_ident(table)}.{column}",
        f"REFERENCES {quote_ident(parent_name)}: {orphans} existing row(s) would point at no "
        f"row of {quote_ident(parent_name)}",
        "add the parent rows first, or give the new column no DEFAULT (NULL)",
    )


def find_duplicates(
    conn: sqlite3.Connection, op: CreateIndex, limit: int = 5, *, rows: Rows | None = None
) -> list[str]:
    """Up to ``limit`` duplicate key values (as text) that would break the UNIQUE index;
    over ``rows`` (the table with the plan's new columns) when given."""
    terms, where = index_parts(op.sql)
    if rows is not None:
        terms = [rows.only_columns(term) for term in terms]
        where = rows.only_columns(where) if where else None
    source, params = (rows.sql, rows.params) if rows else (quote_ident(op.table), [])
    keys = ", ".join(terms)
    # NULLs are distinct in a UNIQUE index: rows with any NULL key never conflict.
    filters = [f"({term}) IS NOT NULL" for term in terms] + ([f"({where})"] if where else [])
    found = conn.execute(
        f"SELECT {keys}, count(*) FROM {source} WHERE {' AND '.join(filters)} "
        f"GROUP BY {keys} HAVING count(*) > 1 LIMIT {int(limit)}",
        params,
    ).fetchall()
    return [", ".join(repr(value) for value in row[:-1]) + f" ({row[-1]} rows)" for row in found]


def duplicates_refusal(op: CreateIndex, duplicates: list[str]) -> Refusal:
    return Refusal(
        f"unique index {quote_ident(op.name)} on {quote_ident(op.table)}",
        "existing rows hold duplicate values: " + "; ".join(duplicates),
        "remove or merge the duplicate rows, then deploy again",
    )
