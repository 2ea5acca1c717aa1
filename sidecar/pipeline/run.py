"""The deploy, a row of named steps: preflight, lease, quiesce, backup and apply, commit,
restart, compress, offsite, prune, record. See docs/design.md, "The deploy pipeline".

Ordering carries the safety: nothing writes before the preflight has passed; the backup is
taken under the write lock the change is then made under; any failure before COMMIT rolls
back; an app the pipeline stopped is started again whatever happens.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar import appstop, database
from sidecar.backup import store
from sidecar.backup.create import create_backup, prepare_folder
from sidecar.backup.store import BackupInfo
from sidecar.containers.apps import AppRef, Apps
from sidecar.errors import RefusedError, SidecarError, UnavailableError
from sidecar.lease import hold_lease
from sidecar.logs import get_logger
from sidecar.migrate import apply, fresh, growth, prisma
from sidecar.migrate.apply import Guard
from sidecar.migrate.preview import Preview, make_preview, refuse
from sidecar.pipeline import after
from sidecar.pipeline.preflight import (
    desired_schema,
    find_app,
    health_guards,
    settings_preview,
    volume_warnings,
)
from sidecar.pipeline.report import DeployReport
from sidecar.quiesce import wait_quiet
from sidecar.schema.catalogue import Catalogue
from sidecar.schema.operations import Plan, RebuildTable
from sidecar.settings import Settings
from sidecar.signals import Aborted, Stop

log = get_logger(__name__)


def run_deploy(
    settings: Settings,
    *,
    apps: Apps | None,
    dry_run: bool = False,
    stop: Stop | None = None,
) -> DeployReport:
    """Run the whole pipeline once. ``apps`` is None when no Docker API is reachable."""
    deploy = _Deploy.preflight(settings, apps, dry_run=dry_run, stop=stop)
    if dry_run:
        return deploy.finish()
    deploy.stop_requested("lease")
    with deploy.lease():
        deploy.change()
    report = deploy.report
    after.find_vanished_rows(settings, report)
    after.restart(settings, apps, deploy.app, report)  # outside the lease and the write lock
    after.compress(settings, report)
    after.offsite(settings, report)
    after.prune(settings, report)
    deploy.finish()
    after.record(settings, report)
    return report


@dataclass
class _Deploy:
    """One run of the pipeline: what the preflight found, and the report the steps fill."""

    settings: Settings
    apps: Apps | None
    app: AppRef | None
    stop: Stop | None
    db: Path
    desired: Catalogue
    guards: list[Guard]
    preview: Preview
    report: DeployReport
    started: float

    @classmethod
    def preflight(
        cls, settings: Settings, apps: Apps | None, *, dry_run: bool, stop: Stop | None
    ) -> _Deploy:
        """Read-only: any refusal here changes nothing."""
        started = time.monotonic()
        db = settings.require_database()
        report = DeployReport(database=str(db), dry_run=dry_run)
        app = find_app(settings, apps, report)
        desired = desired_schema(settings, apps, app)
        guards = health_guards(settings)
        report.warnings += volume_warnings(db)
        preview = settings_preview(settings, db, desired, for_deploy=True)
        if preview.fresh:
            log.info("deploy.fresh", database=str(db), hint="no database yet: it will be created")
        deploy = cls(settings, apps, app, stop, db, desired, guards, preview, report, started)
        if not preview.deferred:
            deploy.judge(preview)
        return deploy

    def judge(self, preview: Preview) -> None:
        """Refuse what a deploy must not do (:func:`~sidecar.migrate.preview.refuse`); keep
        the plan for the report."""
        for warning in refuse(preview.plan, strict=self.settings.strict):
            if warning not in self.report.warnings:
                self.report.warnings.append(warning)
        self.report.preview = preview

    def stop_requested(self, step: str) -> None:
        """Stop before ``step`` when SIGTERM/SIGINT asked to (nothing was changed yet)."""
        if self.stop is not None and self.stop.is_set():
            log.warning("deploy.aborted", before_step=step)
            raise Aborted(step)

    @contextmanager
    def lease(self) -> Iterator[None]:
        """One sidecar per data volume (a second one waits here). An app that an interrupted
        run stopped is started again first, whatever follows."""
        settings, report = self.settings, self.report
        with hold_lease(
            self.db, wait=settings.lease_wait, command="deploy", stop=self.stop
        ) as held:
            report.lease_wait_s = round(held.waited_s, 3)
            report.started_again, report.left_stopped = appstop.start_recorded(
                self.db, self.apps, self.app
            )
            yield

    def change(self) -> None:
        """Create a missing database, or change the live one under its write lock."""
        if not self.db.exists():
            self.report.fresh = True
            fresh.create_fresh(self.db, self.desired)
            self.report.changed = True
            log.info("deploy.created", database=str(self.db))
        elif self.preview.nothing_to_do:
            # No reason to wait for a lull, lock the app out or back up.
            log.info("deploy.nothing_to_do")
        else:
            self.stop_requested("quiesce")
            self.quiesce()
            self.stop_requested("lock")
            self.locked_change()

    def quiesce(self) -> None:
        """Wait for a lull in the app's writes before taking the write lock."""
        if self.app is not None and not self.app.running:
            # Compose stopped the app for the release: no lull to wait for (the write lock
            # still keeps out anyone else), and every second here is downtime.
            log.info("quiesce.skipped", reason="the app is not running", container=self.app.name)
            return
        settings = self.settings
        quiet = wait_quiet(
            self.db, period=settings.quiet_period, timeout=settings.wait_timeout, stop=self.stop
        )
        self.report.quiet = quiet.quiet
        self.report.quiesce_wait_s = round(quiet.waited_s, 3)

    def locked_change(self) -> None:
        """Plan again, back up and apply under the write lock, then commit. Any failure
        before COMMIT rolls back (the lock's context exits with ROLLBACK)."""
        with ExitStack() as stack:
            # The backups folder first: waiting for another sidecar's backup must never
            # happen while the app is locked out of its database.
            prepare_folder(self.settings.backup_dir, self.settings.backup_group)
            stack.enter_context(store.folder_lock(self.settings.backup_dir))
            applying: list[bool] = []
            stack.push(_say_rolled_back(applying, self.report))  # after the lock's ROLLBACK
            if self.preview.copies_rename:
                self.stop_for_copy(stack)
            conn = self.write_lock(stack)
            locked_at = time.monotonic()
            try:
                plan = self.plan_under_lock(conn)
                if not plan.operations:
                    log.info("deploy.nothing_to_do")
                    return
                self.stop_requested("backup")
                # A table rebuild grows the file by the table's size: it must fit first.
                growth.require_room(self.db, growth.of_plan(conn, plan))
                applying.append(True)
                self.report.backup = self.backup_and_apply(conn, plan)
                self.commit(conn, plan)
            finally:
                self.report.write_blocked_s = round(time.monotonic() - locked_at, 3)

    def write_lock(self, stack: ExitStack) -> sqlite3.Connection:
        """The write lock, held until ``stack`` closes. An app that can be stopped is, as
        soon as its lock is seen held by nobody writing (exclusive locking mode)."""
        apps, app, settings = self.apps, self.app, self.settings
        stoppable = apps is not None and app is not None and app.running
        idle = max(2 * settings.quiet_period, 3.0) if stoppable else None
        started = time.monotonic()
        try:
            conn = stack.enter_context(database.write_lock(
                self.db, settings.wait_timeout, stop=self.stop, idle_holder=idle
            ))  # fmt: skip
        except UnavailableError:
            if apps is None or app is None or not app.running or self.report.app_stopped:
                raise
            why = "the app holds the database lock (exclusive locking mode?)"
            self.stop_app(stack, apps, app, why)
            conn = stack.enter_context(
                database.write_lock(self.db, settings.wait_timeout, stop=self.stop)
            )
        self.report.lock_wait_s = round(time.monotonic() - started, 3)
        return conn

    def plan_under_lock(self, conn: sqlite3.Connection) -> Plan:
        """The preview again, on the state the change is made to. Its rows are screened
        by :func:`sidecar.migrate.apply.apply_plan`, beside the backup."""
        preview = make_preview(conn, self.desired, renames=self.settings.renames,
                               not_renamed=self.settings.not_renamed,
                               screen_rows=False)  # fmt: skip
        if self.apps is not None and not self.report.app_stopped and preview.copies_rename:
            # The preview did not see the copy (the app held the database, or the schema
            # changed since), so the app was not stopped for it: change nothing.
            raise RefusedError(
                "a rename to copy appeared only under the write lock, with the app running",
                hint="deploy again: the copy needs the app stopped before the change",
            )
        self.judge(preview)
        return preview.plan

    def backup_and_apply(self, conn: sqlite3.Connection, plan: Plan) -> str:
        """Take the verified backup (from a second connection and a child process) and apply
        ``plan`` on ``conn``, at once in WAL mode; the backup's ID. Nothing is committed
        here. See docs/design.md, "The backup beside the change"."""
        settings = self.settings

        def backup() -> BackupInfo:
            # Plain: compressing it (SIDECAR_COMPRESS) waits until the app runs again.
            return create_backup(
                self.db, settings.backup_dir, environment=settings.environment,
                reason="deploy", verify=settings.verify, compress="none",
                group=settings.backup_group, min_free_margin=settings.min_free_margin,
                folder_locked=True, io=settings.backup_io,
            )  # fmt: skip

        def change(info: Callable[[], BackupInfo]) -> None:
            self.stop_requested("migrate")
            apply.apply_plan(
                conn, prisma.schema_changes(plan), self.desired, guards=self.guards,
                # Only the keys the check after the change reads: the backup was written
                # past the page cache, and this runs while the app's writes wait.
                fk_before=lambda tables: database.foreign_key_problems_in(
                    info().path, tables
                ),
                # Every level but checksum runs quick_check on the database as the change
                # found it, and a backup that fails it fails the deploy first.
                quick_checked_before=settings.verify != "checksum",
            )  # fmt: skip
            prisma.record(conn, self.desired)  # Prisma's own rows, in the same transaction

        if database.journal_mode(conn) != "wal":
            done = backup()
            change(lambda: done)
            return done.id
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploy-backup") as pool:
            pending = pool.submit(backup)
            try:
                change(pending.result)
            except BaseException:
                pending.result()  # a failed backup is the first thing to report
                raise
            return pending.result().id

    def commit(self, conn: sqlite3.Connection, plan: Plan) -> None:
        """COMMIT; with SIDECAR_COMPACT, then give a rebuild's old pages back to the volume,
        still under the lock (the app waits; in the release layout it is not running)."""
        database.commit(conn, self.settings.wait_timeout)
        self.report.changed = True
        if self.settings.compact and any(isinstance(op, RebuildTable) for op in plan.operations):
            self.report.compaction = growth.compact(conn, self.db)

    def stop_for_copy(self, stack: ExitStack) -> None:
        """A rename's copy needs the app stopped (the old app would write the old column
        after the copy): stop a running app until ``stack`` closes; refuse when one may be
        running that the sidecar cannot stop. See docs/design.md, "Renames copied"."""
        apps, app = self.apps, self.app
        if apps is not None and app is not None and not app.running:
            log.info("deploy.copy_with_app_stopped", container=app.name)  # the release layout
        elif apps is not None and app is not None:
            why = "a rename is copied: the old app must not write during the change"
            self.stop_app(stack, apps, app, why)
        elif apps is not None:
            raise RefusedError(
                "a rename is copied (SIDECAR_RENAMES=copy) but no app is configured to stop for "
                "the change: writes of a running app to the old column after the copy would be "
                "lost",
                hint="set SIDECAR_APP (or SIDECAR_APP_LABEL) so the deploy stops the app for "
                "the copy, or stop the app and run `sidecar migrate`",
            )
        else:
            log.info("deploy.copy_without_docker",
                     hint="no Docker API: the app must not be running (init container, or "
                     "`sidecar migrate` on a stopped app)")  # fmt: skip

    def stop_app(self, stack: ExitStack, apps: Apps, app: AppRef, reason: str) -> None:
        """Stop the app until ``stack`` closes (started again whatever happens; recorded on
        the data volume, so a run killed before that is undone by the next one)."""
        log.info("deploy.stopping_app", container=app.name, reason=reason)
        stack.enter_context(appstop.stopped(self.db, apps, app, timeout=self.settings.stop_timeout))
        self.report.app_stopped = True

    def finish(self) -> DeployReport:
        self.report.seconds = time.monotonic() - self.started
        return self.report


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
