"""A Prisma migrations folder through ``sidecar.cli.main``: Prisma's bookkeeping agrees
(issue 17 story 3), renames never show the app an empty table (story 4), data statements are
never dropped silently (issue 11 item 8), other tools' tables are not drift."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from sidecar import cli
from sidecar.errors import ExitCode
from sidecar.migrate.preview import make_preview
from sidecar.schema.desired import load_desired
from tests import prisma_emulation as prisma
from tests.unit.test_schema_cli import run

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "deploy/schema/v1/schema.sql").read_text()
INIT = "20240101000000_init"
SEED = """
INSERT INTO "User" (email, name) VALUES ('ada@example.com', 'Ada'), ('bo@example.com', 'Bo');
INSERT INTO "Portfolio" ("userId", name) VALUES (1, 'Main');
"""


def history(tmp_path: Path, *migrations: tuple[str, str]) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    (folder / "migration_lock.toml").write_text('provider = "sqlite"\n')
    for name, sql in ((INIT, V1), *migrations):
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "migration.sql").write_text(sql)
    return folder


def env_for(tmp_path: Path, schema: Path) -> dict[str, str]:
    return {
        "SIDECAR_DATABASE": str(tmp_path / "data" / "app.db"),
        "SIDECAR_SCHEMA": str(schema),
        "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
        "SIDECAR_QUIET_PERIOD": "0",
        "SIDECAR_LOG_FORMAT": "json",
    }


def plain_db(tmp_path: Path, script: str) -> Path:
    """A database made without Prisma (no _prisma_migrations)."""
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(script)
    conn.close()
    return db


def prisma_deployed(tmp_path: Path, migrations: Path, seed: str = SEED) -> Path:
    """The app's database as `prisma migrate deploy` left it: every migration applied."""
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir(exist_ok=True)
    assert prisma.deploy(db, migrations) == [d.name for d in prisma.migration_folders(migrations)]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(seed)
    conn.close()
    return db


def events(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, "
            "started_at, applied_steps_count FROM _prisma_migrations ORDER BY started_at"
        ).fetchall()
    finally:
        conn.close()


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- story 3


def test_migrate_records_prismas_rows_so_prisma_deploy_finds_nothing_to_apply(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations)
    before = rows(db)
    added = 'ALTER TABLE "User" ADD COLUMN "nickname" TEXT;\n'
    history(tmp_path, ("20240201000000_nickname", added))
    assert prisma.to_apply(db, migrations) == ["20240201000000_nickname"]
    env = env_for(tmp_path, migrations)

    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    recording = [op for op in doc["operations"] if op["op"] == "record_migrations"]
    assert recording[0]["migrations"] == ["20240201000000_nickname"]
    code, doc, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    assert doc["changed"] is True

    # Prisma's own decision: nothing left, so no "duplicate column name" at the app's start.
    assert prisma.to_apply(db, migrations) == []
    assert prisma.deploy(db, migrations) == []
    after = rows(db)
    assert after[0] == before[0]  # the row Prisma wrote is kept as it is
    row_id, checksum, finished, name, logs, rolled_back, started, steps = after[1]
    assert str(uuid.UUID(row_id)) == row_id
    script = (migrations / name / "migration.sql").read_bytes()
    assert checksum == hashlib.sha256(script).hexdigest()
    assert name == "20240201000000_nickname"
    assert isinstance(started, int)
    assert isinstance(finished, int)
    assert abs(started - before[0][6]) < 600_000
    assert (logs, rolled_back, steps) == (None, None, 1)
    # Nothing of the sidecar's own went into the database; a second run has nothing to do.
    names = {r[0] for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any("sidecar" in n for n in names)
    code, doc, _ = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.OK
    assert doc["operations"] == []


def test_a_fresh_database_gets_prismas_table_with_prismas_ddl(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    migrations = history(tmp_path, ("20240201000000_nickname", 'ALTER TABLE "User" ADD "n" TEXT;'))
    env = env_for(tmp_path, migrations)
    db = Path(env["SIDECAR_DATABASE"])
    db.parent.mkdir()
    code, _, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    sql = query(db, "SELECT sql FROM sqlite_master WHERE name = '_prisma_migrations'")[0][0]
    assert sql == prisma.PRISMA_DDL.strip().rstrip(";")
    assert [r[3] for r in rows(db)] == [INIT, "20240201000000_nickname"]
    assert prisma.to_apply(db, migrations) == []


def test_a_database_the_sidecar_made_without_prismas_rows_is_recorded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A database migrated before this fix (no _prisma_migrations): Prisma refuses it (P3005)
    or, with the table, re-runs everything; the next deploy records the rows."""
    migrations = history(tmp_path)
    db = plain_db(tmp_path, V1 + SEED)
    with pytest.raises(prisma.PrismaError, match="P3005"):
        prisma.to_apply(db, migrations)
    code, doc, err = run(capsys, ["migrate"], env_for(tmp_path, migrations))
    assert code == ExitCode.OK, err
    assert doc["changed"] is True
    assert doc["backup"]  # a change to the database like any other: backed up first
    assert prisma.to_apply(db, migrations) == []
    assert query(db, 'SELECT count(*) FROM "User"') == [(2,)]


def with_prisma_row(tmp_path: Path, *, rolled_back_at: int | None) -> tuple[Path, Path]:
    """Prisma applied ``init``; a row for the next migration that never finished (failed,
    or rolled back by ``prisma migrate resolve --rolled-back``). (database, migrations)"""
    db = prisma_deployed(tmp_path, history(tmp_path))
    migrations = history(tmp_path, ("20240201000000_nickname", 'ALTER TABLE "User" ADD "n" TEXT;'))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, "
        "rolled_back_at) VALUES ('x', 'y', '20240201000000_nickname', 1, ?)",
        (rolled_back_at,),
    )
    conn.close()
    return db, migrations


def test_a_failed_prisma_migration_refuses_the_deploy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db, migrations = with_prisma_row(tmp_path, rolled_back_at=None)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    env = env_for(tmp_path, migrations)
    for command in ("plan", "migrate"):
        code, doc, _ = run(capsys, [command], env)
        assert code == ExitCode.REFUSED
        if command == "plan":
            assert "20240201000000_nickname" in doc["refused"][0]["summary"]
        else:
            assert "20240201000000_nickname" in doc["error"]["message"]
            assert "prisma migrate resolve" in doc["error"]["hint"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_a_changed_checksum_is_a_warning_naming_the_migration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations)
    (migrations / INIT / "migration.sql").write_text(V1 + "\n-- edited after it was applied\n")
    before = rows(db)
    code, _, err = run(capsys, ["migrate"], env_for(tmp_path, migrations))
    assert code == ExitCode.OK
    warning = next(e for e in events(err) if e["event"] == "prisma.checksum_changed")
    assert warning["migration"] == INIT
    assert warning["level"] == "warning"
    assert rows(db) == before


def test_a_rolled_back_migration_is_recorded_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db, migrations = with_prisma_row(tmp_path, rolled_back_at=2)
    assert prisma.to_apply(db, migrations) == ["20240201000000_nickname"]
    code, _, err = run(capsys, ["migrate"], env_for(tmp_path, migrations))
    assert code == ExitCode.OK, err
    assert prisma.to_apply(db, migrations) == []
    assert len(rows(db)) == 3


def test_migrations_for_another_database_are_a_config_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    migrations = history(tmp_path)
    (migrations / "migration_lock.toml").write_text('provider = "postgresql"\n')
    code, doc, _ = run(capsys, ["plan"], env_for(tmp_path, migrations))
    assert code == ExitCode.USAGE
    assert "'postgresql'" in doc["error"]["message"]


DOWN = 'PRAGMA foreign_keys=off;\nDROP TABLE "Profile";\nPRAGMA foreign_keys=on;\n'
PROFILE = 'CREATE TABLE "Profile" ("id" INTEGER NOT NULL PRIMARY KEY, "bio" TEXT NOT NULL);\n'


def test_only_migration_sql_is_read_of_a_migration_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Prisma's "generating down migrations" guide puts a down.sql beside migration.sql:
    `prisma migrate deploy` never reads it, and neither does the sidecar (logged)."""
    migrations = history(tmp_path)
    (migrations / INIT / "down.sql").write_text('DROP TABLE "User";\n')
    db = prisma_deployed(tmp_path, migrations)
    history(tmp_path, ("20240201000000_profile", PROFILE))
    (migrations / "20240201000000_profile" / "down.sql").write_text(DOWN)
    (migrations / "README.md").write_text("how we migrate\n")
    env = env_for(tmp_path, migrations)
    code, doc, err = run(capsys, ["plan"], env)
    assert code == ExitCode.OK, err
    assert [op["op"] for op in doc["operations"]] == ["create_table", "record_migrations"]
    ignored = next(e for e in events(err) if e["event"] == "schema.files_ignored")
    assert ignored["files"] == [
        f"{INIT}/down.sql",
        "20240201000000_profile/down.sql",
        "README.md",
    ]
    code, _, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    assert query(db, 'SELECT count(*) FROM "User"') == [(2,)]
    assert query(db, 'SELECT count(*) FROM "Profile"') == [(0,)]
    assert prisma.to_apply(db, migrations) == []


def test_a_migration_folder_without_migration_sql_is_refused_like_prisma_refuses_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Prisma counts every folder as a migration and fails on one whose migration.sql is
    missing (P3015): refused, naming it, nothing recorded; a fresh database alike."""
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations)
    (migrations / "20240201000000_half").mkdir()
    (migrations / "20240201000000_half" / "down.sql").write_text(DOWN)
    with pytest.raises(prisma.PrismaError, match="P3015"):
        prisma.deploy(db, migrations)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    for env in (env_for(tmp_path, migrations), env_for(tmp_path / "fresh", migrations)):
        code, doc, _ = run(capsys, ["plan"], env)
        assert code == ExitCode.REFUSED
        refusal = doc["refused"][0]
        assert refusal["summary"].startswith("Prisma migration 20240201000000_half")
        assert "P3015" in refusal["reason"]
        assert "20240201000000_half/migration.sql" in refusal["hint"]
        assert not any(op["op"] == "record_migrations" for op in doc["operations"])
    code, doc, _ = run(capsys, ["migrate"], env_for(tmp_path, migrations))
    assert code == ExitCode.REFUSED
    assert "20240201000000_half" in doc["error"]["message"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_an_applied_migration_whose_migration_sql_is_gone_is_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Prisma never reads an applied migration again; its folder without migration.sql is a
    warning naming it (what it made is drift: the desired schema lacks it)."""
    migrations = history(tmp_path, ("20240150000000_profile", PROFILE))
    db = prisma_deployed(tmp_path, migrations)
    (migrations / "20240150000000_profile" / "migration.sql").unlink()
    assert prisma.deploy(db, migrations) == []
    code, doc, err = run(capsys, ["migrate"], env_for(tmp_path, migrations))
    assert code == ExitCode.OK, err
    warning = next(e for e in events(err) if e["event"] == "prisma.migration_file_missing")
    assert warning["migration"] == "20240150000000_profile"
    assert any(d.startswith('"Profile": table not in the desired schema') for d in doc["drift"])
    assert query(db, 'SELECT count(*) FROM "Profile"') == [(0,)]


# --------------------------------------------------------------------------- story 4

AUDIT = 'CREATE TABLE "AuditLog" ("id" INTEGER NOT NULL PRIMARY KEY, "what" TEXT);\n'
AUDIT_SEED = SEED + "INSERT INTO \"AuditLog\" (what) VALUES ('a'), ('b'), ('c');\n"
REDEFINE = (
    "-- RedefineTables\nPRAGMA defer_foreign_keys=ON;\nPRAGMA foreign_keys=OFF;\n"
    'CREATE TABLE "new_User" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, '
    '"email" TEXT NOT NULL, "displayName" TEXT, '
    '"createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);\n'
    'INSERT INTO "new_User" ("createdAt", "displayName", "email", "id") '
    'SELECT "createdAt", "name", "email", "id" FROM "User";\n'
    'DROP TABLE "User";\nALTER TABLE "new_User" RENAME TO "User";\n'
    'CREATE UNIQUE INDEX "User_email_key" ON "User"("email");\n'
    "PRAGMA foreign_keys=ON;\nPRAGMA defer_foreign_keys=OFF;\n"
)


@pytest.mark.parametrize(
    ("sql", "old", "new"),
    [
        ('ALTER TABLE "AuditLog" RENAME TO "Event";\n', '"AuditLog"', '"Event"'),
        (
            'ALTER TABLE "User" RENAME COLUMN "name" TO "displayName";\n',
            '"User"."name"',
            '"User"."displayName"',
        ),
        (REDEFINE, '"User"."name"', '"User"."displayName"'),
    ],
    ids=["rename-table", "rename-column", "redefine-tables-copy"],
)
def test_a_rename_in_a_migration_is_refused_naming_both_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sql: str, old: str, new: str
) -> None:
    migrations = history(tmp_path, ("20240150000000_audit", AUDIT))
    db = prisma_deployed(tmp_path, migrations, seed=AUDIT_SEED)
    history(tmp_path, ("20240201000000_rename", sql))
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    env = env_for(tmp_path, migrations)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    refusal = doc["refused"][0]
    assert refusal["summary"].startswith(f"{old} renamed to {new}")
    assert "20240201000000_rename" in refusal["reason"]
    assert "expand and contract" in refusal["hint"]
    # Refused, so neither the empty new name nor Prisma's rows are listed as to apply.
    assert doc["operations"] == []
    code, doc, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.REFUSED
    assert old in doc["error"]["message"]
    assert new in doc["error"]["message"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_prismas_own_redefine_tables_is_no_rename(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    redefine = REDEFINE.replace('"displayName"', '"name"').replace('"name" TEXT', '"name" TEXT')
    redefine = redefine.replace('"createdAt" DATETIME', '"bio" TEXT, "createdAt" DATETIME')
    db = prisma_deployed(tmp_path, history(tmp_path))
    migrations = history(tmp_path, ("20240201000000_bio", redefine))
    code, doc, err = run(capsys, ["migrate"], env_for(tmp_path, migrations))
    assert code == ExitCode.OK, err
    assert doc["changed"] is True
    assert query(db, 'SELECT name FROM "User" ORDER BY id') == [("Ada",), ("Bo",)]
    assert prisma.to_apply(db, migrations) == []


def test_a_declarative_schema_refuses_a_possible_rename_unless_told_it_is_none(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = plain_db(tmp_path, V1 + AUDIT + AUDIT_SEED)
    desired = tmp_path / "schema.sql"
    desired.write_text(
        V1.replace('"name" TEXT, "createdAt"', '"displayName" TEXT, "createdAt"')
        + AUDIT.replace('"AuditLog"', '"Event"')
    )
    env = env_for(tmp_path, desired)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    possible = {r["object"]: r for r in doc["refused"]}
    assert set(possible) == {'"AuditLog" -> "Event"', '"User"."name" -> "User"."displayName"'}
    assert "3 row(s)" in possible['"AuditLog" -> "Event"']["reason"]
    assert "possibly a rename" in possible['"AuditLog" -> "Event"']["reason"]
    assert all("expand and contract" in r["hint"] for r in possible.values())
    assert "SIDECAR_NOT_RENAMED=Event" in possible['"AuditLog" -> "Event"']["hint"]
    # Neither the empty table nor the empty column is listed as to apply.
    assert doc["operations"] == []
    assert cli.main(["plan"], env=env) == ExitCode.REFUSED
    assert "possibly a rename" in capsys.readouterr().out
    code, doc, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.REFUSED
    assert '"AuditLog" -> "Event": possibly a rename' in doc["error"]["message"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    # Told they are no renames: created empty beside the old ones, which keep their rows.
    told = {**env, "SIDECAR_NOT_RENAMED": "event, user.displayName"}
    code, doc, err = run(capsys, ["migrate"], told)
    assert code == ExitCode.OK, err
    confirmed = [e for e in events(err) if e["event"] == "history.not_a_rename"]
    assert {(e["old"], e["new"]) for e in confirmed} == {
        ("AuditLog", "Event"),
        ("User.name", "User.displayName"),
    }
    assert query(db, 'SELECT count(*) FROM "Event"') == [(0,)]
    assert query(db, 'SELECT count(*) FROM "AuditLog"') == [(3,)]
    assert query(db, 'SELECT name, "displayName" FROM "User" ORDER BY id') == [
        ("Ada", None),
        ("Bo", None),
    ]


def test_a_possible_rename_with_nothing_to_move_is_applied_and_said_not_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An old table with no rows, an old column NULL in every row: a rename would move
    nothing, so the new ones are created (drift says "possibly a rename"), no refusal."""
    db = plain_db(tmp_path, V1 + AUDIT + SEED + 'UPDATE "User" SET name = NULL;')
    desired = tmp_path / "schema.sql"
    desired.write_text(
        V1.replace('"name" TEXT, "createdAt"', '"displayName" TEXT, "createdAt"')
        + AUDIT.replace('"AuditLog"', '"Event"')
    )
    env = env_for(tmp_path, desired)
    code, doc, _ = run(capsys, ["plan"], env)
    assert (code, doc["refused"]) == (ExitCode.OK, []), doc
    possible = {d["object"] for d in doc["drift"] if d["kind"] == "possible_rename"}
    assert possible == {'"AuditLog" -> "Event"', '"User"."name" -> "User"."displayName"'}
    code, doc, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    assert query(db, 'SELECT count(*) FROM "Event"') == [(0,)]
    assert query(db, 'SELECT count(*) FROM "User" WHERE "displayName" IS NULL') == [(2,)]


# Prisma's own output for `@@map("users")` and `fullName String? @map("full_name")`: the drop
# and the create of the same shape, in one migration.
MAP_TABLE = (
    'PRAGMA foreign_keys=off;\nDROP TABLE "AuditLog";\nPRAGMA foreign_keys=on;\n'
    + AUDIT.replace('"AuditLog"', '"audit_logs"')
)
MAP_COLUMN = REDEFINE.replace('"displayName"', '"display_name"').replace(
    '("createdAt", "display_name", "email", "id") SELECT "createdAt", "name", "email", "id"',
    '("createdAt", "email", "id") SELECT "createdAt", "email", "id"',
)


@pytest.mark.parametrize(
    "case",
    [
        (MAP_TABLE, '"AuditLog"', '"audit_logs"', "audit_logs"),
        (
            'ALTER TABLE "User" DROP COLUMN "name";\n'
            'ALTER TABLE "User" ADD COLUMN "display_name" TEXT;\n',
            '"User"."name"',
            '"User"."display_name"',
            "User.display_name",
        ),
    ],
    ids=["map-table", "map-column"],
)
def test_a_migration_that_drops_and_creates_the_same_shape_is_refused_as_a_possible_rename(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: tuple[str, str, str, str]
) -> None:
    """Prisma writes a rename by @@map/@map as a drop and a create: applied by its end state,
    the app would read an empty table (or column) while its rows stay under the old name."""
    sql, old, new, named = case
    migrations = history(tmp_path, ("20240150000000_audit", AUDIT))
    db = prisma_deployed(tmp_path, migrations, seed=AUDIT_SEED)
    history(tmp_path, ("20240201000000_map", sql))
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    env = env_for(tmp_path, migrations)
    for command in ("plan", "migrate"):
        code, doc, _ = run(capsys, [command], env)
        assert code == ExitCode.REFUSED
        error = doc["refused"][0] if command == "plan" else doc["error"]
        summary = error["summary"] if command == "plan" else error["message"]
        assert f"{old} -> {new}: possibly a rename" in summary
        assert f"SIDECAR_NOT_RENAMED={named}" in error["hint"]
        if "." in named:
            assert "RENAME COLUMN" in error["hint"]
            assert "SIDECAR_RENAMES=copy" in error["hint"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    code, _, err = run(capsys, ["migrate"], {**env, "SIDECAR_NOT_RENAMED": named})
    assert code == ExitCode.OK, err
    assert prisma.to_apply(db, migrations) == []


def test_a_possible_column_rename_made_explicit_is_copied_with_the_opt_in(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The hint's way: the migration says RENAME COLUMN, and SIDECAR_RENAMES=copy copies."""
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations)
    history(tmp_path, ("20240201000000_map", MAP_COLUMN))
    assert '("createdAt", "email", "id") SELECT' in MAP_COLUMN
    env = {**env_for(tmp_path, migrations), "SIDECAR_RENAMES": "copy"}
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert 'RENAME COLUMN "name" TO "display_name"' in doc["refused"][0]["hint"]
    (migrations / "20240201000000_map" / "migration.sql").write_text(
        'ALTER TABLE "User" RENAME COLUMN "name" TO "display_name";\n'
    )
    code, _, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    assert query(db, 'SELECT "display_name" FROM "User" ORDER BY id') == [("Ada",), ("Bo",)]


# --------------------------------------------------------------------------- issue 11 item 8


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO \"User\" (email) VALUES ('x@example.com');",
        "UPDATE \"User\" SET name = 'x';",
        'DELETE FROM "User";',
        "REPLACE INTO \"User\" (id, email) VALUES (1, 'x');",
        'SELECT * FROM "User";',
        'WITH old AS (SELECT id FROM "User") DELETE FROM "User" WHERE id IN old;',
        "CREATE TEMP TABLE scratch (x);",
        'CREATE TABLE "Copy" AS SELECT * FROM "User";',
    ],
)
def test_a_declarative_schema_refuses_statements_it_would_drop(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, statement: str
) -> None:
    desired = tmp_path / "schema.sql"
    desired.write_text(V1 + "\n" + statement + "\n")
    line = (V1 + "\n").count("\n") + 1
    code, doc, _ = run(capsys, ["plan"], env_for(tmp_path, desired))
    assert code == ExitCode.USAGE
    assert doc["error"]["message"].startswith(f"{desired}:{line}: ")
    assert statement in doc["error"]["message"]
    assert doc["error"]["hint"]


def test_data_statements_of_a_migration_are_listed_as_not_executed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations)
    backfill = (
        'ALTER TABLE "User" ADD COLUMN "nickname" TEXT;\n'
        'UPDATE "User" SET "nickname" = "name";\n'
        "INSERT INTO \"User\" (email) VALUES ('seed@example.com');\n"
    )
    history(tmp_path, ("20240201000000_backfill", backfill))
    env = env_for(tmp_path, migrations)
    code, doc, _ = run(capsys, ["plan", "--strict"], env)
    assert code == ExitCode.REFUSED  # --strict refuses them
    listed = [d for d in doc["drift"] if d["kind"] == "not_executed"]
    assert [d["object"] for d in listed] == ["migration 20240201000000_backfill"] * 2
    assert 'UPDATE "User" SET "nickname" = "name";' in listed[0]["detail"]
    assert "not executed" in listed[0]["detail"]
    code, doc, _ = run(capsys, ["migrate", "--strict"], env)
    assert code == ExitCode.REFUSED
    fresh = env_for(tmp_path / "fresh", migrations)
    code, doc, _ = run(capsys, ["migrate", "--strict"], fresh)  # a new database alike
    assert code == ExitCode.REFUSED
    assert "not executed" in doc["error"]["message"]
    code, doc, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK
    assert sum("not executed" in item for item in doc["drift"]) == 2
    assert query(db, 'SELECT "nickname" FROM "User"') == [(None,), (None,)]
    assert query(db, 'SELECT count(*) FROM "User"') == [(2,)]
    # Recorded as applied: Prisma will not run them either, and they are not listed again.
    assert prisma.to_apply(db, migrations) == []
    code, doc, _ = run(capsys, ["plan", "--strict"], env)
    assert code == ExitCode.OK
    assert doc["drift"] == []


# Prisma's RedefineTables for `name String?` made `name String @default("anon")`, and made
# `String` without a default (its copy is bare: Prisma's own deploy fails on a NULL).
REQUIRED = (
    "PRAGMA defer_foreign_keys=ON;\nPRAGMA foreign_keys=OFF;\n"
    'CREATE TABLE "new_User" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, '
    '"email" TEXT NOT NULL, "name" TEXT NOT NULL DEFAULT \'anon\', '
    '"createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);\n'
    'INSERT INTO "new_User" ("createdAt", "email", "id", "name") '
    'SELECT "createdAt", "email", "id", coalesce("name", \'anon\') AS "name" FROM "User";\n'
    'DROP TABLE "User";\nALTER TABLE "new_User" RENAME TO "User";\n'
    'CREATE UNIQUE INDEX "User_email_key" ON "User"("email");\n'
    "PRAGMA foreign_keys=ON;\nPRAGMA defer_foreign_keys=OFF;\n"
)
BACKFILL = 'UPDATE "User" SET "name" = coalesce("name", \'anon\') WHERE "name" IS NULL;'
WITH_NULL = SEED + "INSERT INTO \"User\" (email) VALUES ('c@example.com'), ('d@example.com');\n"


def test_a_field_made_required_is_refused_while_rows_hold_null_naming_the_backfill(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Applied by its end state the column stays nullable and its NULLs stay: the new app
    would read a required field as NULL. Refused with the count and the migration's own
    backfill; the coalesce copy is listed as a data statement not executed."""
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations, seed=WITH_NULL)
    history(tmp_path, ("20240201000000_required", REQUIRED))
    env = env_for(tmp_path, migrations)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    refusal = doc["refused"][0]
    assert refusal["object"] == '"User"."name"'
    assert refusal["reason"].startswith("2 row(s) hold NULL")
    assert BACKFILL in refusal["hint"]
    listed = [d for d in doc["drift"] if d["kind"] == "not_executed"]
    assert len(listed) == 1
    assert 'computes "User"."name"' in listed[0]["detail"]
    assert "coalesce(\"name\", 'anon')" in listed[0]["detail"]
    code, doc, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.REFUSED
    assert doc["error"]["message"].startswith('refused: "User"."name": 2 row(s) hold NULL')
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    # The hint's backfill, run by hand: the deploy goes through, the copy still reported.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(BACKFILL)
    conn.close()
    code, doc, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    assert sum("not executed" in item for item in doc["drift"]) == 1
    assert query(db, 'SELECT name FROM "User" ORDER BY id') == [
        ("Ada",),
        ("Bo",),
        ("anon",),
        ("anon",),
    ]
    assert prisma.to_apply(db, migrations) == []


def test_a_field_made_required_without_a_default_is_refused_while_rows_hold_null(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations, seed=WITH_NULL)
    bare = REQUIRED.replace(" DEFAULT 'anon'", "").replace(
        'coalesce("name", \'anon\') AS "name"', '"name"'
    )
    history(tmp_path, ("20240201000000_required", bare))
    code, doc, _ = run(capsys, ["migrate"], env_for(tmp_path, migrations))
    assert code == ExitCode.REFUSED
    assert "2 row(s) hold NULL" in doc["error"]["message"]
    assert 'UPDATE "User" SET "name" = ... WHERE "name" IS NULL;' in doc["error"]["hint"]
    assert "keep the field optional" in doc["error"]["hint"]
    # Without NULLs: applied; the column kept nullable (drift), every row the new app reads
    # holds a value, and the new app's rows always give one.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE \"User\" SET name = 'x' WHERE name IS NULL")
    conn.close()
    code, doc, err = run(capsys, ["migrate"], env_for(tmp_path, migrations))
    assert code == ExitCode.OK, err
    assert any(item.startswith('"User"."name": is `"name" TEXT`') for item in doc["drift"])


def test_the_nulls_of_a_field_made_required_are_counted_under_the_lock_too(
    tmp_path: Path,
) -> None:
    """The deploy plans again under the write lock without screening rows (apply_plan does,
    by operation): the app may have written a NULL since the preflight, so they are counted
    there too."""
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations)
    history(tmp_path, ("20240201000000_required", REQUIRED))
    desired = load_desired(migrations)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert make_preview(conn, desired, screen_rows=False).plan.refused == ()
        conn.execute("INSERT INTO \"User\" (email) VALUES ('late@example.com')")
        refused = make_preview(conn, desired, screen_rows=False).plan.refused
    finally:
        conn.close()
    assert [str(r).split(":")[0] for r in refused] == ['"User"."name"']
    assert "1 row(s) hold NULL" in refused[0].reason


# --------------------------------------------------------------------------- other tools


def test_litestreams_tables_are_not_drift(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = plain_db(
        tmp_path,
        V1 + SEED + "CREATE TABLE IF NOT EXISTS _litestream_seq (id INTEGER PRIMARY KEY, seq "
        "INTEGER);\nCREATE TABLE IF NOT EXISTS _litestream_lock (id INTEGER);\n"
        "INSERT INTO _litestream_seq VALUES (1, 7);\n",
    )
    env = env_for(tmp_path, ROOT / "deploy/schema/v2")
    code, doc, _ = run(capsys, ["plan", "--strict"], env)
    assert code == ExitCode.OK
    assert doc["drift"] == []
    code, doc, _ = run(capsys, ["migrate", "--strict"], env)
    assert code == ExitCode.OK
    assert query(db, "SELECT * FROM _litestream_seq") == [(1, 7)]
