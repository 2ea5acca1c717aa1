"""Applying plans: in-place changes, verified rebuilds, verification inside the transaction,
rollback to the exact bytes, refusals. Real SQLite files, no mocks."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from sidecar import database
from sidecar.errors import HealthError, RefusedError
from sidecar.migrate import apply, fresh, preview, rebuild
from sidecar.migrate.conflicts import row_conflicts
from sidecar.schema.catalogue import Catalogue, read_catalogue
from sidecar.schema.desired import load_desired
from sidecar.schema.diff import make_plan
from sidecar.schema.operations import Plan

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "deploy/schema/v1/schema.sql").read_text()
SEED = """
INSERT INTO "User" (email, name) VALUES ('ada@example.com', 'Ada'), ('bob@example.com', NULL);
INSERT INTO "Portfolio" ("userId", name) VALUES (1, 'Main'), (2, 'Side'), (1, 'Gone');
INSERT INTO "Transaction" ("portfolioId", symbol, quantity, price) VALUES
  (1, 'AAPL', 2, 150.5), (1, 'MSFT', 1, 300), (2, 'BTC', 0.5, 42000.125), (2, 'ETH', 3, x'00ff');
DELETE FROM "Portfolio" WHERE name = 'Gone';
DELETE FROM "Transaction" WHERE symbol = 'ETH';
CREATE VIEW "Holdings" AS SELECT p.name AS portfolio, t.symbol, t.quantity
  FROM "Portfolio" p JOIN "Transaction" t ON t."portfolioId" = p.id;
CREATE TABLE "Audit" (at TEXT, what TEXT);
CREATE TRIGGER "Portfolio_audit" AFTER UPDATE ON "Portfolio" BEGIN
  INSERT INTO "Audit" VALUES ('now', 'portfolio ' || NEW.id); END;
CREATE TRIGGER "Transaction_audit" AFTER INSERT ON "Transaction" BEGIN
  UPDATE "Portfolio" SET name = name WHERE id = NEW."portfolioId"; END;
"""
EXTRA = (
    'CREATE VIEW "Holdings" AS SELECT p.name AS portfolio, t.symbol, t.quantity\n'
    '  FROM "Portfolio" p JOIN "Transaction" t ON t."portfolioId" = p.id;\n'
)


def build(path: Path, sql: str, *, journal: str = "delete") -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.executescript(sql)
    conn.close()
    return path


def load(tmp_path: Path, sql: str) -> Catalogue:
    file = tmp_path / "desired.sql"
    file.write_text(sql, encoding="utf-8")
    return load_desired(file)


def run(
    db: Path, desired: Catalogue, checks: Sequence[Callable[[sqlite3.Connection], None]] = ()
) -> Plan:
    """What the deploy pipeline does under the write lock: plan, apply, verify, commit."""
    with database.write_lock(db, 5) as conn:
        plan = make_plan(read_catalogue(conn), desired, row_counts=database.row_counts(conn))
        if plan.operations or plan.refused:
            apply.apply_plan(conn, plan, desired, guards=list(checks))
            conn.execute("COMMIT")
    return plan


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def all_hashes(db: Path) -> dict[str, dict[str, str]]:
    conn = database.connect(db)
    try:
        catalogue = read_catalogue(conn)
        return {t.name: rebuild.column_hashes(conn, t) for t in catalogue.tables}
    finally:
        conn.close()


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_v1_to_v2_keeps_every_row_value_index_trigger_view_and_sequence(tmp_path: Path) -> None:
    db = build(tmp_path / "portfolio.db", V1 + SEED, journal="wal")
    before = all_hashes(db)
    sequence = dict(rows(db, "SELECT name, seq FROM sqlite_sequence"))
    assert sequence == {"User": 2, "Portfolio": 3, "Transaction": 4}  # above max(id) after deletes
    desired = load_desired(ROOT / "deploy/schema/v2")
    plan = run(db, desired)
    assert "rebuild_table" in [op.kind for op in plan.operations]

    after = all_hashes(db)
    for table, columns in before.items():
        for column, digest in columns.items():
            assert after[table][column] == digest, (table, column)
    assert dict(rows(db, "SELECT name, seq FROM sqlite_sequence")) == sequence
    assert rows(db, "PRAGMA foreign_key_check") == []
    assert rows(db, "PRAGMA quick_check") == [("ok",)]
    # Views still answer, triggers on and about the rebuilt table still fire.
    assert rows(db, 'SELECT * FROM "Holdings" ORDER BY symbol') == [
        ("Main", "AAPL", 2.0),
        ("Side", "BTC", 0.5),
        ("Main", "MSFT", 1.0),
    ]
    names = {r[0] for r in rows(db, "SELECT name FROM sqlite_master")}
    assert {
        "Portfolio_audit",
        "Transaction_audit",
        "User_email_key",
        "Holdings",
        "Transaction_portfolioId_idx",
        "Transaction_symbol_idx",
        "Watchlist",
    } <= names
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        'INSERT INTO "Transaction" ("portfolioId", symbol, quantity, price) '
        "VALUES (2, 'NVDA', 1, 1)"
    )
    new_id = conn.execute('SELECT max(id) FROM "Transaction"').fetchone()[0]
    audit = conn.execute('SELECT what FROM "Audit"').fetchall()
    conn.close()
    assert new_id == 5  # AUTOINCREMENT never reuses the deleted id 4
    assert audit == [("portfolio 2",)]
    # New columns got their defaults on old rows.
    assert rows(db, 'SELECT DISTINCT currency FROM "User"') == [("USD",)]
    assert rows(db, 'SELECT count(*) FROM "Portfolio" WHERE "updatedAt" IS NULL') == [(0,)]

    # Idempotent: nothing to do, and the file is not touched.
    again = sha(db)
    plan = run(db, desired)
    assert not plan.operations
    assert sha(db) == again


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_failing_extra_check_rolls_back_to_the_same_bytes(tmp_path: Path, journal: str) -> None:
    db = build(tmp_path / "portfolio.db", V1 + SEED, journal=journal)
    if journal == "wal":
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    before, logical = sha(db), dump(db)
    desired = load_desired(ROOT / "deploy/schema/v2")
    seen: list[int] = []

    def failing(conn: sqlite3.Connection) -> None:
        # Runs inside the transaction: the change is visible here, and then undone.
        seen.append(conn.execute('SELECT count(*) FROM "Watchlist"').fetchone()[0])
        raise HealthError("health query failed: injected", hint="rolled back")

    with pytest.raises(HealthError, match="injected"):
        run(db, desired, [failing])
    assert seen == [0]
    assert sha(db) == before
    assert dump(db) == logical


def test_unique_index_over_duplicates_is_refused_naming_the_values(tmp_path: Path) -> None:
    seed = SEED + "INSERT INTO \"User\" (email, name) VALUES ('ADA@example.com', 'Ada');"
    db = build(tmp_path / "portfolio.db", V1 + seed)
    before = sha(db)
    desired = load(tmp_path, V1 + EXTRA + 'CREATE UNIQUE INDEX "User_name_key" ON "User"(name);')
    with pytest.raises(RefusedError) as raised:
        run(db, desired)
    assert "'Ada' (2 rows)" in str(raised.value)
    assert '"User_name_key"' in str(raised.value)
    assert raised.value.hint
    assert sha(db) == before
    # The same refusal is visible at plan time, read-only.
    conn = database.connect(db, readonly=True)
    plan = make_plan(read_catalogue(conn), desired, row_counts={})
    conflicts, unchecked = row_conflicts(conn, plan, desired)
    conn.close()
    assert [c.object for _, c in conflicts] == ['unique index "User_name_key" on "User"']
    assert unchecked == []


def test_expression_and_partial_unique_indexes(tmp_path: Path) -> None:
    seed = SEED + "INSERT INTO \"User\" (email, name) VALUES ('ADA@example.com', NULL);"
    db = build(tmp_path / "portfolio.db", V1 + seed)
    expression = load(tmp_path, V1 + EXTRA + 'CREATE UNIQUE INDEX "e" ON "User"(lower(email));')
    with pytest.raises(RefusedError, match=r"'ada@example.com' \(2 rows\)"):
        run(db, expression)
    # NULLs never collide, and the WHERE clause limits the rows: this one applies.
    partial = load(
        tmp_path, V1 + EXTRA + 'CREATE UNIQUE INDEX "p" ON "User"(name) WHERE name IS NOT NULL;'
    )
    assert [op.kind for op in run(db, partial).operations] == ["create_index"]


def test_unique_index_over_a_new_column_is_checked_when_created(tmp_path: Path) -> None:
    db = build(tmp_path / "t.db", "CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2);")
    before = sha(db)
    desired = load(
        tmp_path,
        "CREATE TABLE t (a INT, b TEXT NOT NULL DEFAULT 'x');CREATE UNIQUE INDEX tb ON t(b);",
    )
    with pytest.raises(RefusedError, match="'x' \\(2 rows\\)"):
        run(db, desired)
    assert sha(db) == before


def test_rebuild_of_awkward_tables(tmp_path: Path) -> None:
    live = """
    CREATE TABLE "order items" ("order" INTEGER PRIMARY KEY AUTOINCREMENT,
      "Ünit" TEXT COLLATE NOCASE,
      qty REAL CHECK (qty > 0), total REAL AS (qty * 2) STORED, half REAL AS (qty / 2) VIRTUAL,
      parent INTEGER REFERENCES "order items"("order"));
    CREATE INDEX "by unit" ON "order items"("Ünit") WHERE qty > 1;
    CREATE INDEX "by expr" ON "order items"(lower("Ünit"), qty DESC);
    CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
    CREATE TABLE s (id INTEGER PRIMARY KEY, n INTEGER) STRICT;
    INSERT INTO "order items" ("Ünit", qty, parent)
      VALUES ('kg', 1.5, NULL), ('G', 3, 1), ('x', 2, 2);
    DELETE FROM "order items" WHERE "Ünit" = 'x';
    INSERT INTO kv VALUES ('b', x'01'), ('a', NULL), ('c', 'text');
    INSERT INTO s (n) VALUES (1), (2);
    """
    added = """
    CREATE TABLE "order items" ("order" INTEGER PRIMARY KEY AUTOINCREMENT,
      "Ünit" TEXT COLLATE NOCASE,
      qty REAL CHECK (qty > 0), total REAL AS (qty * 2) STORED, half REAL AS (qty / 2) VIRTUAL,
      parent INTEGER REFERENCES "order items"("order"),
      "created at" TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, code TEXT UNIQUE);
    CREATE INDEX "by unit" ON "order items"("Ünit") WHERE qty > 1;
    CREATE INDEX "by expr" ON "order items"(lower("Ünit"), qty DESC);
    CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB, at TEXT DEFAULT (datetime('now'))) WITHOUT ROWID;
    CREATE TABLE s (id INTEGER PRIMARY KEY, n INTEGER, doubled INTEGER AS (n * 2) STORED) STRICT;
    """
    db = build(tmp_path / "odd.db", live)
    before = all_hashes(db)
    plan = run(db, load(tmp_path, added))
    assert [op.kind for op in plan.operations] == ["rebuild_table"] * 3
    after = all_hashes(db)
    for table, columns in before.items():
        assert {c: after[table][c] for c in columns} == columns, table
    assert rows(db, "SELECT seq FROM sqlite_sequence") == [(3,)]
    assert rows(db, 'SELECT "order", total, half FROM "order items"') == [
        (1, 3.0, 0.75),
        (2, 6.0, 1.5),
    ]
    assert rows(db, "SELECT k FROM kv") == [("a",), ("b",), ("c",)]
    assert rows(db, "SELECT doubled FROM s") == [(2,), (4,)]
    kinds = {r[0]: r[1] for r in rows(db, "SELECT name, sql FROM sqlite_master")}
    assert "WITHOUT ROWID" in kinds["kv"]
    assert kinds["s"].rstrip().endswith("STRICT")
    assert {"by unit", "by expr"} <= set(kinds)
    assert not run(db, load(tmp_path, added)).operations


def test_rebuild_that_existing_rows_cannot_satisfy_is_refused(tmp_path: Path) -> None:
    db = build(tmp_path / "t.db", "CREATE TABLE t (a INT); INSERT INTO t VALUES (1);")
    before = sha(db)
    desired = load(tmp_path, "CREATE TABLE t (a INT, b INT DEFAULT 0 CHECK (b > 0));")
    with pytest.raises(RefusedError, match=r"CHECK \(b > 0\) fails for 1 existing row"):
        run(db, desired)
    assert sha(db) == before


def test_reference_default_without_parent_fails_foreign_key_check(tmp_path: Path) -> None:
    db = build(
        tmp_path / "t.db",
        "CREATE TABLE p (id INTEGER PRIMARY KEY);CREATE TABLE c (x INT); INSERT INTO c VALUES (1);",
    )
    before = sha(db)
    desired = load(
        tmp_path,
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c (x INT, p INTEGER NOT NULL DEFAULT 7 REFERENCES p(id));",
    )
    # Refused before any change (as `plan` refuses it), naming the parent.
    with pytest.raises(RefusedError, match=r'1 existing row\(s\) would point at no row of "p"'):
        run(db, desired)
    assert sha(db) == before
    # A table-level FOREIGN KEY over the new column is refused the same way.
    constraint = load(
        tmp_path,
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c (x INT, p INTEGER NOT NULL DEFAULT 7, FOREIGN KEY (p) REFERENCES p);",
    )
    with pytest.raises(RefusedError, match="would point at no row"):
        run(db, constraint)
    assert sha(db) == before


def test_not_null_without_default_on_an_empty_table_is_rebuilt(tmp_path: Path) -> None:
    db = build(tmp_path / "t.db", "CREATE TABLE t (a INT);")
    desired = load(tmp_path, "CREATE TABLE t (a INT, b TEXT NOT NULL);")
    assert [op.kind for op in run(db, desired).operations] == ["rebuild_table"]
    assert rows(db, "SELECT name FROM pragma_table_info('t')") == [("a",), ("b",)]


def test_refusals_and_foreign_keys_on_stop_before_any_change(tmp_path: Path) -> None:
    db = build(tmp_path / "t.db", "CREATE TABLE t (a INT); INSERT INTO t VALUES (1);")
    refused = load(tmp_path, "CREATE TABLE t (a INT, b TEXT NOT NULL);")
    with pytest.raises(RefusedError, match="NOT NULL without a default"):
        run(db, refused)
    rebuild = load(tmp_path, "CREATE TABLE t (a INT, b TEXT UNIQUE);")
    with database.write_lock(db, 5) as conn:
        conn.execute("ROLLBACK")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        plan = make_plan(read_catalogue(conn), rebuild, row_counts={"t": 1})
        with pytest.raises(RefusedError, match="foreign key enforcement"):
            apply.apply_plan(conn, plan, rebuild)
    conn = database.connect(db)
    with pytest.raises(RuntimeError, match="transaction"):
        apply.apply_plan(conn, plan, rebuild)
    conn.close()


def test_column_hashes_see_a_changed_value(tmp_path: Path) -> None:
    db = build(tmp_path / "t.db", "CREATE TABLE t (a, b); INSERT INTO t VALUES (1, '1'), (2, 2);")
    before = all_hashes(db)["t"]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE t SET b = 1 WHERE a = 1")  # '1' -> 1: same text, another type
    conn.close()
    after = all_hashes(db)["t"]
    assert after["a"] == before["a"]
    assert after["b"] != before["b"]


def test_create_fresh_is_atomic_and_never_overwrites(tmp_path: Path) -> None:
    desired = load_desired(ROOT / "deploy/schema/v2")
    db = tmp_path / "data" / "portfolio.db"
    fresh.create_fresh(db, desired)
    assert sorted(p.name for p in db.parent.iterdir()) == ["portfolio.db"]
    conn = database.connect(db, readonly=True)
    assert not make_plan(read_catalogue(conn), desired, row_counts={}).operations
    conn.close()
    before = sha(db)
    with pytest.raises(RefusedError, match="appeared"):
        fresh.create_fresh(db, desired)
    assert sha(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["portfolio.db"]

    orphan = tmp_path / "orphan.db"
    Path(f"{orphan}-wal").write_bytes(b"x")
    with pytest.raises(RefusedError, match="-wal"):
        fresh.create_fresh(orphan, desired)
    assert not orphan.exists()


class Sabotage(sqlite3.Connection):
    """A real connection that corrupts one value right after the rebuild's copy step."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        cursor = super().execute(sql, *args)
        if sql.startswith('INSERT INTO "_sidecar_new_'):
            super().execute('UPDATE "_sidecar_new_t" SET a = a + 1 WHERE rowid = 1')
        return cursor


def test_rebuild_proof_catches_a_changed_value_and_rolls_back(tmp_path: Path) -> None:
    db = build(tmp_path / "t.db", "CREATE TABLE t (a INT, b TEXT); INSERT INTO t VALUES (1, 'x');")
    before = sha(db)
    desired = load(tmp_path, "CREATE TABLE t (a INT, b TEXT, c TEXT DEFAULT (lower('X')));")
    conn = sqlite3.connect(db, isolation_level=None, factory=Sabotage)
    try:
        conn.execute("BEGIN IMMEDIATE")
        plan = make_plan(read_catalogue(conn), desired, row_counts={"t": 1})
        with pytest.raises(HealthError, match=r"changed the values of column\(s\) a"):
            apply.apply_plan(conn, plan, desired)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert sha(db) == before


def test_verify_checks_row_counts_and_the_re_plan(tmp_path: Path) -> None:
    db = build(tmp_path / "t.db", "CREATE TABLE t (a INT); INSERT INTO t VALUES (1);")
    same = load(tmp_path, "CREATE TABLE t (a INT);")
    with database.write_lock(db, 5) as conn:
        apply.verify(conn, same, {"t": 1})
        with pytest.raises(HealthError, match='table "t" had 2 rows, now 1'):
            apply.verify(conn, same, {"t": 2})
        more = load(tmp_path, "CREATE TABLE t (a INT, b INT);")
        with pytest.raises(HealthError, match="does not match the desired one"):
            apply.verify(conn, more, {"t": 1})


def test_pre_existing_foreign_key_problems_are_not_blamed_on_the_change(tmp_path: Path) -> None:
    db = build(
        tmp_path / "t.db",
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c (x INT, p INTEGER REFERENCES p(id)); INSERT INTO c VALUES (1, 5);",
    )
    desired = load(
        tmp_path,
        "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT UNIQUE);"
        "CREATE TABLE c (x INT, p INTEGER REFERENCES p(id));",
    )
    assert [op.kind for op in run(db, desired).operations] == ["rebuild_table"]
    assert rows(db, "PRAGMA foreign_key_check") == [("c", 1, "p", 0)]


def test_foreign_keys_are_checked_where_the_change_could_break_them(tmp_path: Path) -> None:
    db = build(
        tmp_path / "t.db",
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c (x INT, p INTEGER REFERENCES p(id));"
        "CREATE TABLE big (x INT);"
        "CREATE TABLE other (x INT);",
    )
    desired = load(
        tmp_path,
        "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT UNIQUE);"  # a rebuild
        "CREATE TABLE c (x INT, p INTEGER REFERENCES p(id));"
        "CREATE TABLE big (x INT, note TEXT);"  # in place, no REFERENCES: cannot break one
        "CREATE TABLE other (x INT, p INTEGER REFERENCES p(id));"  # in place, REFERENCES
        "CREATE TABLE fresh (p INTEGER REFERENCES p(id));",
    )
    with database.write_lock(db, 5) as conn:
        plan = make_plan(read_catalogue(conn), desired, row_counts=database.row_counts(conn))
        assert sorted(op.kind for op in plan.operations) == [
            "add_column", "add_column", "create_table", "rebuild_table",
        ]  # fmt: skip
        for op in plan.operations:
            apply.apply_operation(conn, op)
        # The rebuilt parent, its child, the new REFERENCES column, the new table; not `big`.
        assert apply.foreign_key_scope(conn, plan) == {"p", "c", "other", "fresh"}


# The check after the change: what it wrote, when the state before it was checked elsewhere.
CHECKED = """
CREATE TABLE kept (id INTEGER PRIMARY KEY, a TEXT);
CREATE TABLE indexed (id INTEGER PRIMARY KEY, b TEXT);
CREATE TABLE rebuilt (id INTEGER PRIMARY KEY, c TEXT);
INSERT INTO kept (a) VALUES ('x'), ('y');
INSERT INTO indexed (b) VALUES ('p'), ('q');
INSERT INTO rebuilt (c) VALUES ('r');
"""
CHECKED_V2 = """
CREATE TABLE kept (id INTEGER PRIMARY KEY, a TEXT, added TEXT);
CREATE TABLE indexed (id INTEGER PRIMARY KEY, b TEXT);
CREATE INDEX indexed_b ON indexed(b);
CREATE TABLE rebuilt (id INTEGER PRIMARY KEY, c TEXT);
CREATE TABLE fresh (id INTEGER PRIMARY KEY);
CREATE VIEW kept_a AS SELECT a FROM kept;
CREATE TRIGGER kept_t AFTER INSERT ON kept BEGIN SELECT 1; END;
"""


def _apply(db: Path, desired: Catalogue, *, quick_checked_before: bool) -> None:
    with database.write_lock(db, 5) as conn:
        plan = preview.make_preview(conn, desired).plan
        apply.apply_plan(conn, plan, desired, quick_checked_before=quick_checked_before)
        conn.execute("COMMIT")


def _scope_after(db: Path, desired: Catalogue) -> set[str] | None:
    """check_scope of ``desired`` applied to ``db`` (then rolled back)."""
    with database.write_lock(db, 5) as conn:
        plan = preview.make_preview(conn, desired).plan
        before = database.user_tables(conn)
        for op in plan.operations:
            apply.apply_operation(conn, op)
        return apply.written_tables(conn, plan, tables_before=before)


def test_check_scope_is_every_b_tree_the_change_writes(tmp_path: Path) -> None:
    db = build(tmp_path / "t.db", CHECKED + "ANALYZE;")
    desired = load(tmp_path, CHECKED_V2)
    with database.write_lock(db, 5) as conn:
        plan = preview.make_preview(conn, desired).plan
        assert {op.kind for op in plan.operations} == {
            "add_column", "create_index", "create_table", "create_view", "create_trigger",
        }  # fmt: skip
    # "kept" gains a column in place, a view and a trigger: only the schema table changes;
    # "rebuilt" is not touched at all. SQLite's own tables are small and always checked.
    assert _scope_after(db, desired) == {"sqlite_schema", "sqlite_stat1", "indexed", "fresh"}


def test_check_scope_covers_shadow_tables_and_the_autoincrement_counters(
    tmp_path: Path,
) -> None:
    """A virtual table's shadow tables are new tables the plan does not name; a new
    AUTOINCREMENT table writes its counter into sqlite_sequence."""
    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE v USING fts5(x)")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no FTS5")
    db = build(tmp_path / "t.db", "CREATE TABLE a (x TEXT); INSERT INTO a VALUES ('one');")
    desired = load(
        tmp_path,
        "CREATE TABLE a (x TEXT);"
        "CREATE TABLE counted (id INTEGER PRIMARY KEY AUTOINCREMENT, y TEXT);"
        "CREATE VIRTUAL TABLE notes USING fts5(body);",
    )
    scope = _scope_after(db, desired)
    shadows = {"notes_data", "notes_idx", "notes_content", "notes_docsize", "notes_config"}
    assert scope == {"sqlite_schema", "sqlite_sequence", "counted", "notes"} | shadows


def test_a_table_rebuild_is_checked_with_the_whole_database(tmp_path: Path) -> None:
    """Dropping the old table hands its pages to the free-list: only a whole check proves
    every page is still accounted for exactly once."""
    db = build(tmp_path / "t.db", CHECKED)
    desired = load(
        tmp_path,
        CHECKED.split("INSERT", maxsplit=1)[0].replace(
            "rebuilt (id INTEGER PRIMARY KEY, c TEXT)",
            "rebuilt (id INTEGER PRIMARY KEY, c TEXT, at TEXT DEFAULT CURRENT_TIMESTAMP)",
        ),
    )
    assert _scope_after(db, desired) is None


def test_with_auto_vacuum_only_the_whole_database_covers_a_change(tmp_path: Path) -> None:
    """There a new root page moves whatever page sat at its place, of any table."""
    db = build(tmp_path / "t.db", "PRAGMA auto_vacuum = FULL;" + CHECKED)
    desired = load(tmp_path, CHECKED_V2)
    assert _scope_after(db, desired) is None


def test_damage_in_a_table_the_change_writes_fails_the_check_and_rolls_back(
    tmp_path: Path,
) -> None:
    from tests.faults.badinput import misreport_fragmentation

    db = build(tmp_path / "t.db", CHECKED)
    misreport_fragmentation(db, "indexed")
    before = sha(db)
    with pytest.raises(HealthError, match="quick_check failed after the change: Fragmentation"):
        _apply(db, load(tmp_path, CHECKED_V2), quick_checked_before=True)
    assert sha(db) == before


def test_a_table_the_change_does_not_write_is_checked_only_when_nothing_checked_it_before(
    tmp_path: Path,
) -> None:
    """The deploy's backup runs quick_check on the very bytes the change starts from; after
    the change, the pages of "kept" (a column added in place) are those same bytes, so they
    are not read again. Without that earlier check, the whole database is checked."""
    from tests.faults.badinput import misreport_fragmentation

    desired = load(tmp_path, CHECKED_V2)
    db = build(tmp_path / "t.db", CHECKED)
    misreport_fragmentation(db, "kept")
    before = sha(db)
    with pytest.raises(HealthError, match="Fragmentation of 0 bytes reported as 9"):
        _apply(db, desired, quick_checked_before=False)
    assert sha(db) == before
    _apply(db, desired, quick_checked_before=True)
    with database.write_lock(db, 5) as conn:
        assert not preview.make_preview(conn, desired).plan.operations


def test_a_rebuild_keeps_the_planners_statistics(tmp_path: Path) -> None:
    """DROP TABLE deletes the table's ANALYZE rows; the rebuilt table holds the same rows
    under the same index names, so they are put back (else the app's query plans may change
    until the next ANALYZE)."""
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT); CREATE INDEX t_a ON t(a);"
        "CREATE TABLE u (b TEXT); CREATE INDEX u_b ON u(b);"
    )
    conn.executemany("INSERT INTO t (a) VALUES (?)", [(str(i % 7),) for i in range(200)])
    conn.executemany("INSERT INTO u VALUES (?)", [(str(i),) for i in range(50)])
    conn.execute("ANALYZE")
    before = sorted(conn.execute("SELECT * FROM sqlite_stat1"))
    conn.close()
    assert {row[0] for row in before} == {"t", "u"}
    run(db, load(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT,"
                           " at TEXT DEFAULT CURRENT_TIMESTAMP); CREATE INDEX t_a ON t(a);"
                           "CREATE TABLE u (b TEXT); CREATE INDEX u_b ON u(b);"))  # fmt: skip
    assert rows(db, "SELECT * FROM sqlite_stat1 ORDER BY 1, 2") == before
