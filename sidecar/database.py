"""SQLite connections, pragmas, introspection and the write lock. No schema logic here."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
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

from sidecar import sqlite
from sidecar.errors import ConfigError, RefusedError, SidecarError, UnavailableError
from sidecar.logs import get_logger
from sidecar.quiesce import signature
from sidecar.signals import Aborted, Stop
from sidecar.sqlite import immutable, is_busy, quote_ident, refuse_quoted_strings, uri_path
from sidecar.waits import WaitProgress

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


def damaged(path: Path, exc: sqlite3.DatabaseError) -> SidecarError:
    """The error for a database SQLite cannot read: never a traceback, never a change.

    "Damaged" (exit 3, restore a backup) only when SQLite says the file is corrupt or not a
    database; a database that cannot be opened or written *here* (a read-only mount, a folder
    the sidecar cannot write, a full volume, a hot journal that needs a writer, a lock) is
    healthy, and restoring an older backup over it would lose data: :func:`cannot_open`."""
    problem = cannot_open(path, exc)
    if problem is not None:
        return problem
    return RefusedError(
        f"database {path} is damaged: {exc}",
        hint="restore a verified backup: sidecar restore latest",
    )


def begin_snapshot(conn: sqlite3.Connection, wait: float = 0.0) -> None:
    """``BEGIN`` and a first read, so that a database that cannot be opened here (a lock, a
    read-only folder, a full volume) fails now, with SQLite's own error code, rather than
    inside a check that would report it as a finding about the file. A locked database is
    retried for ``wait`` seconds, with a progress event every few seconds (give ``conn`` a
    short busy timeout: SQLite's own busy handler waits in silence)."""
    progress = WaitProgress("database.read_waiting", timeout_s=wait)
    while True:
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if not is_busy(exc):
                raise
            progress.tick()
            if progress.waited >= wait:
                raise
            time.sleep(0.2)
        else:
            return


def cannot_open(path: Path, exc: sqlite3.DatabaseError) -> SidecarError | None:
    """The error for a healthy database that cannot be opened, read or written here (exit 2
    or 5, each with its own hint), or None when SQLite's error means the file itself is bad."""
    if sqlite.is_busy(exc):
        return UnavailableError(
            f"database {path} stayed locked: {exc}",
            hint="the app may hold SQLite in exclusive locking mode: set SIDECAR_APP so that "
            "a deploy can stop it, or retry when it is stopped",
        )
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or (code & 0xFF) in sqlite.DAMAGED_CODES:
        return None
    journal = Path(f"{path}-journal")
    if code == sqlite.SQLITE_READONLY_ROLLBACK or (
        code & 0xFF == sqlite.SQLITE_READONLY and _nonempty(journal)
    ):
        return UnavailableError(
            f"database {path} has a hot rollback journal ({journal.name}) left by an "
            "interrupted writer: a read-only connection cannot roll it back",
            hint="the database is not damaged (do not restore a backup over it): start the app "
            "or run `sidecar backup`, which roll the journal back as SQLite does, then retry",
        )
    where = _volume_problem(path)
    if code & 0xFF == sqlite.SQLITE_FULL or where == "full":
        return UnavailableError(
            f"the data volume holding {path} is full: {exc}",
            hint="free space on the data volume (or grow it), then retry; the database is "
            "not damaged",
        )
    if (code & 0xFF) in sqlite.ACCESS_CODES or where is not None:
        reason = where if where not in (None, "full") else str(exc)
        return ConfigError(
            f"cannot open database {path} here: {reason}",
            hint="the database is not damaged: mount the data volume read-write and run the "
            "sidecar with the app's uid (SQLite writes -wal, -shm and -journal files beside it)",
        )
    return None


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _volume_problem(path: Path) -> str | None:
    """Why the folder of ``path`` refuses SQLite's writes: "full", or a readable reason."""
    folder = path.parent
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    if stat.f_flag & os.ST_RDONLY:
        return f"the data volume at {folder} is mounted read-only"
    if stat.f_bavail * stat.f_frsize < 64 * 1024:
        return "full"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable by uid {os.geteuid()}"
    if not os.access(path, os.W_OK):
        return f"the file is not writable by uid {os.geteuid()}"
    return None


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


def foreign_key_problems_in(
    path: Path, tables: Iterable[str] | None = None
) -> list[tuple[str, int | None, str, int]]:
    """:func:`foreign_key_problems` of a file nobody writes (a backup): immutable, no lock;
    ``tables`` it does not hold (new in a change) have none."""
    with immutable(path) as conn:
        held = None if tables is None else set(tables) & set(user_tables(conn))
        return foreign_key_problems(conn, held)


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


class _Watch(stop_base):
    """A lock wait's progress event every few seconds, and (with ``path``) its early end: a
    lock that keeps failing while the database files stay unchanged for ``idle`` seconds is
    held by a connection that is not writing, the mark of SQLite's exclusive locking mode."""

    def __init__(self, sql: str, timeout: float, path: Path | None, idle: float) -> None:
        self.progress = WaitProgress("database.lock_waiting", statement=sql, timeout_s=timeout)
        self.path = path
        self.idle = idle
        self.signature = signature(path) if path is not None else None
        self.unchanged_since = time.monotonic()
        self.idle_hold = False

    def __call__(self, retry_state: RetryCallState) -> bool:
        self.progress.tick()
        if self.path is None:
            return False
        now, current = time.monotonic(), signature(self.path)
        if current != self.signature:
            self.signature, self.unchanged_since = current, now
            return False
        self.idle_hold = now - self.unchanged_since >= self.idle
        return self.idle_hold


def _execute_when_free(
    conn: sqlite3.Connection,
    sql: str,
    timeout: float,
    stop: Stop | None = None,
    watch: _Watch | None = None,
) -> bool:
    """Run ``sql`` with bounded exponential retry while the database is busy; False when
    it stayed busy for ``timeout`` seconds (or ``watch`` saw an idle holder). SQLite's own
    busy handler covers short waits. A set ``stop`` (SIGTERM) ends the waiting at once:
    :class:`Aborted`."""
    watch = watch or _Watch(sql, timeout, None, timeout)
    give_up = stop_after_delay(timeout) | watch
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


def begin_immediate(
    conn: sqlite3.Connection,
    timeout: float,
    stop: Stop | None = None,
    *,
    idle_holder: tuple[Path, float] | None = None,
) -> float:
    """``BEGIN IMMEDIATE`` with bounded exponential retry; returns seconds waited.

    The retry covers apps that hold the lock for longer than a busy handler should wait.
    Raises :class:`UnavailableError` (exit 5) after ``timeout`` seconds, or, with
    ``idle_holder=(database, seconds)``, as soon as the lock failed for that long while the
    database's files stayed unchanged (an app in exclusive locking mode: waiting longer
    cannot help, stopping it can).
    """
    started = time.monotonic()
    path, idle = idle_holder if idle_holder is not None else (None, timeout)
    watch = _Watch("BEGIN IMMEDIATE", timeout, path, idle)
    if not _execute_when_free(conn, "BEGIN IMMEDIATE", timeout, stop, watch):
        waited = round(time.monotonic() - started, 3)
        if watch.idle_hold:
            log.info("database.exclusive_lock_detected", waited_s=waited, unchanged_s=idle)
            raise UnavailableError(
                f"the database stayed locked for {waited:g}s while its files did not change: "
                "the app holds it in exclusive locking mode",
                hint="set SIDECAR_APP so the sidecar can stop it briefly",
            )
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
    path: Path, timeout: float, *, stop: Stop | None = None, idle_holder: float | None = None
) -> Iterator[sqlite3.Connection]:
    """A connection holding ``BEGIN IMMEDIATE``. Leaving the block without an explicit
    ``COMMIT`` rolls back: a change is only ever kept on purpose. ``idle_holder``: give up
    early on an app in exclusive locking mode (:func:`begin_immediate`)."""
    conn = connect(path, busy_timeout=min(timeout, 1.0))
    try:
        idle = (path, idle_holder) if idle_holder is not None else None
        begin_immediate(conn, timeout, stop, idle_holder=idle)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    finally:
        conn.close()
