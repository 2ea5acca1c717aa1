"""The deploy pipeline: preflight, lease, quiesce, backup, migrate + health in one
transaction, commit, restart the app, prune. See DESIGN.md "The deploy pipeline".

Ordering carries the safety: nothing writes before the preflight has passed; the backup is
taken under the write lock that the change is then made under, so the backup is exactly the
state the change starts from; any failure before COMMIT rolls back (the lock's context exits
with ROLLBACK); the app, when it had to be stopped, is started again whatever happens.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar import (
    alerts,
    appstop,
    checks,
    database,
    growth,
    health,
    history,
    migrate,
    prisma,
)
from sidecar.backup import retention, store
from sidecar.backup.create import compress_backup, create_backup, prepare_folder
from sidecar.backup.retention import Retention
from sidecar.backup.store import BackupInfo
from sidecar.containers.apps import AppRef, Apps, left_for_compose
from sidecar.errors import HealthError, RefusedError, SidecarError, UnavailableError
from sidecar.lease import hold_lease
from sidecar.logs import get_logger
from sidecar.quiesce import wait_quiet
from sidecar.schema.catalogue import Catalogue, read_catalogue
from sidecar.schema.diff import make_plan
from sidecar.schema.operations import Plan, RebuildTable
from sidecar.schema.source import load_desired, parse
from sidecar.settings import Settings
from sidecar.signals import Aborted, Stop

log = get_logger(__name__)

PREVIEW_WAIT_S = 2.0  # the read-only preview's busy timeout (the real plan is made under lock)


NOT_EXECUTED_HINT = (
    "sidecar never runs a history's data statements, and the migration is recorded as applied "
    "in _prisma_migrations, so Prisma will not run them either: run them yourself if the new "
    "app needs that data"
)


@dataclass
class DeployReport:
    """What a deploy did. Its ``to_dict`` is the ``deploy --json`` document (fields only grow)."""

    database: str
    dry_run: bool = False
    fresh: bool = False
    changed: bool = False
    plan: dict[str, Any] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    # The drift items that are a history's data statements (seeds, backfills): not executed,
    # and never run later either (the migration is recorded as applied for Prisma).
    not_executed: list[str] = field(default_factory=list)
    backup: str | None = None
    quiet: bool | None = None
    # Every wait, truthfully: for the lease, for a lull, for the write lock (from the first
    # attempt to the lock, stopping an app that never lets go included).
    lease_wait_s: float | None = None
    quiesce_wait_s: float | None = None
    lock_wait_s: float | None = None
    # How long the app's writers were blocked by us: from the write lock to COMMIT/ROLLBACK.
    write_blocked_s: float | None = None
    app: str | None = None
    app_stopped: bool = False
    restarted: bool = False
    # Containers an interrupted run had stopped: started again now, or still down (no Docker).
    started_again: list[str] = field(default_factory=list)
    left_stopped: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Most of the data gone since a backup (store.rows_vanished): the summary leads with it.
    rows_vanished: dict[str, Any] | None = None
    # SIDECAR_COMPACT after a rebuild: growth.Compaction.to_dict().
    compaction: dict[str, Any] | None = None
    # The proved offsite upload of the backup (SIDECAR_OFFSITE), or {"error": ...}.
    offsite: dict[str, Any] | None = None
    seconds: float = 0.0


def _check(stop: Stop | None, step: str) -> None:
    if stop is not None and stop.is_set():
        log.warning("deploy.aborted", before_step=step)
        raise Aborted(step)


def run_deploy(
    settings: Settings,
    *,
    apps: Apps | None,
    dry_run: bool = False,
    stop: Stop | None = None,
) -> DeployReport:
    """Run the whole pipeline once. ``apps`` is None when no Docker API is reachable."""
    started = time.monotonic()
    db = settings.require_database()
    report = DeployReport(database=str(db), dry_run=dry_run)

    # 1. Preflight: read-only. Any refusal here changes nothing.
    app = _find_app(settings, apps, report)
    desired = _load_desired(settings, apps, app)
    guards = _health_guards(settings)
    report.warnings += volume_warnings(db)
    preview = _preview(db, desired, settings, report)
    if dry_run:
        report.plan = preview
        report.seconds = time.monotonic() - started
        return report
    _check(stop, "lease")

    # 2. Lease: one sidecar per data volume; a second one waits here.
    with hold_lease(db, wait=settings.lease_wait, command="deploy", stop=stop) as lease:
        report.lease_wait_s = round(lease.waited_s, 3)
        # An app that an interrupted run stopped is started again first, whatever follows.
        report.started_again, report.left_stopped = appstop.start_recorded(db, apps, app)
        if not db.exists():
            report.fresh = True
            migrate.create_fresh(db, desired)
            report.changed = True
            report.plan = preview
            log.info("deploy.created", database=str(db))
        elif "operations" in preview and not preview["operations"]:
            # Nothing to apply: no reason to wait for a lull, lock the app out or back up.
            report.plan = preview
            log.info("deploy.nothing_to_do")
        else:
            _check(stop, "quiesce")
            _locked_change(
                db,
                desired,
                preview=preview,
                guards=guards,
                settings=settings,
                apps=apps,
                app=app,
                report=report,
                stop=stop,
            )
    report.rows_vanished = _rows_vanished(settings, report)
    # 8. Restart, outside the lease and after the lock is released.
    _restart(settings, apps, app, report)
    _compress(settings, report)
    _offsite(settings, report)
    # 9. Prune and history.
    if report.backup:
        policy = Retention(
            settings.keep, settings.keep_daily, settings.keep_weekly, settings.keep_monthly
        )
        outcome = retention.prune_by_policy(
            settings.backup_dir, policy, database=settings.database,
            environment=settings.environment, dry_run=False, protect=[report.backup],
        )  # fmt: skip
        report.pruned = [b.id for b in outcome.deleted]
    report.seconds = time.monotonic() - started
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
    return report


def _preview(
    db: Path, desired: Catalogue, settings: Settings, report: DeployReport
) -> dict[str, Any]:
    """Plan against the live database (read-only) and refuse what must be refused now."""
    if not db.exists():
        migrate.refuse_orphan_sides(db)
        store.refuse_fresh_over_backups(db, settings.backup_dir, allow_fresh=settings.allow_fresh)
        log.info("deploy.fresh", database=str(db), hint="no database yet: it will be created")
        creation = make_plan(Catalogue(), desired, row_counts={})
        creation = history.review(None, creation, desired)
        _refuse(creation, settings, report)  # a history's data statements, under --strict
        return {"fresh": True, **creation.to_dict()}
    database.check_database_file(db)
    # A short wait: a database still locked now is planned again under the lock, later.
    conn = database.connect(db, busy_timeout=min(settings.wait_timeout, PREVIEW_WAIT_S))
    try:
        database.begin_snapshot(conn)
        problems = checks.quick_check(conn)
        if problems:
            raise RefusedError(
                f"database {db} fails quick_check: {problems[0]}",
                hint="restore a verified backup (sidecar restore latest) before deploying",
            )
        # Duplicates under a new unique index are refused now, before the lock and the backup.
        copied = history.copies(conn, desired, settings.renames)
        plan = history.review(conn, migrate.plan_for(conn, desired, copied), desired, copied)
    except sqlite3.DatabaseError as exc:
        if checks.is_busy(exc):
            # An app in exclusive locking mode: the plan is made again under the lock.
            log.info("deploy.preview_locked", hint="the app holds the database; planning later")
            return {}
        raise database.damaged(db, exc) from None
    finally:
        conn.close()
    _refuse(plan, settings, report)
    return plan.to_dict()


def _refuse(plan: Plan, settings: Settings, report: DeployReport) -> None:
    report.drift = [str(item) for item in plan.drift]
    data = [item for item in plan.drift if item.kind == "not_executed"]
    destructive = [str(item) for item in plan.drift if item.kind != "not_executed"]
    report.not_executed = [str(item) for item in data]
    if destructive:
        log.warning("deploy.drift", items=destructive, strict=settings.strict,
                    hint="destructive drift is reported, never executed")  # fmt: skip
    if data:
        log.warning("deploy.data_not_executed", items=report.not_executed,
                    migrations=sorted({item.object.removeprefix("migration ") for item in data}),
                    strict=settings.strict, hint=NOT_EXECUTED_HINT)  # fmt: skip
    if plan.refused:
        first = plan.refused[0]
        raise RefusedError(
            f"refused: {first}"
            + (f" (and {len(plan.refused) - 1} more)" if len(plan.refused) > 1 else ""),
            hint=getattr(first, "hint", None) or "see `sidecar plan` for details",
        )
    rejects = [str(item) for item in plan.rejects]
    if rejects:
        log.warning("deploy.rejecting_constraints", items=rejects, strict=settings.strict,
                    hint="kept constraints reject rows the desired schema accepts; see "
                    "`sidecar plan`")  # fmt: skip
        warning = f"{len(rejects)} kept constraint(s) reject rows the new app may write"
        if warning not in report.warnings:
            report.warnings.append(warning)
        if settings.strict:
            raise RefusedError(
                f"under --strict: a kept constraint rejects rows the new app may write: "
                f"{rejects[0]}" + (f" (and {len(rejects) - 1} more)" if len(rejects) > 1 else ""),
                hint="see `sidecar plan`; drop the constraint yourself if the app no longer "
                "needs it, or deploy without --strict",
            )
    if destructive and settings.strict:
        raise RefusedError(
            f"destructive drift under --strict: {destructive[0]}"
            + (f" (and {len(report.drift) - 1} more)" if len(report.drift) > 1 else ""),
            hint="see `sidecar plan`; drift is never executed, drop --strict to deploy the rest",
        )
    if data and settings.strict:
        raise RefusedError(
            f"not executed data statements under --strict: {report.not_executed[0]}"
            + (f" (and {len(data) - 1} more)" if len(data) > 1 else ""),
            hint=f"{NOT_EXECUTED_HINT}; drop --strict to deploy the schema without them",
        )


def _locked_change(
    db: Path,
    desired: Catalogue,
    *,
    preview: dict[str, Any],
    guards: list[Callable[[sqlite3.Connection], None]],
    settings: Settings,
    apps: Apps | None,
    app: AppRef | None,
    report: DeployReport,
    stop: Stop | None,
) -> None:
    # 3. Quiesce: wait for a lull, then the write lock; stop the app if it never lets go.
    if app is not None and not app.running:
        # Compose stopped the app for the release: no lull to wait for (the write lock still
        # keeps out anyone else), and every second here is downtime.
        log.info("quiesce.skipped", reason="the app is not running", container=app.name)
    else:
        quiet = wait_quiet(
            db, period=settings.quiet_period, timeout=settings.wait_timeout, stop=stop
        )
        report.quiet = quiet.quiet
        report.quiesce_wait_s = round(quiet.waited_s, 3)
    # An app that can be stopped is, as soon as its lock is seen held by nobody writing (an
    # app that is not running is never stopped, nor started: left for Compose).
    stoppable = apps is not None and app is not None and app.running
    idle = max(2 * settings.quiet_period, 3.0) if stoppable else None
    _check(stop, "lock")
    with ExitStack() as stack:
        # The backups folder first: waiting for another sidecar's backup must never happen
        # while the app is locked out of its database.
        prepare_folder(settings.backup_dir, settings.backup_group)
        stack.enter_context(store.folder_lock(settings.backup_dir))
        applying: list[bool] = []
        stack.push(_say_rolled_back(applying, report))  # runs after the lock's ROLLBACK
        if copies_rename(preview):
            _stop_for_copy(db, settings, apps=apps, app=app, report=report, stack=stack)
        lock_started = time.monotonic()
        try:
            conn = stack.enter_context(
                database.write_lock(db, settings.wait_timeout, stop=stop, idle_holder=idle)
            )
        except UnavailableError:
            if apps is None or app is None or not app.running or report.app_stopped:
                raise
            why = "the app holds the database lock (exclusive locking mode?)"
            _stop_app(db, stack, apps=apps, app=app, settings=settings, report=report, reason=why)
            conn = stack.enter_context(database.write_lock(db, settings.wait_timeout, stop=stop))
        report.lock_wait_s = round(time.monotonic() - lock_started, 3)
        locked_at = time.monotonic()
        try:
            # Plan again under the lock: this is the state the change is made to.
            copied = history.copies(conn, desired, settings.renames)
            plan = make_plan(
                read_catalogue(conn),
                desired,
                row_counts=database.row_counts(conn),
                copies=copied,
            )
            plan = history.review(conn, plan, desired, copied)
            if apps is not None and not report.app_stopped and copies_rename(plan.to_dict()):
                # The preview did not see the copy (the app held the database, or the schema
                # changed since), so the app was not stopped for it: change nothing.
                raise RefusedError(
                    "a rename to copy appeared only under the write lock, with the app running",
                    hint="deploy again: the copy needs the app stopped before the change",
                )
            _refuse(plan, settings, report)
            report.plan = plan.to_dict()
            if not plan.operations:
                log.info("deploy.nothing_to_do")
                return
            _check(stop, "backup")
            # A table rebuild grows the file by the table's size: it must fit first.
            growth.require_room(db, growth.of_plan(conn, plan))
            # 4-6. A verified backup, and the change applied and verified inside the
            # transaction; any failure rolls back. COMMIT only ever follows both.
            applying.append(True)
            report.backup = _backup_and_apply(
                db, conn, plan, desired, guards=guards, settings=settings, stop=stop
            )
            # 7. Commit.
            database.commit(conn, settings.wait_timeout)
            report.changed = True
            if settings.compact and any(isinstance(op, RebuildTable) for op in plan.operations):
                # Opt-in: the rebuilt tables' old pages go back to the volume, still under
                # the lock (the app waits for it; in the release layout it is not running).
                report.compaction = growth.compact(conn, db).to_dict()
        finally:
            report.write_blocked_s = round(time.monotonic() - locked_at, 3)


def _say_rolled_back(applying: list[bool], report: DeployReport) -> Callable[..., bool]:
    """An exit callback for the locked change: once a failure has rolled the change back,
    say so, in an event and in the error line (a full backups volume used to log
    ``migrate.applied``, ``migrate.verified`` and then only "not enough free space")."""

    def on_exit(exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not applying or report.changed:
            return False
        reason = exc.message if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}"
        log.warning("migrate.rolled_back", reason=reason,
                    hint="nothing was changed: the database is as it was")  # fmt: skip
        if isinstance(exc, SidecarError) and "rolled back" not in exc.message:
            raise type(exc)(
                f"{exc.message}; the schema change was rolled back, nothing was changed",
                hint=exc.hint,
            ) from exc
        return False

    return on_exit


def copies_rename(plan: dict[str, Any]) -> bool:
    """The (previewed) plan copies a renamed column (``SIDECAR_RENAMES=copy``)."""
    return any(
        op.get("op") == "copy_column" or op.get("copies") for op in plan.get("operations", [])
    )


def _stop_for_copy(
    db: Path,
    settings: Settings,
    *,
    apps: Apps | None,
    app: AppRef | None,
    report: DeployReport,
    stack: ExitStack,
) -> None:
    """A rename's copy needs the app stopped: until it restarts, the old app writes the OLD
    column, and what it writes after the copy would never reach the new one. A running app is
    stopped before the change and started after (``stack`` undoes it, whatever happens).
    Without Docker (a Kubernetes init container, ``migrate``) the app is not running by
    construction; with Docker but no app configured, the sidecar cannot stop it: refused."""
    if apps is not None and app is not None and not app.running:
        log.info("deploy.copy_with_app_stopped", container=app.name)  # the release layout
    elif apps is not None and app is not None:
        why = "a rename is copied: the old app must not write during the change"
        _stop_app(db, stack, apps=apps, app=app, settings=settings, report=report, reason=why)
    elif apps is not None:
        raise RefusedError(
            "a rename is copied (SIDECAR_RENAMES=copy) but no app is configured to stop for "
            "the change: writes of a running app to the old column after the copy would be lost",
            hint="set SIDECAR_APP (or SIDECAR_APP_LABEL) so the deploy stops the app for the "
            "copy, or stop the app and run `sidecar migrate`",
        )
    else:
        log.info("deploy.copy_without_docker",
                 hint="no Docker API: the app must not be running (init container, or "
                 "`sidecar migrate` on a stopped app)")  # fmt: skip


def _stop_app(
    db: Path,
    stack: ExitStack,
    *,
    apps: Apps,
    app: AppRef,
    settings: Settings,
    report: DeployReport,
    reason: str,
) -> None:
    """Stop the app until ``stack`` closes (it is started again whatever happens). Recorded on
    the data volume: a run killed before starting it again is undone by the next one
    (appstop.start_recorded)."""
    log.info("deploy.stopping_app", container=app.name, reason=reason)
    stack.enter_context(appstop.stopped(db, apps, app, timeout=settings.stop_timeout))
    report.app_stopped = True


def _backup_and_apply(
    db: Path,
    conn: sqlite3.Connection,
    plan: Plan,
    desired: Catalogue,
    *,
    guards: list[Callable[[sqlite3.Connection], None]],
    settings: Settings,
    stop: Stop | None,
) -> str:
    """Take the verified backup (from a second connection and a child process) and apply the
    plan on ``conn``; the backup's ID. Nothing is committed here.

    In WAL mode both run at once: the change stays inside this connection's transaction
    (uncommitted frames are invisible to other connections, and only committed frames ever
    reach the database file), so the backup copies the database exactly as it was before the
    change while the change is made and checked; the app waits for the longer of the two,
    not their sum. In rollback-journal mode a large change may spill into the database file
    itself, so the backup comes first. Either way, a failed backup fails the deploy and the
    caller rolls the change back. The foreign-key violations from before the change are read
    from the backup, and only when the check after the change finds some.
    """

    def backup() -> BackupInfo:
        # Plain: compressing it (SIDECAR_COMPRESS) waits until the app runs again (run_deploy).
        return create_backup(
            db, settings.backup_dir, environment=settings.environment, reason="deploy",
            verify=settings.verify, compress="none", group=settings.backup_group,
            min_free_margin=settings.min_free_margin, folder_locked=True,
        )  # fmt: skip

    def apply(info: Callable[[], BackupInfo]) -> None:
        _check(stop, "migrate")
        migrate.apply_plan(
            conn, prisma.schema_changes(plan), desired, extra_checks=guards,
            fk_before=lambda: database.foreign_key_problems_in(info().path),
            # Every level but checksum runs quick_check (or integrity_check) on the database
            # as the change found it, and a backup that fails it fails the deploy first.
            checked_before=settings.verify != "checksum",
        )  # fmt: skip
        prisma.record(conn, desired)  # Prisma's own rows, in the same transaction

    if database.journal_mode(conn) != "wal":
        done = backup()
        apply(lambda: done)
        return done.id
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploy-backup") as pool:
        pending = pool.submit(backup)
        try:
            apply(pending.result)
        except BaseException:
            pending.result()  # a failed backup is the first thing to report
            raise
        return pending.result().id


def _rows_vanished(settings: Settings, report: DeployReport) -> dict[str, Any] | None:
    """The vanished-data finding of this deploy's backup or, without one, of the newest
    verified backup: a wiped volume whose app re-created its schema passes every check."""
    if not settings.backup_dir.is_dir():
        return None
    try:
        if report.backup:
            info: BackupInfo | None = store.find_backup(settings.backup_dir, report.backup)
        else:
            info = store.latest_verified(settings.backup_dir)
    except SidecarError as exc:  # a finding for the summary: never a failed deploy
        log.warning("deploy.vanished_check_failed", error=exc.message)
        return None
    return info.rows_vanished if info is not None else None


def _compress(settings: Settings, report: DeployReport) -> None:
    """Compress the deploy's backup (SIDECAR_COMPRESS=zstd), now that nothing waits for it.

    A failure leaves the plain backup, complete and verified: a warning, not a failed deploy
    (the change is committed and its backup exists)."""
    if settings.compress == "none" or not report.backup:
        return
    try:
        info = store.find_backup(settings.backup_dir, report.backup)
        report.backup = compress_backup(info, group=settings.backup_group).id
    except Exception as exc:  # past COMMIT: a warning, whatever went wrong
        error = exc.message if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}"
        log.warning("backup.compress_failed", id=report.backup, error=error,
                    hint=getattr(exc, "hint", None) or "the plain backup is complete and verified",
                    exc_info=not isinstance(exc, SidecarError))  # fmt: skip
        report.warnings.append(f"the deploy's backup {report.backup} stays uncompressed: {error}")


def _load_desired(settings: Settings, apps: Apps | None, app: AppRef | None) -> Catalogue:
    """The desired schema: a local path, or a folder in the app's image (``app:/path``)."""
    spec = settings.require_schema()
    source = parse(str(spec))
    if source is not None and apps is None:
        raise UnavailableError(
            f"SIDECAR_SCHEMA {spec} is read from a container, and no Docker API is reachable",
            hint="mount the Docker socket (or a socket proxy), or point SIDECAR_SCHEMA at a "
            "local folder (in Kubernetes: an emptyDir an init container fills)",
        )
    found = app if source is not None and source.container == settings.app else None
    return load_desired(spec, apps, found=found)


def _offsite(settings: Settings, report: DeployReport) -> None:
    """Upload the deploy's backup offsite, after the commit and the restart (never while the
    app's writes wait). A failure is a warning: the change is committed and stays, the local
    backup is complete, `health` shows the failed upload; the deploy still exits 0."""
    if settings.offsite is None or not report.backup:
        return
    from sidecar.commands import offsite  # noqa: PLC0415 - only offsite pays for it

    try:
        info = store.find_backup(settings.backup_dir, report.backup)
        report.offsite = offsite.upload_backup(settings, info)
    except SidecarError as exc:
        log.warning("offsite.upload_failed", id=report.backup, error=exc.message, hint=exc.hint)
        report.offsite = {"error": exc.message, "hint": exc.hint}
        report.warnings.append(exc.message)


def _health_guards(settings: Settings) -> list[Callable[[sqlite3.Connection], None]]:
    if settings.health_queries is None:
        return []
    queries = health.load_queries(settings.health_queries)
    return [health.queries_guard(queries)] if queries else []


def _find_app(settings: Settings, apps: Apps | None, report: DeployReport) -> AppRef | None:
    if not (settings.app or settings.app_label):
        log.info("restart.skipped", reason="no app configured (SIDECAR_APP / SIDECAR_APP_LABEL)")
        return None
    if apps is None:
        log.info("restart.skipped", reason="no Docker API reachable")
        return None
    app = apps.find(settings.app, label=settings.app_label)
    report.app = app.name
    return app


def _restart(
    settings: Settings, apps: Apps | None, app: AppRef | None, report: DeployReport
) -> None:
    if apps is None or app is None:
        return
    # A container created by Compose and not started yet (the release layout), or stopped:
    # starting it is Compose's job (or the user's), never the sidecar's.
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
        # Past COMMIT nothing rolls back by itself: say so, and name the way back.
        raise type(exc)(
            f"{exc.message} after the schema change was committed; "
            f"backup {report.backup} holds the database as it was before",
            hint=f"fix the app, or go back: stop the app, then `sidecar restore {report.backup}`",
        ) from exc


def volume_warnings(db: Path) -> list[str]:
    """Warn when, inside a container, the database is not on a mounted volume: it would be
    baked into the container's own layer and lost whenever the container is replaced."""
    if not in_container():
        return []
    folder = db.parent if db.parent.exists() else Path("/")
    if mount_point(folder) != "/":
        return []
    log.warning(
        "database.not_on_volume",
        database=str(db),
        hint="mount a volume (or a PersistentVolumeClaim) at the database's folder",
    )
    return [f"{db} is not on a mounted volume: its data is lost when the container is replaced"]


def in_container() -> bool:
    return (
        Path("/.dockerenv").exists()
        or Path("/run/.containerenv").exists()
        or "KUBERNETES_SERVICE_HOST" in os.environ
    )


def mount_point(path: Path, mountinfo: str | None = None) -> str:
    """The mount point that holds ``path``, from /proc/self/mountinfo (longest prefix)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return "?"
    target = str(path.resolve())
    best = "/"
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best = point
    return best
