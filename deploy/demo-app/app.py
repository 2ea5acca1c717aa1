"""A tiny portfolio app that keeps its data in SQLite, like the Nuxt + Prisma app it stands for.

It creates its (v1, Prisma-style) schema on first start, then commits a transaction row every
DEMO_INTERVAL seconds and prints every committed id as a JSON line, so tests can prove that no
committed row is ever lost. It serves GET /health on DEMO_PORT. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SCHEMA_V1 = """
CREATE TABLE "User" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "email" TEXT NOT NULL, "name" TEXT, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
CREATE TABLE "Portfolio" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "userId" INTEGER NOT NULL, "name" TEXT NOT NULL, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, CONSTRAINT "Portfolio_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE);
CREATE TABLE "Transaction" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "portfolioId" INTEGER NOT NULL, "symbol" TEXT NOT NULL, "quantity" REAL NOT NULL, "price" REAL NOT NULL, "executedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, CONSTRAINT "Transaction_portfolioId_fkey" FOREIGN KEY ("portfolioId") REFERENCES "Portfolio" ("id") ON DELETE RESTRICT ON UPDATE CASCADE);
CREATE INDEX "Transaction_portfolioId_idx" ON "Transaction"("portfolioId");
"""
SYMBOLS = ("AAPL", "MSFT", "NVDA", "VWRL", "BTC", "ETH")
HEARTBEAT = Path(os.environ.get("DEMO_HEARTBEAT", "/tmp/demo-heartbeat"))  # noqa: S108
# Set by SIGTERM/SIGINT. A plain flag, not a threading.Event: a signal handler runs on the
# main thread, which may be holding the Event's lock inside Event.wait() at that moment,
# and Event.set() would then wait for it forever. Sleeps are short, so the flag is seen.
stop = types.SimpleNamespace(requested=False)


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def database_path() -> Path:
    url = os.environ.get("NUXT_DATABASE_URL", "file:/app/data/portfolio.db")
    return Path(url.removeprefix("file:").split("?", 1)[0])


def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    # Exclusive locking mode stands for engines (reported for Prisma's) that never let go.
    conn.execute(f"PRAGMA locking_mode={os.environ.get('DEMO_LOCKING_MODE', 'normal')}")
    conn.execute(f"PRAGMA journal_mode={os.environ.get('DEMO_JOURNAL_MODE', 'wal')}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def ensure_schema(conn: sqlite3.Connection) -> None:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'User'").fetchone()
    if not exists:
        conn.execute("BEGIN IMMEDIATE")
        for statement in filter(str.strip, SCHEMA_V1.split(";")):
            conn.execute(statement)
        conn.execute("COMMIT")
    if not conn.execute('SELECT 1 FROM "Portfolio" LIMIT 1').fetchone():
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO \"User\" (email, name) VALUES ('ada@example.com', 'Ada')")
        conn.execute("INSERT INTO \"Portfolio\" (userId, name) VALUES (1, 'Main')")
        conn.execute("COMMIT")


def columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
    )]
    return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}


def commit_one(conn: sqlite3.Connection) -> int | None:
    """Insert one transaction row; its id once committed, None when the database was busy."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(
            'INSERT INTO "Transaction" (portfolioId, symbol, quantity, price) VALUES (1, ?, ?, ?)',
            (random.choice(SYMBOLS), random.randint(1, 100), round(random.uniform(1, 500), 2)),  # noqa: S311
        )
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        emit("busy", error=str(exc))
        return None
    return cursor.lastrowid


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        age = time.time() - HEARTBEAT.stat().st_mtime if HEARTBEAT.exists() else None
        ok = age is not None and age < 30
        body = json.dumps({"ok": ok, "heartbeat_age_s": age}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def request_stop(signum: int, frame: object) -> None:
    stop.requested = True


def main() -> int:
    path = database_path()
    interval = float(os.environ.get("DEMO_INTERVAL", "0.05"))
    # Real apps write in bursts (a user's session) with lulls between them, which is what the
    # sidecar's quiesce step waits for. DEMO_BURST=0 writes steadily, never pausing.
    burst = int(os.environ.get("DEMO_BURST", "0"))
    pause = float(os.environ.get("DEMO_PAUSE", "3"))
    written = 0
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    conn = open_db(path)
    ensure_schema(conn)
    emit("app.started", database=str(path), pid=os.getpid(), columns=columns(conn))
    port = int(os.environ.get("DEMO_PORT", "3000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Health)  # noqa: S104 (inside its container)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while not stop.requested:
        row_id = commit_one(conn)
        if row_id is not None:
            emit("committed", id=row_id)
            HEARTBEAT.touch()
            written += 1
        time.sleep(pause if burst and written % burst == 0 else interval)
    conn.close()
    emit("app.stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
