from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar import health
from sidecar.errors import ConfigError, HealthError


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    db.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id));"
        "INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1);"
    )
    return db


def test_load_queries_splits_statements_and_ignores_comments(tmp_path: Path) -> None:
    path = tmp_path / "health.sql"
    path.write_text(
        "-- every query must return a truthy first value\n"
        "SELECT count(*) >= 0 FROM parent;\n"
        "SELECT 'a;b' = 'a;b';  -- a semicolon inside a string\n"
        "\n;\n"
    )
    assert health.load_queries(path) == [
        "SELECT count(*) >= 0 FROM parent;",
        "SELECT 'a;b' = 'a;b';  -- a semicolon inside a string",
    ]


def test_load_queries_rejects_an_unterminated_query(tmp_path: Path) -> None:
    path = tmp_path / "health.sql"
    path.write_text("SELECT 1;\nSELECT 2")
    with pytest.raises(ConfigError, match="incomplete"):
        health.load_queries(path)


def test_missing_queries_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        health.load_queries(tmp_path / "nope.sql")


def test_queries_truthy_falsy_and_errors(conn: sqlite3.Connection) -> None:
    checks = health.run_queries(
        conn, ["SELECT 1", "SELECT 0", "SELECT NULL", "SELECT x FROM missing", "SELECT 1 WHERE 0"]
    )
    assert [c.ok for c in checks] == [True, False, False, False, False]
    assert "no such table" in checks[3].detail


def test_guard_raises_health_error_naming_the_query(conn: sqlite3.Connection) -> None:
    health.queries_guard(["SELECT count(*) = 1 FROM parent"])(conn)
    with pytest.raises(HealthError, match="count\\(\\*\\) = 2"):
        health.queries_guard(["SELECT count(*) = 2 FROM parent"])(conn)


def test_database_checks_find_foreign_key_violations(conn: sqlite3.Connection) -> None:
    assert all(c.ok for c in health.database_checks(conn, full=True))
    conn.execute("INSERT INTO child VALUES (2, 99)")  # foreign_keys is off by default
    checks = {c.name: c for c in health.database_checks(conn, full=False)}
    assert checks["quick_check"].ok
    assert not checks["foreign_key_check"].ok
    assert "child" in checks["foreign_key_check"].detail


def test_report_ok_ignores_warnings() -> None:
    report = health.HealthReport(
        checks=(health.Check("a", True), health.Check("backup age", False, "none", fatal=False))
    )
    assert report.ok
    assert report.to_dict()["healthy"] is True
    failing = health.HealthReport(checks=(health.Check("a", False),))
    assert not failing.ok
    assert failing.failures[0].name == "a"
