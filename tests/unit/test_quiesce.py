from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sidecar.quiesce import signature, wait_quiet
from sidecar.signals import Stop


def test_signature_changes_when_the_app_commits(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    before = signature(db)
    conn.execute("INSERT INTO t VALUES (1)")
    assert signature(db) != before
    conn.close()


def test_quiet_database_returns_after_the_period(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    result = wait_quiet(db, period=0.3, timeout=5)
    assert result.quiet
    assert 0.3 <= result.waited_s < 2


def test_waits_for_a_lull_after_a_burst(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")

    def burst() -> None:
        for i in range(20):  # ~1 s of writes, then silence
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            time.sleep(0.05)

    writer = threading.Thread(target=burst)
    writer.start()
    result = wait_quiet(db, period=0.5, timeout=10, poll=0.02)
    writer.join()
    assert result.quiet
    assert result.waited_s >= 1.0  # it did not return during the burst
    conn.close()


def test_a_writer_that_never_pauses_gives_up_after_timeout(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    ticks = iter(range(1000))
    clock_now = [0.0]

    def clock() -> float:
        return clock_now[0]

    def sleep(seconds: float) -> None:
        clock_now[0] += seconds
        # Every poll sees a change: mimic a steady writer without real time passing.
        db.write_bytes(str(next(ticks)).encode())

    result = wait_quiet(db, period=1.0, timeout=3.0, poll=0.1, clock=clock, sleep=sleep)
    assert not result.quiet
    assert result.waited_s >= 3.0


def test_a_stop_request_ends_the_wait_at_once(tmp_path: Path) -> None:
    stop = Stop()
    stop.set()
    result = wait_quiet(tmp_path / "db.sqlite", period=60, timeout=600, stop=stop)
    assert result.quiet is False
    assert result.waited_s < 60
