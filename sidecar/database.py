"""SQLite connections, pragmas, introspection and the write lock. No schema logic here."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)
from tenacity.stop import stop_base

from sidecar.checks import immutable, is_busy, quote_ident, refuse_quoted_strings, uri_path
from sidecar.errors import ConfigError, RefusedError, UnavailableError
from sidecar.logs import get_logger
from sidecar.signals import Aborted, Stop

log = get_logger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")


def connect(path: Path, *, readonly: bool = False, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are always explicit (``BEGIN ...``)."""
    if readonly:
        uri = f"file:{uri_path(path)}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout)
    # Explicit, whatever the SQLite build's default: a table rebuild needs foreign keys off
    # (SQLite's 12-step procedure), and foreign_key_check verifies them afterwards.
    conn.execute("PRAGMA foreign_keys=OFF")
    return refuse_quoted_strings(conn)


def check_database_file(path: Path) -> None:
    """Refuse early and clearly when ``path`` is not an existing SQLite database file."""
    if not path.exists():
        wal = Path(f"{path}-wal")
        if wal.exists():
            raise RefusedError(
                f"database {path} is missing but its write-ahead log {wal.name} exists",
                hint="restore the database file (sidecar restore latest) before deploying",
            )
        raise ConfigError(
            f"database {path} does not exist",
            hint="check SIDECAR_DATABASE and that the data volume is mounted",
        )
    if not path.is_file():
        raise ConfigError(f"database {path} is not a regular file", hint="check SIDECAR_DATABASE")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except PermissionError as exc:
        raise ConfigError(
            f"database {path} is not readable: {exc.strerror}",
            hint="run the sidecar with the app's user id, or fix the file's owner and mode",
        ) from exc
    if len(header) == 0:
        raise RefusedError(
            f"database {path} is empty (0 bytes)",
            hint="restore a backup (sidecar restore latest) or remove the empty file",
        )
    if header != SQLITE_HEADER:
        raise RefusedError(
            f"{path} is not a SQLite database (bad header)",
            hint="check SIDECAR_DATABASE points at the app's .db file",
        )


def damaged(path: Path, exc: sqlite3.DatabaseError) -> RefusedError:
    """The refusal for a database SQLite cannot read: never a traceback, never a change."""
    return RefusedError(
        f"database {path} is damaged: {exc}",
        hint="restore a verified backup: sidecar restore latest",
    )


def foreign_key_problems(
    conn: sqlite3.Connection, tables: Iterable[str] | None = None
) -> list[tuple[str, int | None, str, int]]:
    """Rows of ``PRAGMA foreign_key_check``: (table, rowid, parent, fk index); of the whole
    database, or of the foreign keys of ``tables`` (as children) only."""
    pragmas = (
        ["PRAGMA foreign_key_check"]
        if tables is None
        else [f"PRAGMA foreign_key_check({quote_ident(t)})" for t in sorted(tables)]
    )
    return [(str(r[0]), r[1], str(r[2]), int(r[3])) for sql in pragmas for r in conn.execute(sql)]


def foreign_key_problems_in(path: Path) -> list[tuple[str, int | None, str, int]]:
    """:func:`foreign_key_problems` of a file nobody writes (a backup): immutable, no lock."""
    with immutable(path) as conn:
        return foreign_key_problems(conn)


def user_tables(conn: sqlite3.Connection) -> list[str]:
    """Names of the app's tables (SQLite's internal ``sqlite_*`` tables excluded)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\' ORDER BY name"
    )
    return [str(row[0]) for row in rows]


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row count of every user table."""
    return {
        table: int(conn.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0])
        for table in user_tables(conn)
    }


def journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def schema_hash(conn: sqlite3.Connection) -> str:
    """sha256 over the catalogue (type, name, table, sql), order-independent."""
    rows = conn.execute(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name"
    ).fetchall()
    digest = hashlib.sha256()
    for row in rows:
        digest.update("\x1f".join(str(v) for v in row).encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


class _Requested(stop_base):
    """tenacity's stop condition for a :class:`Stop` (its own wants a threading.Event)."""

    def __init__(self, stop: Stop) -> None:
        self.stop = stop

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.stop.is_set()


def _execute_when_free(
    conn: sqlite3.Connection, sql: str, timeout: float, stop: Stop | None = None
) -> bool:
    """Run ``sql`` with bounded exponential retry while the database is busy; False when
    it stayed busy for ``timeout`` seconds. SQLite's own busy handler covers short waits.
    A set ``stop`` (SIGTERM) ends the waiting at once: :class:`Aborted`."""
    give_up = stop_after_delay(timeout)
    try:
        for attempt in Retrying(
            retry=retry_if_exception(is_busy),
            stop=give_up if stop is None else give_up | _Requested(stop),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            sleep=time.sleep if stop is None else stop.sleep,
            reraise=False,
        ):
            with attempt:
                conn.execute(sql)
    except RetryError:
        if stop is not None and stop.is_set():
            log.warning("database.lock_wait_aborted", statement=sql, reason=stop.reason)
            raise Aborted("lock") from None
        return False
    return True


def begin_immediate(conn: sqlite3.Connection, timeout: float, stop: Stop | None = None) -> float:
    """``BEGIN IMMEDIATE`` with bounded exponential retry; returns seconds waited.

    The retry covers apps that hold the lock for longer than a busy handler should wait.
    Raises :class:`UnavailableError` (exit 5) after ``timeout`` seconds.
    """
    started = time.monotonic()
    if not _execute_when_free(conn, "BEGIN IMMEDIATE", timeout, stop):
        raise UnavailableError(
            f"could not take the database write lock within {timeout:g}s",
            hint="the app may hold SQLite in exclusive mode: set SIDECAR_APP so the sidecar "
            "can stop it, or raise SIDECAR_WAIT_TIMEOUT",
        )
    waited = time.monotonic() - started
    log.debug("database.locked", waited_s=round(waited, 3))
    return waited


def commit(conn: sqlite3.Connection, timeout: float) -> None:
    """``COMMIT`` with the same bounded retry as :func:`begin_immediate`.

    In rollback-journal mode COMMIT needs an EXCLUSIVE lock, which waits for every reader
    (a report query, another sidecar's backup). Raises :class:`UnavailableError` (exit 5)
    after ``timeout``; the transaction is then still open and the caller rolls it back.
    """
    if not _execute_when_free(conn, "COMMIT", timeout):
        raise UnavailableError(
            f"could not commit within {timeout:g}s: readers kept the database busy",
            hint="nothing was changed; retry when the long readers are done, or raise "
            "SIDECAR_WAIT_TIMEOUT",
        )


@contextmanager
def write_lock(
    path: Path, timeout: float, *, stop: Stop | None = None
) -> Iterator[sqlite3.Connection]:
    """A connection holding ``BEGIN IMMEDIATE``. Leaving the block without an explicit
    ``COMMIT`` rolls back: a change is only ever kept on purpose."""
    conn = connect(path, busy_timeout=min(timeout, 1.0))
    try:
        begin_immediate(conn, timeout, stop)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    finally:
        conn.close()
