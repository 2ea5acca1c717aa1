"""Backup-specific fixtures (prefixed ``bk_``): real SQLite files in ``tmp_path``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import pytest


def bk_build_db(path: Path, *, journal: str = "wal", rows: int = 200, blob: int = 512) -> Path:
    """A small portfolio-like database: users, portfolios, transactions with indexes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
        CREATE TABLE portfolios (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id),
                                 name TEXT);
        CREATE TABLE transactions (id INTEGER PRIMARY KEY, portfolio_id INTEGER, amount REAL,
                                   note BLOB);
        CREATE INDEX transactions_portfolio ON transactions(portfolio_id);
        CREATE TABLE writes (id INTEGER PRIMARY KEY, at REAL);
        """
    )
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO users(email) VALUES (?)", [(f"u{i}@x",) for i in range(10)])
    conn.executemany("INSERT INTO portfolios(user_id, name) VALUES (1, ?)", [("p",)] * 5)
    conn.executemany(
        "INSERT INTO transactions(portfolio_id, amount, note) VALUES (?, ?, randomblob(?))",
        [(i % 5 + 1, i * 1.5, blob) for i in range(rows)],
    )
    conn.execute("COMMIT")
    conn.close()
    return path


@pytest.fixture
def bk_db(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``bk_db(journal="wal"|"delete", rows=..., name=...)`` -> database path."""

    def make(journal: str = "wal", rows: int = 200, name: str = "portfolio.db") -> Path:
        return bk_build_db(tmp_path / name, journal=journal, rows=rows)

    return make


@pytest.fixture
def bk_dir(tmp_path: Path) -> Path:
    return tmp_path / "backups"


def bk_other_connection(db: Path, query: str, *, in_transaction: bool) -> subprocess.Popen[str]:
    """Another process (the app, a reader) with a connection that has run ``query``; inside
    an open read transaction when ``in_transaction``. It lets go when its stdin is closed."""
    code = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        + ("c.execute('BEGIN')\n" if in_transaction else "")
        + f"c.execute({query!r}).fetchone()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def counting_spawns(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """Every copier child the snapshot module starts (the real ones, counted)."""
    from sidecar.backup import snapshot

    started: list[subprocess.Popen[bytes]] = []
    real = snapshot._spawn

    def spawn() -> subprocess.Popen[bytes]:
        started.append(real())
        return started[-1]

    monkeypatch.setattr(snapshot, "_spawn", spawn)
    return started


def has_direct_io(folder: Path) -> bool:
    """Whether files in ``folder`` take direct I/O (tmpfs before Linux 6.6 does not)."""
    from sidecar.backup import copy

    probe = folder / "direct-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        return copy.direct_mode(fd)
    finally:
        os.close(fd)
        probe.unlink()


def clock_ahead(days: int) -> type[datetime]:
    """A ``datetime`` whose ``now()`` is ``days`` ahead: patched into a module, the host's
    clock as it was before someone corrected it."""

    class Ahead(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Ahead:
            return cls.fromtimestamp((datetime.now(tz) + timedelta(days=days)).timestamp(), tz)

    return Ahead


def imports_of(
    argv: list[str], env: dict[str, str], modules: list[str]
) -> tuple[int, list[bool], str]:
    """``cli.main(argv)`` in a new interpreter with ``env``: its exit code, whether it
    imported each of ``modules`` (in order), and its stderr."""
    probe = (
        f"import json, sys; from sidecar import cli; code = cli.main({argv!r}); "
        f"print(json.dumps([m in sys.modules for m in {modules!r}])); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    loaded: list[bool] = json.loads(lines[-1]) if lines else []
    return done.returncode, loaded, done.stderr
