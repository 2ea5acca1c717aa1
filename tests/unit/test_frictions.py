"""Issue 11's frictions, through the real CLI (or the pipeline with a fake app seam).

No silent waits: every wait logs progress every few seconds, an app in exclusive locking mode
is recognised early (the lock fails while the files stay unchanged) and stopped, and the
deploy reports how long each wait took. A change undone by a failed backup says so. A wiped
data volume is named in the deploy's and health's main line."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sidecar import cli
from sidecar.containers.apps import AppRef
from sidecar.environ import load_settings
from sidecar.lease import hold_lease
from sidecar.pipeline.run import run_deploy
from tests.fakes import FakeApps
from tests.unit.test_pipeline import env_for, make_db


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            found.append(event)
    return found


def exclusive_holder(db: Path) -> sqlite3.Connection:
    """An app's connection in exclusive locking mode, after one write: it holds the lock."""
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("""INSERT INTO "User" (email, name) VALUES ('held@x', 'held')""")
    return holder


def test_a_writer_that_never_pauses_gets_progress_events_and_a_true_wait(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_db(tmp_path / "data" / "portfolio.db")
    done = threading.Event()

    def write() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        while not done.is_set():
            conn.execute("""INSERT INTO "User" (email, name) VALUES (hex(randomblob(8)), 'w')""")
            time.sleep(0.05)
        conn.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        env = env_for(tmp_path, SIDECAR_QUIET_PERIOD="2s", SIDECAR_WAIT_TIMEOUT="11s")
        code = cli.main(["migrate", "--json"], env=env)
    finally:
        done.set()
        writer.join()
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    progress = events(err, "quiesce.waiting")
    assert len(progress) >= 2, err[-2000:]  # one every 5 s of the 11 s wait, not silence
    assert progress[0]["changes"] > 0
    assert json.loads(out)["quiesce_wait_s"] >= 10


def test_a_lease_wait_is_not_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = make_db(tmp_path / "data" / "portfolio.db")
    with hold_lease(db, wait=1, command="deploy"):
        code = cli.main(["migrate"], env=env_for(tmp_path, SIDECAR_LEASE_WAIT="6s"))
    err = capsys.readouterr().err
    assert code == 3, err[-2000:]
    assert events(err, "lease.still_waiting"), err[-2000:]


class StoppableApp(FakeApps):
    """An app holding its database in exclusive locking mode until it is stopped."""

    def __init__(self, holder: sqlite3.Connection) -> None:
        super().__init__(app=AppRef(name="exclusive-app-1", id="1" * 64))
        self.holder = holder

    @contextmanager
    def stopped(self, app: AppRef, *, timeout: float) -> Iterator[None]:
        self.calls.append(f"stop:{app.name}")
        self.holder.close()  # a stopped app lets go of its locks
        yield
        self.calls.append(f"start:{app.name}")


def test_an_exclusive_lock_is_recognised_early_and_reported_truthfully(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a silent 20 s preview wait plus a 20 s lock wait, and ``lock_wait_s`` counted
    only the time after the stop. Now: stopped after ~3 s of a lock held with no writes."""
    from sidecar import logs

    logs.configure("json", "info")
    db = make_db(tmp_path / "data" / "portfolio.db")
    holder = exclusive_holder(db)
    apps = StoppableApp(holder)
    settings = load_settings(
        env_for(tmp_path, SIDECAR_WAIT_TIMEOUT="20s", SIDECAR_QUIET_PERIOD="200ms",
                SIDECAR_APP="app")
    )  # fmt: skip
    started = time.monotonic()
    report = run_deploy(settings, apps=apps)
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert report.changed
    assert report.app_stopped
    assert apps.calls[1:3] == ["stop:exclusive-app-1", "start:exclusive-app-1"], apps.calls
    assert elapsed < 15, err[-2000:]
    assert events(err, "database.exclusive_lock_detected"), err[-2000:]
    assert report.lock_wait_s is not None
    assert report.lock_wait_s >= 3.0  # the wait before the stop counts


def test_a_backup_that_fails_beside_the_change_says_the_change_was_rolled_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full backups volume during a WAL deploy: the change was applied and verified while
    the backup ran, then the backup failed. The log and the error line say it was undone."""
    db = make_db(tmp_path / "data" / "portfolio.db")
    before = db.read_bytes()
    env = env_for(tmp_path, SIDECAR_MIN_FREE_MARGIN="100000G")  # no disk has that much free
    code = cli.main(["migrate"], env=env)
    err = capsys.readouterr().err
    assert code == 5, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-2000:]
    assert "free space" in errors[0]
    assert "rolled back" in errors[0]
    assert events(err, "migrate.applied"), err[-2000:]  # it was applied beside the backup...
    assert events(err, "migrate.rolled_back")[0]["reason"].startswith(errors[0][7:40])
    assert db.read_bytes() == before  # ... and is gone


def test_a_wiped_volume_is_named_in_the_main_line_of_deploy_and_health(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = "INSERT INTO \"User\" (email, name) VALUES ('u{}@x', 'u');\n"
    users = "".join(user.format(i) for i in range(200))
    db = make_db(tmp_path / "data" / "portfolio.db", extra=users)
    env = env_for(tmp_path)
    assert cli.main(["backup"], env=env) == 0
    capsys.readouterr()
    db.unlink()
    make_db(db)  # the app re-created its schema on an empty volume, and seeded it
    code = cli.main(["deploy"], env=env)
    out = capsys.readouterr().out
    assert code == 0
    summary = [line for line in out.splitlines() if line.startswith("deploy: ")]
    assert len(summary) == 1, out
    assert summary[0].startswith("deploy: MOST OF THE DATA VANISHED: 4 rows left of 204"), out
    assert "sidecar restore portfolio_backup_" in summary[0]
    code = cli.main(["health"], env=env)
    out = capsys.readouterr().out
    assert code == 0
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("healthy, but MOST OF THE DATA VANISHED: 4 rows left of 204"), out
    assert "sidecar restore portfolio_backup_" in verdict


def test_a_one_shot_backup_of_an_exclusive_app_says_why_and_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_db(tmp_path / "data" / "portfolio.db")
    holder = exclusive_holder(db)
    try:
        code = cli.main(["backup"], env=env_for(tmp_path, SIDECAR_WAIT_TIMEOUT="1s"))
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert code == 5, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith(("error: ", "hint: "))]
    assert len(lines) == 2, err[-2000:]
    assert "exclusive locking mode" in lines[0]
    assert "SIDECAR_BACKUP_STOP_APP=1" in lines[1]


PORTFOLIOS = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)\n"
    'INSERT INTO "Portfolio" ("userId", name) SELECT 1, hex(randomblob(200)) FROM n;\n'
)


def test_plan_states_what_a_table_rebuild_adds_to_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_db(tmp_path / "data" / "portfolio.db", extra=PORTFOLIOS)  # ~2.7 MB of "Portfolio"
    assert cli.main(["plan"], env=env_for(tmp_path)) == 0
    out = capsys.readouterr().out
    disk = out.split("Disk:\n", 1)[1].strip()
    assert disk.startswith("- the database file grows by about 2."), out
    assert '"Portfolio"' in disk
    assert cli.main(["plan", "--json"], env=env_for(tmp_path)) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["growth"]["file_bytes"] > 2_000_000


def test_a_rebuild_that_cannot_fit_on_the_data_volume_exits_5_before_any_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.test_open_errors import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "data", "6m") as data:
        db = make_db(data / "portfolio.db", extra=PORTFOLIOS)  # 2.7 MB: fits, twice does not
        before = db.read_bytes()
        code = cli.main(["migrate"], env=env_for(tmp_path))
        err = capsys.readouterr().err
        assert code == 5, err[-2000:]
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, err[-2000:]
        assert "not enough free space on the data volume for the table rebuild" in errors[0]
        assert db.read_bytes() == before
        assert not list((tmp_path / "backups").glob("*.db"))  # refused before the backup


def _rebuild_then_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], **env: str
) -> tuple[int, int, list[Any]]:
    db = make_db(tmp_path / "data" / "portfolio.db", extra=PORTFOLIOS)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rows = conn.execute('SELECT * FROM "Portfolio" ORDER BY id').fetchall()
    conn.close()
    before = db.stat().st_size
    assert cli.main(["migrate", "--json"], env=env_for(tmp_path, **env)) == 0
    document = json.loads(capsys.readouterr().out)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    after_rows = conn.execute('SELECT * FROM "Portfolio" ORDER BY id').fetchall()
    conn.close()
    assert [r[: len(rows[0])] for r in after_rows] == rows  # every row and value kept
    return before, db.stat().st_size, [document]


def test_a_rebuild_grows_the_file_and_sidecar_compact_gives_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, grown, _ = _rebuild_then_size(tmp_path / "plain", capsys)
    assert grown > before + 2_000_000  # the rebuilt table's old pages stay as free pages
    before, compacted, (document,) = _rebuild_then_size(
        tmp_path / "compact", capsys, SIDECAR_COMPACT="1"
    )
    assert compacted < before + 500_000, (before, compacted)
    done = document["compaction"]
    assert done["freed_bytes"] > 2_000_000, done
    assert done["skipped"] == ""
    assert cli.main(["migrate"], env=env_for(tmp_path / "compact", SIDECAR_COMPACT="1")) == 0
    assert "nothing to do" in capsys.readouterr().out


class AppThatWillNotStart(StoppableApp):
    """Stopping works; starting again fails (as if this process had been killed first)."""

    @contextmanager
    def stopped(self, app: AppRef, *, timeout: float) -> Iterator[None]:
        self.calls.append(f"stop:{app.name}")
        self.holder.close()
        try:
            yield
        finally:
            from sidecar.errors import UnavailableError

            raise UnavailableError("could not start the app again", hint="start it by hand")


def test_an_app_left_stopped_is_named_by_the_next_runs_and_started_by_the_next_deploy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sidecar import logs
    from sidecar.errors import UnavailableError

    logs.configure("json", "info")
    db = make_db(tmp_path / "data" / "portfolio.db")
    holder = exclusive_holder(db)
    settings = load_settings(env_for(tmp_path, SIDECAR_WAIT_TIMEOUT="4s", SIDECAR_APP="app"))
    with pytest.raises(UnavailableError, match="could not start"):
        run_deploy(settings, apps=AppThatWillNotStart(holder))
    assert (tmp_path / "data" / "portfolio.db.sidecar-stopped").exists()
    capsys.readouterr()

    # Without a Docker API (`migrate`), and in `health`: named, with the command to fix it.
    assert cli.main(["migrate"], env=env_for(tmp_path)) == 0
    assert "exclusive-app-1 stopped by sidecar deploy" in capsys.readouterr().out
    assert cli.main(["health"], env=env_for(tmp_path)) == 0
    assert "warn  app stopped by the sidecar: exclusive-app-1" in capsys.readouterr().out

    # A deploy that reaches Docker starts it and clears the record.
    apps = FakeApps(app=AppRef(name="exclusive-app-1", id="1" * 64))
    report = run_deploy(settings, apps=apps)
    assert report.started_again == ["exclusive-app-1"]
    assert "start_stopped:exclusive-app-1" in apps.calls
    assert not (tmp_path / "data" / "portfolio.db.sidecar-stopped").exists()


def test_a_stop_record_never_starts_containers_that_are_not_the_app(tmp_path: Path) -> None:
    """The record sits on a volume the app can write: it must not pick what gets started."""
    db = make_db(tmp_path / "data" / "portfolio.db")
    record = {"containers": [{"name": "someone-else", "id": "2" * 64}], "command": "deploy"}
    (tmp_path / "data" / "portfolio.db.sidecar-stopped").write_text(json.dumps(record))
    apps = FakeApps(app=AppRef(name="exclusive-app-1", id="1" * 64))
    settings = load_settings(env_for(tmp_path, SIDECAR_APP="app"))
    report = run_deploy(settings, apps=apps)
    assert report.started_again == []
    assert not [call for call in apps.calls if call.startswith("start_stopped")], apps.calls
    assert not Path(f"{db}.sidecar-stopped").exists()


@pytest.mark.parametrize("command", ["health", "plan"])
def test_a_read_that_waits_for_a_lock_is_not_silent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    db = make_db(tmp_path / "data" / "portfolio.db")
    holder = exclusive_holder(db)
    try:
        code = cli.main([command], env=env_for(tmp_path, SIDECAR_WAIT_TIMEOUT="6s"))
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert code == 5, err[-2000:]
    assert events(err, "database.read_waiting"), err[-2000:]  # SQLite's busy handler is silent
