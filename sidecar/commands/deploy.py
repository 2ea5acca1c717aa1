"""Subcommands: deploy (the pipeline, then optionally scheduled backups) and health."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar import catalog, containers, database, schedule, schema
from sidecar import health as checks
from sidecar.commands.backups import take_backup
from sidecar.errors import ExitCode, HealthError
from sidecar.health import Check, HealthReport
from sidecar.logs import get_logger
from sidecar.pipeline import Aborted, DeployReport, run_deploy
from sidecar.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class DeployResult:
    report: DeployReport
    aborted: bool = False

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.report), "aborted": self.aborted}

    def render(self) -> str:
        r = self.report
        if self.aborted:
            return "deploy aborted by a signal before any change; nothing was changed"
        if r.dry_run:
            return "dry run: nothing changed\n" + _plan_text(r.plan)
        what = "created the database from the schema" if r.fresh else (
            "applied the schema changes" if r.changed else "nothing to do"
        )  # fmt: skip
        parts = [what]
        if r.backup:
            parts.append(f"backup {r.backup}")
        if r.drift:
            parts.append(f"{len(r.drift)} drift item(s) reported, not executed")
        if r.restarted:
            parts.append(f"restarted {r.app}")
        elif r.app_stopped:
            parts.append(f"stopped and started {r.app}")
        return "deploy: " + "; ".join(parts) + f" ({r.seconds:.1f}s)"


def _plan_text(plan: dict[str, Any]) -> str:
    lines = [f"  {op.get('summary', op)}" for op in plan.get("operations", [])]
    lines += [
        f"  drift (never executed): {item.get('summary', item)}" for item in plan.get("drift", [])
    ]
    return "\n".join(lines) or "  (no changes)"


def deploy(settings: Settings, *, dry_run: bool = False, **_: Any) -> DeployResult:
    """Run the deploy pipeline; then, with SIDECAR_SCHEDULE, stay up for scheduled backups."""
    if settings.schedule:
        schedule.validate(settings.schedule)
    wants_app = bool(settings.app or settings.app_label)
    apps = containers.connect(required=wants_app and not dry_run)
    with schedule.stop_on_sigterm() as stop:
        try:
            report = run_deploy(settings, apps=apps, dry_run=dry_run, stop=stop)
        except Aborted:
            return DeployResult(DeployReport(database=str(settings.database)), aborted=True)
        log.info(
            "deploy.done",
            changed=report.changed,
            fresh=report.fresh,
            backup=report.backup,
            drift=report.drift,
            app=report.app,
            app_stopped=report.app_stopped,
            restarted=report.restarted,
            quiet=report.quiet,
            lock_wait_s=report.lock_wait_s,
            write_blocked_s=report.write_blocked_s,
            pruned=report.pruned,
            dry_run=dry_run,
            seconds=round(report.seconds, 3),
        )
        if settings.schedule and not dry_run:
            schedule.run_forever(
                settings.schedule,
                lambda: take_backup(settings, reason="scheduled", no_prune=False),
                stop,
            )
    return DeployResult(report)


@dataclass(frozen=True)
class HealthResult:
    report: HealthReport

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.report.ok else ExitCode.HEALTH

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
        lines.append("healthy" if r.ok else "UNHEALTHY")
        return "\n".join(lines)


def health(settings: Settings, *, backups_only: bool = False, **_: Any) -> HealthResult:
    """Check the database, the schema, the backups and the user's queries. Exit 4 on failure."""
    started = time.monotonic()
    backup_check, last, age = _backup_age(settings, required=backups_only)
    if backups_only:
        report = HealthReport(checks=(backup_check,), last_backup=last, last_backup_age_s=age)
    else:
        report = _database_health(settings, backup_check, last, age)
    log.info(
        "health.done",
        healthy=report.ok,
        failures=[f"{c.name}: {c.detail}" for c in report.failures],
        seconds=round(time.monotonic() - started, 3),
    )
    return HealthResult(report)


def _database_health(
    settings: Settings, backup_check: Check, last: str | None, age: float | None
) -> HealthReport:
    db = settings.require_database()
    database.check_database_file(db)
    queries = checks.load_queries(settings.health_queries) if settings.health_queries else []
    desired = schema.load_desired(settings.schema) if settings.schema else None
    conn = database.connect(db, busy_timeout=settings.wait_timeout)
    try:
        conn.execute("BEGIN")  # one snapshot for every check
        found = checks.database_checks(conn, full=settings.verify == "full")
        counts = database.row_counts(conn)
        if desired is not None:
            plan = schema.make_plan(schema.read_catalogue(conn), desired, row_counts=counts)
            pending = [str(op) for op in plan.operations]
            detail = "; ".join(pending[:5]) + (" ..." if len(pending) > 5 else "")
            found.append(Check("desired schema present", not pending, detail or "ok"))
        found += checks.run_queries(conn, queries)
        mode = database.journal_mode(conn)
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        raise HealthError(
            f"cannot read {db}: {exc}", hint="is the app holding an exclusive lock?"
        ) from None
    except sqlite3.DatabaseError as exc:
        raise HealthError(
            f"database {db} is damaged: {exc}",
            hint="restore a verified backup: sidecar restore latest",
        ) from None
    finally:
        conn.close()
    found.append(backup_check)
    return HealthReport(
        checks=tuple(found),
        row_counts=counts,
        journal_mode=mode,
        wal_bytes=checks.wal_bytes(db),
        last_backup=last,
        last_backup_age_s=age,
    )


def _backup_age(settings: Settings, *, required: bool) -> tuple[Check, str | None, float | None]:
    """The last verified backup's age: a warning in `health`, fatal for the HEALTHCHECK."""
    limit = settings.max_backup_age
    if not settings.backup_dir.is_dir():
        missing = f"no backups folder {settings.backup_dir}"
        return Check("last backup", False, missing, required), None, None
    latest = catalog.latest_verified(settings.backup_dir)
    if latest is None:
        return Check("last backup", False, "no verified backup yet", required), None, None
    age = (datetime.now(UTC) - latest.created_at).total_seconds()
    fresh = age <= limit
    detail = f"{latest.id}, {age / 3600:.1f}h old (limit {limit / 3600:.1f}h)"
    return Check("last backup", fresh, detail, fatal=required), latest.id, round(age, 1)
