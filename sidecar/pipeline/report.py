"""What a deploy did: the report, its ``--json`` document, its summary line and its log fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from sidecar.errors import and_more
from sidecar.migrate.growth import Compaction
from sidecar.migrate.preview import Preview
from sidecar.schema.operations import Plan


@dataclass
class DeployReport:
    """What a deploy (or ``migrate``) did. :meth:`to_dict` is the ``--json`` document."""

    database: str
    dry_run: bool = False
    fresh: bool = False
    changed: bool = False
    # The plan recorded: the preflight's, or the one made under the lock (``plan`` in JSON,
    # with ``drift`` and ``not_executed`` beside it).
    preview: Preview | None = None
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
    compaction: Compaction | None = None  # SIDECAR_COMPACT after a rebuild
    # The proved offsite upload of the backup (SIDECAR_OFFSITE), or {"error": ...}.
    offsite: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def plan(self) -> dict[str, Any]:
        return self.preview.to_dict() if self.preview is not None else {}

    @property
    def drift(self) -> list[str]:
        return self.preview.drift if self.preview is not None else []

    @property
    def not_executed(self) -> list[str]:
        """A history's data statements: not executed, and never run later either (the
        migration is recorded as applied for Prisma)."""
        return self.preview.not_executed if self.preview is not None else []

    def to_dict(self) -> dict[str, Any]:
        """The ``deploy --json`` / ``migrate --json`` document (fields only grow)."""
        doc: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "preview":
                doc.update(plan=self.plan, drift=self.drift, not_executed=self.not_executed)
            elif item.name == "compaction":
                doc["compaction"] = self.compaction.to_dict() if self.compaction else None
            else:
                value = getattr(self, item.name)
                doc[item.name] = list(value) if isinstance(value, list) else value
        return doc

    def done_fields(self) -> dict[str, Any]:
        """The fields of the one summary event (``deploy.done``, ``migrate.done``)."""
        return {
            "changed": self.changed, "fresh": self.fresh, "backup": self.backup,
            "drift": self.drift, "app": self.app, "app_stopped": self.app_stopped,
            "restarted": self.restarted, "started_again": self.started_again,
            "left_stopped": self.left_stopped, "quiet": self.quiet,
            "lease_wait_s": self.lease_wait_s, "quiesce_wait_s": self.quiesce_wait_s,
            "lock_wait_s": self.lock_wait_s, "write_blocked_s": self.write_blocked_s,
            "pruned": self.pruned, "rows_vanished": self.rows_vanished,
            "dry_run": self.dry_run, "seconds": round(self.seconds, 3),
        }  # fmt: skip

    def render(self, command: str) -> str:
        """The summary line: what was done first, then what a person must not miss."""
        if self.dry_run:
            return "dry run: nothing changed\n" + self._plan_text()
        what = "created the database from the schema" if self.fresh else (
            "applied the schema changes" if self.changed else "nothing to do"
        )  # fmt: skip
        parts = [*self._vanished_lead(), what, *self._writable_parts(), *self.left_stopped]
        if self.started_again:
            parts.append(f"started {', '.join(self.started_again)} again (an interrupted run "
                         "had stopped it)")  # fmt: skip
        if self.backup:
            parts.append(f"backup {self.backup}")
        if self.compaction and not self.compaction.skipped:
            freed = self.compaction.before_bytes - self.compaction.after_bytes
            parts.append(f"compacted: {freed / 1e6:.1f} MB given back")
        parts += self._drift_parts()
        if self.restarted:
            parts.append(f"restarted {self.app}")
        elif self.app_stopped:
            parts.append(f"stopped and started {self.app}")
        if self.offsite:
            failed = self.offsite.get("error")
            parts.append(f"offsite copy FAILED: {failed}" if failed else "offsite copy proved")
        return f"{command}: " + "; ".join(parts) + f" ({self.seconds:.1f}s)"

    def _recorded_plan(self) -> Plan:
        return self.preview.plan if self.preview is not None else Plan()

    def _plan_text(self) -> str:
        plan = self._recorded_plan()
        lines = [f"  {op}" for op in plan.operations]
        lines += [f"  relax: {item}" for item in plan.relax]
        lines += [f"  foreign key changed: {item}" for item in plan.foreign_keys]
        lines += [f"  kept, rejects the new app's rows: {item}" for item in plan.rejects]
        lines += [f"  drift (never executed): {item}" for item in plan.drift]
        return "\n".join(lines) or "  (no changes)"

    def _vanished_lead(self) -> list[str]:
        """The first words of a summary when most of the data vanished since a backup."""
        lost = self.rows_vanished
        if lost is None:
            return []
        since = lost.get("since")
        return [
            f"MOST OF THE DATA VANISHED: {lost.get('rows_now')} rows left of "
            f"{lost.get('rows_before')} in backup {since}; to bring it back: stop the app, then "
            f"`sidecar restore {since}` (if the reset was wanted, delete that backup)"
        ]

    def _writable_parts(self) -> list[str]:
        """The new app's writes: kept constraints that reject its rows (prominent), and the
        columns relaxed and foreign keys changed for it."""
        plan, parts = self._recorded_plan(), []
        if plan.rejects:
            parts.append(
                f"WARNING: {len(plan.rejects)} kept constraint(s) reject rows the new app may "
                "write (see `sidecar plan`)"
            )
        if plan.relax:
            parts.append(f"{len(plan.relax)} column(s) relaxed so the new app can write")
        if plan.foreign_keys:
            parts.append(
                f"{len(plan.foreign_keys)} foreign key(s) changed so the new app can write"
            )
        return parts

    def _drift_parts(self) -> list[str]:
        """A history's data statements that were not executed by name (prominent: nothing
        will ever run them), the other drift as a count."""
        drift, not_executed = self.drift, self.not_executed
        parts = []
        if not_executed:
            parts.append(
                f"WARNING: {len(not_executed)} data statement(s) NOT EXECUTED, their migration "
                f"recorded as applied for Prisma: {not_executed[0]}{and_more(not_executed)}"
            )
        if len(drift) > len(not_executed):
            parts.append(f"{len(drift) - len(not_executed)} drift item(s) reported, not executed")
        return parts
