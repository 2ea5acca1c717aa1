"""Offsite copies in the commands: the upload after each backup (and deploy), `list
--remote`, `verify --remote` (restore drills), `restore --from offsite`. Orchestration only:
the work is in :mod:`sidecar.offsite`; this module turns the settings into its values."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar import schedule
from sidecar.backup.names import verification_path
from sidecar.backup.store import BackupInfo, append_history, list_backups
from sidecar.commands import display
from sidecar.commands.verify import VerifyResult
from sidecar.errors import ConfigError, ExitCode, RefusedError, SidecarError
from sidecar.health import Check
from sidecar.logs import get_logger
from sidecar.offsite import copies, state
from sidecar.offsite.store import ObjectStore, Remote, S3Store, parse_url
from sidecar.settings import Settings
from sidecar.signals import Stop

log = get_logger(__name__)


@dataclass(frozen=True)
class Offsite:
    """The offsite settings as library values."""

    store: ObjectStore
    recipients: tuple[str, ...] = ()
    identity_file: Path | None = None
    keep: int = 10
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def identities(self) -> list[Any] | None:
        from sidecar.offsite.codec import load_identities  # noqa: PLC0415

        return load_identities(self.identity_file) if self.identity_file else None


def configured(settings: Settings) -> Offsite | None:
    """The offsite target, or None when SIDECAR_OFFSITE is not set."""
    if settings.offsite is None:
        return None
    bucket, prefix = parse_url(settings.offsite)
    path_style = {"auto": None, "true": True, "false": False}[settings.s3_path_style]
    remote = Remote(
        bucket,
        prefix,
        endpoint=settings.aws_endpoint_url,
        region=settings.aws_region,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=settings.aws_secret_access_key,
        path_style=path_style,
    )
    return Offsite(
        S3Store(remote),
        settings.age_recipients,
        settings.age_identity_file,
        keep=settings.offsite_keep,
        keep_daily=settings.offsite_keep_daily,
        keep_weekly=settings.offsite_keep_weekly,
        keep_monthly=settings.offsite_keep_monthly,
    )


def require(settings: Settings) -> Offsite:
    found = configured(settings)
    if found is None:
        raise ConfigError(
            "offsite copies are off (SIDECAR_OFFSITE is not set)",
            hint="set SIDECAR_OFFSITE=s3://bucket/prefix and the AWS_* credentials",
        )
    return found


def upload_backup(settings: Settings, info: BackupInfo) -> dict[str, Any] | None:
    """Upload the verified backup ``info`` and apply remote retention; None when offsite is
    off. Recorded as offsite (manifest, state, history) only once proved. A failure is
    recorded too (for `health`) and raised: exit 5 for `backup`, a warning for `deploy`."""
    offsite = configured(settings)
    if offsite is None:
        return None
    if not offsite.recipients:
        log.warning(
            "offsite.unencrypted",
            store=offsite.store.remote.where,
            hint="set SIDECAR_AGE_RECIPIENTS to encrypt offsite copies",
        )
    group = settings.backup_group
    try:
        done = copies.upload(offsite.store, info, recipients=offsite.recipients)
    except SidecarError as exc:
        at = datetime.now(UTC).isoformat()
        state.update(
            settings.backup_dir,
            group,
            last_upload={"ok": False, "at": at, "id": info.id, "error": exc.message},
        )
        append_history(
            settings.backup_dir,
            {"event": "offsite_failed", "id": info.id, "error": exc.message},
            group=group,
        )
        exc.message = f"backup {info.id} is kept locally, but its offsite copy failed: {exc}"
        exc.args = (exc.message,)
        raise
    state.record_upload(info, done.to_dict(), group)
    pruned = _prune_remote(settings, offsite, protect=[done.id])
    append_history(
        settings.backup_dir,
        {"event": "offsite", "id": info.id, **done.to_dict(), "pruned": pruned},
        group=group,
    )
    return {**done.to_dict(), "pruned": pruned}


def _prune_remote(settings: Settings, offsite: Offsite, protect: list[str]) -> list[str]:
    """Remote retention: never the newest copy a drill passed, nor one a kept local backup
    names as the last holding data since lost (store.rows_vanished)."""
    listing = copies.list_copies(offsite.store)
    drills = state.load(settings.backup_dir).get("drills", {})
    passed = [c.id for c in listing.copies if drills.get(c.id, {}).get("ok")]
    anchors = [
        str(lost.get("since"))
        for b in list_backups(settings.backup_dir)
        if (lost := b.rows_vanished) is not None
    ]
    gone = copies.prune_copies(
        offsite.store,
        listing,
        keep=offsite.keep,
        keep_daily=offsite.keep_daily,
        keep_weekly=offsite.keep_weekly,
        keep_monthly=offsite.keep_monthly,
        protect=[*protect, *passed[:1], *anchors],
    )
    return [c.id for c in gone]


@dataclass(frozen=True)
class RemoteListResult:
    listing: copies.RemoteListing
    drills: dict[str, Any]
    encrypted_setting: bool
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote": [
                {**c.to_dict(), "drill": self.drills.get(c.id)} for c in self.listing.copies
            ],
            "orphans": self.listing.orphans,
        }

    def render(self) -> str:
        if not self.listing.copies and not self.listing.orphans:
            return "no offsite copies"
        rows = [("ID", "SIZE", "AGE", "ENCRYPTED", "DRILL", "NOTE")]
        for c in self.listing.copies:
            drill = self.drills.get(c.id)
            when = (
                "never"
                if not drill
                else f"{'ok' if drill.get('ok') else 'FAILED'} "
                + (display.age(datetime.fromisoformat(drill["at"]), self.now))
            )
            rows.append(
                (
                    c.id,
                    display.size(c.size),
                    display.age(c.created_at, self.now),
                    "yes" if c.encrypted else "NO",
                    when,
                    "; ".join(c.problems),
                )
            )
        rows += [(o, "", "", "", "", "no manifest: not a valid copy") for o in self.listing.orphans]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )


def list_remote(settings: Settings) -> RemoteListResult:
    offsite = require(settings)
    listing = copies.list_copies(offsite.store)
    drills = state.load(settings.backup_dir).get("drills", {})
    log.info("offsite.listed", count=len(listing.copies), orphans=len(listing.orphans))
    return RemoteListResult(listing, drills, bool(offsite.recipients))


def verify_remote(settings: Settings, *, backup_id: str | None, every: bool) -> VerifyResult:
    """Restore drills: ``every`` copy, one ``backup_id``, or the newest; id -> problems.
    Data objects no manifest names are bad copies (with ``every``, or newer than the one
    drilled). Each result is recorded (state and history)."""
    offsite = require(settings)
    listing = copies.list_copies(offsite.store)
    if every:
        targets = listing.copies
    else:
        targets = [copies.find_copy(listing, backup_id or "latest")] if listing.copies else []
    newest = max((c.id for c in targets), default="")
    orphans = [o for o in listing.orphans if every or copies.data_id(Path(o).name) > newest]
    identities = offsite.identities() if any(c.encrypted for c in targets) else None
    checked: dict[str, list[str]] = {}
    level = "full" if settings.verify == "full" else "quick"
    for copy in targets:
        problems = copies.drill(
            offsite.store, copy, settings.backup_dir, identities=identities, full=level == "full"
        )
        checked[copy.id] = problems
        at = datetime.now(UTC).isoformat()
        drilled = {"at": at, "ok": not problems, "problems": problems, "level": level}
        state.update(
            settings.backup_dir,
            settings.backup_group,
            drills={copy.id: drilled},
            last_drill={"id": copy.id, **drilled},
        )
        append_history(
            settings.backup_dir,
            {"event": "drill", "id": copy.id, **drilled},
            group=settings.backup_group,
        )
        log.info("offsite.drilled", id=copy.id, ok=not problems, problems=problems, level=level)
    for orphan in orphans:
        checked[orphan] = ["data object without a manifest: not a valid copy"]
    if not targets and not orphans:
        raise RefusedError("no offsite copies to verify", hint="run sidecar backup first")
    result = VerifyResult(checked, level)
    log.info("offsite.verified", checked=len(checked), bad=result.bad, level=level)
    return result


@contextmanager
def fetched(settings: Settings, backup_id: str) -> Iterator[BackupInfo]:
    """The offsite copy ``backup_id`` downloaded, decrypted and decompressed into a scratch
    file in the backups folder, as a BackupInfo whose manifest expects the copy's own size and
    sha256: the existing restore path checks it (verify_backup: sha256, quick_check) before
    anything is replaced. The scratch file is removed afterwards."""
    from sidecar.backup.create import prepare_folder  # noqa: PLC0415

    offsite = require(settings)
    copy = copies.find_copy(copies.list_copies(offsite.store), backup_id)
    if copy.problems:
        raise RefusedError(
            f"offsite copy {copy.id}: {'; '.join(copy.problems)}",
            hint="pick another from: sidecar list --remote",
        )
    prepare_folder(settings.backup_dir, settings.backup_group)
    scratch = settings.backup_dir / f".offsite-restore-{os.getpid()}-{secrets.token_hex(4)}.db"
    identities = offsite.identities() if copy.encrypted else None
    try:
        size, _ = copies.fetch(offsite.store, copy, scratch, identities=identities)
        # The manifest's own size and sha256 as the expected ones: the restore path's
        # verify_backup then checks the download against them, and runs quick_check.
        manifest = {
            **copy.manifest,
            "compression": "none",
            "size": copy.manifest.get("db_size"),
            "stored_sha256": copy.manifest.get("sha256"),
        }
        log.info("offsite.fetched", id=copy.id, bytes=size)
        yield BackupInfo(
            id=copy.id,
            path=scratch,
            manifest=manifest,
            created_at=copy.created_at,
            size=size,
            reason="offsite",
        )
    finally:
        scratch.unlink(missing_ok=True)
        verification_path(scratch).unlink(missing_ok=True)  # verify_backup's record of it


@contextmanager
def drills_scheduled(settings: Settings, stop: Stop) -> Iterator[None]:
    """With SIDECAR_DRILL_SCHEDULE, restore drills of the newest offsite copy run in a thread
    beside the scheduled backups until ``stop``; a failed drill is logged, recorded (health
    warns) and retried at the next slot."""
    if not settings.drill_schedule:
        yield
        return
    schedule.validate(settings.drill_schedule)
    require(settings)
    worker = threading.Thread(
        target=schedule.run_forever,
        args=(settings.drill_schedule, lambda: _drill_job(settings), stop),
        name="offsite-drills",
        daemon=True,
    )
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=60)


def _drill_job(settings: Settings) -> None:
    result = verify_remote(settings, backup_id=None, every=False)
    if result.bad:
        log.warning(
            "offsite.drill_failed",
            bad=result.bad,
            checked=result.checked,
            hint="sidecar verify --remote --all; take a new backup",
        )


def health_checks(settings: Settings, *, now: datetime | None = None) -> list[Check]:
    """Warnings for `health` (never fatal, no network: the backups folder's record): the
    newest proved copy older than SIDECAR_MAX_OFFSITE_AGE, a failed last upload or drill,
    and copies going out unencrypted."""
    if settings.offsite is None:
        return []
    now = now or datetime.now(UTC)
    record = state.load(settings.backup_dir)
    limit = settings.max_offsite_age
    found: list[Check] = []
    success = record.get("last_success")
    if not success:
        found.append(Check("offsite copy", False, "no offsite copy proved yet", fatal=False))
    else:
        age = (now - datetime.fromisoformat(success["at"])).total_seconds()
        detail = f"{success['id']}, {age / 3600:.1f}h old (limit {limit / 3600:.1f}h)"
        found.append(Check("offsite copy", age <= limit, detail, fatal=False))
    upload = record.get("last_upload")
    if upload and not upload.get("ok"):
        detail = f"{upload.get('id')} at {upload.get('at')}: {upload.get('error')}"
        found.append(Check("offsite upload", False, detail, fatal=False))
    drill = record.get("last_drill")
    if drill:
        problems = "; ".join(drill.get("problems") or []) or "ok"
        detail = f"{drill.get('id')} at {drill.get('at')}: {problems}"
        found.append(Check("offsite drill", bool(drill.get("ok")), detail, fatal=False))
    if not settings.age_recipients:
        found.append(
            Check(
                "offsite encryption",
                False,
                "offsite copies are NOT encrypted (set SIDECAR_AGE_RECIPIENTS)",
                fatal=False,
            )
        )
    return found
