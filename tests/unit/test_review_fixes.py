"""Regressions for the issue 11/17 review fixes (docs/safety.md, last section), through the CLI
on real files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.backup import store
from tests.unit.test_open_errors import fill, mounted_tmpfs
from tests.unit.test_pipeline import env_for, make_db
from tests.unit.test_prisma_history import env_for as prisma_env
from tests.unit.test_prisma_history import events, history, prisma_deployed, query, with_prisma_row


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]) -> str:
    """Run the CLI: the exit code, then stderr's error and hint lines."""
    code = cli.main(argv, env=env)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    return f"exit {code}\n" + "\n".join(lines)


@pytest.mark.parametrize("damage", ["touched", "recorded corrupt"])
def test_a_missing_database_is_refused_over_changed_or_corrupt_backups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    env = env_for(tmp_path)
    db = make_db(Path(env["SIDECAR_DATABASE"]))
    assert _run(capsys, ["backup"], env) == "exit 0\n"
    (backup,) = store.list_backups(tmp_path / "backups")
    if damage == "touched":
        st = backup.path.stat()
        os.utime(backup.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    else:
        with backup.path.open("r+b") as f:
            f.seek(4096)
            f.write(b"\xff" * 512)
        assert _run(capsys, ["verify", backup.id], env).startswith("exit 4")
    (now,) = store.list_backups(tmp_path / "backups")
    assert not now.verified  # what the refusal used to filter on
    for side in ("", "-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)

    said = _run(capsys, ["deploy", "--restart", "never"], env)
    assert said.startswith("exit 3\nerror: database ")
    assert "1 of them changed or corrupt since" in said
    assert not db.exists()
    assert _run(capsys, ["deploy", "--restart", "never", "--allow-fresh"], env) == "exit 0\n"
    assert db.exists()


def _who(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE who (n TEXT)")
    conn.execute("INSERT INTO who VALUES (?)", (name,))
    conn.commit()
    conn.close()
    return path


def test_a_relative_database_path_never_restores_another_folders_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _who(tmp_path / "x" / "app.db", "x"), _who(tmp_path / "y" / "app.db", "y")
    env = {
        "SIDECAR_DATABASE": "app.db",
        "SIDECAR_BACKUP_DIR": str(tmp_path / "b"),
        "SIDECAR_QUIET_PERIOD": "0",
    }
    monkeypatch.chdir(x.parent)
    assert _run(capsys, ["backup"], env) == "exit 0\n"
    (backup,) = store.list_backups(tmp_path / "b")
    assert backup.source == str(x)  # absolute, whatever the current folder was

    monkeypatch.chdir(y.parent)
    said = _run(capsys, ["restore", "latest"], env)
    assert said.startswith("exit 3\nerror: ")
    assert str(x) in said
    assert query(y, "SELECT n FROM who") == [("y",)]

    # A manifest from before (a relative source): no database's backup, neither folder's.
    manifest = json.loads(backup.manifest_path.read_text())
    backup.manifest_path.write_text(json.dumps({**manifest, "source": "app.db"}))
    for here in (x, y):
        monkeypatch.chdir(here.parent)
        assert _run(capsys, ["restore", "latest"], env).startswith("exit 3\n")
        assert query(here, "SELECT n FROM who") == [(here.parent.name,)]


@pytest.mark.parametrize("volume", ["read-only", "full"])
def test_a_restore_to_a_folder_it_cannot_write_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], volume: str
) -> None:
    env = env_for(tmp_path)
    make_db(
        Path(env["SIDECAR_DATABASE"]),
        extra="CREATE TABLE pad (b BLOB);" + ("INSERT INTO pad VALUES (randomblob(100000));" * 30),
    )
    assert _run(capsys, ["backup"], env) == "exit 0\n"
    with mounted_tmpfs(tmp_path / "volume", "1m") as folder:
        if volume == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            fill(folder)
        said = _run(capsys, ["restore", "latest", "--to", str(folder / "x.db")], env)
        assert "unexpected" not in said
        assert "bug" not in said
        if volume == "read-only":
            assert said.startswith(f"exit 2\nerror: cannot restore to {folder / 'x.db'}: ")
            assert "read-only file system" in said
        else:
            assert said.startswith("exit 5\nerror: the volume holding ")
            assert "filled up during the restore" in said
        assert "hint: " in said
        assert not (folder / "x.db").exists()
        assert not [p for p in folder.iterdir() if "restore-partial" in p.name]
    # Not a file system at all: /proc takes no new files.
    said = _run(capsys, ["restore", "latest", "--to", "/proc/x.db"], env)
    assert said.startswith("exit 2\nerror: cannot restore to /proc/x.db: cannot create a file in")


def test_the_log_settings_are_read_as_every_other_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(tmp_path)
    make_db(Path(env["SIDECAR_DATABASE"]))
    level_file = tmp_path / "level"
    level_file.write_text("debug\n")

    def events(**extra: str) -> list[dict[str, object]]:
        assert cli.main(["plan"], env={**env, **extra}) == 0
        lines = capsys.readouterr().err.splitlines()
        return [json.loads(line) for line in lines]  # every line JSON: no console renderer

    everything = events(SIDECAR_LOG_FORMAT="JSON", SIDECAR_LOG_LEVEL_FILE=str(level_file))
    assert "schema.loaded" in {e["event"] for e in everything}  # a debug event
    assert {e["level"] for e in events(SIDECAR_LOG_LEVEL=" warning")} <= {"warning", "error"}
    assert not events(SIDECAR_LOG_LEVEL="ERROR")


def test_a_refused_rename_of_a_required_column_is_reported_as_the_rename(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    migrations = history(tmp_path)
    prisma_deployed(tmp_path, migrations)
    rename = 'ALTER TABLE "Portfolio" RENAME COLUMN "name" TO "title";\n'
    history(tmp_path, ("20240201000000_rename", rename))
    env = prisma_env(tmp_path, migrations)
    said = _run(capsys, ["deploy", "--restart", "never"], env)
    assert said.startswith(
        'exit 3\nerror: refused: "Portfolio"."name" renamed to "Portfolio"."title": '
    )
    assert "expand and contract" in said
    # What the rename would create (a NOT NULL column without a default) is not refused
    # on its own, with the wrong hint.
    assert "NOT NULL without a default" not in said
    assert "more)" not in said
    assert "backfill" not in said
    assert cli.main(["plan", "--json"], env=env) == 3
    (refusal,) = json.loads(capsys.readouterr().out)["refused"]
    assert refusal["object"] == '"Portfolio"."name" renamed to "Portfolio"."title"'


SEEDED = """CREATE TABLE "Role" ("id" INTEGER NOT NULL PRIMARY KEY, "name" TEXT NOT NULL);
INSERT INTO "Role" VALUES (1, 'admin'), (2, 'user');
CREATE TABLE "User" ("id" INTEGER NOT NULL PRIMARY KEY,
    "roleId" INTEGER NOT NULL DEFAULT 2 REFERENCES "Role" ("id"));
"""


@pytest.mark.parametrize("command", ["deploy", "migrate"])
def test_a_historys_data_statements_are_named_as_not_executed_not_as_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    folder = tmp_path / "migrations" / "20240101000000_init"
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text(SEEDED)
    env = {**prisma_env(tmp_path, folder.parent), "SIDECAR_LOG_LEVEL": "warning"}
    argv = [command] + (["--restart", "never"] if command == "deploy" else [])
    Path(env["SIDECAR_DATABASE"]).parent.mkdir()

    assert cli.main([*argv, "--strict"], env=env) == 3
    captured = capsys.readouterr()
    assert (
        "error: not executed data statements under --strict: migration 20240101000000_init: "
        in captured.err
    )
    assert '`INSERT INTO "Role"' in captured.err
    assert "destructive" not in captured.err
    assert not Path(env["SIDECAR_DATABASE"]).exists()

    assert cli.main(argv, env=env) == 0
    captured = capsys.readouterr()
    assert f"{command}: created the database from the schema; WARNING: 1 data statement(s) " in (
        captured.out
    )
    assert "NOT EXECUTED" in captured.out
    assert 'migration 20240101000000_init: `INSERT INTO "Role"' in captured.out
    assert "drift item(s)" not in captured.out
    (event,) = [e for e in events(captured.err) if e["event"] == "deploy.data_not_executed"]
    assert event["migrations"] == ["20240101000000_init"]
    assert "Prisma will not run them either" in event["hint"]
    assert not [e for e in events(captured.err) if e["event"] == "deploy.drift"]


def test_restore_takes_wait_timeout_as_a_flag_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(tmp_path)
    make_db(Path(env["SIDECAR_DATABASE"]))
    assert _run(capsys, ["backup"], env) == "exit 0\n"
    assert _run(capsys, ["restore", "latest", "--wait-timeout", "5s"], env) == "exit 0\n"


def test_the_hint_for_a_failed_prisma_migration_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, migrations = with_prisma_row(tmp_path, rolled_back_at=None)
    said = _run(capsys, ["migrate"], prisma_env(tmp_path, migrations))
    assert said.startswith("exit 3\n")
    assert "prisma migrate resolve --rolled-back 20240201000000_nickname" in said
    assert "<name>" not in said
