"""The catalogue of a database: its tables, columns, indexes, views and triggers.

:func:`read_catalogue` only reads ``sqlite_master`` and pragmas. Names compare like SQLite
compares them (:func:`sidecar.schema.sql.fold`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import cached_property

from sidecar.schema.sql import fold, parenthesised, shape, split_top, tokenize
from sidecar.sqlite import quote_ident


@dataclass(frozen=True)
class Column:
    """One column: ``pragma table_xinfo`` plus its definition text from the CREATE TABLE."""

    name: str
    type: str
    notnull: bool
    default: str | None
    pk: int
    hidden: int  # 0 normal, 1 hidden (virtual tables), 2 generated VIRTUAL, 3 generated STORED
    definition: str  # as written, name included: '"currency" TEXT NOT NULL DEFAULT \'USD\''

    @property
    def generated(self) -> bool:
        return self.hidden in (2, 3)

    @cached_property
    def shape(self) -> tuple[str, ...]:
        """The definition after the name, normalised: equal shapes mean equal columns."""
        return shape(self.definition, 1)


@dataclass(frozen=True)
class Table:
    name: str
    sql: str
    columns: tuple[Column, ...]
    constraints: tuple[str, ...] = ()  # table constraints as written
    options: str = ""  # after the closing parenthesis: WITHOUT ROWID, STRICT
    without_rowid: bool = False
    strict: bool = False
    virtual: bool = False

    def column(self, name: str) -> Column | None:
        return self._by_name.get(fold(name))

    @cached_property
    def _by_name(self) -> dict[str, Column]:
        return {fold(c.name): c for c in self.columns}

    @property
    def autoincrement(self) -> bool:
        return any(t.is_word("autoincrement") for t in tokenize(self.sql))


@dataclass(frozen=True)
class Entity:
    """An index, view or trigger: compared by its SQL text, token by token."""

    type: str
    name: str
    table: str
    sql: str

    @cached_property
    def shape(self) -> tuple[str, ...]:
        return shape(self.sql)


@dataclass(frozen=True)
class Catalogue:
    tables: tuple[Table, ...] = ()
    indexes: tuple[Entity, ...] = ()
    views: tuple[Entity, ...] = ()
    triggers: tuple[Entity, ...] = ()
    # Every CREATE statement in creation order (what a fresh database is made from).
    statements: tuple[str, ...] = ()

    def table(self, name: str) -> Table | None:
        return self._tables.get(fold(name))

    def view(self, name: str) -> Entity | None:
        return self._views.get(fold(name))

    @cached_property
    def _tables(self) -> dict[str, Table]:
        return {fold(t.name): t for t in self.tables}

    @cached_property
    def _views(self) -> dict[str, Entity]:
        return {fold(v.name): v for v in self.views}


def parse_create_table(sql: str) -> tuple[dict[str, str], tuple[str, ...], str]:
    """Column definitions by folded name, table constraints and trailing options of a
    ``CREATE TABLE`` statement as stored in ``sqlite_master``."""
    tokens = tokenize(sql)
    try:
        opening, closing = parenthesised(tokens, 0)
    except (StopIteration, ValueError):
        return {}, (), ""
    columns: dict[str, str] = {}
    constraints: list[str] = []
    for text, item in split_top(sql, tokens[opening + 1 : closing]):
        if item[0].is_word("constraint", "primary", "unique", "check", "foreign"):
            constraints.append(text)
        else:
            columns[fold(item[0].value)] = text
    options = sql[tokens[closing].end :].strip()
    return columns, tuple(constraints), options


def read_catalogue(conn: sqlite3.Connection) -> Catalogue:
    """The catalogue of the ``main`` database. Read-only; works inside a transaction.

    SQLite's internal ``sqlite_*`` tables, automatic indexes (compared through their table's
    constraints) and the shadow tables of virtual tables are left out.
    """
    kinds = {
        str(row[0]): (str(row[1]), bool(row[2]), bool(row[3]))
        for row in conn.execute(
            "SELECT name, type, wr, strict FROM pragma_table_list WHERE schema = 'main'"
        )
    }
    tables: list[Table] = []
    entities: dict[str, list[Entity]] = {"index": [], "view": [], "trigger": []}
    statements: list[str] = []
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_master ORDER BY rowid"
    ).fetchall()
    for kind, raw_name, raw_table, raw_sql in rows:
        if raw_sql is None or str(raw_name).startswith("sqlite_"):
            continue
        name, table, sql = str(raw_name), str(raw_table), str(raw_sql)
        if kind == "table":
            table_type, without_rowid, strict = kinds.get(name, ("table", False, False))
            if table_type == "shadow":
                continue
            tables.append(_read_table(conn, name, sql, table_type, wr=without_rowid, strict=strict))
        elif kind in entities:
            entities[kind].append(Entity(kind, name, table, sql))
        statements.append(sql)
    return Catalogue(
        tuple(tables),
        tuple(entities["index"]),
        tuple(entities["view"]),
        tuple(entities["trigger"]),
        tuple(statements),
    )


def _read_table(
    conn: sqlite3.Connection, name: str, sql: str, table_type: str, *, wr: bool, strict: bool
) -> Table:
    definitions, constraints, options = parse_create_table(sql)
    columns = []
    for cid, col, ctype, notnull, default, pk, hidden in conn.execute(
        'SELECT cid, name, type, "notnull", dflt_value, pk, hidden '
        "FROM pragma_table_xinfo(?, 'main') ORDER BY cid",
        (name,),
    ):
        del cid
        text = definitions.get(fold(str(col))) or f"{quote_ident(str(col))} {ctype}".strip()
        columns.append(
            Column(
                str(col),
                str(ctype),
                bool(notnull),
                None if default is None else str(default),
                int(pk),
                int(hidden),
                text,
            )
        )
    return Table(
        name, sql, tuple(columns), constraints, options, wr, strict, table_type == "virtual"
    )
