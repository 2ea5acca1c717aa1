"""plan and migrate through ``sidecar.cli.main``: exit codes, JSON on stdout, the three sections."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sidecar import cli
from sidecar.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "deploy/schema/v1/schema.sql").read_text()
SEED = """
INSERT INTO "User" (email, name) VALUES ('ada@example.com', 'Ada');
INSERT INTO "Portfolio" ("userId", name) VALUES (1, 'Main');
INSERT INTO "Transaction" ("portfolioId", symbol, quantity, price) VALUES (1, 'AAPL', 2, 150.5);
"""


def env_for(tmp_path: Path, schema_path: Path, *, create: bool = True) -> dict[str, str]:
    db = tmp_path / "data" / "portfolio.db"
    if create:
        db.parent.mkdir(exist_ok=True)
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=wal")
        conn.executescript(V1 + SEED)
        conn.close()
    return {
        "SIDECAR_DATABASE": f"file:{db}",
        "SIDECAR_SCHEMA": str(schema_path),
        "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
        "SIDECAR_QUIET_PERIOD": "0",
        "SIDECAR_LOG_FORMAT": "json",
    }


def run(
    capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]
) -> tuple[int, dict[str, Any], str]:
    code = cli.main([*argv, "--json"], env=env)
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def sha(env: dict[str, str]) -> str:
    return hashlib.sha256(Path(env["SIDECAR_DATABASE"][5:]).read_bytes()).hexdigest()


def test_plan_check_exits_6_with_pending_operations(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = env_for(tmp_path, ROOT / "deploy/schema/v2")
    before = sha(env)
    code, doc, err = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.PENDING
    assert doc["exit_code"] == 6
    assert doc["operations"][0]["op"] == "create_table"
    assert doc["drift"] == []
    assert doc["refused"] == []
    assert all(op["summary"] for op in doc["operations"])
    assert sha(env) == before  # read-only
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert next(e for e in events if e["event"] == "plan.done")["operations"] == 6
    # Without --check the same plan is informational.
    code, _, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK


def test_plan_without_a_database_plans_its_creation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = env_for(tmp_path, ROOT / "deploy/schema/v1", create=False)
    code, doc, _ = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.PENDING
    assert doc["fresh"] is True
    assert [op["op"] for op in doc["operations"]] == [
        "create_table",
        "create_table",
        "create_table",
        "create_index",
        "create_index",
    ]
    assert not (tmp_path / "data" / "portfolio.db").exists()


def test_plan_drift_is_ok_unless_strict(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env = env_for(tmp_path, ROOT / "deploy/schema/destructive")
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK
    # Only the dropped "Transaction" table's foreign key to "Portfolio" is dropped.
    assert [op["op"] for op in doc["operations"]] == ["rebuild_table"]
    assert [fk["after"] for fk in doc["foreign_keys"]] == [""]
    assert {d["kind"] for d in doc["drift"]} == {
        "column_missing",
        "table_missing",
        "column_changed",
    }
    code, _, _ = run(capsys, ["plan", "--strict"], env)
    assert code == ExitCode.REFUSED


def test_plan_refusal_exits_3_with_its_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    desired = tmp_path / "schema.sql"
    desired.write_text(
        V1 + 'CREATE UNIQUE INDEX "Portfolio_userId_key" ON "Portfolio"("userId");'
        "\n" + 'CREATE TABLE "Tag" (id INTEGER PRIMARY KEY);'
    )
    env = env_for(tmp_path, desired)
    conn = sqlite3.connect(tmp_path / "data" / "portfolio.db", isolation_level=None)
    conn.execute('INSERT INTO "Portfolio" ("userId", name) VALUES (1, \'Second\')')
    conn.close()
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert "1 (2 rows)" in doc["refused"][0]["reason"]
    assert doc["refused"][0]["hint"]


def test_plan_renders_three_sections(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    desired = tmp_path / "schema.sql"
    desired.write_text(
        V1.replace('"name" TEXT, ', "").replace(
            '"createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);',
            '"createdAt" DATETIME NOT '
            # "nick" not TEXT: "name" TEXT dropped beside it would be a possible rename
            'NULL DEFAULT CURRENT_TIMESTAMP, "phone" TEXT NOT NULL, "nick" INTEGER);',
            1,
        )
    )
    env = env_for(tmp_path, desired)
    code = cli.main(["plan"], env=env)
    out = capsys.readouterr().out
    assert code == ExitCode.REFUSED
    assert "Will apply:\n  (none)" in out
    assert 'Drift (never executed):\n  - "User"."name": column not in the desired schema' in out
    assert 'Refused (and why):\n  - "User"."phone": NOT NULL without a default' in out
    assert "hint: give the column a DEFAULT" in out


def test_plan_syntax_error_exits_2_naming_file_and_statement(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    desired = tmp_path / "broken.sql"
    desired.write_text(V1 + "\nCREATE TABLE oops (a INTEGER,);\n")
    env = env_for(tmp_path, desired)
    code, doc, err = run(capsys, ["plan"], env)
    assert code == ExitCode.USAGE
    assert "broken.sql:" in doc["error"]["message"]
    assert "CREATE TABLE oops (a INTEGER,);" in doc["error"]["message"]
    assert "error: " in err


def test_migrate_applies_once_then_does_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = env_for(tmp_path, ROOT / "deploy/schema/v2")
    before = sha(env)
    code, doc, _ = run(capsys, ["migrate", "--dry-run"], env)
    assert code == ExitCode.OK
    assert doc["dry_run"] is True
    assert sha(env) == before

    code, doc, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    assert doc["changed"] is True
    assert doc["backup"]
    assert '"migrate.done"' in err
    code, doc, _ = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.OK

    after = sha(env)
    code, doc, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK
    assert doc["changed"] is False
    assert sha(env) == after


def test_migrate_creates_a_missing_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = env_for(tmp_path, ROOT / "deploy/schema/v2", create=False)
    (tmp_path / "data").mkdir()
    code, doc, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    assert doc["fresh"] is True
    code, _, _ = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.OK


def test_plan_on_a_damaged_database_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = env_for(tmp_path, ROOT / "deploy/schema/v2")
    db = tmp_path / "data" / "portfolio.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=delete")
    conn.close()
    data = db.read_bytes()
    db.write_bytes(data[:100] + b"\xff" * (len(data) - 100))  # header kept, pages garbage
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert str(db) in doc["error"]["message"]


def test_plan_while_the_app_holds_an_exclusive_lock_is_unavailable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = {**env_for(tmp_path, ROOT / "deploy/schema/v2"), "SIDECAR_WAIT_TIMEOUT": "200ms"}
    app = sqlite3.connect(tmp_path / "data" / "portfolio.db", isolation_level=None)
    app.execute("PRAGMA journal_mode=delete")
    app.execute("PRAGMA locking_mode=EXCLUSIVE")
    app.execute("BEGIN EXCLUSIVE")
    try:
        code, doc, _ = run(capsys, ["plan"], env)
    finally:
        app.execute("ROLLBACK")
        app.close()
    assert code == ExitCode.UNAVAILABLE
    assert doc["error"]["hint"]
