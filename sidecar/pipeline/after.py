"""The deploy's steps after the change, outside the lease and the write lock: the vanished-data
finding, the restart, compressing and uploading the backup, pruning, the history record.
Past COMMIT a failure of compress or offsite is a warning, never a failed deploy.
"""

from __future__ import annotations

from sidecar import alerts
from sidecar.backup import retention, store
from sidecar.backup.create import compress_backup
from sidecar.backup.store import BackupInfo
from sidecar.containers.apps import AppRef, Apps, left_for_compose
from sidecar.errors import HealthError, SidecarError
from sidecar.logs import get_logger
from sidecar.pipeline.report import DeployReport
from sidecar.settings import Settings

log = get_logger(__name__)


def find_vanished_rows(settings: Settings, report: DeployReport) -> None:
    """The vanished-data finding of this deploy's backup or, without one, of the newest
    verified backup: a wiped volume whose app re-created its schema passes every check."""
    if not settings.backup_dir.is_dir():
        return
    try:
        if report.backup:
            info: BackupInfo | None = store.find_backup(settings.backup_dir, report.backup)
        else:
            info = store.latest_verified(settings.backup_dir)
    except SidecarError as exc:  # a finding for the summary: never a failed deploy
        log.warning("deploy.vanished_check_failed", error=exc.message)
        return
    report.rows_vanished = info.rows_vanished if info is not None else None


def restart(
    settings: Settings, apps: Apps | None, app: AppRef | None, report: DeployReport
) -> None:
    """Restart the app by the policy (SIDECAR_RESTART) and wait until it is healthy.
    Past COMMIT nothing rolls back by itself: a failure names the way back."""
    if apps is None or app is None:
        return
    # A container created by Compose and not started yet (the release layout), or
    # stopped: starting it is Compose's job (or the user's), never the sidecar's.
    for replica in app.containers:
        if not replica.running:
            left_for_compose(replica.name)
    if not app.running:
        return
    app = app.running_part()
    try:
        if report.app_stopped:
            # Stopped and started again by the pipeline itself: no second restart on top.
            apps.wait_healthy(app, timeout=settings.healthy_timeout)
            return
        wanted = settings.restart == "always" or (
            settings.restart == "on-change" and report.changed
        )
        if not wanted:
            log.info(
                "restart.skipped", reason=f"policy {settings.restart}, changed={report.changed}"
            )
            return
        apps.restart(app, timeout=settings.stop_timeout)
        report.restarted = True
        apps.wait_healthy(app, timeout=settings.healthy_timeout)
    except SidecarError as exc:
        alerts.note(backup=report.backup, app_unhealthy=isinstance(exc, HealthError))
        if not (report.changed and report.backup):
            raise
        alerts.note(restore=f"sidecar restore {report.backup}")
        raise type(exc)(
            f"{exc.message} after the schema change was committed; "
            f"backup {report.backup} holds the database as it was before",
            hint=f"fix the app, or go back: stop the app, then `sidecar restore {report.backup}`",
        ) from exc


def compress(settings: Settings, report: DeployReport) -> None:
    """Compress the deploy's backup (SIDECAR_COMPRESS=zstd), now that nothing waits for
    it. A failure leaves the plain backup, complete and verified: a warning."""
    if settings.compress == "none" or not report.backup:
        return
    try:
        info = store.find_backup(settings.backup_dir, report.backup)
        report.backup = compress_backup(info, group=settings.backup_group).id
    except Exception as exc:  # past COMMIT: a warning, whatever went wrong
        known = exc if isinstance(exc, SidecarError) else None
        error = known.message if known else f"{type(exc).__name__}: {exc}"
        hint = getattr(exc, "hint", None) or "the plain backup is complete and verified"
        log.warning("backup.compress_failed", id=report.backup, error=error, hint=hint,
                    exc_info=known is None)  # fmt: skip
        report.warnings.append(f"the deploy's backup {report.backup} stays uncompressed: {error}")


def offsite(settings: Settings, report: DeployReport) -> None:
    """Upload the deploy's backup offsite, after the commit and the restart (never while
    the app's writes wait). A failure is a warning: the change stays, `health` shows it, and
    ``offsite.failed`` is announced (the deploy exits 0: without it nobody would hear)."""
    if settings.offsite is None or not report.backup:
        return
    from sidecar.commands import offsite  # noqa: PLC0415 - only offsite pays for it

    try:
        try:
            info = store.find_backup(settings.backup_dir, report.backup)
        except SidecarError as exc:
            offsite.upload_failed(exc, report.backup)  # upload_backup announces its own
            raise
        report.offsite = offsite.upload_backup(settings, info)
    except SidecarError as exc:
        log.warning("offsite.upload_failed", id=report.backup, error=exc.message, hint=exc.hint)
        report.offsite = {"error": exc.message, "hint": exc.hint}
        report.warnings.append(exc.message)


def prune(settings: Settings, report: DeployReport) -> None:
    """Apply the retention policy, never deleting the backup this deploy just took."""
    if report.backup:
        outcome = retention.prune_by_policy(
            settings.backup_dir, settings.retention_policy(), database=settings.database,
            environment=settings.environment, dry_run=False, protect=[report.backup],
        )  # fmt: skip
        report.pruned = [b.id for b in outcome.deleted]


def record(settings: Settings, report: DeployReport) -> None:
    """One line in the backups folder's history file."""
    if settings.backup_dir.is_dir():
        store.append_history(
            settings.backup_dir,
            {
                "command": "deploy",
                "changed": report.changed,
                "backup": report.backup,
                "plan": report.plan,
                "restarted": report.restarted,
            },
            group=settings.backup_group,
        )
