"""``sidecar prune``: delete old backups by the retention policy (never the last good one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.backup import retention, store
from sidecar.backup.retention import PruneOutcome
from sidecar.commands import display
from sidecar.errors import ExitCode
from sidecar.settings import Settings


@dataclass(frozen=True)
class PruneResult:
    outcome: PruneOutcome

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "dry_run": o.dry_run,
            "deleted": [b.id for b in o.deleted],
            "kept": [b.id for b in o.kept],
            "freed_bytes": o.freed_bytes,
        }

    def render(self) -> str:
        o = self.outcome
        verb = "would delete" if o.dry_run else "deleted"
        if not o.deleted:
            return f"nothing to prune ({len(o.kept)} kept)"
        return (
            f"{verb} {len(o.deleted)} ({display.size(o.freed_bytes)}), kept {len(o.kept)}:\n"
            + "\n".join(f"  {b.id}" for b in o.deleted)
        )


def prune(settings: Settings, *, dry_run: bool = False, **_: Any) -> PruneResult:
    """Delete old backups by the retention policy (``dry_run``: only say which)."""
    outcome = apply_retention(settings, dry_run=dry_run)
    if outcome.deleted and not dry_run:
        store.append_history(
            settings.backup_dir,
            {"event": "prune", "deleted": [b.id for b in outcome.deleted]},
            group=settings.backup_group,
        )
    return PruneResult(outcome)


def apply_retention(
    settings: Settings, *, dry_run: bool, protect: tuple[str, ...] = ()
) -> PruneOutcome:
    """The settings' retention, per database (:func:`retention.prune_by_policy`)."""
    return retention.prune_by_policy(
        settings.backup_dir, settings.retention_policy(), database=settings.database,
        environment=settings.environment, dry_run=dry_run, protect=protect,
    )  # fmt: skip
