"""The deploy pipeline on real SQLite files, with the Docker seam replaced by a recording fake
(the only mock: the real seam has its own integration tests)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sidecar import cli
from sidecar.backup import store
from sidecar.environ import load_settings
from sidecar.errors import HealthError, RefusedError
from sidecar.pipeline.run import run_deploy
from sidecar.settings import Settings
from tests.fakes import FakeApps

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "deploy/schema/v1/schema.sql").read_text()
V2 = ROOT / "deploy/schema/v2"


def make_db(path: Path, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.executescript(
        V1
        + """
        INSERT INTO "User" (email, name) VALUES ('ada@example.com', 'Ada');
        INSERT INTO "Portfolio" ("userId", name) VALUES (1, 'Main');
        INSERT INTO "Transaction" ("portfolioId", symbol, quantity, price)
            VALUES (1, 'AAPL', 2, 150.5), (1, 'MSFT', 1, 300);
        """
        + extra
    )
    conn.close()
    return path


def env_for(tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment of a sidecar on ``tmp_path``'s data/portfolio.db, v2 schema."""
    return {
        "SIDECAR_DATABASE": str(tmp_path / "data" / "portfolio.db"),
        "SIDECAR_SCHEMA": str(V2),
        "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
        "SIDECAR_QUIET_PERIOD": "0",
        "SIDECAR_LOG_FORMAT": "json",
        **env,
    }


def settings_for(tmp_path: Path, schema: Path = V2, **env: str) -> Settings:
    defaults = {"SIDECAR_SCHEMA": str(schema), "SIDECAR_WAIT_TIMEOUT": "5s", "SIDECAR_APP": "app"}
    return load_settings(env_for(tmp_path, **{**defaults, **env}))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_change_is_backed_up_applied_and_restarts_the_app_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    make_db(settings.require_database())
    apps = FakeApps()
    report = run_deploy(settings, apps=apps)
    assert report.changed
    assert report.backup
    assert report.restarted
    assert apps.calls == ["find:app:None", "restart:demo-app-1", "wait_healthy:demo-app-1"]
    assert [b.id for b in store.list_backups(settings.backup_dir)] == [report.backup]

    # The second run has nothing to do: no backup, no restart, the file untouched.
    before = digest(settings.require_database())
    apps.calls.clear()
    again = run_deploy(settings, apps=apps)
    assert not again.changed
    assert again.backup is None
    assert again.quiet is None  # no lull waited for, no lock taken: nothing to apply
    assert apps.calls == ["find:app:None"]
    assert digest(settings.require_database()) == before


def test_restart_always_restarts_even_without_a_change(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, schema=ROOT / "deploy/schema/v1", SIDECAR_RESTART="always")
    make_db(settings.require_database())
    apps = FakeApps()
    report = run_deploy(settings, apps=apps)
    assert not report.changed
    assert report.restarted
    assert "restart:demo-app-1" in apps.calls


def test_duplicates_under_a_new_unique_index_are_refused_before_any_backup(
    tmp_path: Path,
) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text(
        V1 + 'CREATE UNIQUE INDEX "Transaction_portfolio_once" ON "Transaction"("portfolioId");\n'
    )
    settings = settings_for(tmp_path, schema=schema)
    db = make_db(settings.require_database())
    before = digest(db)
    apps = FakeApps()
    with pytest.raises(RefusedError) as refused:
        run_deploy(settings, apps=apps)
    assert "Transaction_portfolio_once" in refused.value.message
    assert digest(db) == before
    assert not settings.backup_dir.exists() or not store.list_backups(settings.backup_dir)
    assert not any(call.startswith("restart") for call in apps.calls)


def test_prisma_bookkeeping_table_is_not_drift(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, schema=ROOT / "deploy/schema/v1", SIDECAR_STRICT="true")
    make_db(
        settings.require_database(),
        extra='CREATE TABLE "_prisma_migrations" (id TEXT PRIMARY KEY, checksum TEXT NOT NULL);',
    )
    report = run_deploy(settings, apps=None)
    assert report.drift == []
    assert not report.changed


def test_dry_run_on_a_missing_database_shows_what_will_be_created(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    report = run_deploy(settings, apps=None, dry_run=True)
    assert report.plan["fresh"] is True
    created = {op["table"] for op in report.plan["operations"] if op["op"] == "create_table"}
    assert created == {"User", "Portfolio", "Transaction", "Watchlist"}
    assert not settings.require_database().exists()


def test_an_app_unhealthy_after_the_restart_names_the_backup_to_go_back_to(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    make_db(settings.require_database())
    with pytest.raises(HealthError) as failed:
        run_deploy(settings, apps=FakeApps(healthy=False))
    backup = store.list_backups(settings.backup_dir)[0].id
    assert "committed" in failed.value.message
    assert backup in failed.value.message
    assert failed.value.hint is not None
    assert f"sidecar restore {backup}" in failed.value.hint


def test_a_health_query_that_writes_fails_and_changes_nothing(tmp_path: Path) -> None:
    queries = tmp_path / "health.sql"
    queries.write_text('DELETE FROM "Transaction" RETURNING 1;\n')
    settings = settings_for(tmp_path, SIDECAR_HEALTH_QUERIES=str(queries))
    db = make_db(settings.require_database())
    with pytest.raises(HealthError):
        run_deploy(settings, apps=None)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute('SELECT count(*) FROM "Transaction"').fetchone() == (2,)
        assert "Watchlist" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def test_commit_waits_for_readers_then_gives_up_with_exit_5(tmp_path: Path) -> None:
    """Rollback-journal mode: COMMIT needs every reader gone."""
    import threading

    from sidecar import database
    from sidecar.errors import UnavailableError

    db = tmp_path / "journal.db"
    setup = sqlite3.connect(db, isolation_level=None)
    setup.execute("PRAGMA journal_mode=delete")
    setup.execute("CREATE TABLE t (x)")
    setup.close()

    def hold_reader(seconds: float, ready: threading.Event) -> None:
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # SHARED lock held
        ready.set()
        threading.Event().wait(seconds)
        reader.execute("ROLLBACK")
        reader.close()

    for hold, timeout, succeeds in ((1.5, 10.0, True), (10.0, 0.5, False)):
        ready = threading.Event()
        thread = threading.Thread(target=hold_reader, args=(hold, ready))
        thread.start()
        ready.wait()
        with database.write_lock(db, 5.0) as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            if succeeds:
                database.commit(conn, timeout)
            else:
                with pytest.raises(UnavailableError):
                    database.commit(conn, timeout)
        thread.join()
    check = sqlite3.connect(db)
    assert check.execute("SELECT count(*) FROM t").fetchone() == (1,)
    check.close()


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]) -> str:
    """Run the CLI; stderr's error and hint lines (plus the exit code) as one text."""
    code = cli.main(argv, env=env)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    return f"exit {code}\n" + "\n".join(lines)


def test_a_lost_database_with_backups_is_refused_not_recreated_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(tmp_path)
    db = make_db(Path(env["SIDECAR_DATABASE"]))
    assert _cli(capsys, ["deploy"], env) == "exit 0\n"
    # The volume is gone (not mounted, wiped): the data lives only in the backups now.
    for side in ("", "-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)

    for command in (["deploy"], ["migrate"], ["plan"]):
        said = _cli(capsys, command, env)
        assert said.startswith("exit 3\nerror: database ")
        assert "is missing, but 1 verified backup(s) of it exist" in said
        assert "sidecar restore latest" in said
        assert "SIDECAR_ALLOW_FRESH" in said
        assert not db.exists()

    # The way back the hint names: restore, then deploy has nothing to do.
    assert _cli(capsys, ["restore", "latest"], env) == "exit 0\n"
    conn = sqlite3.connect(db)
    assert conn.execute('SELECT count(*) FROM "Transaction"').fetchone() == (2,)
    conn.close()
    assert _cli(capsys, ["deploy"], env) == "exit 0\n"

    # A wrong path (a typo) next to another database's backups is refused as well.
    typo = {**env, "SIDECAR_DATABASE": str(tmp_path / "data" / "portfolo.db")}
    said = _cli(capsys, ["deploy"], typo)
    assert said.startswith("exit 3\n")
    assert f"holds backups of {db} only" in said
    assert "a typo?" in said
    assert not (tmp_path / "data" / "portfolo.db").exists()

    # On purpose: the flag (or SIDECAR_ALLOW_FRESH=1) creates the empty database.
    assert _cli(capsys, ["deploy", "--allow-fresh"], typo) == "exit 0\n"
    assert (tmp_path / "data" / "portfolo.db").exists()
    other = {**typo, "SIDECAR_DATABASE": str(tmp_path / "data" / "third.db")}
    assert _cli(capsys, ["deploy"], {**other, "SIDECAR_ALLOW_FRESH": "1"}) == "exit 0\n"


def test_a_first_deploy_with_an_empty_backups_folder_creates_the_database(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    settings.require_database().parent.mkdir()
    (tmp_path / "backups").mkdir()
    (tmp_path / "backups" / "notes.txt").write_text("not a backup")
    report = run_deploy(settings, apps=None)
    assert report.fresh
    assert settings.require_database().exists()


def test_a_stop_request_ends_the_wait_for_the_write_lock(tmp_path: Path) -> None:
    import threading
    import time

    from sidecar import database
    from sidecar.signals import Aborted, Stop

    db = make_db(tmp_path / "data" / "portfolio.db")
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("BEGIN IMMEDIATE")  # the app holds the write lock and never lets go
    stop = Stop()
    threading.Timer(0.3, stop.set, args=("SIGTERM",)).start()
    started = time.monotonic()
    try:
        with pytest.raises(Aborted), database.write_lock(db, 60, stop=stop):
            pytest.fail("the app holds the write lock")
    finally:
        app.execute("ROLLBACK")
        app.close()
    assert time.monotonic() - started < 5  # not the 60 s SIDECAR_WAIT_TIMEOUT


def sigterm_while_waiting_for_the_lock(
    db: Path, env: dict[str, str]
) -> tuple[int, str, str, float]:
    """Run `sidecar deploy` in a real process while an app holds the write lock on ``db``;
    SIGTERM it once it waits for the lock. (exit code, stdout, stderr, seconds to exit)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    app = sqlite3.connect(db, isolation_level=None)
    app.execute("BEGIN IMMEDIATE")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "deploy"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until it is waiting for the lock (it has planned and taken the lease).
        lease = Path(f"{db}.sidecar-lease")
        deadline = time.monotonic() + 30
        while not (lease.exists() and lease.read_text().strip()):
            assert time.monotonic() < deadline, "the deploy never took the lease"
            time.sleep(0.05)
        time.sleep(1.0)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - signalled
    finally:
        proc.kill()
        app.execute("ROLLBACK")
        app.close()
    return proc.returncode, out, err, took


def test_sigterm_while_deploy_waits_for_the_lock_exits_0_at_once_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A real process: `docker compose down` during a deploy that waits for a busy app."""
    db = make_db(tmp_path / "data" / "portfolio.db")
    before = digest(db)
    code, out, err, took = sigterm_while_waiting_for_the_lock(
        db, env_for(tmp_path, SIDECAR_WAIT_TIMEOUT="60s")
    )
    assert code == 0, err
    assert took < 5, f"SIGTERM took {took:.1f}s to end the wait"
    assert "aborted" in out
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "signal.received" in events
    assert "database.lock_wait_aborted" in events
    assert digest(db) == before
    assert store.list_backups(tmp_path / "backups") == []


def _tables_in(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_the_backup_holds_the_database_from_before_the_change(tmp_path: Path, journal: str) -> None:
    """In WAL mode the backup runs while the change is made in the open transaction: it
    must still copy the database as it was before the change."""
    settings = settings_for(tmp_path)
    db = make_db(settings.require_database())
    if journal == "delete":
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=delete")
        conn.close()
    report = run_deploy(settings, apps=None)
    assert report.changed
    backup = store.find_backup(settings.backup_dir, str(report.backup))
    assert "Watchlist" not in _tables_in(backup.path)
    assert "Watchlist" in _tables_in(db)
    assert backup.manifest["journal_mode"] == journal


@pytest.mark.parametrize(
    ("journal", "verify", "caught_by"),
    [
        ("wal", "quick", "the new backup of .* failed verification: Fragmentation"),
        ("delete", "quick", "the new backup of .* failed verification: Fragmentation"),
        ("wal", "checksum", "quick_check failed after the change: Fragmentation"),
    ],
)
def test_damage_the_change_does_not_touch_is_caught_before_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal: str, verify: str, caught_by: str
) -> None:
    """The check after the change reads only what the change wrote when the backup checked
    the bytes it started from. Damage made after the read-only preview, in a table the change
    does not write (v2 only adds a column to "User"), is still caught before COMMIT: by the
    backup's quick_check, or, when the backup checks nothing (checksum), by a check of the
    whole database after the change."""
    from sidecar import quiesce
    from sidecar.pipeline import run as pipeline
    from tests.faults.badinput import misreport_fragmentation

    settings = settings_for(tmp_path, SIDECAR_VERIFY=verify)
    db = make_db(settings.require_database())
    if journal == "delete":
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=delete")
        conn.close()
    real_wait = quiesce.wait_quiet
    damaged: list[str] = []

    def damage_then_wait(*args: Any, **kwargs: Any) -> Any:
        misreport_fragmentation(db, "User")
        damaged.append(digest(db))
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(pipeline, "wait_quiet", damage_then_wait)
    with pytest.raises(HealthError, match=caught_by):
        run_deploy(settings, apps=None)
    assert [digest(db)] == damaged  # byte for byte as the change found it
    assert "Watchlist" not in _tables_in(db)
    # A backup that checks nothing but its checksum is kept (it holds what the database held).
    assert len(store.list_backups(settings.backup_dir)) == (verify == "checksum")


@pytest.mark.parametrize(("verify", "whole", "scoped"), [
    ("quick", 1, ["Tag", "sqlite_schema", "sqlite_sequence"]),
    ("checksum", 2, []),
])  # fmt: skip
def test_the_check_after_the_change_reads_only_what_it_wrote_when_the_backup_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: str, whole: int, scoped: list[str]
) -> None:
    """The quick_checks this process runs: the read-only preview's (the whole database),
    then, after the change, the written b-trees when the backup checked the bytes the change
    started from (in WAL mode the backup's own check runs in the copier process)."""
    from sidecar import sqlite

    schema_file = tmp_path / "schema.sql"
    schema_file.write_text(V1 + 'CREATE TABLE "Tag" ("id" INTEGER PRIMARY KEY, "name" TEXT);\n')
    settings = settings_for(tmp_path, schema=schema_file, SIDECAR_VERIFY=verify)
    make_db(settings.require_database())
    calls: list[str | None] = []
    real = sqlite.quick_check

    def spy(conn: sqlite3.Connection, **kwargs: Any) -> list[str]:
        calls.append(kwargs.get("table"))
        return real(conn, **kwargs)

    monkeypatch.setattr(sqlite, "quick_check", spy)
    report = run_deploy(settings, apps=None)
    assert report.changed
    assert calls.count(None) == whole
    assert sorted(t for t in calls if t is not None) == scoped


def test_a_failed_backup_beside_the_change_rolls_the_change_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from sidecar.errors import UnavailableError
    from sidecar.migrate import apply
    from sidecar.pipeline import run as pipeline

    settings = settings_for(tmp_path)
    db = make_db(settings.require_database())
    before = digest(db)
    applied: list[bool] = []
    real_apply = apply.apply_plan

    def apply_then_note(*args: object, **kwargs: object) -> None:
        real_apply(*args, **kwargs)  # type: ignore[arg-type]
        applied.append(True)

    def failing_backup(*args: object, **kwargs: object) -> object:
        time.sleep(0.5)  # the change is made meanwhile
        raise UnavailableError("the backups volume filled up", hint="free space")

    monkeypatch.setattr(apply, "apply_plan", apply_then_note)
    monkeypatch.setattr(pipeline, "create_backup", failing_backup)
    with pytest.raises(UnavailableError, match="filled up"):
        run_deploy(settings, apps=None)
    assert applied == [True]  # the change was made and verified...
    assert digest(db) == before  # ... and never committed
    assert "Watchlist" not in _tables_in(db)


def test_foreign_key_problems_from_before_are_read_from_the_backup_not_blamed(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    db = make_db(
        settings.require_database(),
        'INSERT INTO "Transaction" ("portfolioId", symbol, quantity, price) '
        "VALUES (99, 'ORPHAN', 1, 1);",  # no portfolio 99: an old violation
    )
    report = run_deploy(settings, apps=None)
    assert report.changed
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == [
        ("Transaction", 3, "Portfolio", 0)
    ]
    conn.close()


def _zstd_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: Any
) -> tuple[Settings, Any]:
    """A deploy with SIDECAR_COMPRESS=zstd whose compression step is ``compress`` (called
    with what compression.zstd_compress gets, and the real function)."""
    from sidecar.backup import compression

    settings = settings_for(tmp_path, SIDECAR_COMPRESS="zstd")
    db = make_db(settings.require_database())
    apps = FakeApps()
    real = compression.zstd_compress
    monkeypatch.setattr(
        compression, "zstd_compress", lambda *a, **k: compress(db, apps, real, *a, **k)
    )
    return settings, run_deploy(settings, apps=apps)


def test_the_deploy_compresses_its_backup_after_the_commit_and_the_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compressing (~5 s/GB) while the app's writes wait would multiply the window: the
    backup is taken plain before COMMIT and compressed once the app runs the new version."""
    from sidecar.backup.compression import decompressed_chunks
    from sidecar.backup.verify import verify_backup

    seen: dict[str, Any] = {}

    def compress(db: Path, apps: FakeApps, real: Any, *args: Any, **kwargs: Any) -> Any:
        seen["tables"] = _tables_in(db)
        other = sqlite3.connect(db, isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")  # the write lock is free: no wait, no error
        other.execute("ROLLBACK")
        other.close()
        seen["calls"] = list(apps.calls)
        return real(*args, **kwargs)

    settings, report = _zstd_deploy(tmp_path, monkeypatch, compress)
    assert "Watchlist" in seen["tables"]  # committed before the compression began
    assert "restart:demo-app-1" in seen["calls"]
    assert report.changed
    assert str(report.backup).endswith(".db.zst")
    [info] = store.list_backups(settings.backup_dir)  # the plain one is gone
    assert info.id == report.backup
    assert info.manifest["compression"] == "zstd"
    assert verify_backup(info) == []
    restored = tmp_path / "restored.db"
    restored.write_bytes(b"".join(decompressed_chunks(info.path)))
    assert "Watchlist" not in _tables_in(restored)  # the database from before the change
    assert sorted(p.name for p in settings.backup_dir.iterdir() if "partial" in p.name) == []


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        ("disk full", "filled up"),
        ("other bytes", "does not decompress to it"),
        ("a bug", "RuntimeError: zstd exploded"),
    ],
)
def test_a_failed_compression_after_the_commit_keeps_the_plain_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str, said: str
) -> None:
    """Past COMMIT nothing fails the deploy: the plain backup is complete and verified."""
    import errno

    from sidecar.backup.verify import verify_backup

    def compress(db: Path, apps: FakeApps, real: Any, src: Path, dst: Path, **kw: Any) -> Any:
        if failure == "disk full":
            dst.write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        if failure == "a bug":
            raise RuntimeError("zstd exploded")
        other = tmp_path / "other.db"
        other.write_bytes(src.read_bytes()[:-1] + b"x")  # one byte off
        return real(other, dst, **kw)

    settings, report = _zstd_deploy(tmp_path, monkeypatch, compress)
    assert report.changed
    assert str(report.backup).endswith(".db")
    assert any("stays uncompressed" in w and said in w for w in report.warnings), report.warnings
    [info] = store.list_backups(settings.backup_dir)
    assert info.id == report.backup
    assert verify_backup(info) == []
    assert sorted(p.name for p in settings.backup_dir.iterdir() if "partial" in p.name) == []


def test_a_deploy_starts_its_copier_child_ahead_and_takes_its_backup_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One copier child in all, started before the write lock (so its start-up is not in
    the window), consumed by the backup before the change; a deploy with nothing to change
    stops the unused one."""
    from sidecar import cli
    from tests.unit.conftest import counting_spawns

    started = counting_spawns(monkeypatch)
    make_db(tmp_path / "data" / "portfolio.db")
    env = env_for(tmp_path)
    assert cli.main(["deploy"], env=env) == 0
    backups = sorted((tmp_path / "backups").glob("portfolio_backup_*.db"))
    assert len(backups) == 1  # the backup before the change
    assert len(started) == 1
    assert started[0].returncode == 0  # it did the backup's copy
    assert cli.main(["deploy"], env=env) == 0  # nothing left to change: no backup
    assert sorted((tmp_path / "backups").glob("portfolio_backup_*.db")) == backups
    assert len(started) == 2
    assert started[1].returncode is not None  # the unused one was stopped
