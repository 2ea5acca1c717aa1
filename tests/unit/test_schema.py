"""The schema engine's planning: loading a desired schema and classifying every difference.

Real SQLite files in ``tmp_path``; the base case is the demo app's Prisma-style v1 schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar import database
from sidecar.errors import ConfigError
from sidecar.schema.catalogue import Catalogue, parse_create_table, read_catalogue
from sidecar.schema.clauses import index_parts
from sidecar.schema.desired import desired_files, is_migration_history, load_desired
from sidecar.schema.diff import make_plan
from sidecar.schema.operations import CreateIndex, Plan, RebuildTable
from sidecar.schema.sql import split_statements, tokenize

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "deploy/schema/v1/schema.sql").read_text()
SEED = """
INSERT INTO "User" (email, name) VALUES ('ada@example.com', 'Ada'), ('bob@example.com', 'Bob');
INSERT INTO "Portfolio" ("userId", name) VALUES (1, 'Main');
INSERT INTO "Transaction" ("portfolioId", symbol, quantity, price) VALUES (1, 'AAPL', 2, 150.5);
"""


def build(path: Path, sql: str, seed: str = "") -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(sql + seed)
    conn.close()
    return path


def desired_from(tmp_path: Path, sql: str, name: str = "desired.sql") -> Catalogue:
    file = tmp_path / name
    file.write_text(sql, encoding="utf-8")
    return load_desired(file)


def plan_for(
    tmp_path: Path, live_sql: str, desired_sql: str, seed: str = "", name: str = "live.db"
) -> Plan:
    db = build(tmp_path / name, live_sql, seed)
    desired = desired_from(tmp_path, desired_sql)
    conn = database.connect(db, readonly=True)
    try:
        return make_plan(read_catalogue(conn), desired, row_counts=database.row_counts(conn))
    finally:
        conn.close()


def kinds(plan: Plan) -> dict[str, list[str]]:
    return {
        "operations": [op.kind for op in plan.operations],
        "drift": [item.kind for item in plan.drift],
        "refused": [str(item) for item in plan.refused],
    }


def with_user_column(definition: str) -> str:
    return V1.replace(
        '"createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);\n\n'
        "-- CreateIndex\nCREATE UNIQUE",
        f'"createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, {definition});\n\n'
        "-- CreateIndex\nCREATE UNIQUE",
    )


# (id, desired schema, seed rows?, expected operation kinds, drift kinds, refused count)
CASES = [
    ("identical", V1, True, [], [], 0),
    (
        "new table",
        V1 + 'CREATE TABLE "Tag" (id INTEGER PRIMARY KEY, label TEXT);',
        True,
        ["create_table"],
        [],
        0,
    ),
    ("nullable column", with_user_column('"nickname" TEXT'), True, ["add_column"], [], 0),
    (
        "not null constant default",
        with_user_column("\"currency\" TEXT NOT NULL DEFAULT 'USD'"),
        True,
        ["add_column"],
        [],
        0,
    ),
    (
        "negative number default",
        with_user_column('"score" REAL NOT NULL DEFAULT -1.5'),
        True,
        ["add_column"],
        [],
        0,
    ),
    (
        "current_timestamp default",
        with_user_column('"updatedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP'),
        True,
        ["rebuild_table"],
        [],
        0,
    ),
    (
        "expression default",
        with_user_column("\"slug\" TEXT DEFAULT (lower('X'))"),
        True,
        ["rebuild_table"],
        [],
        0,
    ),
    ("unique nullable", with_user_column('"handle" TEXT UNIQUE'), True, ["rebuild_table"], [], 0),
    (
        "check column",
        with_user_column('"age" INTEGER CHECK ("age" >= 0)'),
        True,
        ["rebuild_table"],
        [],
        0,
    ),
    (
        "references, null default",
        with_user_column('"bestFriend" INTEGER REFERENCES "User"(id)'),
        True,
        ["add_column"],
        [],
        0,
    ),
    (
        "references, non-null default",
        with_user_column('"owner" INTEGER NOT NULL DEFAULT 1 REFERENCES "User"(id)'),
        True,
        ["rebuild_table"],
        [],
        0,
    ),
    (
        "generated stored",
        with_user_column(
            "\"domain\" TEXT GENERATED ALWAYS AS (substr(email, instr(email, '@') + 1)) STORED"
        ),
        True,
        ["rebuild_table"],
        [],
        0,
    ),
    (
        "generated virtual",
        with_user_column('"upper" TEXT AS (upper(email)) VIRTUAL'),
        True,
        ["add_column"],
        [],
        0,
    ),
    (
        "collated column",
        with_user_column('"nick" TEXT COLLATE NOCASE'),
        True,
        ["add_column"],
        [],
        0,
    ),
    ("not null no default, rows", with_user_column('"phone" TEXT NOT NULL'), True, [], [], 1),
    (
        "not null no default, empty",
        with_user_column('"phone" TEXT NOT NULL'),
        False,
        ["rebuild_table"],
        [],
        0,
    ),
    (
        "not null default null, rows",
        with_user_column('"phone" TEXT NOT NULL DEFAULT NULL'),
        True,
        [],
        [],
        1,
    ),
    (
        "unique with default, rows",
        with_user_column("\"code\" TEXT NOT NULL DEFAULT 'x' UNIQUE"),
        True,
        [],
        [],
        1,
    ),
    (
        "new index",
        V1 + 'CREATE INDEX "User_name_idx" ON "User"(name);',
        True,
        ["create_index"],
        [],
        0,
    ),
    (
        "partial unique index",
        V1 + 'CREATE UNIQUE INDEX "u_name" ON "User"(name) WHERE name IS NOT NULL;',
        True,
        ["create_index"],
        [],
        0,
    ),
    (
        "expression index",
        V1 + 'CREATE INDEX "u_lower" ON "User"(lower(email) DESC);',
        True,
        ["create_index"],
        [],
        0,
    ),
    (
        "new view",
        V1 + 'CREATE VIEW "Totals" AS SELECT "portfolioId", sum(price) AS total '
        'FROM "Transaction" GROUP BY 1;',
        True,
        ["create_view"],
        [],
        0,
    ),
    (
        "new trigger",
        V1 + 'CREATE TRIGGER "touch" AFTER INSERT ON "Transaction" BEGIN '
        'UPDATE "Portfolio" SET name = name WHERE id = NEW."portfolioId"; END;',
        True,
        ["create_trigger"],
        [],
        0,
    ),
    ("missing column", V1.replace('"name" TEXT, ', ""), True, [], ["column_missing"], 0),
    (
        "missing table and its index",
        V1.split('-- CreateTable\nCREATE TABLE "Transaction"')[0],
        True,
        # Kept, its foreign key to "Portfolio" would block the new app's deletes there.
        ["rebuild_table"],
        ["table_missing"],
        0,
    ),
    ("changed type", V1.replace('"price" REAL', '"price" TEXT'), True, [], ["column_changed"], 0),
    (
        "changed not null",
        V1.replace('"name" TEXT, ', '"name" TEXT NOT NULL, '),
        True,
        [],
        ["column_changed"],
        0,
    ),
    (
        "changed default",
        V1.replace(
            '"createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);',
            '"createdAt" DATETIME NOT NULL DEFAULT 0);',
            1,
        ),
        True,
        [],
        ["column_changed"],
        0,
    ),
    (
        "missing index",
        V1.replace(
            'CREATE INDEX "Transaction_portfolioId_idx" ON "Transaction"("portfolioId");', ""
        ),
        True,
        [],
        ["index_missing"],
        0,
    ),
    (
        "changed index",
        V1.replace(
            'CREATE UNIQUE INDEX "User_email_key" ON "User"("email")',
            'CREATE INDEX "User_email_key" ON "User"("email")',
        ),
        True,
        [],
        ["index_changed"],
        0,
    ),
    (
        "new table constraint over an existing column",
        V1.replace(
            '"name" TEXT, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)',
            '"name" TEXT, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, '
            "CHECK (length(name) > 0))",
        ),
        True,
        [],
        ["constraint_changed"],
        0,
    ),
    (
        "new foreign key constraint over a new column",
        V1.replace(
            '"name" TEXT, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)',
            '"name" TEXT, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, '
            '"referrerId" INTEGER, CONSTRAINT "User_referrer_fkey" FOREIGN KEY '
            '("referrerId") REFERENCES "User" ("id"))',
        ),
        True,
        ["rebuild_table"],
        [],
        0,
    ),
    (
        "reformatted, unquoted, lower case",
        V1.replace('"User"', "user").replace('"email"', "EMAIL").replace("NOT NULL", "not   null"),
        True,
        [],
        [],
        0,
    ),
]


@pytest.mark.parametrize(
    ("desired_sql", "seeded", "operations", "drift", "refused"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_classification_over_the_prisma_schema(  # noqa: PLR0917 (one case-table row)
    tmp_path: Path,
    desired_sql: str,
    seeded: bool,
    operations: list[str],
    drift: list[str],
    refused: int,
) -> None:
    plan = plan_for(tmp_path, V1, desired_sql, SEED if seeded else "")
    found = kinds(plan)
    assert found["operations"] == operations
    assert found["drift"] == drift
    assert len(found["refused"]) == refused, found["refused"]
    for item in plan.refused:
        assert item.hint
    # Every item prints as one line and the plan serialises.
    items: list[object] = [*plan.operations, *plan.drift, *plan.refused]
    for entry in items:
        assert str(entry)
        assert "\n" not in str(entry)
    document = plan.to_dict()
    assert [op["op"] for op in document["operations"]] == operations


def test_new_primary_key_column_is_refused(tmp_path: Path) -> None:
    plan = plan_for(
        tmp_path,
        "CREATE TABLE log (msg TEXT);",
        "CREATE TABLE log (msg TEXT, id INTEGER PRIMARY KEY);",
        "INSERT INTO log VALUES ('x');",
    )
    assert not plan.operations
    assert [item.reason for item in plan.refused] == [
        "a new PRIMARY KEY column on an existing table"
    ]
    assert plan.refused[0].object == '"log"."id"'


def test_v2_demo_schema_plan(tmp_path: Path) -> None:
    db = build(tmp_path / "live.db", V1, SEED)
    desired = load_desired(ROOT / "deploy/schema/v2")
    conn = database.connect(db, readonly=True)
    plan = make_plan(read_catalogue(conn), desired, row_counts=database.row_counts(conn))
    conn.close()
    text = [str(op) for op in plan.operations]
    assert text[0] == 'create table "Watchlist"'
    assert 'add column "User": "currency" TEXT NOT NULL DEFAULT \'USD\' (in place)' in text
    assert 'add column "Transaction": "fee" REAL NOT NULL DEFAULT 0 (in place)' in text
    assert any(t.startswith('rebuild table "Portfolio" to add "updatedAt"') for t in text)
    assert 'create index "Transaction_symbol_idx" on "Transaction"' in text
    assert not plan.drift
    assert not plan.refused


def test_destructive_demo_schema_is_only_drift(tmp_path: Path) -> None:
    db = build(tmp_path / "live.db", V1, SEED)
    desired = load_desired(ROOT / "deploy/schema/destructive")
    conn = database.connect(db, readonly=True)
    plan = make_plan(read_catalogue(conn), desired, row_counts={})
    conn.close()
    # The kept "Transaction" loses only its foreign key to "Portfolio" (which the new app's
    # deletes there would hit); no column, no row.
    [rebuild] = plan.operations
    assert isinstance(rebuild, RebuildTable)
    assert (rebuild.table, rebuild.columns, rebuild.relax) == ("Transaction", (), ())
    assert [after for _, after in rebuild.foreign_keys] == [""]
    assert not plan.refused
    assert {item.kind for item in plan.drift} == {
        "column_missing",
        "table_missing",
        "column_changed",
    }


def test_health_queries_file_is_truthy_on_the_demo_schema(tmp_path: Path) -> None:
    from sidecar import health

    db = build(tmp_path / "live.db", V1, SEED)
    conn = database.connect(db)
    checks = health.run_queries(conn, health.load_queries(ROOT / "deploy/schema/health.sql"))
    conn.close()
    assert checks
    assert all(check.ok for check in checks), checks


@pytest.mark.parametrize(
    "name",
    ['"order"', '"line item"', '"Ünïcode"', '"MixedCase"', '"select"', '"a""quote"', "[bracketed]"],
)
def test_awkward_identifiers_plan_and_compare(tmp_path: Path, name: str) -> None:
    live = f'CREATE TABLE {name} ("group" TEXT, "two words" INTEGER);'
    desired = (
        f'CREATE TABLE {name} ("group" TEXT, "two words" INTEGER, "ñew col" TEXT DEFAULT \'x\');'
        f'CREATE INDEX "idx {name[1:-1]}" ON {name} ("two words");'
    )
    plan = plan_for(tmp_path, live, desired, f"INSERT INTO {name} VALUES ('a', 1);")
    assert kinds(plan)["operations"] == ["add_column", "create_index"]
    assert not plan.drift


def test_names_compare_case_insensitively_for_ascii_only(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, 'CREATE TABLE "Foo" ("Bar" TEXT);', "CREATE TABLE FOO (bar TEXT);")
    assert not plan.operations
    assert not plan.drift
    # SQLite folds ASCII only: "É" and "é" are two different tables.
    plan = plan_for(tmp_path, 'CREATE TABLE "É" (a);', 'CREATE TABLE "é" (a);', name="u.db")
    assert kinds(plan) == {
        "operations": ["create_table"],
        "drift": ["table_missing"],
        "refused": [],
    }


@pytest.mark.parametrize(
    ("live", "desired", "operations", "drift"),
    [
        (
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;",
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT, at TEXT DEFAULT 'now') WITHOUT ROWID;",
            ["add_column"],
            [],
        ),
        (
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;",
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);",
            [],
            ["table_changed"],
        ),
        (
            "CREATE TABLE s (id INTEGER PRIMARY KEY, n INTEGER) STRICT;",
            "CREATE TABLE s (id INTEGER PRIMARY KEY, n INTEGER, t TEXT NOT NULL DEFAULT '')"
            " STRICT;",
            ["add_column"],
            [],
        ),
        (  # STRICT added: the kept table accepts more (the other way is refused: test_schema_kept)
            "CREATE TABLE s (id INTEGER PRIMARY KEY, n INTEGER);",
            "CREATE TABLE s (id INTEGER PRIMARY KEY, n INTEGER) STRICT;",
            [],
            ["table_changed"],
        ),
        (
            "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT);",
            "CREATE TABLE a (id INTEGER PRIMARY KEY);",
            [],
            ["column_changed"],
        ),
        (
            "CREATE TABLE c (name TEXT COLLATE NOCASE);",
            "CREATE TABLE c (name TEXT COLLATE RTRIM);",
            [],
            ["column_changed"],
        ),
        (
            "CREATE TABLE g (a INT, b INT AS (a * 2));",
            "CREATE TABLE g (a INT, b INT AS (a * 3));",
            [],
            ["column_changed"],
        ),
        (
            "CREATE TABLE t (a INT); CREATE VIEW v AS SELECT a FROM t;",
            "CREATE TABLE t (a INT); CREATE VIEW v AS SELECT a + 1 AS a FROM t;",
            ["replace_view"],  # a view holds no data
            [],
        ),
        (
            "CREATE TABLE t (a INT); CREATE VIEW v AS SELECT a FROM t;",
            "CREATE TABLE t (a INT);",
            [],
            ["view_missing"],
        ),
        (
            "CREATE TABLE t (a INT); CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;",
            "CREATE TABLE t (a INT);",
            [],
            ["trigger_missing"],
        ),
        (
            "CREATE TABLE t (a INT); CREATE INDEX i ON t(a) WHERE a > 0;",
            "CREATE TABLE t (a INT); CREATE INDEX i ON t(a) WHERE a > 1;",
            [],
            ["index_changed"],
        ),
        (
            "CREATE TABLE t (a INT); CREATE TABLE v (a INT);",
            "CREATE TABLE t (a INT); CREATE VIEW v AS SELECT a FROM t;",
            [],
            ["table_missing", "view_changed"],
        ),
        (
            "CREATE TABLE t (a INT);",
            "CREATE VIRTUAL TABLE f USING fts5(body); CREATE TABLE t (a INT);",
            ["create_table"],
            [],
        ),
    ],
)
def test_special_tables(
    tmp_path: Path, live: str, desired: str, operations: list[str], drift: list[str]
) -> None:
    plan = plan_for(tmp_path, live, desired)
    assert kinds(plan) == {"operations": operations, "drift": drift, "refused": []}


def test_unchanged_virtual_table_and_shadow_tables_plan_nothing(tmp_path: Path) -> None:
    sql = "CREATE VIRTUAL TABLE f USING fts5(body);"
    plan = plan_for(tmp_path, sql, sql, "INSERT INTO f VALUES ('hello');")
    assert kinds(plan) == {"operations": [], "drift": [], "refused": []}


def test_read_catalogue_skips_internal_tables_and_autoindexes(tmp_path: Path) -> None:
    db = build(
        tmp_path / "live.db",
        V1 + 'CREATE TABLE "_prisma_migrations" (id TEXT PRIMARY KEY);',
        SEED + "ANALYZE;",
    )
    conn = database.connect(db)
    catalogue = read_catalogue(conn)
    conn.close()
    names = [t.name for t in catalogue.tables]
    assert names == ["User", "Portfolio", "Transaction", "_prisma_migrations"]
    assert all(not i.name.startswith("sqlite_") for i in catalogue.indexes)


def test_index_creation_warns_about_lock_time_on_big_tables() -> None:
    op = CreateIndex("i", "t", "CREATE INDEX i ON t(a)", rows=2_000_000)
    assert "under the write lock" in str(op)
    assert "under the write lock" not in str(CreateIndex("i", "t", "x", rows=10))


# --------------------------------------------------------------------------- loading


def test_syntax_error_names_file_line_and_statement(tmp_path: Path) -> None:
    folder = tmp_path / "schema"
    folder.mkdir()
    (folder / "01_base.sql").write_text("CREATE TABLE a (id INTEGER PRIMARY KEY);\n")
    (folder / "02_more.sql").write_text(
        "-- a comment; with a semicolon\nCREATE TABLE b (id INTEGER);\n\nCREATE TABEL c (x);\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_desired(folder)
    message = str(raised.value)
    assert "02_more.sql:4" in message
    assert "CREATE TABEL c (x);" in message
    assert "syntax error" in message
    assert raised.value.exit_code == 2


def test_folder_is_applied_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "schema"
    folder.mkdir()
    (folder / "10_index.sql").write_text("CREATE INDEX i ON a(x);")
    (folder / "02_table.sql").write_text("CREATE TABLE a (x);")
    (folder / "notes.txt").write_text("not sql")
    catalogue = load_desired(folder)
    assert [t.name for t in catalogue.tables] == ["a"]
    assert [i.name for i in catalogue.indexes] == ["i"]


def test_kubernetes_config_map_layout_reads_each_file_once(tmp_path: Path) -> None:
    """The kubelet's atomic writer: files in ..<timestamp>, ..data -> it, one link per key."""
    mount = tmp_path / "schema"
    revision = mount / "..2026_01_01_00_00_00.000000001"
    revision.mkdir(parents=True)
    (revision / "01-tables.sql").write_text("CREATE TABLE a (x);")
    (revision / "02-views.sql").write_text("CREATE VIEW v AS SELECT x FROM a;")
    (mount / "..data").symlink_to(revision.name)
    for name in ("01-tables.sql", "02-views.sql"):
        (mount / name).symlink_to(f"..data/{name}")
    assert [p.name for p in desired_files(mount)] == ["01-tables.sql", "02-views.sql"]
    catalogue = load_desired(mount)
    assert [t.name for t in catalogue.tables] == ["a"]
    assert [v.name for v in catalogue.views] == ["v"]


def test_non_utf8_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "s.sql"
    file.write_bytes(b"CREATE TABLE t (name TEXT DEFAULT '\xff\xfe');")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_desired(file)


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE a;",
        "DROP INDEX IF EXISTS i;",
        "ALTER TABLE a DROP COLUMN x;",
        "ALTER TABLE a RENAME TO b;",
        "ATTACH DATABASE '/etc/passwd' AS p;",
    ],
)
def test_destructive_statements_are_refused_in_a_desired_schema(
    tmp_path: Path, statement: str
) -> None:
    file = tmp_path / "s.sql"
    file.write_text(f"CREATE TABLE a (x, y);\n{statement}\n")
    with pytest.raises(ConfigError) as raised:
        load_desired(file)
    assert statement.rstrip(";") in str(raised.value)
    assert raised.value.hint


def test_pragmas_and_transactions_are_ignored(tmp_path: Path) -> None:
    file = tmp_path / "s.sql"
    file.write_text(
        "PRAGMA foreign_keys=OFF;\nPRAGMA journal_mode=WAL;\nPRAGMA no_such_pragma=1;\nBEGIN;\n"
        "CREATE TABLE a (x);\nCOMMIT;\nPRAGMA foreign_keys=ON;\n"
    )
    catalogue = load_desired(file)
    assert [t.name for t in catalogue.tables] == ["a"]


def test_alter_table_add_column_is_additive_and_allowed(tmp_path: Path) -> None:
    desired = desired_from(tmp_path, "CREATE TABLE a (x);\nALTER TABLE a ADD COLUMN y TEXT;\n")
    table = desired.table("a")
    assert table is not None
    assert [c.name for c in table.columns] == ["x", "y"]


def test_prisma_migrations_folder_is_replayed_with_its_redefine_tables(tmp_path: Path) -> None:
    history = tmp_path / "migrations"
    (history / "20240101000000_init").mkdir(parents=True)
    (history / "20240201000000_redefine").mkdir()
    (history / "migration_lock.toml").write_text('provider = "sqlite"\n')
    (history / "20240101000000_init/migration.sql").write_text(V1)
    (history / "20240201000000_redefine/migration.sql").write_text(
        "-- RedefineTables\nPRAGMA defer_foreign_keys=ON;\nPRAGMA foreign_keys=OFF;\n"
        'CREATE TABLE "new_Portfolio" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, '
        '"userId" INTEGER NOT NULL, "name" TEXT NOT NULL, '
        '"createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, '
        '"updatedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, '
        'CONSTRAINT "Portfolio_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User" ("id") '
        "ON DELETE RESTRICT ON UPDATE CASCADE);\n"
        'INSERT INTO "new_Portfolio" ("createdAt", "id", "name", "userId") '
        'SELECT "createdAt", "id", "name", "userId" FROM "Portfolio";\n'
        'DROP TABLE "Portfolio";\nALTER TABLE "new_Portfolio" RENAME TO "Portfolio";\n'
        "PRAGMA foreign_keys=ON;\nPRAGMA defer_foreign_keys=OFF;\n"
    )
    assert is_migration_history(history)
    desired = load_desired(history)
    portfolio = desired.table("Portfolio")
    assert portfolio is not None
    assert portfolio.column("updatedAt") is not None
    plan = plan_for(tmp_path, V1, "", SEED)  # warm-up: empty desired is all drift
    assert not plan.operations
    db = tmp_path / "live.db"
    conn = database.connect(db, readonly=True)
    plan = make_plan(read_catalogue(conn), desired, row_counts={"Portfolio": 1})
    conn.close()
    assert [op.kind for op in plan.operations] == ["rebuild_table"]


def test_missing_schema_and_empty_folder_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_desired(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no \.sql files"):
        load_desired(tmp_path / "empty")


def test_incomplete_last_statement_is_named(tmp_path: Path) -> None:
    file = tmp_path / "s.sql"
    file.write_text("CREATE TABLE a (x);\nCREATE TABLE b (y)\n")
    with pytest.raises(ConfigError, match=r"s\.sql:2: incomplete statement"):
        load_desired(file)


def test_tokenizer_keeps_quotes_comments_and_unicode_apart() -> None:
    tokens = tokenize(
        'CREATE TABLE "a ""b""" (x TEXT DEFAULT \'it\'\'s\', -- c, d\n'
        "ñame [br ack] /* x, y */ , `tick`)"
    )
    values = [t.value for t in tokens if t.kind in ("ident", "word")]
    assert values == ["CREATE", "TABLE", 'a "b"', "x", "TEXT", "DEFAULT", "ñame", "br ack", "tick"]
    columns, constraints, options = parse_create_table(
        'CREATE TABLE t (a INT CHECK (a IN (1, 2)), "b,c" TEXT, UNIQUE (a, "b,c")) STRICT'
    )
    assert list(columns) == ["a", "b,c"]
    assert constraints == ('UNIQUE (a, "b,c")',)
    assert options == "STRICT"
    assert index_parts("CREATE INDEX i ON t (lower(a) DESC, b COLLATE NOCASE) WHERE a > 0") == (
        ["lower(a)", "b COLLATE NOCASE"],
        "a > 0",
    )


def test_split_statements_keeps_strings_comments_and_trigger_bodies_whole() -> None:
    text = (
        "-- header; with a semicolon\n"
        "CREATE TABLE a (x TEXT DEFAULT ';'); CREATE TABLE b(y);\n"
        "/* block ; comment */\n"
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n"
        "  INSERT INTO b VALUES (1);\n"
        "  INSERT INTO b VALUES (2);\n"
        "END;\n"
        ";;\n"
        "CREATE TABLE c (z)"
    )
    assert split_statements(text) == [
        (2, "CREATE TABLE a (x TEXT DEFAULT ';');"),
        (2, "CREATE TABLE b(y);"),
        (
            4,
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  INSERT INTO b VALUES (1);\n"
            "  INSERT INTO b VALUES (2);\nEND;",
        ),
        (9, "CREATE TABLE c (z)"),
    ]
