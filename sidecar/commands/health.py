"""Subcommand: health. Kept apart from deploy so that the image's HEALTHCHECK (`health
--backups-only`, every minute) never imports the Docker SDK."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar import appstop, database
from sidecar.backup import store
from sidecar.errors import ExitCode, HealthError, and_more
from sidecar.health import (
    Check,
    HealthReport,
    database_checks,
    load_queries,
    run_queries,
    wal_bytes,
)
from sidecar.logs import get_logger
from sidecar.schema.catalogue import read_catalogue
from sidecar.schema.diff import make_plan
from sidecar.schema.source import load_desired
from sidecar.settings import Settings

log = get_logger(__name__)

VANISHED = "data since the backups"


@dataclass(frozen=True)
class HealthResult:
    report: HealthReport

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.report.ok else ExitCode.HEALTH

    @property
    def failure(self) -> HealthError | None:
        """The error line for the CLI when a check failed (every check is in the result)."""
        failures = self.report.failures
        if not failures:
            return None
        first = failures[0]
        return HealthError(
            f"unhealthy: {first.name}: {first.detail}{and_more(failures)}", hint=_hint(first)
        )

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict()

    def render(self) -> str:
        lines = []
        for check in self.report.checks:
            mark = "ok  " if check.ok else ("FAIL" if check.fatal else "warn")
            lines.append(f"{mark}  {check.name}: {check.detail}")
        r = self.report
        if r.row_counts:
            lines.append("rows: " + ", ".join(f"{t}={n}" for t, n in r.row_counts.items()))
        if r.journal_mode:
            lines.append(f"journal mode: {r.journal_mode}, wal: {r.wal_bytes or 0} bytes")
        verdict = "healthy" if r.ok else "UNHEALTHY"
        lost = next((c for c in r.checks if c.name == VANISHED and not c.ok), None)
        if lost is not None:
            verdict += f", but MOST OF THE DATA VANISHED: {lost.detail}"
        lines.append(verdict)
        return "\n".join(lines)


def health(settings: Settings, *, backups_only: bool = False, **_: Any) -> HealthResult:
    """Check the database, the schema, the backups and the user's queries. Exit 4 on failure."""
    started = time.monotonic()
    backup_check, latest, age = _backup_age(settings, required=backups_only)
    if backups_only:
        last = latest.id if latest is not None else None
        found = (backup_check, *_offsite_checks(settings))
        report = HealthReport(checks=found, last_backup=last, last_backup_age_s=age)
    else:
        report = _database_health(settings, backup_check, latest, age)
    log.info(
        "health.done",
        healthy=report.ok,
        failures=[f"{c.name}: {c.detail}" for c in report.failures],
        seconds=round(time.monotonic() - started, 3),
    )
    return HealthResult(report)


def _database_health(
    settings: Settings, backup_check: Check, latest: store.BackupInfo | None, age: float | None
) -> HealthReport:
    db = settings.require_database()
    database.check_database_file(db)
    queries = load_queries(settings.health_queries) if settings.health_queries else []
    desired = load_desired(settings.schema) if settings.schema else None
    conn = database.connect(db, busy_timeout=min(settings.wait_timeout, 1.0))
    try:
        database.begin_snapshot(conn, wait=settings.wait_timeout)  # one snapshot for all
        found = database_checks(conn, full=settings.verify == "full")
        counts = database.row_counts(conn)
        if desired is not None:
            plan = make_plan(read_catalogue(conn), desired, row_counts=counts)
            pending = [str(op) for op in plan.operations]
            detail = "; ".join(pending[:5]) + (" ..." if len(pending) > 5 else "")
            found.append(Check("desired schema present", not pending, detail or "ok"))
        found += run_queries(conn, queries)
        mode = database.journal_mode(conn)
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        # Locked, read-only, full or a hot journal: exit 5 or 2 with its own hint, as `plan`.
        problem = database.cannot_open(db, exc)
        if problem is not None:
            raise problem from None
        raise HealthError(
            f"database {db} is damaged: {exc}",
            hint="restore a verified backup: sidecar restore latest",
        ) from None
    finally:
        conn.close()
    found.append(backup_check)
    stopped = appstop.read_record(db)
    if stopped is not None:
        # An interrupted run stopped the app: a healthy database with its app down.
        found.append(Check("app stopped by the sidecar", False, appstop.describe(stopped),
                           fatal=False))  # fmt: skip
    found += _offsite_checks(settings)
    vanished = _vanished(latest)
    if vanished is not None:
        found.append(vanished)
    return HealthReport(
        checks=tuple(found),
        row_counts=counts,
        journal_mode=mode,
        wal_bytes=wal_bytes(db),
        last_backup=latest.id if latest is not None else None,
        last_backup_age_s=age,
    )


def _vanished(latest: store.BackupInfo | None) -> Check | None:
    """A warning while the latest backup found most of the data gone (store.rows_vanished):
    every other check passes on a wiped volume whose app re-created its schema."""
    lost = latest.rows_vanished if latest is not None else None
    if lost is None:
        return None
    detail = (
        f"{lost.get('rows_now')} rows left of {lost.get('rows_before')} in {lost.get('since')}: "
        f"`sidecar restore {lost.get('since')}`, or delete that backup if the reset was wanted"
    )
    return Check(VANISHED, False, detail, fatal=False)


def _backup_age(
    settings: Settings, *, required: bool
) -> tuple[Check, store.BackupInfo | None, float | None]:
    """The last verified backup's age: a warning in `health`, fatal for the HEALTHCHECK."""
    limit = settings.max_backup_age
    if not settings.backup_dir.is_dir():
        missing = f"no backups folder {settings.backup_dir}"
        return Check("last backup", False, missing, required), None, None
    latest = store.latest_verified(settings.backup_dir, settings.database)
    if latest is None:
        of = f" of {settings.database}" if settings.database else ""
        return Check("last backup", False, f"no verified backup{of} yet", required), None, None
    now = datetime.now(UTC)
    age = latest.age_s(now)
    if latest.in_future(now):
        # Taken "in the future": the clock is behind now, or was ahead then. Either way its
        # age says nothing, and every later backup is named after it (new_backup_path).
        detail = f"{latest.id} is dated {-age / 3600:.1f}h in the future: check the host's clock"
        return Check("last backup", False, detail, fatal=required), latest, round(age, 1)
    fresh = age <= limit
    detail = f"{latest.id}, {_hours(max(age, 0.0))} old (limit {_hours(limit)})"
    return Check("last backup", fresh, detail, fatal=required), latest, round(age, 1)


def _hours(seconds: float) -> str:
    """``2.5h``; under an hour in minutes or seconds (``0.0h`` said nothing)."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def _hint(check: Check) -> str:
    """What to do about a failed check."""
    if check.name == "last backup":
        return "take a backup (sidecar backup) and check the backup schedule (SIDECAR_SCHEDULE)"
    if check.name in ("quick_check", "integrity_check"):
        return (
            "the database is damaged: stop the app, then restore a verified backup "
            "(sidecar restore latest)"
        )
    if check.name == "foreign_key_check":
        return "rows reference parents that do not exist: fix them in the app's data"
    if check.name == "desired schema present":
        return "deploy the desired schema: sidecar deploy (see sidecar plan)"
    return "see the checks above; fix the data or the query (SIDECAR_HEALTH_QUERIES)"


def _offsite_checks(settings: Settings) -> list[Check]:
    """The offsite warnings; the offsite code is imported only when SIDECAR_OFFSITE is set,
    so the HEALTHCHECK of a sidecar without offsite copies starts as fast as before."""
    if settings.offsite is None:
        return []
    from sidecar.commands import offsite  # noqa: PLC0415 - only with SIDECAR_OFFSITE

    return offsite.health_checks(settings)
