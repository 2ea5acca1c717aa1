"""Health checks -> a report. Read-only: every check runs inside one read transaction, or
inside the caller's write transaction during a deploy (where a failure means rollback)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sidecar import database, sqlite
from sidecar.errors import ConfigError, HealthError


@dataclass(frozen=True)
class Check:
    """One named check. A failed check with ``fatal=False`` is a warning: reported, not failed."""

    name: str
    ok: bool
    detail: str = ""
    fatal: bool = True


@dataclass(frozen=True)
class HealthReport:
    checks: tuple[Check, ...]
    row_counts: dict[str, int] = field(default_factory=dict)
    journal_mode: str | None = None
    wal_bytes: int | None = None
    last_backup: str | None = None
    last_backup_age_s: float | None = None

    @property
    def ok(self) -> bool:
        return all(check.ok or not check.fatal for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.fatal and not check.ok]

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["healthy"] = self.ok
        return document


def load_queries(path: Path) -> list[str]:
    """The user's health queries: SQL statements, each returning a truthy first value."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"health queries file {path} does not exist",
            hint="check SIDECAR_HEALTH_QUERIES and the file's mount",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read health queries {path}: {exc}", hint="use a UTF-8 .sql file"
        ) from None
    statements: list[str] = []
    pending = ""
    for line in text.splitlines(keepends=True):
        pending += line
        # sqlite3.complete_statement knows about strings, comments and trigger bodies.
        if sqlite3.complete_statement(pending):
            if _has_sql(pending):
                statements.append(_strip_leading_comments(pending))
            pending = ""
    if _has_sql(pending):
        raise ConfigError(
            f"{path}: the last health query is incomplete: {pending.strip()[:80]!r}",
            hint="end every query with ';'",
        )
    return statements


def _strip_leading_comments(text: str) -> str:
    lines = text.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    return "\n".join(lines).strip()


def _has_sql(text: str) -> bool:
    """True when ``text`` holds more than comments and semicolons."""
    for line in text.splitlines():
        code = line.split("--", 1)[0].strip().strip(";").strip()
        if code:
            return True
    return False


def run_queries(conn: sqlite3.Connection, queries: list[str]) -> list[Check]:
    """Each query's first value must be truthy. The queries run with ``query_only`` on: a
    health query that tries to write (``DELETE ... RETURNING 1``) fails instead of changing
    data inside the deploy's transaction."""
    was = conn.execute("PRAGMA query_only").fetchone()[0]
    conn.execute("PRAGMA query_only=ON")
    try:
        with sqlite.as_sqlite_reads_it(conn):  # the user's SQL, read as SQLite reads it
            return _run_queries(conn, queries)
    finally:
        conn.execute(f"PRAGMA query_only={int(was)}")


def _run_queries(conn: sqlite3.Connection, queries: list[str]) -> list[Check]:
    checks = []
    for query in queries:
        name = " ".join(query.split())[:120]
        try:
            row = conn.execute(query).fetchone()
        except sqlite3.Error as exc:
            checks.append(Check(f"query: {name}", False, f"error: {exc}"))
            continue
        value = None if row is None else row[0]
        checks.append(Check(f"query: {name}", bool(value), f"returned {value!r}"))
    return checks


def queries_guard(queries: list[str]) -> Callable[[sqlite3.Connection], None]:
    """The user's queries as an in-transaction check: raises :class:`HealthError` on failure."""

    def guard(conn: sqlite3.Connection) -> None:
        failed = [check for check in run_queries(conn, queries) if not check.ok]
        if failed:
            first = failed[0]
            raise HealthError(
                f"health query failed: {first.name} ({first.detail})"
                + (f" and {len(failed) - 1} more" if len(failed) > 1 else ""),
                hint="the change was rolled back; fix the schema or the query, then deploy again",
            )

    return guard


def database_checks(conn: sqlite3.Connection, *, full: bool) -> list[Check]:
    problems = sqlite.quick_check(conn, full=full)
    name = "integrity_check" if full else "quick_check"
    results = [Check(name, not problems, "; ".join(problems[:5]) or "ok")]
    fk = database.foreign_key_problems(conn)
    detail = (
        f"{len(fk)} rows, first: table {fk[0][0]} rowid {fk[0][1]} -> {fk[0][2]}" if fk else "ok"
    )
    results.append(Check("foreign_key_check", not fk, detail))
    return results


def wal_bytes(db: Path) -> int | None:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else None
