"""The preview: the plan for the live database and what it refuses, before anything is written.

One function makes it (:func:`make_preview`), for ``plan``, ``migrate`` and ``deploy``, in the
preflight and again under the write lock; one function holds the refusal rules
(:func:`refusal`). See docs/design.md, "The preview".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sidecar import database, sqlite
from sidecar.backup import store
from sidecar.errors import RefusedError, UnavailableError, and_more
from sidecar.logs import get_logger
from sidecar.migrate import conflicts, growth, history
from sidecar.migrate.fresh import refuse_orphan_sides
from sidecar.migrate.growth import Growth
from sidecar.schema.catalogue import Catalogue, read_catalogue
from sidecar.schema.diff import make_plan
from sidecar.schema.operations import CopyColumn, Plan, RebuildTable

log = get_logger(__name__)

DEPLOY_WAIT_S = 2.0  # the deploy's look is short: the plan that counts is made under the lock
PLAN_WAIT_S = 1.0  # `plan`'s busy timeout (a lock is waited for with progress events instead)
NOT_EXECUTED_HINT = (
    "sidecar never runs a history's data statements, and the migration is recorded as applied "
    "in _prisma_migrations, so Prisma will not run them either: run them yourself if the new "
    "app needs that data"
)


@dataclass(frozen=True)
class Preview:
    """A plan with its refusals, drift and rejects, and how it was made."""

    plan: Plan = field(default_factory=Plan)
    fresh: bool = False  # no database yet: the plan creates it
    deferred: bool = False  # the app held the database: planned under the write lock only
    growth: Growth | None = None  # what the plan's rebuilds add to the file (``plan`` only)

    @property
    def drift(self) -> list[str]:
        return [str(item) for item in self.plan.drift]

    @property
    def not_executed(self) -> list[str]:
        """The drift items that are a history's data statements (seeds, backfills)."""
        return [str(item) for item in self.plan.drift if item.kind == "not_executed"]

    @property
    def nothing_to_do(self) -> bool:
        return not self.deferred and not self.plan.operations

    @property
    def copies_rename(self) -> bool:
        """The plan copies a renamed column (``SIDECAR_RENAMES=copy``)."""
        return any(
            isinstance(op, CopyColumn) or (isinstance(op, RebuildTable) and bool(op.copies))
            for op in self.plan.operations
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``plan`` of ``deploy --json`` and of the history record ({} when deferred)."""
        if self.deferred:
            return {}
        return {"fresh": True, **self.plan.to_dict()} if self.fresh else self.plan.to_dict()


def make_preview(
    conn: sqlite3.Connection | None,
    desired: Catalogue,
    *,
    renames: str = "refuse",
    not_renamed: Sequence[str] = (),
    screen_rows: bool = True,
    measure_growth: bool = False,
) -> Preview:
    """The preview of ``desired`` against the database behind ``conn`` (None: none yet).

    Read-only: the diff, the live rows screened for what they rule out (``screen_rows``;
    under the write lock :func:`sidecar.migrate.apply.apply_plan` screens them beside the backup),
    and what the desired schema's history says (:func:`sidecar.migrate.history.review`;
    ``not_renamed``: ``SIDECAR_NOT_RENAMED``)."""
    if conn is None:
        created = make_plan(Catalogue(), desired, row_counts={})
        return Preview(history.review(None, created, desired), fresh=True)
    copied = history.copies(conn, desired, renames)
    live = read_catalogue(conn)
    plan = make_plan(live, desired, row_counts=database.row_counts(conn), copies=copied)
    if screen_rows:
        found, unchecked = conflicts.row_conflicts(conn, plan, desired)
        plan = plan.refusing(found, unchecked)
    # Rows the app could have written since the preflight: counted under the lock too.
    nulls = conflicts.required_nulls(conn, live, desired)
    plan = replace(plan, refused=(*plan.refused, *nulls)) if nulls else plan
    plan = history.review(conn, plan, desired, copied, not_renamed)
    return Preview(plan, growth=growth.of_plan(conn, plan) if measure_growth else None)


def read_preview(
    db: Path,
    desired: Catalogue,
    *,
    for_deploy: bool,
    wait_timeout: float,
    renames: str,
    not_renamed: Sequence[str] = (),
    backup_dir: Path,
    allow_fresh: bool,
) -> Preview:
    """The preview in one read transaction of ``db`` (a missing one is planned as created).

    For a deploy the look is short, ``quick_check`` must pass, and a database the app holds
    is planned under the lock only (``deferred``); ``plan`` reads with a read-only connection,
    waits for a lock, and measures the growth of rebuilds."""
    if not db.exists():
        refuse_orphan_sides(db)
        store.refuse_fresh_over_backups(db, backup_dir, allow_fresh=allow_fresh)
        return make_preview(None, desired)
    database.check_database_file(db)
    wait = DEPLOY_WAIT_S if for_deploy else PLAN_WAIT_S
    conn = database.connect(db, readonly=not for_deploy, busy_timeout=min(wait_timeout, wait))
    try:
        database.begin_snapshot(conn, wait=0.0 if for_deploy else wait_timeout)
        if for_deploy:
            _require_quick_check(conn, db)
        return make_preview(conn, desired, renames=renames, not_renamed=not_renamed,
                            measure_growth=not for_deploy)  # fmt: skip
    except sqlite3.DatabaseError as exc:
        if not sqlite.is_busy(exc):
            raise database.damaged(db, exc) from None
        if not for_deploy:
            raise UnavailableError(
                f"cannot read {db}: {exc}", hint="is the app holding an exclusive lock?"
            ) from None
        log.info("deploy.preview_locked", hint="the app holds the database; planning later")
        return Preview(deferred=True)
    finally:
        conn.close()


def _require_quick_check(conn: sqlite3.Connection, db: Path) -> None:
    problems = sqlite.quick_check(conn)
    if problems:
        raise RefusedError(
            f"database {db} fails quick_check: {problems[0]}",
            hint="restore a verified backup (sidecar restore latest) before deploying",
        )


def refusal(plan: Plan, *, strict: bool) -> RefusedError | None:
    """The error a deploy of ``plan`` stops with; None when it goes through. The rules:
    a refusal always, and under ``--strict`` a rejecting constraint or any drift."""
    if plan.refused:
        first = plan.refused[0]
        return RefusedError(
            f"refused: {first}{and_more(plan.refused)}",
            hint=first.hint or "see `sidecar plan` for details",
        )
    if not strict:
        return None
    rejects = [str(item) for item in plan.rejects]
    destructive = [str(item) for item in plan.drift if item.kind != "not_executed"]
    data = [str(item) for item in plan.drift if item.kind == "not_executed"]
    if rejects:
        return RefusedError(
            "under --strict: a kept constraint rejects rows the new app may write: "
            f"{rejects[0]}{and_more(rejects)}",
            hint="see `sidecar plan`; drop the constraint yourself if the app no longer "
            "needs it, or deploy without --strict",
        )
    if destructive:
        return RefusedError(
            f"destructive drift under --strict: {destructive[0]}{and_more(plan.drift)}",
            hint="see `sidecar plan`; drift is never executed, drop --strict to deploy the rest",
        )
    if data:
        return RefusedError(
            f"not executed data statements under --strict: {data[0]}{and_more(data)}",
            hint=f"{NOT_EXECUTED_HINT}; drop --strict to deploy the schema without them",
        )
    return None


def refuse(plan: Plan, *, strict: bool) -> list[str]:
    """Log what ``plan`` reports, then raise its :func:`refusal`; else the summary's warnings."""
    data = [item for item in plan.drift if item.kind == "not_executed"]
    destructive = [str(item) for item in plan.drift if item.kind != "not_executed"]
    if destructive:
        log.warning("deploy.drift", items=destructive, strict=strict,
                    hint="destructive drift is reported, never executed")  # fmt: skip
    if data:
        log.warning("deploy.data_not_executed", items=[str(item) for item in data],
                    migrations=sorted({item.object.removeprefix("migration ") for item in data}),
                    strict=strict, hint=NOT_EXECUTED_HINT)  # fmt: skip
    error = refusal(plan, strict=strict)
    if plan.refused and error is not None:
        raise error
    rejects = [str(item) for item in plan.rejects]
    if rejects:
        log.warning("deploy.rejecting_constraints", items=rejects, strict=strict,
                    hint="kept constraints reject rows the desired schema accepts; see "
                    "`sidecar plan`")  # fmt: skip
    if error is not None:
        raise error
    return (
        [f"{len(rejects)} kept constraint(s) reject rows the new app may write"] if rejects else []
    )
