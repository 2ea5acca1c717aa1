"""A healthy database that cannot be opened or written *here* is never called damaged (issue
11, items 4 and 7): a lock, a full data volume and a read-only mount each get their own exit
code (5, 5, 2) and hint, from `plan` and `health` alike, through the real CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sidecar import cli
from tests.faults.badinput import BASE_SCHEMA, build_db

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def run(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    code = cli.main(argv, env=env)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith(("error:", "hint:"))]
    return code, "\n".join(errors)


def environment(db: Path, tmp_path: Path) -> dict[str, str]:
    schema = tmp_path / "schema.sql"
    schema.write_text(BASE_SCHEMA)
    return {
        "SIDECAR_DATABASE": str(db),
        "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
        "SIDECAR_SCHEMA": str(schema),
        "SIDECAR_WAIT_TIMEOUT": "1s",
        "SIDECAR_LOG_FORMAT": "json",
    }


def assert_not_called_damaged(lines: str) -> None:
    assert lines.startswith("error: "), lines
    assert "\nhint: " in lines, lines
    assert " is damaged" not in lines, lines
    assert "restore latest" not in lines, lines


@pytest.mark.parametrize("command", ["health", "plan"])
def test_a_locked_database_exits_5_from_health_as_from_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    db = build_db(tmp_path / "app.db")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("PRAGMA journal_mode=DELETE")  # an exclusive writer keeps readers out
    holder.execute("INSERT INTO users(email) VALUES ('held@x')")
    try:
        code, lines = run([command], environment(db, tmp_path), capsys)
    finally:
        holder.close()
    assert code == 5, lines
    assert "locked" in lines, lines
    assert_not_called_damaged(lines)


@contextmanager
def mounted_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``folder`` (root only: the suite runs as root in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "volume", "2m") as folder:
        yield folder


def fill(folder: Path) -> None:
    with (folder / "filler").open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


@pytest.mark.parametrize("command", ["health", "plan"])
def test_a_full_data_volume_exits_5_naming_the_disk(
    tmp_path: Path, tmpfs: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    db = build_db(tmpfs / "app.db")
    fill(tmpfs)
    code, lines = run([command], environment(db, tmp_path), capsys)
    assert code == 5, lines
    assert "full" in lines.splitlines()[0], lines
    assert_not_called_damaged(lines)


@pytest.mark.parametrize("command", ["health", "plan", "deploy"])
def test_a_read_only_data_volume_exits_2_naming_the_mount(
    tmp_path: Path, tmpfs: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    db = build_db(tmpfs / "app.db")
    before = db.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    code, lines = run([command], environment(db, tmp_path), capsys)
    assert code == 2, lines
    assert "read-only" in lines.splitlines()[0], lines
    assert_not_called_damaged(lines)
    assert db.read_bytes() == before
