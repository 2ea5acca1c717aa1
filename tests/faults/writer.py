"""A steady writer for fault injection: commits one row at a time into the demo app's
``"Transaction"`` table and prints ``{"committed": <id>}`` only after COMMIT returned, so
every printed id is a promise the database must keep.

    python -m tests.faults.writer <database> [--interval 0.02]

Busy or locked (a deploy holds the write lock): roll back, retry; the id was never printed.
SIGTERM or SIGINT: finish the current commit, exit 0. Standard library only.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sqlite3
import sys
import time
import types

# Set by SIGTERM/SIGINT. A plain flag, not a threading.Event: a signal handler runs on the
# main thread, which may be holding the Event's lock inside Event.wait() at that moment,
# and Event.set() would then wait for it forever. Sleeps are short, so the flag is seen.
stop = types.SimpleNamespace(requested=False)


def commit_one(conn: sqlite3.Connection, n: int) -> int | None:
    """One row; its id once committed, None when the database was busy."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(
            'INSERT INTO "Transaction" (portfolioId, symbol, quantity, price) '
            "VALUES (1, 'FAULT', ?, 1.0)",
            (n,),
        )
        conn.execute("COMMIT")
    except sqlite3.OperationalError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return None
    return cursor.lastrowid


def request_stop(signum: int, frame: object) -> None:
    stop.requested = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database")
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # a stuck writer shows where it is stuck
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    conn = sqlite3.connect(args.database, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=wal")
    print(json.dumps({"started": True}), flush=True)
    n = 0
    while not stop.requested:
        n += 1
        row_id = commit_one(conn, n)
        if row_id is not None:
            sys.stdout.write(json.dumps({"committed": row_id}) + "\n")
            sys.stdout.flush()
        time.sleep(args.interval)
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
