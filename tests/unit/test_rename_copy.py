"""SIDECAR_RENAMES=copy: a column rename in a Prisma migration made safe in one deploy (issue
17, "Renames never show the app an empty table"): the new column holds a copy of the old
one's values, the old one is kept and relaxed, and the deploy stops the app for the change."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sidecar.containers.apps import AppRef
from sidecar.environ import load_settings
from sidecar.errors import ExitCode, HealthError, RefusedError
from sidecar.migrate import rebuild
from sidecar.pipeline.run import run_deploy
from tests import prisma_emulation as prisma
from tests.fakes import FakeApps
from tests.unit.test_prisma_history import REDEFINE, SEED, env_for, history, prisma_deployed, query
from tests.unit.test_schema_cli import run

RENAME = "20240201000000_rename"
# Every kind of value SQLite keeps apart: text, NULL, a blob, an integer-looking text.
USERS = SEED + (
    "INSERT INTO \"User\" (email, name) VALUES ('c@example.com', NULL), "
    "('d@example.com', x'00ff'), ('e@example.com', '42');\n"
    "INSERT INTO \"Portfolio\" (\"userId\", name) VALUES (2, 'Side'), (3, x'01');\n"
)
RENAME_USER = 'ALTER TABLE "User" RENAME COLUMN "name" TO "displayName";\n'
# Portfolio.name is NOT NULL without a default: its copy needs the verified rebuild.
RENAME_PORTFOLIO = 'ALTER TABLE "Portfolio" RENAME COLUMN "name" TO "title";\n'


def renamed(tmp_path: Path, sql: str) -> tuple[Path, Path, dict[str, str]]:
    """A database Prisma deployed (seeded), then a migration that renames: (db, migrations,
    env with the opt-in)."""
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations, seed=USERS)
    history(tmp_path, (RENAME, sql))
    return db, migrations, {**env_for(tmp_path, migrations), "SIDECAR_RENAMES": "copy"}


def columns(db: Path, table: str) -> dict[str, int]:
    """column -> notnull"""
    return {str(r[1]): int(r[3]) for r in query(db, f'PRAGMA table_info("{table}")')}


@pytest.mark.parametrize(
    "case",
    [
        (RENAME_USER, "User", "name", "displayName", "copy_column"),
        (REDEFINE, "User", "name", "displayName", "copy_column"),
        (RENAME_PORTFOLIO, "Portfolio", "name", "title", "rebuild_table"),
    ],
    ids=["rename-column-in-place", "redefine-tables-copy", "not-null-through-the-rebuild"],
)
def test_the_opt_in_copies_a_renamed_column_exactly_and_keeps_the_old_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: tuple[str, str, str, str, str]
) -> None:
    sql, table, old, new, kind = case
    db, migrations, env = renamed(tmp_path, sql)
    before = query(db, f'SELECT id, "{old}", typeof("{old}") FROM "{table}" ORDER BY id')
    assert prisma.to_apply(db, migrations) == [RENAME]

    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.OK, doc
    assert doc["refused"] == []
    summaries = [op["summary"] for op in doc["operations"]]
    copy = f'copy "{table}"."{old}" into new column "{new}" (rename, opt-in)'
    assert any(copy in s for s in summaries), summaries
    assert any(op["op"] == "record_migrations" for op in doc["operations"])
    assert doc["operations"][0]["op"] == kind

    code, doc, err = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK, err
    assert doc["changed"] is True
    # Every row, every value (NULLs, blobs and types included) is in the new column, and the
    # old column holds what it held.
    after = query(
        db,
        f'SELECT id, "{old}", typeof("{old}"), "{new}", typeof("{new}") FROM "{table}" ORDER BY id',
    )
    assert after == [(*row, *row[1:]) for row in before]
    assert len(after) >= 3
    # The old column is kept and relaxed; the new app (the desired schema) writes without it.
    kept = columns(db, table)
    assert old in kept
    assert kept[old] == 0
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        if table == "User":
            conn.execute("INSERT INTO \"User\" (email, \"displayName\") VALUES ('n@x', 'New')")
        else:
            conn.execute('INSERT INTO "Portfolio" ("userId", title) VALUES (1, \'New\')')
    finally:
        conn.close()
    # Prisma finds nothing to apply; a second run has nothing to do.
    assert prisma.to_apply(db, migrations) == []
    code, doc, _ = run(capsys, ["plan", "--check"], env)
    assert code == ExitCode.OK
    assert doc["operations"] == []
    assert doc["refused"] == []
    code, doc, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.OK
    assert doc["changed"] is False


def test_without_the_opt_in_a_column_rename_is_still_refused_and_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db, _, env = renamed(tmp_path, RENAME_PORTFOLIO)
    del env["SIDECAR_RENAMES"]
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    for settings in ({}, {"SIDECAR_RENAMES": "refuse"}):
        code, doc, _ = run(capsys, ["plan"], {**env, **settings})
        assert code == ExitCode.REFUSED
        assert doc["refused"][0]["summary"].startswith('"Portfolio"."name" renamed to')
        assert "SIDECAR_RENAMES=copy" in doc["refused"][0]["hint"]
        code, doc, _ = run(capsys, ["migrate"], {**env, **settings})
        assert code == ExitCode.REFUSED
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ('CREATE TABLE "AuditLog" ("id" INTEGER PRIMARY KEY);\n'
         'ALTER TABLE "Portfolio" RENAME TO "Wallet";\n', "table rename"),
        (RENAME_USER + 'ALTER TABLE "User" ADD COLUMN "name" TEXT;\n', "old column"),
        (REDEFINE.replace('"displayName" TEXT', '"displayName" INTEGER'), "types differ"),
    ],
    ids=["table-rename", "old-name-kept", "type-changes"],
)  # fmt: skip
def test_the_opt_in_still_refuses_what_a_copy_cannot_make_exact(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sql: str, why: str
) -> None:
    db, _, env = renamed(tmp_path, sql)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    code, doc, err = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert "renamed to" in doc["refused"][0]["summary"]
    assert why in err  # history.rename_not_copied names the reason
    code, _, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.REFUSED
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_the_check_after_a_copy_fails_when_a_value_differs() -> None:
    """The in-transaction proof: one value, or one type (1 against '1'), apart fails it."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a, b)")
    conn.execute("INSERT INTO t (a, b) VALUES ('x', 'x'), (NULL, NULL), (x'00', x'00'), (1, 1)")
    rebuild.verify_copy(conn, "t", "a", "b")
    for value in ("1", None, 1.0, "X"):
        conn.execute("UPDATE t SET b = ? WHERE id = 4", (value,))
        with pytest.raises(HealthError, match="does not hold every old value"):
            rebuild.verify_copy(conn, "t", "a", "b")
    conn.close()


@pytest.mark.parametrize(
    ("definition", "seed", "reason"),
    [
        ('"displayName" TEXT NOT NULL', "", "holds NULL in 1 row(s)"),
        ('"displayName" TEXT UNIQUE', "UPDATE \"User\" SET name = 'Ada';", "duplicate values"),
        (
            '"displayName" TEXT CHECK (length("displayName") < 3)',
            "UPDATE \"User\" SET name = 'Ada' WHERE name IS NULL;",
            "CHECK",
        ),
    ],
    ids=["not-null-over-nulls", "unique-over-duplicates", "check-over-copied-values"],
)
def test_plan_refuses_a_copy_the_new_columns_constraints_would_reject(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, definition: str, seed: str, reason: str
) -> None:
    """plan = deploy: what the copied values break is refused by the preview, as by the
    transaction (which refuses it before writing), the database unchanged."""
    migrations = history(tmp_path)
    db = prisma_deployed(tmp_path, migrations, seed=USERS + seed)
    history(tmp_path, (RENAME, REDEFINE.replace('"displayName" TEXT', definition)))
    env = {**env_for(tmp_path, migrations), "SIDECAR_RENAMES": "copy"}
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    code, doc, _ = run(capsys, ["plan"], env)
    assert code == ExitCode.REFUSED
    assert reason in doc["refused"][0]["summary"]
    code, doc, _ = run(capsys, ["migrate"], env)
    assert code == ExitCode.REFUSED
    assert reason in doc["error"]["message"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


# --------------------------------------------------------------------------- the app stopped


@dataclass
class WatchingApps(FakeApps):
    """FakeApps that looks at the database when the app is stopped and started again."""

    db: Path = Path()
    seen: list[tuple[str, bool]] = field(default_factory=list)

    def _has_copy(self) -> bool:
        return "title" in columns(self.db, "Portfolio")

    @contextmanager
    def stopped(self, app: AppRef, *, timeout: float) -> Iterator[None]:
        self.seen.append(("stop", self._has_copy()))
        with super().stopped(app, timeout=timeout):
            yield
        self.seen.append(("start", self._has_copy()))


def test_deploy_stops_the_running_app_before_the_copy_and_starts_it_after(
    tmp_path: Path,
) -> None:
    db, migrations, env = renamed(tmp_path, RENAME_PORTFOLIO)
    settings = load_settings({**env, "SIDECAR_APP": "app", "SIDECAR_WAIT_TIMEOUT": "5s"})
    apps = WatchingApps(db=db)
    report = run_deploy(settings, apps=apps)
    assert report.changed
    assert report.app_stopped
    assert not report.restarted  # stopped and started by the pipeline: no second restart
    assert apps.calls == [
        "find:app:None",
        "stop:demo-app-1",
        "start:demo-app-1",
        "wait_healthy:demo-app-1",
    ]
    # Stopped before the change, started after its commit.
    assert apps.seen == [("stop", False), ("start", True)]
    assert prisma.to_apply(db, migrations) == []


def test_deploy_without_a_rename_to_copy_does_not_stop_the_app(tmp_path: Path) -> None:
    migrations = history(tmp_path)
    prisma_deployed(tmp_path, migrations, seed=USERS)
    history(tmp_path, ("20240201000000_nickname", 'ALTER TABLE "User" ADD "nickname" TEXT;'))
    env = {**env_for(tmp_path, migrations), "SIDECAR_RENAMES": "copy", "SIDECAR_APP": "app"}
    apps = FakeApps()
    report = run_deploy(load_settings(env), apps=apps)
    assert report.changed
    assert not report.app_stopped
    assert apps.calls == ["find:app:None", "restart:demo-app-1", "wait_healthy:demo-app-1"]


def test_deploy_with_docker_but_no_app_to_stop_refuses_the_copy(tmp_path: Path) -> None:
    db, _, env = renamed(tmp_path, RENAME_PORTFOLIO)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    apps = FakeApps()
    with pytest.raises(RefusedError, match="no app is configured") as refused:
        run_deploy(load_settings(env), apps=apps)
    assert "SIDECAR_APP" in (refused.value.hint or "")
    assert apps.calls == []
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_without_docker_the_copy_runs_for_an_app_that_is_not_running(tmp_path: Path) -> None:
    """The init-container and release layout (and `migrate`): no Docker, no app running."""
    db, migrations, env = renamed(tmp_path, RENAME_PORTFOLIO)
    report = run_deploy(load_settings(env), apps=None)
    assert report.changed
    assert not report.app_stopped
    assert "title" in columns(db, "Portfolio")
    assert prisma.to_apply(db, migrations) == []
