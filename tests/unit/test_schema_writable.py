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
from sidecar.schema.clauses import drop_not_null

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
