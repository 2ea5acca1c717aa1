"""The backup engine on real SQLite files: create, verify, restore, naming, modes, locks."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sidecar import database
from sidecar.backup import names, retention, store
from sidecar.backup.create import create_backup
from sidecar.backup.holders import database_in_use
from sidecar.backup.restore import restore_backup
from sidecar.backup.store import BackupInfo
from sidecar.backup.verify import FileFacts, verify_backup
from sidecar.errors import ConfigError, HealthError, RefusedError, UnavailableError
from sidecar.settings import BackupIO, Compression, VerifyLevel
from tests.unit.conftest import bk_other_connection, counting_spawns, has_direct_io

NOW = datetime(2026, 11, 23, 21, 0, 0, tzinfo=UTC)


def _rows(path: Path, table: str = "transactions") -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_backup_is_a_verified_self_contained_copy(
    bk_db: Callable[..., Path], bk_dir: Path, journal: str
) -> None:
    db = bk_db(journal)
    info = create_backup(db, bk_dir, environment="production", reason="manual", now=NOW)

    assert info.id == "portfolio_backup_production_20261123T210000Z.db"
    assert info.verified
    assert info.reason == "manual"
    assert info.created_at == NOW
    m = info.manifest
    assert m["journal_mode"] == journal
    assert m["row_counts"] == {"portfolios": 5, "transactions": 200, "users": 10, "writes": 0}
    assert m["page_size"] * m["page_count"] == m["size"] == info.path.stat().st_size
    assert m["sqlite_version"] == sqlite3.sqlite_version
    assert len(m["sha256"]) == 64
    assert set(m["durations"]) >= {"copy_s", "read_lock_s", "verify_s", "total_s"}
    # A single file: no -wal/-shm beside it, nothing else left in the folder.
    assert sorted(os.listdir(bk_dir)) == sorted([info.id, f"{info.id}.json", names.LOCK_NAME])
    assert _rows(info.path) == 200
    assert verify_backup(info) == []
    assert verify_backup(info, full=True) == []


def test_same_second_names_are_unique_and_sort_newest_first(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    db = bk_db()
    ids = [
        create_backup(db, bk_dir, environment="staging", reason="manual", now=NOW).id
        for _ in range(3)
    ]
    assert ids[1].endswith("Z_1.db")
    assert ids[2].endswith("Z_2.db")
    assert [b.id for b in store.list_backups(bk_dir)] == ids[::-1]


def test_backups_taken_after_the_clock_went_back_sort_in_the_order_taken(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    """One backup named a day ahead, then the clock corrected, with prune freeing the lower
    _N in between: each new backup is still the newest (it took a freed _N before)."""
    from datetime import timedelta

    db = bk_db("wal")
    create_backup(db, bk_dir, environment="production", reason="manual",
                  now=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    for _ in range(4):
        info = create_backup(db, bk_dir, environment="production", reason="manual")
        assert store.list_backups(bk_dir)[0].id == info.id
        assert store.latest_verified(bk_dir, db) == info
        pruned = retention.prune(
            bk_dir, keep=2, database=db, environment="production", protect=[info.id]
        )
        assert info.id not in {b.id for b in pruned.deleted}


def test_backup_files_are_private_or_group_readable(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    db = bk_db()
    private = create_backup(db, bk_dir, environment="production", reason="manual")
    assert stat.S_IMODE(private.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.manifest_path.stat().st_mode) == 0o600
    group = os.getgid()
    shared = create_backup(db, bk_dir, environment="production", reason="manual", group=group)
    assert stat.S_IMODE(shared.path.stat().st_mode) == 0o640
    assert shared.path.stat().st_gid == group


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_backup_while_caller_holds_begin_immediate(
    bk_db: Callable[..., Path], bk_dir: Path, journal: str
) -> None:
    db = bk_db(journal)
    a = sqlite3.connect(db, isolation_level=None)
    a.execute("BEGIN IMMEDIATE")
    info = create_backup(db, bk_dir, environment="production", reason="deploy")
    assert info.manifest["row_counts"]["users"] == 10

    other = sqlite3.connect(db, isolation_level=None, timeout=0.1)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")  # A still holds the write lock
    a.execute("INSERT INTO users(email) VALUES ('after@x')")
    a.execute("COMMIT")
    assert other.execute("SELECT count(*) FROM users").fetchone()[0] == 11
    other.close()
    a.close()


def test_missing_database_is_a_config_error_and_creates_nothing(
    tmp_path: Path, bk_dir: Path
) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_backup(tmp_path / "nope.db", bk_dir, environment="production", reason="manual")
    assert not (tmp_path / "nope.db").exists()


def test_preflight_refuses_without_free_space_and_leaves_nothing(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    db = bk_db()
    with pytest.raises(UnavailableError, match="not enough free space") as caught:
        create_backup(
            db, bk_dir, environment="production", reason="manual", min_free_margin=1 << 60
        )
    assert caught.value.hint
    assert store.list_backups(bk_dir) == []
    assert [n for n in os.listdir(bk_dir) if n != names.LOCK_NAME] == []


def test_stale_partials_are_cleaned_and_other_files_are_not(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    bk_dir.mkdir()
    stale = [
        ".portfolio_backup_production_20261123T210000Z.db.partial",
        ".portfolio_backup_production_20261123T210000Z.db.partial-wal",
        ".portfolio_backup_production_20261123T210000Z.db.json.partial",
        ".portfolio_backup_production_20261123T210000Z_1.db.zst.partial",
    ]
    foreign = ["notes.txt", ".hidden.partial", "portfolio.db.partial"]
    for name in stale + foreign:
        (bk_dir / name).write_bytes(b"x")
    create_backup(bk_db(), bk_dir, environment="production", reason="manual")
    names = set(os.listdir(bk_dir))
    assert not names & set(stale)
    assert set(foreign) <= names


def test_unfinished_or_foreign_files_are_never_listed_as_verified(bk_dir: Path) -> None:
    bk_dir.mkdir()
    (bk_dir / "portfolio_backup_production_20261123T210000Z.db").write_bytes(b"x")
    (bk_dir / ".portfolio_backup_production_20261123T210001Z.db.partial").write_bytes(b"x")
    (bk_dir / "random.db").write_bytes(b"x")
    listed = store.list_backups(bk_dir)
    assert [b.id for b in listed] == ["portfolio_backup_production_20261123T210000Z.db"]
    assert not listed[0].verified
    assert verify_backup(listed[0]) == ["no manifest: not written (or not finished) by sidecar"]


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_corruption_is_caught_by_verify_and_refused_by_restore(
    bk_db: Callable[..., Path], bk_dir: Path, tmp_path: Path, compress: str
) -> None:
    db = bk_db(rows=500)
    info = create_backup(
        db,
        bk_dir,
        environment="production",
        reason="manual",
        compress=compress,  # type: ignore[arg-type]
    )
    assert verify_backup(info) == []
    _flip_byte(info.path, info.size // 2)
    problems = verify_backup(info)
    assert problems
    assert any("sha256" in p for p in problems)
    before = db.read_bytes()
    with pytest.raises(RefusedError, match="failed verification"):
        restore_backup(info, db, backup_dir=bk_dir, environment="production")
    assert db.read_bytes() == before


def test_verify_catches_a_corrupt_page_even_with_a_matching_manifest(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    """A corrupt source whose manifest was rewritten to match: quick_check still sees it."""
    info = create_backup(bk_db(rows=500), bk_dir, environment="production", reason="manual")
    page = info.manifest["page_size"]
    # Scribble over a b-tree page header in the middle of the file.
    data = bytearray(info.path.read_bytes())
    data[page * 3 : page * 3 + 64] = b"\xff" * 64
    info.path.write_bytes(bytes(data))
    import hashlib
    import json

    sha = hashlib.sha256(bytes(data)).hexdigest()
    manifest = {**info.manifest, "sha256": sha, "stored_sha256": sha}
    info.manifest_path.write_text(json.dumps(manifest))
    reloaded = BackupInfo.load(info.path)
    assert reloaded is not None
    assert verify_backup(reloaded, full=True) != []


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_restore_round_trips_with_a_safety_backup(
    bk_db: Callable[..., Path], bk_dir: Path, compress: str
) -> None:
    db = bk_db()
    info = create_backup(
        db,
        bk_dir,
        environment="production",
        reason="manual",
        compress=compress,  # type: ignore[arg-type]
    )
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM transactions")
    conn.close()
    Path(f"{db}-journal").write_bytes(b"stale")  # a stale side file must not survive

    outcome = restore_backup(info, db, backup_dir=bk_dir, environment="production")

    assert _rows(db) == 200
    assert not Path(f"{db}-journal").exists()
    assert not Path(f"{db}-wal").exists()
    assert outcome.safety_backup is not None
    assert outcome.safety_backup.reason == "pre-restore"
    assert outcome.safety_backup.manifest["row_counts"]["transactions"] == 0
    assert verify_backup(outcome.safety_backup) == []
    assert [n for n in os.listdir(db.parent) if "restore-partial" in n] == []


def test_restore_dry_run_changes_nothing(bk_db: Callable[..., Path], bk_dir: Path) -> None:
    db = bk_db()
    info = create_backup(db, bk_dir, environment="production", reason="manual")
    before = db.read_bytes()
    outcome = restore_backup(info, db, backup_dir=bk_dir, environment="production", dry_run=True)
    assert outcome.dry_run
    assert any("pre-restore" in a for a in outcome.actions)
    assert db.read_bytes() == before
    assert len(store.list_backups(bk_dir)) == 1


def test_restore_into_a_new_path_takes_no_safety_backup(
    bk_db: Callable[..., Path], bk_dir: Path, tmp_path: Path
) -> None:
    info = create_backup(bk_db(), bk_dir, environment="production", reason="manual")
    target = tmp_path / "inspect.db"
    outcome = restore_backup(info, target, backup_dir=bk_dir, environment="production")
    assert outcome.safety_backup is None
    assert _rows(target) == 200


def _hold_open(db: Path) -> subprocess.Popen[str]:
    """Another process (the app) with an idle open connection that has read the database."""
    return bk_other_connection(db, "SELECT count(*) FROM users", in_transaction=False)


def test_restore_refuses_while_the_app_holds_the_database_even_forced(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    """A WAL-mode connection would keep committing into the replaced inode: --force never
    passes it (issue 11, item 2)."""
    db = bk_db("wal")
    info = create_backup(db, bk_dir, environment="production", reason="manual")
    app = _hold_open(db)
    try:
        assert database_in_use(db)
        for force in (False, True):
            with pytest.raises(RefusedError, match=rf"is in use: pid {app.pid} .*WAL-mode"):
                restore_backup(info, db, backup_dir=bk_dir, environment="production", force=force)
        assert len(store.list_backups(bk_dir)) == 1  # refused before the safety backup
    finally:
        app.communicate("\n", timeout=10)
    assert not database_in_use(db)
    outcome = restore_backup(info, db, backup_dir=bk_dir, environment="production")
    assert outcome.safety_backup is not None


def test_restore_uses_the_stop_app_hook(bk_db: Callable[..., Path], bk_dir: Path) -> None:
    from collections.abc import Iterator
    from contextlib import contextmanager

    db = bk_db("wal")
    info = create_backup(db, bk_dir, environment="production", reason="manual")
    app = _hold_open(db)
    calls: list[str] = []

    @contextmanager
    def stop_app() -> Iterator[None]:
        calls.append("stop")
        app.communicate("\n", timeout=10)  # the app exits: its locks go with it
        try:
            yield
        finally:
            calls.append("start")

    restore_backup(info, db, backup_dir=bk_dir, environment="production", stop_app=stop_app)
    assert calls == ["stop", "start"]


@pytest.mark.parametrize(
    "case",
    [
        ("wal", "quick", True),
        ("delete", "quick", False),  # writers would wait for the longer read lock
        ("wal", "checksum", False),  # no quick_check at all
        ("wal", "full", False),  # integrity_check is too long to hold a snapshot for
    ],
)
def test_quick_check_runs_beside_the_copy_only_where_nothing_waits_for_it(
    bk_db: Callable[..., Path],
    bk_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, str, bool],
) -> None:
    journal, verify, during_copy = case
    import sidecar.backup.verify as engine

    levels: list[bool | None] = []
    inspect = engine.inspect_file

    def spy(path: Path, full: bool | None, *, count_rows: bool = True) -> FileFacts:
        levels.append(full)
        return inspect(path, full, count_rows=count_rows)

    monkeypatch.setattr(engine, "inspect_file", spy)
    info = create_backup(
        bk_db(journal),
        bk_dir,
        environment="production",
        reason="manual",
        verify=verify,  # type: ignore[arg-type]
    )
    assert info.manifest["checked_during_copy"] is during_copy
    # The file is checked afterwards exactly when it was not checked during the copy.
    expected = {"checksum": None, "quick": False, "full": True}[verify]
    assert levels == [None if during_copy else expected]


def test_a_damaged_source_fails_the_check_during_the_copy_and_nothing_is_kept(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    db = bk_db("wal", rows=500)
    conn = sqlite3.connect(db)
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    data = bytearray(db.read_bytes())
    data[page * 3 : page * 3 + 64] = b"\xff" * 64  # a b-tree page header, mid-file
    db.write_bytes(bytes(data))
    bk_dir.mkdir()

    # The copier's own check of the bytes it copies finds it...
    from sidecar.backup import snapshot

    snap = snapshot.take_snapshot(
        db, bk_dir / "probe.db", mode=0o600, group=None, busy_timeout=5, quick_check="quick"
    )
    (bk_dir / "probe.db").unlink()
    assert snap.quick_check is not None
    assert snap.quick_check["level"] == "quick"
    assert snap.quick_check["problems"]
    # ... and the backup fails on it, keeping nothing.
    with pytest.raises(HealthError, match="failed verification"):
        create_backup(db, bk_dir, environment="production", reason="manual", verify="quick")
    assert sorted(os.listdir(bk_dir)) == [names.LOCK_NAME]
    assert db.read_bytes() == bytes(data)  # the source untouched


def test_backups_of_a_wiped_database_never_push_out_the_last_one_with_the_data(
    bk_db: Callable[..., Path], bk_dir: Path
) -> None:
    """The volume is wiped and the app re-creates its (empty) schema: every routine backup
    after that says so, and pruning keeps the last backup that holds the data."""
    from structlog.testing import capture_logs

    db = bk_db("wal")
    good = create_backup(db, bk_dir, environment="production", reason="manual")
    assert "rows_vanished" not in good.manifest

    conn = sqlite3.connect(db, isolation_level=None)
    for table in ("transactions", "portfolios", "users"):
        conn.execute(f"DELETE FROM {table}")  # what a re-created schema holds: nothing
    conn.close()
    with capture_logs() as logs:
        first = create_backup(db, bk_dir, environment="production", reason="scheduled")
    assert first.manifest["rows_vanished"] == {
        "since": good.id,
        "rows_before": 215,
        "rows_now": 0,
        "tables": {
            "portfolios": {"before": 5, "now": 0},
            "transactions": {"before": 200, "now": 0},
            "users": {"before": 10, "now": 0},
        },
    }
    warning = next(e for e in logs if e["event"] == "backup.rows_vanished")
    assert f"sidecar restore {good.id}" in warning["hint"]
    for _ in range(4):
        later = create_backup(db, bk_dir, environment="production", reason="scheduled")
        assert later.manifest["rows_vanished"]["since"] == good.id
    outcome = retention.prune(bk_dir, keep=2, database=db, environment="production")
    assert good.id in {b.id for b in outcome.kept}
    assert len(outcome.deleted) == 3
    assert _rows(good.path, "users") == 10  # the data is still there to restore
    from sidecar.commands.listing import ListResult

    listing = ListResult(store.list_backups(bk_dir)).render().splitlines()
    assert listing[0].split() == ["ID", "STATUS", "AGE", "SIZE", "REASON", "NOTE"]
    assert listing[-1].startswith(good.id)
    assert listing[-1].endswith("kept: the last backup before the data vanished")
    assert all(line.endswith("0 of 215 rows left") for line in listing[1:-1])
    # `health` passes (an app may be reset on purpose) but says it.
    from sidecar.commands.health import health
    from sidecar.environ import load_settings

    env = {"SIDECAR_DATABASE": str(db), "SIDECAR_BACKUP_DIR": str(bk_dir)}
    result = health(load_settings(env))
    assert int(result.exit_code) == 0
    warning_check = next(c for c in result.report.checks if c.name == "data since the backups")
    assert not warning_check.ok
    assert not warning_check.fatal
    assert f"sidecar restore {good.id}" in warning_check.detail
    # Deleted by hand (the reset was on purpose): the warnings stop with it.
    good.path.unlink()
    good.manifest_path.unlink()
    quiet = create_backup(db, bk_dir, environment="production", reason="scheduled")
    assert "rows_vanished" not in quiet.manifest


def test_a_backup_inside_copier_ahead_uses_the_child_started_ahead(
    bk_db: Callable[..., Path], bk_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.backup import snapshot

    started = counting_spawns(monkeypatch)
    db = bk_db("wal", rows=200)
    with snapshot.copier_ahead(db):
        assert len(started) == 1
        info = create_backup(db, bk_dir, environment="production", reason="deploy")
        assert len(started) == 1  # the backup took the one started ahead
        second = create_backup(db, bk_dir, environment="production", reason="deploy")
    assert len(started) == 2  # ... and a second backup starts its own
    assert verify_backup(info) == []
    assert verify_backup(second) == []
    assert all(proc.returncode == 0 for proc in started)


def test_a_child_started_ahead_and_not_used_is_stopped_at_the_end(
    bk_db: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.backup import snapshot

    started = counting_spawns(monkeypatch)
    with snapshot.copier_ahead(bk_db("wal", rows=10)):
        pass
    assert len(started) == 1
    assert started[0].returncode is not None  # it got no job and exited
    assert snapshot._ahead == []


def test_no_child_is_started_ahead_when_there_is_nothing_to_back_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.backup import snapshot

    started = counting_spawns(monkeypatch)
    with snapshot.copier_ahead(None), snapshot.copier_ahead(tmp_path / "absent.db"):
        assert snapshot._ahead == []
    assert started == []


def test_a_child_started_ahead_that_died_is_replaced(
    bk_db: Callable[..., Path], bk_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.backup import snapshot

    started = counting_spawns(monkeypatch)
    db = bk_db("wal", rows=50)
    with snapshot.copier_ahead(db):
        started[0].kill()
        started[0].wait()
        info = create_backup(db, bk_dir, environment="production", reason="deploy")
    assert len(started) == 2
    assert verify_backup(info) == []


Case = tuple[str, VerifyLevel, Compression, BackupIO, bool]


@pytest.mark.parametrize(
    "case",
    [
        ("wal", "quick", "none", "direct", True),
        ("wal", "checksum", "none", "direct", True),
        ("delete", "checksum", "none", "direct", True),
        # The copy is read whole again: integrity_check, compression, a rollback-journal
        # database's quick_check (run on the copy): through the page cache.
        ("wal", "full", "none", "direct", False),
        ("wal", "quick", "zstd", "direct", False),
        ("delete", "quick", "none", "direct", False),
        ("wal", "quick", "none", "cached", False),
    ],
)
def test_direct_io_is_used_where_nothing_reads_the_copy_again(
    bk_db: Callable[..., Path], bk_dir: Path, tmp_path: Path, case: Case
) -> None:
    journal, verify, compress, io, direct = case
    if not has_direct_io(tmp_path):
        pytest.skip("this file system has no direct I/O")
    db = bk_db(journal, rows=300)
    info = create_backup(
        db, bk_dir, environment="production", reason="manual", verify=verify,
        compress=compress, io=io,
    )  # fmt: skip
    assert (info.manifest["copier"]["method"] == "direct") is direct
    assert verify_backup(info) == []
    # The rows counted in the live snapshot during the copy are the copy's.
    copy_conn = sqlite3.connect(f"file:{info.path}?immutable=1", uri=True)
    try:
        if not info.compressed:
            assert info.manifest["row_counts"] == database.row_counts(copy_conn)
    finally:
        copy_conn.close()
    assert info.manifest["row_counts"]["transactions"] == 300
