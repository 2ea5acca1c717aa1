"""After a migration the new app can write (issue 17, stories 1 and 2; issue 11 item 6).

Through ``sidecar.cli.main`` on real SQLite files: ``plan`` promises only what ``migrate``
then does, a new optional ``@unique`` field is applied, and a kept column the desired schema
drops or makes optional stops rejecting the new app's rows.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sidecar import cli, database, health, sqlite
from sidecar.errors import ExitCode
from sidecar.schema.clauses import (
    drop_not_null,
    drop_references,
    foreign_key_actions,
    with_actions,
)

USER = 'CREATE TABLE "User" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "email" TEXT NOT NULL'
PRISMA_HANDLE = """
ALTER TABLE "User" ADD COLUMN "handle" TEXT;
CREATE UNIQUE INDEX "User_handle_key" ON "User"("handle");
"""
# The same field with one non-NULL default for every existing row.
HANDLE_DEFAULT = PRISMA_HANDLE.replace('"handle" TEXT;', "\"handle\" TEXT NOT NULL DEFAULT 'none';")


def setup(tmp_path: Path, live: str, desired: str, rows: Sequence[str] = ()) -> dict[str, str]:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(live + "\n".join(rows))
    conn.close()
    (tmp_path / "schema.sql").write_text(desired)
    return {
        "SIDECAR_DATABASE": str(db),
        "SIDECAR_SCHEMA": str(tmp_path / "schema.sql"),
        "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
        "SIDECAR_QUIET_PERIOD": "0",
        "SIDECAR_LOG_FORMAT": "json",
    }


def run(
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    *,
    json_out: bool = True,
) -> tuple[int, Any, str]:
    code = cli.main([*argv, "--json"] if json_out else argv, env=env)
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if json_out else captured.out, captured.err


def query(env: dict[str, str], sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(env["SIDECAR_DATABASE"], isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


USERS = [f"INSERT INTO \"User\" (email) VALUES ('u{i}@x');" for i in range(3)]


# --------------------------------------------------------------------------- story 1


def test_a_new_optional_unique_field_is_applied(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f"{USER});"
    env = setup(tmp_path, live, live + PRISMA_HANDLE, USERS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK, doc["refused"]
    assert doc["refused"] == []
    assert [op["op"] for op in doc["operations"]] == ["add_column", "create_index"]
    code, doc, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK
    assert query(env, 'SELECT count(*) FROM "User" WHERE handle IS NULL') == [(3,)]
    # The index is there and enforces uniqueness for the app's writes.
    query(env, "UPDATE \"User\" SET handle = 'ada' WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError):
        query(env, "UPDATE \"User\" SET handle = 'ada' WHERE id = 2")


def test_a_new_unique_field_with_a_constant_default_is_still_refused_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f"{USER});"
    env = setup(tmp_path, live, live + HANDLE_DEFAULT, USERS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    [refusal] = doc["refused"]
    assert '"User_handle_key"' in refusal["object"]
    assert "'none' (3 rows)" in refusal["reason"]
    assert '"handle"' in refusal["reason"]  # names the new column that gives them that value
    # Issue 11 item 6: a refused item appears only as refused.
    assert all(op["op"] != "create_index" for op in doc["operations"])
    code, out, _ = run(capsys, ["plan"], env, json_out=False)
    will_apply = out.split("Will apply:")[1].split("Drift")[0]
    assert "User_handle_key" not in will_apply
    # And the deploy refuses it the same way.
    code, _, err = run(capsys, ["migrate"], env, json_out=False)
    assert code == ExitCode.REFUSED
    assert "'none' (3 rows)" in err
    assert [c[1] for c in query(env, 'PRAGMA table_info("User")')] == ["id", "email"]


def test_one_row_with_a_constant_default_under_a_new_unique_index_is_applied(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f"{USER});"
    desired = live + HANDLE_DEFAULT.replace('("handle")', '(lower("handle"))')
    env = setup(tmp_path, live, desired, USERS[:1])
    assert run(capsys, ["plan"], env)[0] == ExitCode.OK
    assert run(capsys, ["migrate"], env)[0] == ExitCode.OK
    assert query(env, 'SELECT handle FROM "User"') == [("none",)]


def test_a_refused_duplicate_unique_index_is_listed_only_as_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f'{USER}, "name" TEXT);'
    desired = live + 'CREATE UNIQUE INDEX "User_name_key" ON "User"("name");'
    rows = [f"INSERT INTO \"User\" (email, name) VALUES ('u{i}@x', 'same');" for i in range(2)]
    env = setup(tmp_path, live, desired, rows)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert doc["operations"] == []
    assert "'same' (2 rows)" in doc["refused"][0]["reason"]


# --------------------------------------------------------------------------- item 6: plan = deploy


def test_a_check_rebuild_that_existing_rows_fail_is_refused_by_plan_as_by_deploy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f"{USER});"
    desired = f"{USER}, \"status\" TEXT DEFAULT 'new' CHECK (\"status\" IN ('active', 'closed')));"
    rows = ["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
            "INSERT INTO \"User\" (email) SELECT 'u' || i FROM n;"]  # fmt: skip
    env = setup(tmp_path, live, desired, rows)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert doc["operations"] == []
    assert "CHECK" in doc["refused"][0]["reason"]
    assert "1000 existing row(s)" in doc["refused"][0]["reason"]
    code, _, err = run(capsys, ["migrate"], env, json_out=False)
    assert code == ExitCode.REFUSED
    assert "CHECK" in err


def test_a_new_reference_whose_default_has_no_parent_is_refused_by_plan_as_by_deploy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f'{USER});\nCREATE TABLE "Team" ("id" INTEGER NOT NULL PRIMARY KEY);'
    desired = (
        f'{USER}, "teamId" INTEGER NOT NULL DEFAULT 1 REFERENCES "Team" ("id"));\n'
        'CREATE TABLE "Team" ("id" INTEGER NOT NULL PRIMARY KEY);'
    )
    env = setup(tmp_path, live, desired, USERS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert doc["operations"] == []
    assert '"Team"' in doc["refused"][0]["reason"]
    code, _, err = run(capsys, ["migrate"], env, json_out=False)
    assert code == ExitCode.REFUSED
    assert 'would point at no row of "Team"' in err
    # With the parent row there, plan and deploy both apply it.
    query(env, 'INSERT INTO "Team" (id) VALUES (1)')
    assert run(capsys, ["plan"], env)[0] == ExitCode.OK
    assert run(capsys, ["migrate"], env)[0] == ExitCode.OK
    assert query(env, 'SELECT DISTINCT "teamId" FROM "User"') == [(1,)]


# --------------------------------------------------------------------------- story 2


@pytest.mark.parametrize(
    ("desired_user", "why"),
    [
        (f"{USER});", "not in the desired schema"),  # `nickname String` removed from the model
        (f'{USER}, "nickname" TEXT);', "optional"),  # `String` -> `String?`
    ],
)
def test_a_dropped_or_optional_required_field_is_relaxed_so_the_new_app_can_write(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, desired_user: str, why: str
) -> None:
    live = f'{USER}, "nickname" TEXT NOT NULL);\nCREATE INDEX "User_nick" ON "User"("nickname");'
    rows = [f"INSERT INTO \"User\" (email, nickname) VALUES ('u{i}@x', 'n{i}');" for i in range(3)]
    env = setup(tmp_path, live, desired_user, rows)
    before = query(env, 'SELECT id, email, nickname FROM "User" ORDER BY id')
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    [relax] = doc["relax"]
    assert relax["table"] == "User"
    assert relax["column"] == "nickname"
    assert relax["after"] == '"nickname" TEXT'
    assert why in relax["reason"]
    assert [op["op"] for op in doc["operations"]] == ["rebuild_table"]
    code, out, _ = run(capsys, ["plan"], env, json_out=False)
    assert "Relax (so the new app can write):" in out
    assert "nickname" in out.split("Relax (so the new app can write):")[1]
    code, _, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK
    # The new app's write: without the column, or with NULL in it.
    query(env, "INSERT INTO \"User\" (email) VALUES ('new@x')")
    query(env, "INSERT INTO \"User\" (email, nickname) VALUES ('null@x', NULL)")
    assert query(env, 'SELECT id, email, nickname FROM "User" WHERE id <= 3 ORDER BY id') == before
    assert query(env, "SELECT sql FROM sqlite_master WHERE name = 'User_nick'") != []
    # Nothing left to do, and the column is no longer drift when only NOT NULL differed.
    code, doc, _ = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.OK
    assert doc["relax"] == []


def test_a_dropped_field_with_a_default_is_not_relaxed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f"{USER}, \"nickname\" TEXT NOT NULL DEFAULT '');"
    env = setup(tmp_path, live, f"{USER});", USERS)
    code, doc, _ = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.OK
    assert doc["relax"] == []
    assert doc["operations"] == []


def kept_rejecting(tmp_path: Path) -> dict[str, str]:
    live = (
        'CREATE TABLE "Team" ("id" INTEGER NOT NULL PRIMARY KEY);\n'
        f'{USER}, "name" TEXT CHECK (length("name") > 2), "teamId" INTEGER REFERENCES "Team");\n'
        'CREATE UNIQUE INDEX "User_name_key" ON "User"("name");'
    )
    desired = f'{USER}, "name" TEXT, "teamId" INTEGER);'
    return setup(tmp_path, live, desired, USERS)


def test_kept_constraints_that_reject_the_new_apps_rows_are_reported_and_fail_strict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = kept_rejecting(tmp_path)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    kinds = sorted(item["kind"] for item in doc["rejects"])
    assert kinds == ["check", "foreign_key", "unique"], doc["rejects"]
    code, out, _ = run(capsys, ["plan"], env, json_out=False)
    assert "Kept constraints that reject rows the desired schema accepts" in out
    assert run(capsys, ["plan", "--strict"], env)[0] == ExitCode.REFUSED
    code, doc, err = run(capsys, ["migrate", "--strict"], env)
    assert code == ExitCode.REFUSED
    code, out, err = run(capsys, ["migrate"], env, json_out=False)
    assert code == ExitCode.OK
    assert "3 kept constraint(s) reject rows the new app may write" in out
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    warning = next(e for e in events if e["event"] == "deploy.rejecting_constraints")
    assert len(warning["items"]) == 3


def test_kept_constraints_the_desired_schema_also_has_are_not_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = (
        'CREATE TABLE "Team" ("id" INTEGER NOT NULL PRIMARY KEY);\n'
        f'{USER}, "name" TEXT, "teamId" INTEGER REFERENCES "Team", "old" TEXT);\n'
        'CREATE UNIQUE INDEX "User_name_key" ON "User"("name", "teamId");\n'
        'CREATE UNIQUE INDEX "User_old_key" ON "User"("old");'
    )
    # A narrower unique (name) covers the kept (name, teamId); "old" is dropped and NULL.
    desired = (
        'CREATE TABLE "Team" ("id" INTEGER NOT NULL PRIMARY KEY);\n'
        f'{USER}, "name" TEXT UNIQUE, "teamId" INTEGER REFERENCES "Team");'
    )
    env = setup(tmp_path, live, desired, USERS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    assert doc["rejects"] == []


def test_a_kept_key_narrower_than_the_desired_one_is_reported_and_fails_strict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Prisma's ``@id`` -> ``@@id([userId, day])``: the kept key on userId alone rejects the
    new app's second row for a user. A deploy never changes a key: reported, like a kept
    UNIQUE, and --strict fails; a desired key the kept one covers is not reported."""
    live = 'CREATE TABLE "Stat" ("userId" INTEGER NOT NULL PRIMARY KEY, "day" TEXT NOT NULL);'
    desired = (
        'CREATE TABLE "Stat" ("userId" INTEGER NOT NULL, "day" TEXT NOT NULL,\n'
        '  PRIMARY KEY ("userId", "day"));'
    )
    env = setup(tmp_path, live, desired, ["INSERT INTO \"Stat\" VALUES (1, 'mon');"])
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    assert [(r["kind"], r["object"]) for r in doc["rejects"]] == [("primary_key", '"Stat"')]
    assert "PRIMARY KEY (userId)" in doc["rejects"][0]["detail"]
    assert run(capsys, ["plan", "--strict"], env)[0] == ExitCode.REFUSED
    # The other way round (a narrower desired key) rejects nothing the new app may write.
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    wide = (
        'CREATE TABLE "Tag" ("name" TEXT NOT NULL, "lang" TEXT NOT NULL,\n'
        '  PRIMARY KEY ("name", "lang"));'
    )
    one = 'CREATE TABLE "Tag" ("name" TEXT NOT NULL PRIMARY KEY, "lang" TEXT NOT NULL);'
    code, doc, _ = run(capsys, ["plan"], setup(narrow, wide, one))
    assert (code, doc["rejects"]) == (ExitCode.OK, [])


# --------------------------------------------------------------------------- double-quoted strings


@pytest.mark.skipif(
    not sqlite.CAN_REFUSE_QUOTED_STRINGS, reason="Python < 3.12 cannot turn the fallback off"
)
def test_the_sidecars_connections_refuse_double_quoted_strings(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (a); INSERT INTO t VALUES (1);")
    conn = database.connect(db, readonly=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such column"):
            conn.execute('SELECT "nope" FROM t')
    finally:
        conn.close()
    with sqlite.immutable(db) as frozen, pytest.raises(sqlite3.OperationalError):
        frozen.execute('SELECT "nope" FROM t')


def newer_python() -> str | None:
    """An interpreter >= 3.12 on this machine (PATH, or pyenv's versions), to test the path
    where the fallback is turned off even when the suite runs on 3.11."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = [shutil.which(f"python3.{minor}") for minor in range(12, 20)]
    found += [str(p) for p in sorted(root.glob("versions/3.*/bin/python3"))]
    for candidate in filter(None, found):
        probe = subprocess.run(
            [candidate, "-c", "import sys, sqlite3; sqlite3.SQLITE_DBCONFIG_DQS_DML; "
             "sys.exit(sys.version_info < (3, 12))"],
            capture_output=True, check=False,
        )  # fmt: skip
        if probe.returncode == 0:
            return candidate
    return None


def test_with_python_3_12_the_fallback_is_off_for_the_sidecars_sql_only(tmp_path: Path) -> None:
    # sidecar.checks needs nothing but sqlite3, so any newer interpreter can import it.
    python = newer_python()
    if python is None:
        pytest.skip("no Python >= 3.12 on this machine")
    script = """
import sqlite3, sys
from sidecar import sqlite
assert sqlite.CAN_REFUSE_QUOTED_STRINGS
conn = sqlite.refuse_quoted_strings(sqlite3.connect(":memory:"))
conn.execute('CREATE TABLE t (s TEXT CHECK (s IN ("a", "b")))')  # DDL keeps it
conn.execute("INSERT INTO t VALUES ('a')")
try:
    conn.execute('SELECT "nope" FROM t')
    sys.exit("the fallback is still on for DML")
except sqlite3.OperationalError as exc:
    assert "no such column" in str(exc)
with sqlite.as_sqlite_reads_it(conn):
    assert conn.execute('SELECT count(*) FROM t WHERE s = "a"').fetchone() == (1,)
try:
    conn.execute('SELECT "nope" FROM t')
    sys.exit("the fallback stayed on after the user's SQL")
except sqlite3.OperationalError:
    pass
print("ok")
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [python, "-c", script],
        capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.skipif(sqlite.CAN_REFUSE_QUOTED_STRINGS, reason="Python >= 3.12 turns it off")
def test_before_python_3_12_the_fallback_is_on_so_queries_name_only_real_columns(
    tmp_path: Path,
) -> None:
    # The reason every built query names only existing columns: here SQLite would answer.
    db = tmp_path / "t.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (a); INSERT INTO t VALUES (1);")
    conn = database.connect(db, readonly=True)
    try:
        assert conn.execute('SELECT "nope" FROM t').fetchall() == [("nope",)]
    finally:
        conn.close()


def test_a_legacy_double_quoted_string_in_a_check_means_the_same_to_plan_and_rebuild(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # SQLite reads "a" in a stored CHECK as 'a' (no column a): the preview's CHECK evaluation
    # and the rebuild (which re-creates the table from its text) must read it the same way.
    live = 'CREATE TABLE "T" ("id" INTEGER PRIMARY KEY, "s" TEXT CHECK ("s" IN ("a", "b")));'
    desired = 'CREATE TABLE "T" ("id" INTEGER PRIMARY KEY, "s" TEXT CHECK ("s" IN ("a", "b")), '
    desired += "\"n\" TEXT DEFAULT 'x' CHECK (\"n\" <> 'bad'));"
    env = setup(tmp_path, live, desired, ["INSERT INTO \"T\" (s) VALUES ('a'), ('b');"])
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK, doc
    assert doc["unchecked"] == []
    assert run(capsys, ["migrate"], env)[0] == ExitCode.OK
    assert query(env, 'SELECT s, n FROM "T" ORDER BY id') == [("a", "x"), ("b", "x")]
    with pytest.raises(sqlite3.IntegrityError):
        query(env, "INSERT INTO \"T\" (s) VALUES ('c')")


def test_a_dry_run_deploy_lists_relaxed_columns_and_rejecting_constraints(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = kept_rejecting(tmp_path)
    code, out, _ = run(capsys, ["deploy", "--dry-run"], env, json_out=False)
    assert code == ExitCode.OK
    assert out.count("kept, rejects the new app's rows:") == 3
    assert "relax" not in out  # nothing of the live table is NOT NULL without a default


def test_the_users_health_queries_read_double_quoted_strings_as_sqlite_does(
    tmp_path: Path,
) -> None:
    # Only the sidecar's own queries lose the fallback (Python >= 3.12): a health query
    # written for the sqlite3 shell means the same here, on every Python.
    db = tmp_path / "t.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (s TEXT); INSERT INTO t VALUES ('on');")
    conn = database.connect(db, readonly=True)
    try:
        [check] = health.run_queries(conn, ['SELECT count(*) = 1 FROM t WHERE s = "on";'])
        assert check.ok, check.detail
        if sqlite.CAN_REFUSE_QUOTED_STRINGS:  # and the sidecar's own queries stay strict
            with pytest.raises(sqlite3.OperationalError):
                conn.execute('SELECT "nope" FROM t')
    finally:
        conn.close()


def test_a_default_that_differs_per_row_is_checked_only_when_applied(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f"{USER});"
    per_row = PRISMA_HANDLE.replace('"handle" TEXT;', '"handle" TEXT DEFAULT (hex(randomblob(8)));')
    env = setup(tmp_path, live, live + per_row, USERS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    [unchecked] = doc["unchecked"]
    assert "differs per row" in unchecked
    assert [op["op"] for op in doc["operations"]] == ["rebuild_table", "create_index"]
    code, out, _ = run(capsys, ["plan"], env, json_out=False)
    assert "Checked only when applied (cannot know until it tries):" in out
    assert run(capsys, ["migrate"], env)[0] == ExitCode.OK
    assert len({row[0] for row in query(env, 'SELECT handle FROM "User"')}) == 3
    # A deterministic function is evaluated: one value for every row collides.
    other = tmp_path / "other"
    other.mkdir()
    same = PRISMA_HANDLE.replace('"handle" TEXT;', "\"handle\" TEXT DEFAULT (lower('X'));")
    env = setup(other, live, live + same, USERS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert "'x' (3 rows)" in doc["refused"][0]["reason"]


@pytest.mark.parametrize(
    ("definition", "relaxed"),
    [
        ('"nickname" TEXT NOT NULL', '"nickname" TEXT'),
        (
            "nick text not null default 'x' check (nick <> '')",
            "nick text default 'x' check (nick <> '')",
        ),
        ('"n" CONSTRAINT "nn" NOT NULL ON CONFLICT ABORT UNIQUE', '"n" UNIQUE'),
        ("n NOT NULL", "n"),
        ("n TEXT CHECK (n IS NOT NULL) NOT NULL NOT NULL", "n TEXT CHECK (n IS NOT NULL)"),
        ("n INT REFERENCES p (id) NOT DEFERRABLE", "n INT REFERENCES p (id) NOT DEFERRABLE"),
    ],
)
def test_drop_not_null_keeps_every_other_character(definition: str, relaxed: str) -> None:
    assert drop_not_null(definition) == relaxed
    # And SQLite agrees: the column accepts NULL, and nothing else about it changed.
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
    conn.execute(f"CREATE TABLE t ({relaxed})")
    assert [row[3] for row in conn.execute("PRAGMA table_info(t)")] == [0]


def test_an_index_over_a_refused_new_column_is_listed_only_as_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = f"{USER});"
    desired = live + PRISMA_HANDLE.replace('"handle" TEXT;', '"handle" TEXT NOT NULL;')
    desired += 'CREATE INDEX "User_email_idx" ON "User"("email");'
    env = setup(tmp_path, live, desired, USERS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert [r["object"] for r in doc["refused"]] == ['"User"."handle"']
    # The index over the refused column goes with it; the unrelated index stays.
    assert [op["name"] for op in doc["operations"]] == ["User_email_idx"]


# --------------------------------------------------------------------------- kept keys, types,
# foreign keys and views (the audit's cases: each exited 0 while the new app's writes failed)

POST_INT = (
    'CREATE TABLE "Post" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "title" TEXT NOT NULL);'
)
POSTS = ["INSERT INTO \"Post\" (title) VALUES ('a');", "INSERT INTO \"Post\" (title) VALUES ('b');"]


def refused_untouched(capsys: pytest.CaptureFixture[str], env: dict[str, str], *words: str) -> None:
    """``plan`` and ``migrate`` both exit 3 naming ``words``, and the file is byte-identical."""
    before = Path(env["SIDECAR_DATABASE"]).read_bytes()
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert all(word in doc["refused"][0]["summary"] for word in words), doc["refused"]
    code, _, err = run(capsys, ["migrate"], env, json_out=False)
    assert code == ExitCode.REFUSED
    error = next(line for line in err.splitlines() if line.startswith("error: "))
    assert all(word in error for word in words), error
    assert "hint: " in err
    assert Path(env["SIDECAR_DATABASE"]).read_bytes() == before


@pytest.mark.parametrize(
    ("live", "desired", "words"),
    [
        # Prisma: id Int @id @default(autoincrement()) -> id String @id @default(cuid())
        (
            POST_INT,
            'CREATE TABLE "Post" ("id" TEXT NOT NULL PRIMARY KEY, "title" TEXT NOT NULL);',
            ['"Post"."id"', "rowid", "datatype mismatch"],
        ),
        # And back: the desired key is assigned by the database, the kept one is not.
        (
            'CREATE TABLE "Post" ("id" TEXT NOT NULL PRIMARY KEY, "title" TEXT NOT NULL);',
            POST_INT,
            ['"Post"."id"', "leaves it out"],
        ),
        # A kept STRICT table whose desired table is not STRICT, or declares another type.
        (
            'CREATE TABLE "Post" ("id" INTEGER PRIMARY KEY, "title" TEXT NOT NULL) STRICT;',
            'CREATE TABLE "Post" ("id" INTEGER PRIMARY KEY, "title" TEXT NOT NULL);',
            ['"Post"', "STRICT", '"title"'],
        ),
        (
            'CREATE TABLE "Post" ("id" INTEGER PRIMARY KEY, "title" INTEGER NOT NULL) STRICT;',
            'CREATE TABLE "Post" ("id" INTEGER PRIMARY KEY, "title" TEXT NOT NULL) STRICT;',
            ['"Post"', "other types", '"title"'],
        ),
    ],
)
def test_a_kept_key_or_strict_type_that_rejects_the_new_apps_values_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, live: str, desired: str, words: list[str]
) -> None:
    rows = ['INSERT INTO "Post" (id, title) VALUES (1, 7);'] if "STRICT" in live else POSTS
    if "TEXT NOT NULL PRIMARY KEY" in live:
        rows = ["INSERT INTO \"Post\" (id, title) VALUES ('clx0', 'a');"]
    env = setup(tmp_path, live, desired, rows)
    refused_untouched(capsys, env, *words)


def test_a_kept_integer_key_under_another_integer_type_is_not_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # BigInt @id: the app writes integers, which the kept rowid takes.
    desired = POST_INT.replace(
        '"id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT', '"id" BIGINT NOT NULL PRIMARY KEY'
    )
    env = setup(tmp_path, POST_INT, desired, POSTS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    assert doc["refused"] == []


USER_POST = (
    f"{USER});\n"
    'CREATE TABLE "Post" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "title" TEXT NOT NULL, '
    '"authorId" INTEGER NOT NULL, CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") '
    'REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE);'
)
USER_POST_ROWS = [
    *USERS,
    "INSERT INTO \"Post\" (title, \"authorId\") VALUES ('p1', 1), ('p2', 1), ('p3', 2);",
]
# Prisma's RedefineTables for `onDelete: Cascade` on the relation.
ON_DELETE_CASCADE = """-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_Post" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "title" TEXT NOT NULL,
    "authorId" INTEGER NOT NULL,
    CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User" ("id") \
ON DELETE CASCADE ON UPDATE CASCADE
);
INSERT INTO "new_Post" ("authorId", "id", "title") SELECT "authorId", "id", "title" FROM "Post";
DROP TABLE "Post";
ALTER TABLE "new_Post" RENAME TO "Post";
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;
"""


def prisma_history(tmp_path: Path, env: dict[str, str], *migrations: str) -> None:
    """The desired schema as a Prisma migrations folder: the live schema first, then these."""
    root = tmp_path / "migrations"
    sql = "SELECT sql FROM sqlite_master WHERE sql NOT NULL AND name NOT LIKE 'sqlite%'"
    live = [r[0] for r in query(env, sql)]
    for n, sql in enumerate([";\n".join(live) + ";\n", *migrations]):
        folder = root / f"2024010{n + 1}000000_m{n}"
        folder.mkdir(parents=True)
        (folder / "migration.sql").write_text(sql)
    (root / "migration_lock.toml").write_text('provider = "sqlite"\n')
    env["SIDECAR_SCHEMA"] = str(root)


def app_write(env: dict[str, str], sql: str) -> None:
    """One write of the new app: foreign keys on, as Prisma turns them on."""
    conn = sqlite3.connect(env["SIDECAR_DATABASE"], isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(sql)
    finally:
        conn.close()


def test_a_foreign_keys_changed_actions_are_taken_so_the_new_apps_deletes_succeed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = setup(tmp_path, USER_POST, USER_POST, USER_POST_ROWS)
    prisma_history(tmp_path, env, ON_DELETE_CASCADE)
    before = query(env, 'SELECT id, title, "authorId" FROM "Post" ORDER BY id')
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    [change] = doc["foreign_keys"]
    assert "ON DELETE RESTRICT" in change["before"]
    assert "ON DELETE CASCADE ON UPDATE CASCADE" in change["after"]
    assert doc["drift"] == []  # not "a new constraint could reject existing rows"
    assert [op["op"] for op in doc["operations"]] == ["rebuild_table", "record_migrations"]
    code, out, _ = run(capsys, ["plan"], env, json_out=False)
    assert "ON DELETE CASCADE" in out.split("Relax (so the new app can write):")[1]
    code, out, _ = run(capsys, ["migrate"], env, json_out=False)
    assert code == ExitCode.OK
    assert "1 foreign key(s) changed so the new app can write" in out
    assert query(env, 'SELECT id, title, "authorId" FROM "Post" ORDER BY id') == before
    app_write(env, 'DELETE FROM "User" WHERE id = 1')  # was: FOREIGN KEY constraint failed
    assert query(env, 'SELECT id FROM "Post"') == [(3,)]
    code, doc, _ = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.OK
    assert doc["foreign_keys"] == []


def test_an_inline_reference_made_optional_with_set_null_is_relaxed_and_takes_the_action(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = (
        f"{USER});\n"
        'CREATE TABLE "Post" ("id" INTEGER PRIMARY KEY, '
        '"authorId" INTEGER NOT NULL REFERENCES "User" ("id"));'
    )
    desired = live.replace("NOT NULL REFERENCES", "REFERENCES").replace(
        '("id"));', '("id") ON DELETE SET NULL);'
    )
    env = setup(tmp_path, live, desired, [*USERS, 'INSERT INTO "Post" ("authorId") VALUES (1);'])
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    assert [r["column"] for r in doc["relax"]] == ["authorId"]
    assert len(doc["foreign_keys"]) == 1
    assert doc["drift"] == []  # the rebuilt column is the desired one
    assert run(capsys, ["migrate"], env)[0] == ExitCode.OK
    app_write(env, 'DELETE FROM "User" WHERE id = 1')
    assert query(env, 'SELECT id, "authorId" FROM "Post"') == [(1, None)]
    assert run(capsys, ["plan", "--check"], env)[0] == ExitCode.OK


CATEGORY_POST = (
    'CREATE TABLE "Category" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, '
    '"name" TEXT NOT NULL);\n'
    'CREATE TABLE "Post" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "title" TEXT NOT NULL, '
    '"categoryId" INTEGER NOT NULL, CONSTRAINT "Post_categoryId_fkey" FOREIGN KEY ("categoryId") '
    'REFERENCES "Category" ("id") ON DELETE {action} ON UPDATE CASCADE);'
)
CATEGORY_ROWS = [
    "INSERT INTO \"Category\" (name) VALUES ('a'), ('b');",
    "INSERT INTO \"Post\" (title, \"categoryId\") VALUES ('p1', 1), ('p2', 1);",
]


def test_a_removed_relation_field_loses_its_foreign_key_never_its_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = CATEGORY_POST.format(action="RESTRICT")
    desired = live.split('CREATE TABLE "Post"')[0] + (
        'CREATE TABLE "Post" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, '
        '"title" TEXT NOT NULL);'
    )
    env = setup(tmp_path, live, desired, CATEGORY_ROWS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    [change] = doc["foreign_keys"]
    assert change["after"] == ""
    assert '"categoryId" is not in the desired schema' in change["reason"]
    assert '"Category" rows' in change["reason"]
    assert run(capsys, ["migrate"], env)[0] == ExitCode.OK
    app_write(env, "INSERT INTO \"Post\" (title) VALUES ('new')")
    app_write(env, 'DELETE FROM "Category" WHERE id = 1')  # was: FOREIGN KEY constraint failed
    assert query(env, 'SELECT id, "categoryId" FROM "Post" ORDER BY id') == [
        (1, 1), (2, 1), (3, None)
    ]  # fmt: skip
    assert query(env, 'PRAGMA foreign_key_list("Post")') == []
    assert run(capsys, ["plan", "--check"], env)[0] == ExitCode.OK


@pytest.mark.parametrize("action", ["RESTRICT", "CASCADE"])
def test_a_removed_child_model_keeps_its_rows_and_stops_blocking_its_parent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, action: str
) -> None:
    live = CATEGORY_POST.format(action=action)
    desired = live.split('CREATE TABLE "Post"')[0]  # the Post model removed
    env = setup(tmp_path, live, desired, CATEGORY_ROWS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    assert [fk["table"] for fk in doc["foreign_keys"]] == ["Post"]
    assert [d["kind"] for d in doc["drift"]] == ["table_missing"]
    before = query(env, 'SELECT * FROM "Post" ORDER BY id')
    assert run(capsys, ["migrate"], env)[0] == ExitCode.OK
    # RESTRICT failed the delete; CASCADE would have deleted kept rows with it.
    app_write(env, 'DELETE FROM "Category" WHERE id = 1')
    app_write(env, 'UPDATE "Category" SET id = 10 WHERE id = 2')
    assert query(env, 'SELECT * FROM "Post" ORDER BY id') == before
    assert run(capsys, ["plan", "--check"], env)[0] == ExitCode.OK


VIEW_LIVE = f'{USER});\nCREATE VIEW "V" AS SELECT email FROM "User";\n'


def test_a_changed_view_is_replaced_and_its_triggers_kept(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trigger = (
        'CREATE TRIGGER "V_insert" INSTEAD OF INSERT ON "V" BEGIN '
        'INSERT INTO "User" (email) VALUES (NEW.email); END;\n'
    )
    desired = VIEW_LIVE.replace("SELECT email", "SELECT id, email") + trigger
    env = setup(tmp_path, VIEW_LIVE + trigger, desired, USERS)
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    assert [op["op"] for op in doc["operations"]] == ["replace_view"]
    assert doc["drift"] == []
    assert run(capsys, ["migrate"], env)[0] == ExitCode.OK
    assert query(env, 'SELECT id, email FROM "V" ORDER BY id')[0] == (1, "u0@x")
    app_write(env, "INSERT INTO \"V\" (email) VALUES ('via@view')")  # the trigger is there
    assert query(env, "SELECT count(*) FROM \"User\" WHERE email = 'via@view'") == [(1,)]
    assert run(capsys, ["plan", "--check"], env)[0] == ExitCode.OK


def test_a_changed_view_that_a_kept_view_reads_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live = VIEW_LIVE + 'CREATE VIEW "W" AS SELECT email FROM "V";\n'
    desired = VIEW_LIVE.replace("SELECT email", "SELECT id")  # W is gone from the schema
    env = setup(tmp_path, live, desired, USERS)
    refused_untouched(capsys, env, '"V"', '"W"')


@pytest.mark.parametrize(
    ("text", "wanted", "expected"),
    [
        (
            'CONSTRAINT "f" FOREIGN KEY ("a") REFERENCES "P" ON DELETE RESTRICT ON UPDATE SET NULL',
            'CONSTRAINT "f" FOREIGN KEY ("a") REFERENCES "P" ON DELETE CASCADE',
            'CONSTRAINT "f" FOREIGN KEY ("a") REFERENCES "P" ON DELETE CASCADE',
        ),
        (
            '"a" INT NOT NULL REFERENCES p ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
            '"a" INT REFERENCES p',
            '"a" INT NOT NULL REFERENCES p DEFERRABLE INITIALLY DEFERRED',
        ),
        (
            '"a" INT REFERENCES p(id) NOT NULL',
            '"a" INT REFERENCES p(id) ON UPDATE NO ACTION ON DELETE SET DEFAULT',
            '"a" INT REFERENCES p(id) ON UPDATE NO ACTION ON DELETE SET DEFAULT NOT NULL',
        ),
    ],
)
def test_with_actions_changes_only_the_actions(text: str, wanted: str, expected: str) -> None:
    assert with_actions(text, wanted) == expected
    assert foreign_key_actions(expected) == foreign_key_actions(wanted)


@pytest.mark.parametrize(
    ("definition", "without"),
    [
        ('"a" INT NOT NULL REFERENCES p ON DELETE CASCADE DEFAULT 1', '"a" INT NOT NULL DEFAULT 1'),
        ('"a" INT CONSTRAINT fk REFERENCES p(id) MATCH FULL NOT NULL', '"a" INT NOT NULL'),
        ('"a" INT REFERENCES "p"', '"a" INT'),
    ],
)
def test_drop_references_keeps_every_other_character(definition: str, without: str) -> None:
    assert drop_references(definition) == without
