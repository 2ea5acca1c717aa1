"""Subcommand: deploy (the pipeline, then optionally scheduled backups)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar import alerts, schedule
from sidecar.backup import store
from sidecar.commands.backup import run_scheduled, take_backup
from sidecar.commands.schema import drift_parts, writable_parts
from sidecar.containers import engine
from sidecar.errors import ExitCode, SidecarError
from sidecar.logs import get_logger
from sidecar.pipeline import DeployReport, run_deploy
from sidecar.schema.source import parse
from sidecar.settings import Settings
from sidecar.signals import Aborted, Stop, stop_on_sigterm

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
        parts = [*vanished_lead(r.rows_vanished), what, *writable_parts(r.plan), *r.left_stopped]
        if r.started_again:
            parts.append(f"started {', '.join(r.started_again)} again (an interrupted run "
                         "had stopped it)")  # fmt: skip
        if r.backup:
            parts.append(f"backup {r.backup}")
        if r.compaction and not r.compaction["skipped"]:
            parts.append(f"compacted: {r.compaction['freed_bytes'] / 1e6:.1f} MB given back")
        parts += drift_parts(r.drift, r.not_executed)
        if r.restarted:
            parts.append(f"restarted {r.app}")
        elif r.app_stopped:
            parts.append(f"stopped and started {r.app}")
        if r.offsite:
            failed = r.offsite.get("error")
            parts.append(f"offsite copy FAILED: {failed}" if failed else "offsite copy proved")
        return "deploy: " + "; ".join(parts) + f" ({r.seconds:.1f}s)"


def vanished_lead(lost: dict[str, Any] | None) -> list[str]:
    """The first words of a summary when most of the data vanished since a backup."""
    if lost is None:
        return []
    since = lost.get("since")
    return [
        f"MOST OF THE DATA VANISHED: {lost.get('rows_now')} rows left of "
        f"{lost.get('rows_before')} in backup {since}; to bring it back: stop the app, then "
        f"`sidecar restore {since}` (if the reset was wanted, delete that backup)"
    ]


def _plan_text(plan: dict[str, Any]) -> str:
    lines = [f"  {op.get('summary', op)}" for op in plan.get("operations", [])]
    lines += [f"  relax: {item.get('summary', item)}" for item in plan.get("relax", [])]
    lines += [
        f"  kept, rejects the new app's rows: {item.get('summary', item)}"
        for item in plan.get("rejects", [])
    ]
    lines += [
        f"  drift (never executed): {item.get('summary', item)}" for item in plan.get("drift", [])
    ]
    return "\n".join(lines) or "  (no changes)"


def deploy(settings: Settings, *, dry_run: bool = False, **_: Any) -> DeployResult:
    """Run the deploy pipeline; then, with SIDECAR_SCHEDULE, stay up for scheduled backups.
    The deploy itself is observed by :mod:`sidecar.alerts` before the schedule starts."""
    with stop_on_sigterm() as stop:
        with alerts.observing("deploy", enabled=not dry_run) as run:
            result = run.result = _deploy_once(settings, dry_run=dry_run, stop=stop)
        if settings.schedule and not dry_run and not result.aborted:
            _backup_if_none_fresh(settings, result.report)
            run_scheduled(settings, stop)
    return result


def _deploy_once(settings: Settings, *, dry_run: bool, stop: Stop) -> DeployResult:
    if settings.schedule:
        schedule.validate(settings.schedule)
    wants_app = bool(settings.app or settings.app_label)
    schema_in_app = settings.schema is not None and parse(str(settings.schema))
    apps = engine.connect(required=(wants_app and not dry_run) or bool(schema_in_app))
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
        started_again=report.started_again,
        left_stopped=report.left_stopped,
        quiet=report.quiet,
        lease_wait_s=report.lease_wait_s,
        quiesce_wait_s=report.quiesce_wait_s,
        lock_wait_s=report.lock_wait_s,
        write_blocked_s=report.write_blocked_s,
        pruned=report.pruned,
        rows_vanished=report.rows_vanished,
        dry_run=dry_run,
        seconds=round(report.seconds, 3),
    )
    return DeployResult(report)


def _backup_if_none_fresh(settings: Settings, report: DeployReport) -> None:
    """Staying up for scheduled backups: take one now unless a fresh one exists, so the
    HEALTHCHECK (backup age) is not unhealthy until the first slot on a new install."""
    if report.backup:
        return
    folder = settings.backup_dir
    latest = store.latest_verified(folder, settings.database) if folder.is_dir() else None
    if latest is not None and (datetime.now(UTC) - latest.created_at).total_seconds() < (
        settings.max_backup_age / 2
    ):
        return
    try:
        take_backup(settings, reason="scheduled", no_prune=False)
    except SidecarError as exc:
        log.error(  # noqa: TRY400 (expected failure: one line, no traceback)
            "schedule.job_failed", error=exc.message, hint=exc.hint, exit_code=int(exc.exit_code)
        )
