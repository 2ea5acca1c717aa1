"""migrate while the demo app writes: every committed row survives the v1 -> v2 rebuild.

The demo app (deploy/demo-app/app.py) runs as a real process on a real file, in WAL mode
with foreign keys on, committing a row every 10 ms and printing each committed id.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sidecar import cli, database
from sidecar.errors import ExitCode
from sidecar.schema.catalogue import read_catalogue
from sidecar.schema.desired import load_desired
from sidecar.schema.diff import make_plan

ROOT = Path(__file__).resolve().parents[2]


class DemoApp:
    def __init__(self, db: Path, folder: Path) -> None:
        env = {
            **os.environ,
            "NUXT_DATABASE_URL": f"file:{db}",
            "DEMO_INTERVAL": "0.01",
            "DEMO_PORT": "0",
            "DEMO_HEARTBEAT": str(folder / "heartbeat"),
        }
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "deploy/demo-app/app.py")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.committed: list[int] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            if event["event"] == "committed":
                self.committed.append(int(event["id"]))

    def wait_committed(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.committed) < count:
            assert self.process.poll() is None, "the demo app exited"
            assert time.monotonic() < deadline, f"only {len(self.committed)} commits"
            time.sleep(0.02)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        self.reader.join(timeout=5)


def test_migrate_under_a_writing_app_loses_no_committed_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "portfolio.db"
    app = DemoApp(db, tmp_path)
    try:
        app.wait_committed(30)
        env = {
            "SIDECAR_DATABASE": f"file:{db}",
            "SIDECAR_SCHEMA": str(ROOT / "deploy/schema/v2"),
            "SIDECAR_HEALTH_QUERIES": str(ROOT / "deploy/schema/health.sql"),
            "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
            "SIDECAR_QUIET_PERIOD": "100ms",
            "SIDECAR_WAIT_TIMEOUT": "10s",
            "SIDECAR_LOG_FORMAT": "json",
        }
        code = cli.main(["migrate", "--json"], env=env)
        captured = capsys.readouterr()
        assert code == ExitCode.OK, captured.err
        report = json.loads(captured.out)
        assert report["changed"] is True
        assert report["backup"]
        # The app carries on writing against the new schema.
        app.wait_committed(len(app.committed) + 30)
    finally:
        app.stop()
    conn = sqlite3.connect(db)
    stored = {row[0] for row in conn.execute('SELECT id FROM "Transaction"')}
    assert set(app.committed) <= stored
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute(
        'SELECT count(*) FROM "Portfolio" WHERE "updatedAt" IS NULL'
    ).fetchone() == (0,)
    plan = make_plan(
        read_catalogue(conn),
        load_desired(ROOT / "deploy/schema/v2"),
        row_counts=database.row_counts(conn),
    )
    conn.close()
    assert plan.operations == ()
    assert plan.drift == ()
