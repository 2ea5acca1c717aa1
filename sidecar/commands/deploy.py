"""Subcommand: deploy (the pipeline, then optionally scheduled backups)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar import catalog, containers, schedule, schema_source
from sidecar.commands.backups import take_backup
from sidecar.errors import ExitCode, SidecarError
from sidecar.logs import get_logger
from sidecar.pipeline import DeployReport, run_deploy
from sidecar.settings import Settings
from sidecar.signals import Aborted, stop_on_sigterm

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
    schema_in_app = settings.schema is not None and schema_source.parse(str(settings.schema))
    apps = containers.connect(required=(wants_app and not dry_run) or bool(schema_in_app))
    with stop_on_sigterm() as stop:
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
            _backup_if_none_fresh(settings, report)
            schedule.run_forever(
                settings.schedule,
                lambda: take_backup(settings, reason="scheduled", no_prune=False),
                stop,
            )
    return DeployResult(report)


def _backup_if_none_fresh(settings: Settings, report: DeployReport) -> None:
    """Staying up for scheduled backups: take one now unless a fresh one exists, so the
    HEALTHCHECK (backup age) is not unhealthy until the first slot on a new install."""
    if report.backup:
        return
    folder = settings.backup_dir
    latest = catalog.latest_verified(folder, settings.database) if folder.is_dir() else None
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
