"""Property: any additive desired schema over any populated live schema migrates losslessly.

Hypothesis draws a live schema (awkward names included) with random rows, then a desired
schema that only adds: columns of every kind (in place and by rebuild), tables, indexes.
After the migration every desired table and column exists, every old row and value is still
there, and a second plan has nothing to do.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sidecar import database, sqlite
from sidecar.migrate import apply
from sidecar.schema.catalogue import Catalogue, read_catalogue
from sidecar.schema.desired import load_desired
from sidecar.schema.diff import make_plan
from sidecar.schema.sql import fold
from sidecar.sqlite import quote_ident as q

NAMES = ["a", "b c", "order", "Ünï", "MixedCase", "select", 'x"y', "日本", "group", "Value"]
TYPES = ["INTEGER", "TEXT", "REAL", "BLOB", "NUMERIC", ""]
NEW_COLUMNS = [
    "{n} TEXT",
    "{n} INTEGER NOT NULL DEFAULT 7",
    "{n} TEXT NOT NULL DEFAULT 'x'",
    "{n} DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP",
    "{n} TEXT UNIQUE",
    "{n} INTEGER CHECK ({n} IS NULL OR {n} > 0)",
    "{n} REAL DEFAULT (1.5 * 2)",
    "{n} INTEGER AS (length(CAST(id AS TEXT))) STORED",
    "{n} INTEGER AS (id + 1) VIRTUAL",
    "{n} TEXT COLLATE NOCASE DEFAULT 'q'",
    "{n} INTEGER REFERENCES {parent}(id)",
    "{n} BLOB NOT NULL DEFAULT x'00'",
]
VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)


@dataclass(frozen=True)
class Case:
    live: str
    desired: str
    inserts: list[tuple[str, list[Any]]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    table_names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique_by=fold))
    live: list[str] = []
    desired: list[str] = []
    inserts: list[tuple[str, list[Any]]] = []
    for i, table in enumerate(table_names):
        names = draw(
            st.lists(
                st.sampled_from([n for n in NAMES if fold(n) != "id"]),
                min_size=1,
                max_size=3,
                unique_by=fold,
            )
        )
        types = [draw(st.sampled_from(TYPES)) for _ in names]
        kind = draw(st.sampled_from(["rowid", "autoincrement", "without rowid"]))
        key = {
            "rowid": "id INTEGER PRIMARY KEY",
            "autoincrement": "id INTEGER PRIMARY KEY AUTOINCREMENT",
            "without rowid": "id INTEGER NOT NULL PRIMARY KEY",
        }[kind]
        options = " WITHOUT ROWID" if kind == "without rowid" else ""
        old = [key] + [f"{q(n)} {t}".strip() for n, t in zip(names, types, strict=True)]
        free = [n for n in NAMES if fold(n) not in {fold(m) for m in names}]
        added = draw(st.lists(st.sampled_from(free), max_size=3, unique_by=fold))
        templates = [draw(st.sampled_from(NEW_COLUMNS)) for _ in added]
        parent = q(table_names[draw(st.integers(0, i))])
        new = [t.format(n=q(n), parent=parent) for n, t in zip(added, templates, strict=True)]
        live.append(f"CREATE TABLE {q(table)} ({', '.join(old)}){options};")
        desired.append(f"CREATE TABLE {q(table)} ({', '.join(old + new)}){options};")
        if draw(st.booleans()):
            column = draw(st.sampled_from(names))
            desired.append(
                f"CREATE INDEX {q(table + ' by ' + column)} ON {q(table)} ({q(column)});"
            )
        rows = draw(
            st.lists(st.lists(VALUES, min_size=len(names), max_size=len(names)), max_size=6)
        )
        # Explicit, gapped ids: deleted rows leave holes (and an AUTOINCREMENT high-water mark).
        ids = sorted(draw(st.sets(st.integers(1, 50), min_size=len(rows), max_size=len(rows))))
        for row_id, row in zip(ids, rows, strict=True):
            inserts.append(
                (
                    f"INSERT INTO {q(table)} (id, {', '.join(map(q, names))}) "
                    f"VALUES (?, {', '.join('?' * len(names))})",
                    [row_id, *row],
                )
            )
        if kind == "autoincrement":
            inserts.append((f"INSERT INTO {q(table)} (id) VALUES (99)", []))
            inserts.append((f"DELETE FROM {q(table)} WHERE id = 99", []))
    for extra in draw(
        st.lists(st.sampled_from(["Extra", "more stuff", "Ω"]), max_size=2, unique=True)
    ):
        desired.append(f"CREATE TABLE {q(extra)} (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);")
    return Case("\n".join(live), "\n".join(desired), inserts)


def snapshot(conn: sqlite3.Connection, catalogue: Catalogue) -> dict[str, list[Any]]:
    found = {}
    for table in catalogue.tables:
        columns = ", ".join(q(c.name) for c in table.columns)
        found[table.name] = conn.execute(
            f"SELECT {columns} FROM {q(table.name)} ORDER BY id"
        ).fetchall()
    return found


def sequences(conn: sqlite3.Connection) -> dict[str, int]:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    if not exists:
        return {}
    return {str(n): int(v) for n, v in conn.execute("SELECT name, seq FROM sqlite_sequence")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_additive_migrations_lose_nothing_and_converge(case: Case) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "live.db"
        conn = sqlite3.connect(db, isolation_level=None)
        conn.executescript(case.live)
        for sql, row in case.inserts:
            conn.execute(sql, row)
        live = read_catalogue(conn)
        before = snapshot(conn, live)
        sequence = sequences(conn)
        conn.close()
        (Path(folder) / "desired.sql").write_text(case.desired, encoding="utf-8")
        desired = load_desired(Path(folder) / "desired.sql")

        with database.write_lock(db, 5) as locked:
            counts = database.row_counts(locked)
            plan = make_plan(read_catalogue(locked), desired, row_counts=counts)
            assert not plan.drift, plan.drift
            assert not plan.refused, plan.refused
            for op in plan.operations:
                event(op.kind)  # --hypothesis-show-statistics: every kind is exercised
            apply.apply_plan(locked, plan, desired, guards=[])
            locked.execute("COMMIT")

        conn = database.connect(db)
        try:
            after_catalogue = read_catalogue(conn)
            for table in desired.tables:
                current = after_catalogue.table(table.name)
                assert current is not None, table.name
                for column in table.columns:
                    assert current.column(column.name) is not None, (table.name, column.name)
            # Every old row and every old column value, unchanged (same types too).
            after = snapshot(conn, live)
            assert after == before
            for name, rows in before.items():
                assert [[type(v) for v in r] for r in after[name]] == [
                    [type(v) for v in r] for r in rows
                ]
            again = make_plan(after_catalogue, desired, row_counts=database.row_counts(conn))
            assert again.operations == ()
            assert sequences(conn) == sequence
            assert sqlite.quick_check(conn) == []
        finally:
            conn.close()
