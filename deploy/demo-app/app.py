"""A tiny portfolio app that keeps its data in SQLite, like the Nuxt + Prisma app it stands for.

It creates its schema on first start (from its own Prisma-style migrations folder), then
commits a transaction row every DEMO_INTERVAL seconds and prints every committed id as a JSON
line, so tests can prove that no committed row is ever lost. It serves GET /health on
DEMO_PORT: 200 when it committed lately and can read what its version needs. SIGTERM stops it
cleanly. DEMO_VERSION=2 (the release) writes and reads the columns v2's migration adds: on the
v1 schema it cannot commit and stays unhealthy, as a real app would.
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

# Which release this image is (its Dockerfile's DEMO_VERSION): v2 writes and reads the columns
# its migration adds (a fee per transaction, a currency per user, a watchlist).
VERSION = int(os.environ.get("DEMO_VERSION", "1"))
# The app's own migrations, inside its image: applied by the app only to an empty database
# (like `prisma migrate deploy` on a first start); the sidecar reads the same folder.
# (Beside app.py: /app/prisma/migrations in the image, deploy/demo-app/prisma/... in a checkout.)
MIGRATIONS = Path(os.environ.get("DEMO_MIGRATIONS", Path(__file__).parent / "prisma/migrations"))
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
    # Shared by the writer loop and the HTTP thread (under DB_LOCK): an app in exclusive
    # locking mode keeps every other connection out, its own second one included.
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
    # Exclusive locking mode stands for engines (reported for Prisma's) that never let go.
    conn.execute(f"PRAGMA locking_mode={os.environ.get('DEMO_LOCKING_MODE', 'normal')}")
    conn.execute(f"PRAGMA journal_mode={os.environ.get('DEMO_JOURNAL_MODE', 'wal')}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


DB_LOCK = threading.Lock()


def ensure_schema(conn: sqlite3.Connection) -> None:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'User'").fetchone()
    if not exists:
        # An empty database: replay this image's migrations, in name order.
        # The first VERSION of them: all the image holds; a checkout holds every release's.
        files = sorted(MIGRATIONS.glob("*/migration.sql"))[:VERSION]
        if len(files) < VERSION:
            raise SystemExit(f"{MIGRATIONS}: {len(files)} migration(s), version {VERSION}")
        script = "".join(p.read_text() for p in files)
        conn.executescript(f"BEGIN IMMEDIATE;{script};COMMIT;")
        conn.execute("PRAGMA foreign_keys=ON")  # a migration's PRAGMAs may have changed it
    if not conn.execute('SELECT 1 FROM "Portfolio" LIMIT 1').fetchone():
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO \"User\" (email, name) VALUES ('ada@example.com', 'Ada')")
        conn.execute("INSERT INTO \"Portfolio\" (userId, name) VALUES (1, 'Main')")
        conn.execute("COMMIT")


def read_release(conn: sqlite3.Connection) -> dict[str, object]:
    """What this version reads on every request; raises sqlite3.Error on a schema without it."""
    user = conn.execute('SELECT id, email FROM "User" ORDER BY id LIMIT 1').fetchone()
    if VERSION < 2:
        return {"user": user[1] if user else None}
    currency = conn.execute('SELECT currency FROM "User" ORDER BY id LIMIT 1').fetchone()
    watched = conn.execute('SELECT count(*) FROM "Watchlist"').fetchone()[0]
    fees = conn.execute('SELECT count(*), total(fee) FROM "Transaction"').fetchone()
    return {"currency": currency[0] if currency else None, "watchlist": watched,
            "fees": {"rows": fees[0], "total": round(fees[1], 2)}}  # fmt: skip


def columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
    )]
    return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}


def commit_one(conn: sqlite3.Connection) -> int | None:
    """Insert one transaction row; its id once committed, None when the database was busy."""
    symbol, quantity = random.choice(SYMBOLS), random.randint(1, 100)  # noqa: S311
    price = round(random.uniform(1, 500), 2)  # noqa: S311
    try:
        with DB_LOCK:
            conn.execute("BEGIN IMMEDIATE")
            if VERSION < 2:
                cursor = conn.execute(
                    'INSERT INTO "Transaction" (portfolioId, symbol, quantity, price) '
                    "VALUES (1, ?, ?, ?)", (symbol, quantity, price),
                )  # fmt: skip
            else:
                cursor = conn.execute(
                    'INSERT INTO "Transaction" (portfolioId, symbol, quantity, price, fee) '
                    "VALUES (1, ?, ?, ?, ?)", (symbol, quantity, price, round(price * 0.001, 4)),
                )  # fmt: skip
                conn.execute(
                    'INSERT OR IGNORE INTO "Watchlist" (userId, symbol) VALUES (1, ?)', (symbol,)
                )
            conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        emit("busy", error=str(exc))
        return None
    return cursor.lastrowid


class Health(BaseHTTPRequestHandler):
    conn: sqlite3.Connection

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        age = time.time() - HEARTBEAT.stat().st_mtime if HEARTBEAT.exists() else None
        document: dict[str, object] = {"version": VERSION, "heartbeat_age_s": age}
        try:
            with DB_LOCK:
                document["data"] = read_release(self.conn)
        except sqlite3.Error as exc:
            document["error"] = str(exc)
        ok = age is not None and age < 30 and "error" not in document
        body = json.dumps({"ok": ok, **document}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def request_stop(signum: int, frame: object) -> None:
    stop.requested = True


def nap(seconds: float) -> None:
    """Sleep, but wake for a stop request within 50 ms (a plain sleep resumes after the
    signal handler: SIGTERM during a 3 s lull would wait out the lull)."""
    deadline = time.monotonic() + seconds
    while not stop.requested and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


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
    emit("app.started", database=str(path), pid=os.getpid(), version=VERSION,
         columns=columns(conn))  # fmt: skip
    Health.conn = conn
    port = int(os.environ.get("DEMO_PORT", "3000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Health)  # noqa: S104 (inside its container)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while not stop.requested:
        row_id = commit_one(conn)
        if row_id is not None:
            emit("committed", id=row_id)
            HEARTBEAT.touch()
            written += 1
        nap(pause if burst and written % burst == 0 else interval)
    conn.close()
    emit("app.stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
