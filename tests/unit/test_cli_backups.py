"""backup, list, verify, restore, prune through ``sidecar.cli.main``: exit codes and JSON."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar import cli
from sidecar.backup import names, store
from sidecar.errors import ExitCode
from tests.unit.conftest import clock_ahead, counting_spawns


@pytest.fixture
def bk_env(bk_db: Callable[..., Path], bk_dir: Path) -> dict[str, str]:
    db = bk_db("wal")
    return {
        "SIDECAR_DATABASE": f"file:{db}?connection_limit=1",
        "SIDECAR_BACKUP_DIR": str(bk_dir),
        "SIDECAR_LOG_FORMAT": "json",
    }


def _run(
    capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    code = cli.main([*argv, "--json"], env=env)
    out = capsys.readouterr().out
    return code, json.loads(out)


def _db_of(env: dict[str, str]) -> Path:
    """The database file a test's SIDECAR_DATABASE (a Prisma-style URL) names."""
    return Path(env["SIDECAR_DATABASE"].removeprefix("file:").split("?")[0])


def _mark(db: Path) -> None:
    """A change a restore undoes: one row in `writes` with at = -1."""
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO writes (at) VALUES (-1)")
    conn.commit()
    conn.close()


def _marks(db: Path) -> int:
    """How many rows :func:`_mark` wrote that ``db`` holds."""
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM writes WHERE at = -1").fetchone()[0])
    finally:
        conn.close()


def test_backup_then_list_then_verify(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str]
) -> None:
    code, doc = _run(capsys, ["backup"], bk_env)
    assert code == 0
    assert doc["ok"] is True
    backup = doc["backup"]
    assert backup["verified"] is True
    assert backup["reason"] == "manual"
    assert backup["manifest"]["row_counts"]["users"] == 10

    code, doc = _run(capsys, ["backup", "--compress", "zstd", "--reason", "scheduled"], bk_env)
    assert code == 0
    assert doc["backup"]["compressed"] is True

    code, doc = _run(capsys, ["list"], bk_env)
    assert code == 0
    assert [b["reason"] for b in doc["backups"]] == ["scheduled", "manual"]
    assert doc["missing"] == []

    code, doc = _run(capsys, ["verify", "--full"], bk_env)
    assert code == 0
    assert doc["level"] == "full"
    assert [b["ok"] for b in doc["backups"]] == [True, True]


def test_list_renders_a_table(capsys: pytest.CaptureFixture[str], bk_env: dict[str, str]) -> None:
    assert cli.main(["backup"], env=bk_env) == 0
    capsys.readouterr()
    assert cli.main(["list"], env=bk_env) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "AGE", "SIZE", "REASON", "NOTE"]
    assert "verified" in lines[1]
    assert lines[1].rstrip().endswith("manual")


def test_verify_exits_4_and_names_corrupt_and_missing_backups(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path
) -> None:
    ids = []
    for _ in range(3):
        _, doc = _run(capsys, ["backup", "--no-prune"], bk_env)
        ids.append(doc["backup"]["id"])
    corrupt, missing, good = ids
    data = bytearray((bk_dir / corrupt).read_bytes())
    data[5000] ^= 0x01
    (bk_dir / corrupt).write_bytes(bytes(data))
    (bk_dir / missing).unlink()

    code, doc = _run(capsys, ["verify"], bk_env)
    assert code == ExitCode.HEALTH
    assert doc["ok"] is False
    assert sorted(doc["bad"]) == sorted([corrupt, missing])

    assert cli.main(["verify"], env=bk_env) == ExitCode.HEALTH
    out = capsys.readouterr().out
    assert f"BAD  {corrupt}" in out
    assert f"BAD  {missing}" in out
    assert f"ok   {good}" in out

    code, doc = _run(capsys, ["verify", good], bk_env)
    assert code == 0


def test_restore_latest_round_trip_and_dry_run(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path
) -> None:
    db = _db_of(bk_env)
    _, made = _run(capsys, ["backup"], bk_env)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM users")
    conn.close()

    code, doc = _run(capsys, ["restore", "latest", "--dry-run"], bk_env)
    assert code == 0
    assert doc["dry_run"] is True
    assert len(store.list_backups(bk_dir)) == 1

    code, doc = _run(capsys, ["restore", "latest"], bk_env)
    assert code == 0
    assert doc["backup"]["id"] == made["backup"]["id"]
    assert doc["safety_backup"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 10
    conn.close()
    history = (bk_dir / names.HISTORY_NAME).read_text().splitlines()
    assert [json.loads(line)["event"] for line in history] == ["backup", "restore"]


def test_restore_refuses_paths_and_unknown_ids(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], tmp_path: Path
) -> None:
    _, made = _run(capsys, ["backup"], bk_env)
    code, doc = _run(capsys, ["restore", f"../backups/{made['backup']['id']}"], bk_env)
    assert code == ExitCode.REFUSED
    assert "only backup names" in doc["error"]["message"]
    code, doc = _run(capsys, ["restore", "nope.db"], bk_env)
    assert code == ExitCode.REFUSED
    assert doc["error"]["hint"]

    existing = tmp_path / "exists.db"
    existing.write_bytes(b"")
    code, doc = _run(capsys, ["restore", "latest", "--to", str(existing)], bk_env)
    assert code == ExitCode.REFUSED
    code, doc = _run(capsys, ["restore", "latest", "--to", str(tmp_path / "copy.db")], bk_env)
    assert code == 0
    assert doc["safety_backup"] is None


def test_restore_refuses_a_corrupt_backup(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path
) -> None:
    _, made = _run(capsys, ["backup"], bk_env)
    path = bk_dir / made["backup"]["id"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    code, doc = _run(capsys, ["restore", made["backup"]["id"]], bk_env)
    assert code == ExitCode.REFUSED
    assert "failed verification" in doc["error"]["message"]


def test_backup_prunes_by_keep_and_prune_dry_run(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path
) -> None:
    env = {**bk_env, "SIDECAR_KEEP": "2"}
    ids = []
    for _ in range(3):
        code, doc = _run(capsys, ["backup"], env)
        assert code == 0
        ids.append(doc["backup"]["id"])
    assert doc["pruned"] == [ids[0]]
    assert [b.id for b in store.list_backups(bk_dir)] == ids[:0:-1]

    code, doc = _run(capsys, ["prune", "--keep", "1", "--dry-run"], env)
    assert code == 0
    assert doc["deleted"] == [ids[1]]
    assert len(store.list_backups(bk_dir)) == 2
    code, doc = _run(capsys, ["prune", "--keep", "1"], env)
    assert doc["deleted"] == [ids[1]]
    assert [b.id for b in store.list_backups(bk_dir)] == [ids[2]]


def test_backup_without_database_is_a_config_error(
    capsys: pytest.CaptureFixture[str], bk_dir: Path
) -> None:
    code, doc = _run(capsys, ["backup"], {"SIDECAR_BACKUP_DIR": str(bk_dir)})
    assert code == ExitCode.USAGE
    assert doc["error"]["hint"]


def test_backup_with_no_free_space_exits_5(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str]
) -> None:
    env = {**bk_env, "SIDECAR_MIN_FREE_MARGIN": "1000000G"}
    code, doc = _run(capsys, ["backup"], env)
    assert code == ExitCode.UNAVAILABLE
    assert "free space" in doc["error"]["message"]


def test_backup_schedule_stays_up_until_sigterm_then_exits_0(
    bk_env: dict[str, str], bk_dir: Path
) -> None:
    """`backup --schedule 1s` (the Kubernetes native-sidecar mode) in a real process."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "backup", "--schedule", "1s", "--no-prune"],
        env={**os.environ, **bk_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(store.list_backups(bk_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    backups = store.list_backups(bk_dir)
    assert len(backups) >= 2
    assert all(b.verified for b in backups)
    reasons = {b.manifest.get("reason") for b in backups}
    assert reasons == {"manual", "scheduled"}
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "schedule.stopped" in events
    assert out.startswith("backup ")


def _long_running(env: dict[str, str], tmp_path: Path, schedule: str) -> Any:
    """``backup --schedule <schedule> --json`` in a real process, its log in a file."""
    import os
    import subprocess
    import sys

    log = (tmp_path / "stderr.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", "backup", "--schedule", schedule, "--json"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def _events_until(tmp_path: Path, event: str, count: int = 1) -> list[dict[str, Any]]:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = (tmp_path / "stderr.log").read_text()
        events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if sum(e["event"] == event for e in events) >= count:
            return events
        time.sleep(0.1)
    raise AssertionError(f"no {event} in: {text}")


def test_the_long_running_mode_outlives_its_first_backups_offsite_failure(
    bk_env: dict[str, str], bk_dir: Path, tmp_path: Path
) -> None:
    """A store away when the process starts (exit 5 for a one-shot backup) is announced
    and logged, as at any later slot: the process stays up, SIGTERM ends it with 0."""
    import signal
    import socket

    with socket.socket() as probe:  # a port nothing listens on: the store is away
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **bk_env,
        "SIDECAR_OFFSITE": "s3://bucket/prod",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    proc = _long_running(env, tmp_path, "1h")
    try:
        events = _events_until(tmp_path, "schedule.next")
        assert proc.poll() is None  # still up after the first backup failed
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    failed = next(e for e in events if e["event"] == "schedule.job_failed")
    assert failed["exit_code"] == ExitCode.UNAVAILABLE
    assert "offsite" in failed["error"]
    document = json.loads(out)
    assert document["ok"] is True
    assert document["backup"] is None
    assert document["first_backup_failed"]["exit_code"] == ExitCode.UNAVAILABLE
    assert document["first_backup_failed"]["message"] == failed["error"]
    assert [b.verified for b in store.list_backups(bk_dir)] == [True]  # kept locally


def test_the_long_running_mode_outlives_a_failed_first_local_backup(
    bk_env: dict[str, str], bk_dir: Path, tmp_path: Path
) -> None:
    """A first backup refused (exit 3: no SQLite file yet) is a failed slot: the next backs up."""
    import signal

    db = _db_of(bk_env)
    good = db.read_bytes()
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.write_bytes(b"not a database" * 100)
    proc = _long_running(bk_env, tmp_path, "1s")
    try:
        _events_until(tmp_path, "schedule.job_failed")
        db.write_bytes(good)
        _events_until(tmp_path, "backup.created")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert json.loads(out)["first_backup_failed"]["exit_code"] == ExitCode.REFUSED
    assert store.latest_verified(bk_dir) is not None


def test_a_configuration_error_of_the_first_backup_still_ends_the_long_running_mode(
    bk_env: dict[str, str], tmp_path: Path
) -> None:
    """Exit 2 (here: the database is a folder) no later slot can mend: it ends the process."""
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    proc = _long_running({**bk_env, "SIDECAR_DATABASE": str(folder)}, tmp_path, "1s")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.USAGE
    assert json.loads(out)["exit_code"] == ExitCode.USAGE
    assert "schedule.next" not in (tmp_path / "stderr.log").read_text()


def _cut_in_half(db: Path) -> None:
    """Half the file gone: SQLite cannot open it as a database at all."""
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


def _overwrite_a_page(db: Path) -> None:
    """Garbage in the middle of the second page: the header still reads, a b-tree does not."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page + 8 : page + 200] = b"\xff" * 192
    db.write_bytes(bytes(data))


def _damage_an_index(db: Path) -> None:
    """An index's root page zeroed past its header: the rows read, quick_check fails."""
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE type = 'index'").fetchone()
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with db.open("r+b") as handle:
        handle.seek((root[0] - 1) * page + 12)
        handle.write(b"\x00" * (page - 12))


@pytest.mark.parametrize("damage", [_cut_in_half, _overwrite_a_page, _damage_an_index])
def test_restore_over_a_database_that_fails_verification_salvages_it(
    capsys: pytest.CaptureFixture[str],
    bk_env: dict[str, str],
    bk_dir: Path,
    damage: Callable[[Path], None],
) -> None:
    """`health` sends a damaged database to `restore latest`: the safety backup of what it
    replaces fails verification (or would be called verified at `checksum`), so its raw
    bytes are kept in salvage/ and the restore goes on; no damaged backup is listed."""
    code, _ = _run(capsys, ["backup"], bk_env)
    assert code == 0
    db = _db_of(bk_env)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    damage(db)
    damaged = db.read_bytes()
    code, _ = _run(capsys, ["health"], bk_env)
    assert code == ExitCode.HEALTH
    code, document = _run(capsys, ["restore", "latest"], bk_env)
    assert code == 0, document
    assert document["safety_backup"] is None
    salvaged = Path(document["salvaged"])
    assert (salvaged / db.name).read_bytes() == damaged
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
    conn.close()
    # The salvage folder is never listed as a backup.
    assert [b.manifest.get("reason") for b in store.list_backups(bk_dir)] == ["manual"]
    code, listed = _run(capsys, ["list"], bk_env)
    assert all("salvage" not in b["id"] for b in listed["backups"])


def test_a_safety_backup_sqlite_could_not_read_stops_the_restore_never_salvages(
    capsys: pytest.CaptureFixture[str],
    bk_env: dict[str, str],
    bk_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An I/O error while checking the safety backup says nothing about the database: the
    restore stops with it unchanged; it is not taken for damage and replaced."""
    from sidecar import sqlite as sidecar_sqlite

    code, _ = _run(capsys, ["backup"], bk_env)
    db = _db_of(bk_env)
    _mark(db)

    real = sidecar_sqlite.quick_check

    def failing(conn: sqlite3.Connection, *, full: bool = False, **kw: Any) -> list[str]:
        if not full:  # the backup restored is checked at quick; the safety backup at full
            return real(conn, full=full, **kw)
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = 10  # SQLITE_IOERR
        raise error

    monkeypatch.setattr(sidecar_sqlite, "quick_check", failing)
    code, failed = _run(capsys, ["restore", "latest"], {**bk_env, "SIDECAR_VERIFY": "full"})
    assert code == ExitCode.HEALTH, failed
    assert not (bk_dir / "salvage").exists()
    assert _marks(db) == 1


def test_restore_latest_run_twice_restores_the_same_backup(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path
) -> None:
    """A retried `restore latest` (a runbook, a CI step) must not bring back the database
    the first run replaced: that is what its safety backup, now the newest, holds."""
    db = _db_of(bk_env)
    code, taken = _run(capsys, ["backup"], bk_env)
    assert code == 0
    _mark(db)  # the change the restore undoes

    code, first = _run(capsys, ["restore", "latest"], bk_env)
    assert code == 0, first
    assert (first["backup"]["id"], _marks(db)) == (taken["backup"]["id"], 0)
    code, second = _run(capsys, ["restore", "latest"], bk_env)
    assert code == 0, second
    assert (second["backup"]["id"], _marks(db)) == (taken["backup"]["id"], 0)
    assert second["passed_over"] == [first["safety_backup"]]
    # Named, the safety backup is restored.
    code, undone = _run(capsys, ["restore", first["safety_backup"]], bk_env)
    assert (code, _marks(db)) == (0, 1), undone


def test_prune_right_after_a_restore_keeps_what_restore_latest_takes(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path
) -> None:
    """SIDECAR_KEEP=1: the restore's safety backup is now the newest, but `latest` never
    takes it; the backup `latest` takes is kept beside it."""
    code, taken = _run(capsys, ["backup"], bk_env)
    code, restored = _run(capsys, ["restore", "latest"], bk_env)
    assert restored["safety_backup"] is not None
    code, pruned = _run(capsys, ["prune"], {**bk_env, "SIDECAR_KEEP": "1"})
    assert (code, pruned["deleted"]) == (0, []), pruned
    code, again = _run(capsys, ["restore", "latest"], bk_env)
    assert (code, again["backup"]["id"]) == (0, taken["backup"]["id"]), again


def test_restore_latest_with_only_safety_backups_left_refuses_and_names_one(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path
) -> None:
    code, taken = _run(capsys, ["backup"], bk_env)
    code, first = _run(capsys, ["restore", "latest"], bk_env)
    assert code == 0, first
    for path in bk_dir.glob(f"{taken['backup']['id']}*"):
        path.unlink()
    code, refused = _run(capsys, ["restore", "latest"], bk_env)
    assert code == ExitCode.REFUSED
    assert first["safety_backup"] in refused["error"]["hint"]
    # Known corrupt, it is not offered: it is skipped as any corrupt backup is.
    safety = bk_dir / first["safety_backup"]
    data = bytearray(safety.read_bytes())
    data[len(data) // 2] ^= 0x01
    safety.write_bytes(bytes(data))
    code, _ = _run(capsys, ["verify"], bk_env)
    assert code == ExitCode.HEALTH
    code, refused = _run(capsys, ["restore", "latest"], bk_env)
    assert code == ExitCode.REFUSED
    assert "fails verification" in refused["error"]["message"]
    assert first["safety_backup"] not in refused["error"]["hint"]


def test_a_clock_that_went_back_never_makes_an_older_backup_the_latest(
    capsys: pytest.CaptureFixture[str],
    bk_env: dict[str, str],
    bk_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backup taken while the host's clock was 30 days ahead, then the clock corrected:
    the next backup is still the newest (`restore latest` takes it, retention keeps it),
    and `health` says what is wrong instead of calling a backup -720h old fresh."""
    from sidecar.backup import create

    db = _db_of(bk_env)
    with monkeypatch.context() as patched:
        patched.setattr(create, "datetime", clock_ahead(30))
        code, ahead = _run(capsys, ["backup"], bk_env)
    assert code == 0
    code, health = _run(capsys, ["health", "--backups-only"], bk_env)
    assert code == ExitCode.HEALTH
    assert "in the future" in json.dumps(health)
    _mark(db)
    code, now = _run(capsys, ["backup"], bk_env)
    assert code == 0
    newest = store.list_backups(bk_dir)[0]
    assert newest.id == now["backup"]["id"] != ahead["backup"]["id"]
    assert newest.id.startswith(ahead["backup"]["id"].removesuffix(".db"))  # its stamp, _1
    code, health = _run(capsys, ["health", "--backups-only"], bk_env)
    assert code == 0, health
    code, _ = _run(capsys, ["prune"], {**bk_env, "SIDECAR_KEEP": "1"})
    assert code == 0
    assert {b.id for b in store.list_backups(bk_dir)} == {
        now["backup"]["id"],
        ahead["backup"]["id"],
    }
    code, restored = _run(capsys, ["restore", "latest"], bk_env)
    assert code == 0
    assert restored["backup"]["id"] == now["backup"]["id"]
    assert _marks(db) == 1


def test_restore_through_a_symlinked_database_path_restores_the_file_it_names(
    capsys: pytest.CaptureFixture[str], bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    """SQLite follows the link (its -wal is the real file's): so must the restore, or the
    file the app opens keeps the data that was to be replaced."""
    real = bk_db("wal", name="real.db")
    link = real.with_name("link.db")
    link.symlink_to(real.name)
    env = {"SIDECAR_DATABASE": str(link), "SIDECAR_BACKUP_DIR": str(bk_dir)}
    code, _ = _run(capsys, ["backup"], env)
    assert code == 0
    _mark(link)
    code, restored = _run(capsys, ["restore", "latest"], env)
    assert code == 0, restored
    assert link.is_symlink()
    assert restored["safety_backup"].startswith("link_backup_")  # as every backup of it
    assert _marks(real) == 0


def test_restore_latest_from_other_database_is_a_usage_error_not_ignored(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str]
) -> None:
    code, _ = _run(capsys, ["backup"], bk_env)
    code, refused = _run(capsys, ["restore", "latest", "--from-other-database"], bk_env)
    assert code == ExitCode.USAGE
    assert "needs a backup ID" in refused["error"]["message"]


def test_prune_never_lets_a_backup_that_rotted_in_place_push_out_the_good_one(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path
) -> None:
    """One byte of the newest backup changed, its size and mtime put back: still "verified"
    by what is known without reading it, so prune reads it before deleting anything."""
    import os

    code, older = _run(capsys, ["backup"], bk_env)
    code, newer = _run(capsys, ["backup"], bk_env)
    assert code == 0
    path = bk_dir / newer["backup"]["id"]
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.list_backups(bk_dir)[0].verified  # nothing known against it yet
    code, dry = _run(capsys, ["prune", "--dry-run"], {**bk_env, "SIDECAR_KEEP": "1"})
    assert (code, dry["deleted"]) == (0, []), dry
    code, pruned = _run(capsys, ["prune"], {**bk_env, "SIDECAR_KEEP": "1"})
    assert (code, pruned["deleted"]) == (0, []), pruned
    listed = {b.id: b.verified for b in store.list_backups(bk_dir)}
    assert listed == {newer["backup"]["id"]: False, older["backup"]["id"]: True}
    code, restored = _run(capsys, ["restore", "latest"], bk_env)
    assert (code, restored["backup"]["id"]) == (0, older["backup"]["id"])


@pytest.mark.parametrize("which", ["latest", "by-id"])
def test_a_restore_dry_run_writes_nothing(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], bk_dir: Path, which: str
) -> None:
    """Not even the record of the verification it runs on a backup touched since."""
    import os

    code, taken = _run(capsys, ["backup"], bk_env)
    path = bk_dir / taken["backup"]["id"]
    later = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))  # modified after its manifest: verified again
    before = sorted(p.name for p in bk_dir.iterdir())
    chosen = "latest" if which == "latest" else taken["backup"]["id"]
    code, dry = _run(capsys, ["restore", chosen, "--dry-run"], bk_env)
    assert (code, dry["dry_run"]) == (0, True), dry
    assert sorted(p.name for p in bk_dir.iterdir()) == before


def test_a_one_shot_backup_loads_no_schedule_nor_offsite_code(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    """croniter runs `file` on the interpreter when imported, and the offsite modules cost
    ~40 ms: a backup without SIDECAR_SCHEDULE or SIDECAR_OFFSITE loads neither."""
    import subprocess
    import sys

    db = bk_db("wal")
    probe = (
        "import sys; from sidecar import cli; "
        f"code = cli.main(['backup'], env={{'SIDECAR_DATABASE': {str(db)!r}, "
        f"'SIDECAR_BACKUP_DIR': {str(bk_dir)!r}}}); "
        "print(code, sorted(m for m in ('croniter', 'sidecar.schedule', "
        "'sidecar.commands.offsite', 'sidecar.offsite.store') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "0 []"
    assert len(store.list_backups(bk_dir)) == 1


def test_the_backup_command_copies_with_the_child_it_started_ahead(
    capsys: pytest.CaptureFixture[str], bk_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar import database
    from sidecar.backup import snapshot

    started = counting_spawns(monkeypatch)
    children_at_check: list[int] = []
    real_check = database.check_database_file

    def check(db: Path) -> None:
        children_at_check.append(len(started))
        real_check(db)

    monkeypatch.setattr(database, "check_database_file", check)
    code, doc = _run(capsys, ["backup"], bk_env)
    assert code == 0
    assert doc["backup"]["verified"] is True
    assert children_at_check == [1]  # started before the database file was even checked
    assert len(started) == 1  # ... and it made the copy
    assert started[0].returncode == 0
    assert snapshot._ahead == []


def test_a_refused_file_stops_the_child_started_ahead(
    capsys: pytest.CaptureFixture[str],
    bk_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sidecar.backup import snapshot

    started = counting_spawns(monkeypatch)
    foreign = tmp_path / "app.db"
    foreign.write_bytes(b"not a database at all" * 100)
    env = {"SIDECAR_DATABASE": str(foreign), "SIDECAR_BACKUP_DIR": str(bk_dir)}
    code = cli.main(["backup", "--json"], env=env)
    capsys.readouterr()
    assert code == ExitCode.REFUSED
    assert len(started) == 1
    assert started[0].returncode is not None  # it got no job and exited
    assert snapshot._ahead == []
    assert store.list_backups(bk_dir) == []
