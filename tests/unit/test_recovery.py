"""Recovery that cannot pick the wrong data (issue 11, items 1, 2, 5 and 10), through the real
CLI on real SQLite files: two databases sharing one backups folder, a corrupt newest backup,
a writer committing while `restore --force` runs, a killed restore's leftover."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar import cli
from sidecar.backup import names
from sidecar.errors import ExitCode
from tests.unit.conftest import bk_build_db

ROOT = Path(__file__).resolve().parents[2]


def _env(db: Path, backups: Path, **extra: str) -> dict[str, str]:
    return {
        "SIDECAR_DATABASE": str(db),
        "SIDECAR_BACKUP_DIR": str(backups),
        "SIDECAR_LOG_FORMAT": "json",
        **extra,
    }


def _run(
    capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """Exit code, the JSON result, and the log events."""
    code = cli.main([*argv, "--json"], env=env)
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    return code, json.loads(captured.out), events


def _count(db: Path, table: str = "users") -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two databases, ``a.db`` (200 rows) and ``b.db`` (10 rows), and one backups folder."""
    a = bk_build_db(tmp_path / "a.db", rows=200)
    b = bk_build_db(tmp_path / "b.db", rows=10)
    conn = sqlite3.connect(b)
    conn.execute("DELETE FROM users WHERE id > 3")
    conn.commit()
    conn.close()
    return a, b, tmp_path / "backups"


# --------------------------------------------------------------- item 1: scoped by database


def test_restore_latest_takes_this_databases_backup_not_the_newest_in_the_folder(
    capsys: pytest.CaptureFixture[str], two: tuple[Path, Path, Path]
) -> None:
    a, b, backups = two
    assert _run(capsys, ["backup"], _env(a, backups))[0] == 0
    assert _run(capsys, ["backup"], _env(b, backups))[0] == 0  # newer, of b
    conn = sqlite3.connect(a)
    conn.execute("DELETE FROM users")
    conn.commit()
    conn.close()

    code, doc, _ = _run(capsys, ["restore", "latest"], _env(a, backups))
    assert code == 0, doc
    assert doc["backup"]["id"].startswith("a_backup_")
    assert doc["backup"]["source"] == str(a)
    assert _count(a) == 10  # a's own data, not b's 3 users
    assert _count(b) == 3


def test_list_verify_and_health_see_only_this_databases_backups(
    capsys: pytest.CaptureFixture[str], two: tuple[Path, Path, Path]
) -> None:
    a, b, backups = two
    _, made_a, _ = _run(capsys, ["backup"], _env(a, backups))
    _, made_b, _ = _run(capsys, ["backup"], _env(b, backups))
    a_id, b_id = made_a["backup"]["id"], made_b["backup"]["id"]

    code, listed, _ = _run(capsys, ["list"], _env(a, backups))
    assert code == 0
    assert [x["id"] for x in listed["backups"]] == [a_id]
    assert listed["other_databases"] == {str(b): 1}
    assert cli.main(["list"], env=_env(a, backups)) == 0
    assert f"also 1 backup(s) of {b}" in capsys.readouterr().out

    code, verified, _ = _run(capsys, ["verify"], _env(a, backups))
    assert code == 0
    assert [x["id"] for x in verified["backups"]] == [a_id]
    code, verified, _ = _run(capsys, ["verify", "latest"], _env(b, backups))
    assert [x["id"] for x in verified["backups"]] == [b_id]

    # a's own backups stop: b's fresh backup must not keep a's HEALTHCHECK green.
    (backups / f"{a_id}.json").unlink()
    (backups / a_id).unlink()
    code, report, _ = _run(capsys, ["health", "--backups-only"], _env(a, backups))
    assert code == ExitCode.HEALTH
    assert report["last_backup"] is None
    assert f"no verified backup of {a}" in report["checks"][0]["detail"]
    code, report, _ = _run(capsys, ["health", "--backups-only"], _env(b, backups))
    assert code == 0
    assert report["last_backup"] == b_id


def test_a_missing_database_is_never_filled_with_another_databases_backup(
    capsys: pytest.CaptureFixture[str], two: tuple[Path, Path, Path]
) -> None:
    a, b, backups = two
    _, made_b, _ = _run(capsys, ["backup"], _env(b, backups))
    a.unlink()
    for side in ("-wal", "-shm"):
        Path(f"{a}{side}").unlink(missing_ok=True)

    code, doc, _ = _run(capsys, ["restore", "latest"], _env(a, backups))
    assert code == ExitCode.REFUSED
    assert f"no verified backups of {a}" in doc["error"]["message"]
    assert str(b) in doc["error"]["message"]
    assert "--from-other-database" in doc["error"]["hint"]
    assert not a.exists()

    # Named by its ID, another database's backup needs saying so.
    b_id = made_b["backup"]["id"]
    code, doc, _ = _run(capsys, ["restore", b_id], _env(a, backups))
    assert code == ExitCode.REFUSED
    assert f"is of {b}, not of {a}" in doc["error"]["message"]
    assert not a.exists()
    code, doc, _ = _run(capsys, ["restore", b_id, "--from-other-database"], _env(a, backups))
    assert code == 0, doc
    assert _count(a) == 3


def test_databases_with_the_same_file_name_in_two_folders_keep_their_own_backups(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Same stem, two databases: prune, the vanished-data finding and restore go by the
    manifest's source, not by the name."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    big = bk_build_db(tmp_path / "one" / "app.db", rows=200)
    small = bk_build_db(tmp_path / "two" / "app.db", rows=2)
    conn = sqlite3.connect(small)
    conn.execute("DELETE FROM users WHERE id > 1")
    conn.commit()
    conn.close()
    backups = tmp_path / "backups"
    _, made_big, _ = _run(capsys, ["backup"], _env(big, backups))
    big_id = made_big["backup"]["id"]

    # The small database is not "the big one with its data gone".
    code, made, events = _run(capsys, ["backup", "--keep", "1"], _env(small, backups))
    assert code == 0
    assert made["backup"]["manifest"].get("rows_vanished") is None
    assert "backup.rows_vanished" not in {e["event"] for e in events}
    # ... and pruning its backups down to one never deletes the other database's.
    _run(capsys, ["backup", "--keep", "1"], _env(small, backups))
    assert (backups / big_id).exists()
    code, listed, _ = _run(capsys, ["list"], _env(big, backups))
    assert [x["id"] for x in listed["backups"]] == [big_id]
    code, health, _ = _run(capsys, ["health"], _env(small, backups))
    assert code == 0
    assert all(c["name"] != "data since the backups" for c in health["checks"])

    code, doc, _ = _run(capsys, ["restore", "latest"], _env(small, backups))
    assert code == 0
    assert doc["backup"]["source"] == str(small)
    assert _count(small) == 1


def test_a_backup_taken_through_another_mount_point_is_matched_by_file_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Taken in a container at /app/data, read from the host at another path: the source's
    folder is not visible here, so its file name decides (and another name still does not
    match)."""
    (tmp_path / "container").mkdir()
    db = bk_build_db(tmp_path / "container" / "portfolio.db")
    other = bk_build_db(tmp_path / "container" / "other.db", rows=3)
    backups = tmp_path / "backups"
    _, made, _ = _run(capsys, ["backup"], _env(db, backups))
    _run(capsys, ["backup"], _env(other, backups))
    (tmp_path / "container").rename(tmp_path / "host")
    here = tmp_path / "host" / "portfolio.db"
    _, listed, _ = _run(capsys, ["list"], _env(here, backups))
    assert [x["id"] for x in listed["backups"]] == [made["backup"]["id"]]
    code, doc, _ = _run(capsys, ["restore", "latest", "--dry-run"], _env(here, backups))
    assert code == 0
    assert doc["backup"]["id"] == made["backup"]["id"]


# ------------------------------------------------------- item 5: a corrupt backup stays known


def _flip(path: Path, offset: int = 5000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_list_shows_a_bit_flipped_backup_as_corrupt_and_restore_latest_skips_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = bk_build_db(tmp_path / "portfolio.db")
    backups = tmp_path / "backups"
    env = _env(db, backups)
    _, older, _ = _run(capsys, ["backup", "--no-prune"], env)
    _, newer, _ = _run(capsys, ["backup", "--no-prune"], env)
    good, bad = older["backup"]["id"], newer["backup"]["id"]
    _flip(backups / bad)

    # Before any verify: the file changed after its manifest, so list does not vouch for it.
    _, listed, _ = _run(capsys, ["list"], env)
    assert [(x["id"], x["verified"]) for x in listed["backups"]] == [(bad, False), (good, True)]
    assert cli.main(["list"], env=env) == 0
    assert "CHANGED" in next(line for line in capsys.readouterr().out.splitlines() if bad in line)

    code, verified, _ = _run(capsys, ["verify"], env)
    assert code == ExitCode.HEALTH
    assert verified["bad"] == [bad]
    # The result of that verify is durable: list and health know it without re-reading.
    assert cli.main(["list"], env=env) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if bad in line)
    assert "CORRUPT" in row
    assert "sha256" in row
    _, report, _ = _run(capsys, ["health", "--backups-only"], env)
    assert report["last_backup"] == good

    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM users")
    conn.commit()
    conn.close()
    assert cli.main(["restore", "latest", "--dry-run"], env=env) == 0
    assert f"skipped {bad}: " in capsys.readouterr().out
    code, doc, events = _run(capsys, ["restore", "latest"], env)
    assert code == 0, doc
    assert doc["backup"]["id"] == good
    assert [s["id"] for s in doc["skipped"]] == [bad]
    skipped = [e for e in events if e["event"] == "restore.skipped"]
    assert [e["id"] for e in skipped] == [bad]
    assert _count(db) == 10


def test_a_verified_copy_put_back_in_place_is_trusted_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A file copied without its times (newer than its manifest) is CHANGED until `verify`
    passes; then verified again."""
    db = bk_build_db(tmp_path / "portfolio.db")
    backups = tmp_path / "backups"
    env = _env(db, backups)
    _, made, _ = _run(capsys, ["backup"], env)
    path = backups / made["backup"]["id"]
    time.sleep(0.01)
    path.write_bytes(path.read_bytes())  # same bytes, new mtime
    _, listed, _ = _run(capsys, ["list"], env)
    assert listed["backups"][0]["verified"] is False
    assert listed["backups"][0]["problem"] == names.CHANGED
    code, _, _ = _run(capsys, ["verify"], env)
    assert code == 0
    _, listed, _ = _run(capsys, ["list"], env)
    assert listed["backups"][0]["verified"] is True


# --------------------------------------------- item 2: restore --force under a live writer


def _writer(db: Path) -> subprocess.Popen[str]:
    """Another process committing a row every few ms; prints each id after COMMIT returned
    ("ERR ..." for a failed write); stops when its stdin closes."""
    code = f"""
import sqlite3, sys, threading, time
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
c = sqlite3.connect({str(db)!r}, isolation_level=None, timeout=0.2)
print("ready", flush=True)
while not done.is_set():
    try:
        cur = c.execute("INSERT INTO writes(at) VALUES (?)", (time.time(),))
        print(cur.lastrowid, flush=True)
    except sqlite3.OperationalError as exc:
        print("ERR", exc, flush=True)
    time.sleep(0.005)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)  # a few commits in
    return proc


def _backed_up(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *, journal: str
) -> tuple[Path, Path, dict[str, str]]:
    """A database with one verified backup: (database, backups folder, environment)."""
    db = bk_build_db(tmp_path / "portfolio.db", journal=journal)
    backups = tmp_path / "backups"
    env = _env(db, backups)
    assert _run(capsys, ["backup"], env)[0] == 0
    return db, backups, env


def _stop(proc: subprocess.Popen[str]) -> tuple[list[int], list[str]]:
    out, _ = proc.communicate("", timeout=30)
    lines = out.splitlines()
    return [int(x) for x in lines if x.isdigit()], [x for x in lines if x.startswith("ERR")]


def _ids(path: Path) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM writes")}
    finally:
        conn.close()


@pytest.mark.parametrize("force", [False, True])
def test_restore_never_replaces_a_wal_database_under_a_writer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, force: bool
) -> None:
    """A WAL-mode app keeps committing into the replaced file's inode: every one of those
    commits would be lost with exit 0. Refused (exit 3), naming the writer, --force or not."""
    db, _, env = _backed_up(capsys, tmp_path, journal="wal")
    writer = _writer(db)
    try:
        argv = ["restore", "latest", *(["--force"] if force else [])]
        code, doc, _ = _run(capsys, argv, env)
        time.sleep(0.2)
    finally:
        committed, errors = _stop(writer)
    assert code == ExitCode.REFUSED, doc
    assert f"pid {writer.pid}" in doc["error"]["message"]
    assert "WAL-mode connection" in doc["error"]["message"]
    assert "--force cannot override" in doc["error"]["hint"]
    assert committed
    assert errors == []
    assert set(committed) <= _ids(db)  # every acknowledged commit is in the live file


def test_restore_force_under_a_rollback_journal_writer_loses_no_commit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without --force the writer's open file refuses the restore; with it, the restore holds
    the write lock from the safety backup to the replace: each acknowledged commit is in the
    safety backup, and the writer's later writes fail (SQLite refuses to write to a moved
    database) instead of being acknowledged into the replaced file."""
    db, backups, env = _backed_up(capsys, tmp_path, journal="delete")
    writer = _writer(db)
    try:
        code, doc, _ = _run(capsys, ["restore", "latest"], env)
        assert code == ExitCode.REFUSED, doc
        assert f"pid {writer.pid}" in doc["error"]["message"]
        code, doc, _ = _run(capsys, ["restore", "latest", "--force"], env)
        time.sleep(0.3)
    finally:
        committed, errors = _stop(writer)
    assert committed
    if code == ExitCode.REFUSED:  # the probe caught the writer inside a transaction
        assert "inside a transaction" in doc["error"]["message"]
        assert set(committed) <= _ids(db)
        return
    assert code == 0, doc
    safety = backups / doc["safety_backup"]
    assert set(committed) <= _ids(safety)
    assert errors, "the writer's writes after the restore must fail, not vanish"
    assert _ids(db) == set()  # the backup was taken before the writer's rows


# ------------------------------------------------ item 10: --to and a killed restore


def test_restore_to_a_missing_folder_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = bk_build_db(tmp_path / "portfolio.db")
    env = _env(db, tmp_path / "backups")
    assert _run(capsys, ["backup"], env)[0] == 0
    target = tmp_path / "nodir" / "x.db"
    assert cli.main(["restore", "latest", "--to", str(target)], env=env) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("{")]
    assert (
        lines[0]
        == f"error: cannot restore into {target}: the folder {target.parent} does not exist"
    )
    assert lines[1].startswith("hint: create the folder first")
    assert not target.parent.exists()


@pytest.mark.parametrize("side", ["-wal", "-shm", "-journal", ""])
def test_restore_to_the_live_databases_own_files_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, side: str
) -> None:
    db = bk_build_db(tmp_path / "portfolio.db", journal="delete")
    env = _env(db, tmp_path / "backups")
    assert _run(capsys, ["backup"], env)[0] == 0
    db_bytes = db.read_bytes()
    if not side:
        db.rename(tmp_path / "moved.db")  # the live path, while the database is missing
    code, doc, _ = _run(capsys, ["restore", "latest", "--to", f"{db}{side}"], env)
    assert code == ExitCode.REFUSED, doc
    assert "live database" in doc["error"]["message"]
    assert not Path(f"{db}{side}").exists()
    if side:
        assert db.read_bytes() == db_bytes


def _leftover(db: Path) -> Path:
    return db.with_name(f".{db.name}.restore-partial")


@pytest.mark.parametrize("argv", [["backup"], ["restore", "latest"], ["migrate"]])
def test_a_restore_leftover_is_removed_by_the_next_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    db = bk_build_db(tmp_path / "portfolio.db")
    schema = tmp_path / "schema.sql"
    conn = sqlite3.connect(db)
    ddl = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")]
    conn.close()
    schema.write_text(";\n".join(ddl) + ";\n")
    env = _env(db, tmp_path / "backups", SIDECAR_SCHEMA=str(schema), SIDECAR_QUIET_PERIOD="0s")
    assert _run(capsys, ["backup"], env)[0] == 0
    _leftover(db).write_bytes(b"\0" * 4096)
    code, doc, events = _run(capsys, argv, env)
    assert code == 0, doc
    assert not _leftover(db).exists()
    removed = [e for e in events if e["event"] == "restore.leftover_removed"]
    assert [e["path"] for e in removed] == [str(_leftover(db))]
    assert removed[0]["bytes"] == 4096


def test_a_killed_restore_leaves_the_database_and_its_leftover_goes_with_the_next_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL while the restore writes its new file: the database is untouched, and the
    next backup removes the partial file (hundreds of MB on a real volume)."""
    db = bk_build_db(tmp_path / "portfolio.db", rows=40_000, blob=2048)  # ~90 MB
    backups = tmp_path / "backups"
    env = _env(db, backups, SIDECAR_VERIFY="checksum")
    assert _run(capsys, ["backup"], env)[0] == 0
    before = _count(db, "transactions")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "restore", "latest"],
        env={**os.environ, **env}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _leftover(db).exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the restore finished before it was killed"
    assert _leftover(db).exists()
    assert _count(db, "transactions") == before
    code, _, events = _run(capsys, ["backup", "--no-prune"], env)
    assert code == 0
    assert not _leftover(db).exists()
    assert "restore.leftover_removed" in {e["event"] for e in events}
