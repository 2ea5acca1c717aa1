"""SQLite facts that need nothing but ``sqlite3``: the copier child imports this module
while it copies, and ``sidecar.database`` (tenacity, structlog: ~90 ms) would slow it down."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager

TYPE_CHECKING = False  # the copier child's quick_check imports this: no pathlib (see fs.py)
if TYPE_CHECKING:
    from _typeshed import StrPath


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL: any name SQLite accepts, keywords and spaces included."""
    return '"' + name.replace('"', '""') + '"'


def uri_path(path: StrPath) -> str:
    """``path`` for a ``file:`` URI: SQLite decodes %XX, and ? and # end the path."""
    return os.path.abspath(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")


# SQLite reads a double-quoted name that matches no column as a string literal (its
# double-quoted-string fallback): "handle" on a table without that column is 'handle' in
# every row. Python 3.12 can turn that off per connection (sqlite3_db_config); 3.11, the
# Python of Debian bookworm's base image, cannot. Every query the sidecar builds names only
# columns that exist, so the fallback never changes a result either way; with it off, a
# mistake there would be an error instead of a wrong answer. docs/design.md "Double-quoted
# strings" says why DDL keeps the fallback.
CAN_REFUSE_QUOTED_STRINGS = sys.version_info >= (3, 12)


def refuse_quoted_strings(conn: sqlite3.Connection) -> sqlite3.Connection:
    """``conn`` with the double-quoted-string fallback off for DML, where Python allows."""
    if sys.version_info >= (3, 12):
        conn.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DML, False)
    return conn


@contextmanager
def as_sqlite_reads_it(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``conn`` with SQLite's default reading of double-quoted strings, for the user's own
    SQL (health queries): it then means what it means in the app and in the sqlite3 shell,
    on every Python."""
    if sys.version_info >= (3, 12):
        conn.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DML, True)
        try:
            yield conn
        finally:
            conn.setconfig(sqlite3.SQLITE_DBCONFIG_DQS_DML, False)
    else:
        yield conn


@contextmanager
def immutable(path: StrPath) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a file nobody writes while it is open (a backup, or a
    database file frozen by a read transaction elsewhere): ``immutable=1`` takes no lock and
    neither reads nor creates a ``-wal`` or ``-shm``."""
    uri = f"file:{uri_path(path)}?mode=ro&immutable=1"
    conn = refuse_quoted_strings(sqlite3.connect(uri, uri=True, isolation_level=None))
    try:
        yield conn
    finally:
        conn.close()


# SQLite's primary result codes (the low byte of an extended code) that say the file itself
# is bad, and those that say only that this process cannot open or write it here.
SQLITE_PERM, SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_FULL = 3, 8, 11, 14, 13
SQLITE_NOTADB, SQLITE_AUTH = 26, 23
SQLITE_READONLY_ROLLBACK = SQLITE_READONLY | (3 << 8)  # a hot journal, and no write access
DAMAGED_CODES = frozenset({SQLITE_CORRUPT, SQLITE_NOTADB})
ACCESS_CODES = frozenset({SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH})


def is_access_error(exc: BaseException) -> bool:
    """SQLite could not open, read or write the file here (permissions, read-only mount, full
    volume, hot journal): the file is not known to be damaged."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in ACCESS_CODES | {SQLITE_FULL}


def says_damaged(exc: BaseException) -> bool:
    """SQLite's error says the file itself is bad (SQLITE_CORRUPT, SQLITE_NOTADB), not that
    it could not be read here (I/O, open, memory, a full volume: the file may be fine)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in DAMAGED_CODES


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock (retry, or exit 5)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


# PRAGMA quick_check(TABLE) checks only that table and its indexes (SQLite 3.33.0); before
# it, the argument is an error limit and the whole database would be checked.
CHECKS_ONE_TABLE = sqlite3.sqlite_version_info >= (3, 33, 0)


def quick_check(
    conn: sqlite3.Connection, *, full: bool = False, table: str | None = None
) -> list[str]:
    """Problems reported by ``quick_check`` (or ``integrity_check`` when ``full``); [] when ok.

    ``table``: check only that table's b-tree and its indexes' (``sqlite_schema``: the schema
    table); it needs :data:`CHECKS_ONE_TABLE`. The pages of other tables, the free-list and
    the "every page used once" accounting are then not checked."""
    pragma = "integrity_check" if full else "quick_check"
    if table is not None:
        if not CHECKS_ONE_TABLE:
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} cannot check one table")
        pragma += f"({quote_ident(table)})"
    try:
        rows = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}")]
    except sqlite3.DatabaseError as exc:
        if is_busy(exc) or is_access_error(exc):
            raise  # not a finding about the file: the caller says what is in the way
        return [str(exc)]  # "database disk image is malformed": damaged beyond a check
    if rows == ["ok"]:
        return []
    # One problem per line, without SQLite's "*** in database main ***" banner.
    problems = [
        line.strip()
        for row in rows
        for line in row.splitlines()
        if line.strip() and not line.strip().startswith("*** in database")
    ]
    return problems or rows
