"""Offsite copies in the commands: the upload after each backup (and deploy), `list
--remote`, `verify --remote` (restore drills), `restore --from offsite`. Orchestration only:
the work is in :mod:`sidecar.offsite`; this module turns the settings into its values."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar import alerts, schedule
from sidecar.backup.names import verification_path
from sidecar.backup.store import BackupInfo, append_history, backups_of
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
    started = time.monotonic()
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
        upload_failed(exc, info.id)
        raise
    except Exception as exc:
        upload_failed(exc, info.id)
        raise
    state.record_upload(info, done.to_dict(), group)
    try:
        pruned = _prune_remote(settings, offsite, protect=[done.id])
    except SidecarError as exc:
        alerts.event("offsite.done", backup=info.id, seconds=time.monotonic() - started)
        exc.message = (
            f"backup {info.id} was uploaded offsite and proved, but the remote retention "
            f"failed: {exc}"
        )
        exc.args = (exc.message,)
        upload_failed(exc, info.id)
        raise
    append_history(
        settings.backup_dir,
        {"event": "offsite", "id": info.id, **done.to_dict(), "pruned": pruned},
        group=group,
    )
    alerts.event(
        "offsite.done",
        backup=info.id,
        seconds=time.monotonic() - started,
        pruned=", ".join(pruned) or None,
    )
    return {**done.to_dict(), "pruned": pruned}


def upload_failed(exc: BaseException, backup_id: str | None) -> None:
    """``offsite.failed`` (notification and the offsite metrics) for ``exc``: whoever runs
    the upload (`backup` exits 5, `deploy` warns and exits 0) does not decide who hears."""
    if isinstance(exc, SidecarError):
        alerts.event("offsite.failed", error=exc.message, hint=exc.hint,
                     exit_code=int(exc.exit_code), backup=backup_id)  # fmt: skip
    else:
        alerts.event("offsite.failed", error=f"unexpected {type(exc).__name__}: {exc}",
                     hint="this is a bug in sidecar; please report it with the log",
                     exit_code=int(ExitCode.BUG), backup=backup_id)  # fmt: skip


def _prune_remote(settings: Settings, offsite: Offsite, protect: list[str]) -> list[str]:
    """Remote retention of this database's copies only: never the newest copy a drill
    passed, nor one a kept local backup names as the last holding data since lost
    (store.rows_vanished)."""
    listing = copies.list_copies(offsite.store)
    ours = listing.of(settings.database)
    _remember(settings, ours)
    drills = state.load(settings.backup_dir).get("drills", {})
    passed = [c.id for c in ours.copies if drills.get(c.id, {}).get("ok")]
    anchors = [
        str(lost.get("since"))
        for b in backups_of(settings.backup_dir, settings.database)
        if (lost := b.rows_vanished) is not None
    ]
    gone = copies.prune_copies(
        offsite.store,
        ours,
        database=settings.database,
        keep=offsite.keep,
        keep_daily=offsite.keep_daily,
        keep_weekly=offsite.keep_weekly,
        keep_monthly=offsite.keep_monthly,
        protect=[*protect, *passed[:1], *anchors],
    )
    return [c.id for c in gone]


def _remember(settings: Settings, ours: copies.RemoteListing) -> None:
    """What a listing showed wrong with this database's copies, for `health` (no network):
    a copy the listing shows damaged, or no longer lists, is never called ok there."""
    if not settings.backup_dir.is_dir():
        return  # nothing to remember it in (a fresh host): health has no record either
    listed = {c.id for c in ours.copies}
    damaged = {c.id: c.problems for c in ours.copies if c.problems}
    success = state.load(settings.backup_dir).get("last_success") or {}
    if success.get("id") and success["id"] not in listed:
        damaged[success["id"]] = ["no longer in the store's listing (deleted?)"]
    at = datetime.now(UTC).isoformat()
    state.update(settings.backup_dir, settings.backup_group, listed={"at": at, "damaged": damaged})


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
            "other_databases": len(self.listing.others),
        }

    def render(self) -> str:
        others = len(self.listing.others)
        note = f"\n({others} copies of other databases under this prefix not shown)"
        note = note if others else ""
        if not self.listing.copies and not self.listing.orphans:
            return "no offsite copies of this database" + note if others else "no offsite copies"
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
        return (
            "\n".join(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                for row in rows
            )
            + note
        )


def list_remote(settings: Settings) -> RemoteListResult:
    """This database's copies (every copy without a configured database)."""
    offsite = require(settings)
    ours = copies.list_copies(offsite.store).of(settings.database)
    _remember(settings, ours)
    drills = state.load(settings.backup_dir).get("drills", {})
    log.info(
        "offsite.listed",
        count=len(ours.copies),
        orphans=len(ours.orphans),
        other_databases=len(ours.others),
    )
    return RemoteListResult(ours, drills, bool(offsite.recipients))


def verify_remote(settings: Settings, *, backup_id: str | None, every: bool) -> VerifyResult:
    """Restore drills of this database's copies: ``every`` one, one ``backup_id``, or the
    newest, whatever the listing shows wrong with it (then that is the finding); id ->
    problems. Each result is recorded (state and history) and announced (``drill.done`` /
    ``drill.failed``, with the drill metrics); so is a drill that could not run."""
    started = time.monotonic()
    try:
        result = _verify_remote(settings, backup_id=backup_id, every=every)
    except SidecarError as exc:
        alerts.event("drill.failed", error=exc.message, hint=exc.hint,
                     exit_code=int(exc.exit_code), backup=backup_id)  # fmt: skip
        raise
    except Exception as exc:
        alerts.event("drill.failed", error=f"unexpected {type(exc).__name__}: {exc}",
                     hint="this is a bug in sidecar; please report it with the log",
                     exit_code=int(ExitCode.BUG), backup=backup_id)  # fmt: skip
        raise
    failure = result.failure
    if failure is not None:
        alerts.event("drill.failed", error=failure.message, hint=failure.hint,
                     exit_code=int(failure.exit_code), backup=result.bad[0])  # fmt: skip
    else:
        alerts.event("drill.done", backup=", ".join(result.checked),
                     seconds=time.monotonic() - started, level=result.level)  # fmt: skip
    return result


def _verify_remote(settings: Settings, *, backup_id: str | None, every: bool) -> VerifyResult:
    offsite = require(settings)
    listing = copies.list_copies(offsite.store)
    ours = listing.of(settings.database)
    _remember(settings, ours)
    if backup_id is not None:
        targets = [copies.find_copy(listing, backup_id)]
    else:
        # The newest copy, damaged or not: a drill that passed an older one instead would
        # call the backups good while the newest is not.
        targets = ours.copies if every else ours.copies[:1]
    newest = max((c.id for c in targets), default="")
    orphans = [o for o in ours.orphans if every or copies.data_id(Path(o).name) > newest]
    if not targets and not orphans:
        others = f" ({len(ours.others)} of other databases)" if ours.others else ""
        raise RefusedError(
            f"no offsite copies of {settings.database or 'the database'} to verify at "
            f"{offsite.store.remote.where}{others}",
            hint="run sidecar backup first (it uploads a copy); check SIDECAR_OFFSITE",
        )
    identities = offsite.identities() if any(c.encrypted for c in targets) else None
    if targets:
        from sidecar.backup.create import prepare_folder  # noqa: PLC0415

        prepare_folder(settings.backup_dir, settings.backup_group)  # the drill's scratch file
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
    result = VerifyResult(checked, level, remote=True)
    log.info("offsite.verified", checked=len(checked), bad=result.bad, level=level)
    return result


@contextmanager
def fetched(
    settings: Settings, backup_id: str, *, skipped: dict[str, list[str]] | None = None
) -> Iterator[BackupInfo]:
    """The offsite copy ``backup_id`` (``latest``: this database's newest complete copy;
    the newer damaged ones it skipped go into ``skipped``) downloaded, decrypted and
    decompressed into a scratch file in the backups folder, as a BackupInfo whose manifest
    expects the copy's own size and sha256: the existing restore path checks it
    (verify_backup: sha256, quick_check) before anything is replaced. The scratch file is
    removed afterwards."""
    from sidecar.backup.create import prepare_folder  # noqa: PLC0415

    offsite = require(settings)
    listing = copies.list_copies(offsite.store)
    _remember(settings, listing.of(settings.database))
    if backup_id == "latest":
        copy, passed = copies.latest_copy(
            listing, settings.database, where=offsite.store.remote.where
        )
        if skipped is not None:
            skipped.update(passed)
    else:
        copy = copies.find_copy(listing, backup_id)
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
        # Proved when uploaded; what a later listing or drill found against it stands.
        listed = record.get("listed") or {}
        damaged = (listed.get("damaged") or {}).get(success["id"])
        drilled = record.get("drills", {}).get(success["id"]) or {}
        if damaged:
            detail += f": DAMAGED in the listing at {listed.get('at')}: {'; '.join(damaged)}"
        elif drilled and not drilled.get("ok"):
            detail += f": its restore drill FAILED at {drilled.get('at')}"
        ok = age <= limit and not damaged and not (drilled and not drilled.get("ok"))
        found.append(Check("offsite copy", ok, detail, fatal=False))
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
