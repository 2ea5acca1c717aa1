"""Subcommands: plan (read-only) and migrate (the deploy pipeline without containers)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidecar import alerts
from sidecar.errors import ExitCode, RefusedError, and_more
from sidecar.logs import get_logger
from sidecar.migrate.growth import Growth
from sidecar.migrate.preview import refusal
from sidecar.pipeline.preflight import settings_preview
from sidecar.schema.operations import Plan
from sidecar.schema.source import load_desired
from sidecar.settings import Settings

if TYPE_CHECKING:
    from sidecar.pipeline.report import DeployReport

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
        if refusal(self.plan, strict=self.strict) is not None:  # a deploy would stop
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
            return RefusedError(f"refused: {p.refused[0]}{and_more(p.refused)}",
                                hint=p.refused[0].hint)  # fmt: skip
        items = [*p.drift, *p.rejects]
        return RefusedError(
            f"--strict: {items[0]}{and_more(items)}",
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
            head += f": refused: {p.refused[0]}{and_more(p.refused)}"
        sections = [
            ("Will apply", [str(op) for op in p.operations]),
            (
                "Relax (so the new app can write)",
                [str(item) for item in (*p.relax, *p.foreign_keys)],
            ),
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
    preview = settings_preview(settings, db, desired, for_deploy=False)
    result = preview.plan
    outcome = PlanResult(result, str(db), fresh=preview.fresh, check=check,
                         strict=settings.strict, growth=preview.growth)  # fmt: skip
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
        fresh=preview.fresh,
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
        return self.report.to_dict()

    def render(self) -> str:
        return self.report.render("migrate")


def migrate(settings: Settings, *, dry_run: bool = False, **_: Any) -> MigrateResult:
    """The deploy pipeline without containers: preflight, lease, quiesce, verified backup,
    the plan applied and verified in one transaction, commit. Creates a missing database."""
    # Imported here: the pipeline pulls in the Docker seam, which `plan` never needs.
    from sidecar.pipeline.run import run_deploy  # noqa: PLC0415 (keeps `plan` free of Docker)

    with alerts.observing("migrate", enabled=not dry_run, by_hand=True) as run:
        report = run_deploy(settings, apps=None, dry_run=dry_run)
        log.info("migrate.done", **report.done_fields())
        result = run.result = MigrateResult(report)
    return result
