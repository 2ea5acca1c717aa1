"""Subcommand: deploy (the pipeline, then optionally scheduled backups)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar import alerts
from sidecar.backup import snapshot, store
from sidecar.containers import engine
from sidecar.errors import ExitCode, SidecarError
from sidecar.logs import get_logger
from sidecar.pipeline.report import DeployReport
from sidecar.pipeline.run import run_deploy
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
        return {**self.report.to_dict(), "aborted": self.aborted}

    def render(self) -> str:
        if self.aborted:
            return "deploy aborted by a signal before any change; nothing was changed"
        return self.report.render("deploy")


def deploy(settings: Settings, *, dry_run: bool = False, **_: Any) -> DeployResult:
    """Run the deploy pipeline; then, with SIDECAR_SCHEDULE, stay up for scheduled backups.
    The deploy itself is observed by :mod:`sidecar.alerts` before the schedule starts."""
    with stop_on_sigterm() as stop:
        with alerts.observing("deploy", enabled=not dry_run) as run:
            result = run.result = _deploy_once(settings, dry_run=dry_run, stop=stop)
        if settings.schedule and not dry_run and not result.aborted:
            # The long-running mode's code (croniter among it) is imported only for it: every
            # 0.1 s of a one-shot deploy's start-up is downtime in the release layout.
            from sidecar.commands.backup import run_scheduled  # noqa: PLC0415

            _backup_if_none_fresh(settings, result.report)
            run_scheduled(settings, stop)
    return result


def _deploy_once(settings: Settings, *, dry_run: bool, stop: Stop) -> DeployResult:
    if settings.schedule:
        from sidecar import schedule  # noqa: PLC0415 - the long-running mode only

        schedule.validate(settings.schedule)
    wants_app = bool(settings.app or settings.app_label)
    schema_in_app = settings.schema is not None and parse(str(settings.schema))
    # The backup before a change needs the copier child: started now, it is ready by the
    # time the write lock is taken (a dry run takes no backup).
    with snapshot.copier_ahead(None if dry_run else settings.database):
        apps = engine.connect(required=(wants_app and not dry_run) or bool(schema_in_app))
        try:
            report = run_deploy(settings, apps=apps, dry_run=dry_run, stop=stop)
        except Aborted:
            return DeployResult(DeployReport(database=str(settings.database)), aborted=True)
    log.info("deploy.done", **report.done_fields())
    return DeployResult(report)


def _backup_if_none_fresh(settings: Settings, report: DeployReport) -> None:
    """Staying up for scheduled backups: take one now unless a fresh one exists, so the
    HEALTHCHECK (backup age) is not unhealthy until the first slot on a new install."""
    if report.backup:
        return
    folder = settings.backup_dir
    latest = store.latest_verified(folder, settings.database) if folder.is_dir() else None
    now = datetime.now(UTC)
    if (
        latest is not None
        and not latest.in_future(now)
        and latest.age_s(now) < settings.max_backup_age / 2
    ):
        return
    from sidecar.commands.backup import take_backup  # noqa: PLC0415 - long-running only

    try:
        take_backup(settings, reason="scheduled", no_prune=False)
    except SidecarError as exc:
        log.error(  # noqa: TRY400 (expected failure: one line, no traceback)
            "schedule.job_failed", error=exc.message, hint=exc.hint, exit_code=int(exc.exit_code)
        )
