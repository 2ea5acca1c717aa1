"""Subcommands: plan (read-only) and migrate (the deploy pipeline without containers)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sidecar import alerts, checks, database, growth, history
from sidecar import migrate as migrating
from sidecar.backup import store
from sidecar.errors import ExitCode, RefusedError, UnavailableError
from sidecar.growth import Growth
from sidecar.logs import get_logger
from sidecar.schema.catalogue import Catalogue
from sidecar.schema.diff import make_plan
from sidecar.schema.operations import Plan
from sidecar.schema.source import load_desired
from sidecar.settings import Settings

if TYPE_CHECKING:
    from sidecar.pipeline import DeployReport

log = get_logger(__name__)


@dataclass(frozen=True)
class PlanResult:
    """``sidecar plan``. Exit 3 when a deploy would be refused (a refusal, or drift under
    ``--strict``), else 6 with ``--check`` when operations are pending, else 0."""

    plan: Plan
    database: str
    fresh: bool = False
    check: bool = False
    strict: bool = False
    growth: Growth | None = None  # what table rebuilds add to the database file

    @property
    def exit_code(self) -> ExitCode:
        if self.plan.refused or (self.strict and (self.plan.drift or self.plan.rejects)):
            return ExitCode.REFUSED
        if self.check and self.plan.operations:
            return ExitCode.PENDING
        return ExitCode.OK

    @property
    def failure(self) -> RefusedError | None:
        """The error line for the CLI when a deploy would be refused (the plan is the result)."""
        if self.exit_code != ExitCode.REFUSED:
            return None
        p = self.plan
        if p.refused:
            more = f" (and {len(p.refused) - 1} more)" if len(p.refused) > 1 else ""
            return RefusedError(f"refused: {p.refused[0]}{more}", hint=p.refused[0].hint)
        items = [*p.drift, *p.rejects]
        return RefusedError(
            f"--strict: {items[0]}" + (f" (and {len(items) - 1} more)" if len(items) > 1 else ""),
            hint="see the plan above; deploy without --strict to apply the rest",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "fresh": self.fresh,
            "strict": self.strict,
            **self.plan.to_dict(),
            "growth": self.growth.to_dict() if self.growth else None,
        }

    def render(self) -> str:
        p = self.plan
        head = f"plan for {self.database}" + (
            " (no database yet: it will be created)" if self.fresh else ""
        )
        if p.refused:  # the line a user reads first says why a deploy would stop
            more = f" (and {len(p.refused) - 1} more)" if len(p.refused) > 1 else ""
            head += f": refused: {p.refused[0]}{more}"
        sections = [
            ("Will apply", [str(op) for op in p.operations]),
            ("Relax (so the new app can write)", [str(item) for item in p.relax]),
            (
                "Kept constraints that reject rows the desired schema accepts "
                "(not changed; --strict fails)",
                [str(item) for item in p.rejects],
            ),
            ("Drift (never executed)", [str(item) for item in p.drift]),
            ("Refused (and why)", [f"{item}\n      hint: {item.hint}" for item in p.refused]),
        ]
        lines = [head]
        for title, items in sections:
            if not items and title.startswith(("Relax", "Kept")):
                continue  # shown only when there is something to say
            lines.append(f"\n{title}:")
            lines += [f"  - {item}" for item in items] or ["  (none)"]
        if p.unchecked:
            lines.append("\nChecked only when applied (cannot know until it tries):")
            lines += [f"  - {item}" for item in p.unchecked]
        if self.growth is not None:
            lines += ["\nDisk:", f"  - {self.growth}"]
        return "\n".join(lines)


def plan(settings: Settings, *, check: bool = False, **_: Any) -> PlanResult:
    """Compare the database with the desired schema. Never writes: a read-only connection
    and one read transaction. A missing database is planned as created from empty."""
    started = time.monotonic()
    desired = load_desired(settings.require_schema())
    db = settings.require_database()
    fresh = not db.exists()
    if fresh:
        migrating.refuse_orphan_sides(db)  # as the deploy would
        store.refuse_fresh_over_backups(db, settings.backup_dir, allow_fresh=settings.allow_fresh)
        result = history.review(None, make_plan(Catalogue(), desired, row_counts={}), desired)
    else:
        database.check_database_file(db)
        conn = database.connect(db, readonly=True, busy_timeout=min(settings.wait_timeout, 1.0))
        try:
            # One snapshot: the catalogue, the counts, the checks (a lock is waited for).
            database.begin_snapshot(conn, wait=settings.wait_timeout)
            copied = history.copies(conn, desired, settings.renames)
            result = history.review(
                conn, migrating.plan_for(conn, desired, copied), desired, copied
            )
            grown = growth.of_plan(conn, result)
            conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            if checks.is_busy(exc):
                raise UnavailableError(
                    f"cannot read {db}: {exc}", hint="is the app holding an exclusive lock?"
                ) from None
            raise database.damaged(db, exc) from None
        finally:
            conn.close()
    outcome = PlanResult(result, str(db), fresh=fresh, check=check, strict=settings.strict,
                         growth=None if fresh else grown)  # fmt: skip
    if settings.offsite is not None and not settings.age_recipients:
        log.warning(
            "offsite.unencrypted",
            store=settings.offsite,
            hint="offsite copies go out NOT encrypted: set SIDECAR_AGE_RECIPIENTS",
        )
    log.info(
        "plan.done",
        operations=len(result.operations),
        drift=len(result.drift),
        refused=len(result.refused),
        fresh=fresh,
        exit_code=int(outcome.exit_code),
        seconds=round(time.monotonic() - started, 3),
    )
    alerts.measure("plan", outcome)  # sidecar_schema_pending_changes, drift
    return outcome


@dataclass(frozen=True)
class MigrateResult:
    """``sidecar migrate``: the deploy report (same ``--json`` fields as ``deploy``)."""

    report: DeployReport

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self.report)

    def render(self) -> str:
        r = self.report
        if r.dry_run:
            ops = [op.get("summary", op) for op in r.plan.get("operations", [])]
            return "dry run: nothing changed\n" + (
                "\n".join(f"  {op}" for op in ops) or "  (no changes)"
            )
        what = (
            "created the database from the schema"
            if r.fresh
            else ("applied the schema changes" if r.changed else "nothing to do")
        )
        # An app an interrupted run stopped: say it.
        parts = [what, *writable_parts(r.plan), *r.left_stopped]
        if r.backup:
            parts.append(f"backup {r.backup}")
        if r.compaction and not r.compaction["skipped"]:
            parts.append(f"compacted: {r.compaction['freed_bytes'] / 1e6:.1f} MB given back")
        parts += drift_parts(r.drift, r.not_executed)
        return "migrate: " + "; ".join(parts) + f" ({r.seconds:.1f}s)"


def drift_parts(drift: list[str], not_executed: list[str]) -> list[str]:
    """What a deploy summary says about drift: a history's data statements that were not
    executed by name (prominent: nothing will ever run them), the other drift as a count."""
    parts = []
    if not_executed:
        more = f" (and {len(not_executed) - 1} more)" if len(not_executed) > 1 else ""
        parts.append(
            f"WARNING: {len(not_executed)} data statement(s) NOT EXECUTED, their migration "
            f"recorded as applied for Prisma: {not_executed[0]}{more}"
        )
    if len(drift) > len(not_executed):
        parts.append(f"{len(drift) - len(not_executed)} drift item(s) reported, not executed")
    return parts


def writable_parts(plan: dict[str, Any]) -> list[str]:
    """What a deploy summary says about the new app's writes (relaxed columns, and kept
    constraints that reject its rows: prominent, the first thing after what was done)."""
    parts = []
    if plan.get("rejects"):
        parts.append(
            f"WARNING: {len(plan['rejects'])} kept constraint(s) reject rows the new app may "
            "write (see `sidecar plan`)"
        )
    if plan.get("relax"):
        parts.append(f"{len(plan['relax'])} column(s) relaxed so the new app can write")
    return parts


def migrate(settings: Settings, *, dry_run: bool = False, **_: Any) -> MigrateResult:
    """The deploy pipeline without containers: preflight, lease, quiesce, verified backup,
    the plan applied and verified in one transaction, commit. Creates a missing database."""
    # Imported here: the pipeline pulls in the Docker seam, which `plan` never needs.
    from sidecar.pipeline import run_deploy  # noqa: PLC0415 (keeps `plan` free of Docker)

    report = run_deploy(settings, apps=None, dry_run=dry_run)
    log.info(
        "migrate.done",
        changed=report.changed,
        fresh=report.fresh,
        backup=report.backup,
        drift=report.drift,
        lock_wait_s=report.lock_wait_s,
        write_blocked_s=report.write_blocked_s,
        dry_run=dry_run,
        seconds=round(report.seconds, 3),
    )
    return MigrateResult(report)
