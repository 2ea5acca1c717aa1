"""Offsite copies of verified backups: upload with proof, listing, download, drills, retention.

Remote layout under the prefix, for a backup ``X.db`` (local name without ``.zst``):

- ``X.db.zst`` or ``X.db.zst.age``: the data (zstd, then age when there are recipients);
- ``X.db.json``: its manifest (the local manifest plus an ``offsite`` section), written only
  after the data object was proved, and deleted first: a copy is listed only when its
  manifest exists, so a crash mid-upload (or mid-prune) never leaves a listed copy without
  its data. Incomplete multipart uploads are invisible to listings; a bucket lifecycle rule
  removes them (README, "Offsite copies").
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar.backup.names import BACKUP_NAME, EPOCH, TIMESTAMP
from sidecar.backup.retention import retention
from sidecar.backup.store import BackupInfo
from sidecar.backup.verify import inspect_file
from sidecar.errors import ConfigError, RefusedError, UnavailableError
from sidecar.fs import create_exclusive, pump
from sidecar.logs import get_logger
from sidecar.offsite import codec
from sidecar.offsite.store import ObjectMeta, ObjectStore, part_size

log = get_logger(__name__)

MANIFEST_SUFFIX = ".json"


def remote_id(local_id: str) -> str:
    """A backup's name offsite: the local name without ``.zst`` (objects are always zstd)."""
    return local_id.removesuffix(".zst")


def data_name(copy_id: str, *, encrypted: bool) -> str:
    return f"{copy_id}.zst.age" if encrypted else f"{copy_id}.zst"


class _Tally:
    """Counts, hashes (sha256) and part-hashes (md5 per multipart part) the bytes sent, to
    prove the stored object against the store's ETag without reading it back."""

    def __init__(self, part: int) -> None:
        self.part = part
        self.reset()

    def reset(self) -> None:
        self.size = 0
        self.sha = hashlib.sha256()
        self.parts: list[bytes] = []
        self._part = hashlib.md5()  # noqa: S324 - S3's ETag is md5: a checksum, not security
        self._in_part = 0

    def wrap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        self.reset()
        for chunk in chunks:
            self.sha.update(chunk)
            self.size += len(chunk)
            view = memoryview(chunk)
            while view:
                take = min(len(view), self.part - self._in_part)
                self._part.update(view[:take])
                self._in_part += take
                view = view[take:]
                if self._in_part == self.part:
                    self._close_part()
            yield chunk
        if self._in_part or not self.parts:
            self._close_part()

    def _close_part(self) -> None:
        self.parts.append(self._part.digest())
        self._part = hashlib.md5()  # noqa: S324
        self._in_part = 0

    def etags(self) -> set[str]:
        """The ETags S3-compatible stores give this content: multipart, or single-part."""
        joined = hashlib.md5(b"".join(self.parts)).hexdigest()  # noqa: S324
        found = {f"{joined}-{len(self.parts)}"}
        if len(self.parts) == 1:
            found.add(self.parts[0].hex())
        return found


@dataclass(frozen=True)
class Upload:
    """One proved upload; what the local manifest and the history file record."""

    id: str
    key: str
    manifest_key: str
    size: int
    sha256: str
    encrypted: bool
    proof: str  # "etag" or "read-back"
    seconds: float
    uploaded_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "manifest_key": self.manifest_key,
            "size": self.size,
            "sha256": self.sha256,
            "encrypted": self.encrypted,
            "proof": self.proof,
            "seconds": round(self.seconds, 3),
            "uploaded_at": self.uploaded_at,
        }


def upload(store: ObjectStore, info: BackupInfo, *, recipients: Sequence[str]) -> Upload:
    """Upload the verified backup ``info``: the data, proved, then its manifest.

    Raises UnavailableError (exit 5) when the store stays unreachable or holds something
    other than what was sent (the wrong object is deleted)."""
    started = time.monotonic()
    copy_id = remote_id(info.id)
    encrypted = bool(recipients)
    key = store.remote.key(data_name(copy_id, encrypted=encrypted))
    manifest_key = store.remote.key(copy_id + MANIFEST_SUFFIX)
    _refuse_another_databases(store, manifest_key, info)
    tally = _Tally(part_size(info.size))
    store.put(
        key,
        lambda: tally.wrap(
            codec.encode(info.path, compressed=info.compressed, recipients=recipients)
        ),
        part=tally.part,
    )
    proof = _prove(store, key, tally)
    done = Upload(
        copy_id,
        key,
        manifest_key,
        tally.size,
        tally.sha.hexdigest(),
        encrypted,
        proof,
        time.monotonic() - started,
        datetime.now(UTC).isoformat(),
    )
    manifest = {
        **info.manifest,
        "id": copy_id,
        "local_id": info.id,
        "offsite": {**done.to_dict(), "compression": "zstd", "recipients": list(recipients)},
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    store.put(manifest_key, lambda: [body])
    log.info(
        "offsite.uploaded",
        id=copy_id,
        key=key,
        bytes=done.size,
        encrypted=encrypted,
        proof=proof,
        seconds=round(done.seconds, 3),
    )
    return done


def _refuse_another_databases(store: ObjectStore, manifest_key: str, info: BackupInfo) -> None:
    """Never overwrite another database's copy: two databases of one file name sharing a
    prefix give their backups of the same second the same name."""
    if not info.source or store.head(manifest_key) is None:
        return
    there = BackupInfo(id=info.id, path=info.path, manifest=_read_manifest(store, manifest_key))
    if there.source and not there.belongs_to(Path(info.source)):
        raise ConfigError(
            f"offsite copy {remote_id(info.id)} at {store.remote.where} is a copy of "
            f"{there.source}, not of {info.source}: not overwritten",
            hint="give each database its own SIDECAR_OFFSITE prefix (s3://bucket/prefix)",
        )


def _prove(store: ObjectStore, key: str, tally: _Tally) -> str:
    meta = store.head(key)
    if meta is None or meta.size != tally.size:
        found = "no object" if meta is None else f"{meta.size} bytes"
        raise UnavailableError(
            f"offsite upload of {key} not proved: sent {tally.size} bytes, the store holds {found}",
            hint=f"check the store at {store.remote.where}; the local backup is kept",
        )
    if meta.etag in tally.etags():
        return "etag"
    # Another ETag scheme (encryption at rest, another part size): read the object back.
    digest = hashlib.sha256()
    for chunk in store.get(key):
        digest.update(chunk)
    if digest.hexdigest() != tally.sha.hexdigest():
        store.delete(key)
        raise UnavailableError(
            f"offsite upload of {key} not proved: the stored bytes differ from those sent "
            "(deleted)",
            hint=f"check the store at {store.remote.where}; the local backup is kept",
        )
    return "read-back"


@dataclass(frozen=True)
class RemoteCopy:
    """One copy offsite, as its manifest describes it (and whether its data is there)."""

    id: str
    manifest: dict[str, Any]
    manifest_key: str
    data: ObjectMeta | None

    @property
    def offsite(self) -> dict[str, Any]:
        found = self.manifest.get("offsite")
        return found if isinstance(found, dict) else {}

    @property
    def encrypted(self) -> bool:
        return bool(self.offsite.get("encrypted"))

    @property
    def size(self) -> int:
        return int(self.offsite.get("size") or 0)

    @property
    def created_at(self) -> datetime:
        match = BACKUP_NAME.match(self.id)
        if match is None:
            return EPOCH
        return datetime.strptime(match["ts"], TIMESTAMP).replace(tzinfo=UTC)

    @property
    def problems(self) -> list[str]:
        """What a listing alone can tell is wrong ([] when the copy looks complete)."""
        if not self.manifest.get("verified") or not self.offsite:
            return ["manifest is not one sidecar wrote"]
        if self.data is None:
            return [f"data object {self.offsite.get('key')} is missing"]
        if self.data.size != self.size:
            return [f"data object is {self.data.size} bytes, the manifest says {self.size}"]
        return []

    def belongs_to(self, database: Path) -> bool:
        """Whether this is a copy of ``database``: its manifest's ``source``, judged as a
        local backup's (:meth:`BackupInfo.belongs_to`)."""
        return self.as_backup().belongs_to(database)

    def as_backup(self) -> BackupInfo:
        """This copy as retention sees a backup (verified: complete by the listing)."""
        match = BACKUP_NAME.match(self.id)
        manifest = {**self.manifest, "verified": not self.problems}
        return BackupInfo(
            id=self.id,
            path=Path(self.manifest_key),
            manifest=manifest,
            created_at=self.created_at,
            stem=match["stem"] if match else "",
            environment=match["env"] if match else "",
            seq=int(match["seq"] or 0) if match else 0,
            size=self.size,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.offsite.get("key"),
            "size": self.size,
            "created_at": self.created_at.isoformat(),
            "encrypted": self.encrypted,
            "uploaded_at": self.offsite.get("uploaded_at"),
            "sha256": self.manifest.get("sha256"),
            "problems": self.problems,
        }


@dataclass(frozen=True)
class RemoteListing:
    copies: list[RemoteCopy] = field(default_factory=list)  # newest first
    orphans: list[str] = field(default_factory=list)  # data objects without a manifest
    others: list[RemoteCopy] = field(default_factory=list)  # copies of other databases

    def of(self, database: Path | None) -> RemoteListing:
        """This database's copies (every copy when None): the one notion of "this
        database's copies" for list, latest, drills and retention, as
        :func:`sidecar.backup.store.backups_of` for local backups. An orphan has no
        manifest: its name's stem is all that is known of it."""
        if database is None:
            return self
        ours = [c for c in self.copies if c.belongs_to(database)]
        others = [c for c in self.copies if not c.belongs_to(database)]
        orphans = [o for o in self.orphans if _stem(data_id(o.rsplit("/", 1)[-1])) == database.stem]
        return RemoteListing(ours, orphans, [*self.others, *others])


def list_copies(store: ObjectStore) -> RemoteListing:
    """The copies under the store's prefix, newest first, and data objects no manifest names
    (an interrupted upload, or a manifest deleted): those are never listed as copies."""
    prefix = store.remote.key("")
    objects = {m.key: m for m in store.list(prefix)}
    copies: list[RemoteCopy] = []
    named: set[str] = set()
    for key in sorted(objects):
        name = key[len(prefix) :]
        copy_id = name.removesuffix(MANIFEST_SUFFIX)
        if "/" in name or not name.endswith(MANIFEST_SUFFIX) or not _is_copy_id(copy_id):
            continue
        manifest = _read_manifest(store, key)
        offsite = manifest.get("offsite") if isinstance(manifest.get("offsite"), dict) else {}
        data_key = str((offsite or {}).get("key") or "")
        named.add(data_key)
        copies.append(RemoteCopy(copy_id, manifest, key, objects.get(data_key)))
    orphans = [
        k for k in sorted(objects) if k not in named and _is_copy_id(data_id(k[len(prefix) :]))
    ]
    copies.sort(key=lambda c: (c.created_at, c.id), reverse=True)
    return RemoteListing(copies, orphans)


def _stem(copy_id: str) -> str:
    match = BACKUP_NAME.match(copy_id)
    return match["stem"] if match else ""


def _is_copy_id(name: str) -> bool:
    return bool(BACKUP_NAME.match(name)) and not name.endswith(".zst")


def data_id(name: str) -> str:
    for suffix in (".zst.age", ".zst"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return ""


def _read_manifest(store: ObjectStore, key: str) -> dict[str, Any]:
    try:
        loaded = json.loads(b"".join(store.get(key)))
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def latest_copy(
    listing: RemoteListing, database: Path | None, *, where: str = "the store"
) -> tuple[RemoteCopy, dict[str, list[str]]]:
    """The newest complete copy of ``database`` (:meth:`RemoteListing.of`), and the newer
    copies of it skipped for what the listing shows wrong with them (each logged as
    ``offsite.skipped``). Never another database's copy. Raises RefusedError."""
    ours = listing.of(database)
    skipped: dict[str, list[str]] = {}
    for copy in ours.copies:
        if not copy.problems:
            return copy, skipped
        skipped[copy.id] = copy.problems
        log.warning(
            "offsite.skipped",
            id=copy.id,
            problems=copy.problems,
            hint="a newer offsite copy is damaged; an older one is taken",
        )
    if skipped:
        raise RefusedError(
            f"every offsite copy of {database or 'the database'} at {where} is damaged "
            f"({len(skipped)}: {', '.join(skipped)})",
            hint="run sidecar list --remote; take a new backup (sidecar backup uploads it)",
        )
    others = sorted({str(c.as_backup().database) for c in ours.others})
    held = f"; it holds copies of {', '.join(others)}" if others else ""
    raise RefusedError(
        f"no offsite copy of {database or 'the database'} at {where}{held}",
        hint="check SIDECAR_DATABASE and SIDECAR_OFFSITE (sidecar list --remote); "
        "a copy of another database is restored only by its ID, with --from-other-database",
    )


def find_copy(listing: RemoteListing, copy_id: str) -> RemoteCopy:
    """The listed copy ``copy_id`` (a local name with or without ``.zst``), whichever
    database it is of: the caller decides what it may be used for (``latest``:
    :func:`latest_copy`). Raises RefusedError."""
    wanted = remote_id(copy_id)
    for copy in [*listing.copies, *listing.others]:
        if copy.id == wanted:
            return copy
    raise RefusedError(f"no offsite copy named {copy_id}", hint="run sidecar list --remote")


def fetch(
    store: ObjectStore, copy: RemoteCopy, dest: Path, *, identities: Sequence[Any] | None
) -> tuple[int, str]:
    """Download ``copy`` into the new file ``dest``, decrypted and decompressed; (bytes,
    sha256) of the database. Raises ConfigError when it is encrypted and no identity is set."""
    if copy.encrypted and not identities:
        raise ConfigError(
            f"offsite copy {copy.id} is encrypted and no age identity is configured",
            hint="set SIDECAR_AGE_IDENTITY_FILE to the file age-keygen wrote",
        )
    if copy.encrypted:
        _check_identity(copy, identities or ())
    fd = create_exclusive(dest, 0o600, None)
    try:
        chunks = store.get(str(copy.offsite.get("key")))
        return pump(codec.decode(chunks, identities=identities if copy.encrypted else None), fd)
    except codec.CodecError as exc:
        unsure = copy.encrypted and not copy.offsite.get("recipients")
        raise RefusedError(
            f"offsite copy {copy.id} cannot be decrypted or decompressed: "
            f"{type(exc).__name__}: {exc}",
            hint=(
                "check SIDECAR_AGE_IDENTITY_FILE is the key of SIDECAR_AGE_RECIPIENTS; else "
                if unsure
                else ""
            )
            + "the copy is damaged: pick another from sidecar list --remote",
        ) from None
    finally:
        os.close(fd)


def _check_identity(copy: RemoteCopy, identities: Sequence[Any]) -> None:
    """A configuration error (exit 2), not a damaged copy, when none of ``identities`` is
    the key of a recipient the manifest says the copy was encrypted to."""
    recipients = [str(r) for r in copy.offsite.get("recipients") or []]
    if not recipients:
        return  # not recorded: only the decryption can tell
    ours = {str(i.to_public()) for i in identities if hasattr(i, "to_public")}
    if ours & set(recipients):
        return
    shown = ", ".join(r[:16] + "..." for r in recipients)
    mine = ", ".join(r[:16] + "..." for r in sorted(ours)) or "no x25519 key"
    raise ConfigError(
        f"offsite copy {copy.id} is encrypted to {shown}; SIDECAR_AGE_IDENTITY_FILE holds "
        f"the key of {mine}",
        hint="set SIDECAR_AGE_IDENTITY_FILE to the identity of one of the copy's recipients "
        "(`age-keygen -y <file>` prints its public key); the copy is not known to be damaged",
    )


def drill(
    store: ObjectStore,
    copy: RemoteCopy,
    scratch: Path,
    *,
    identities: Sequence[Any] | None,
    full: bool = False,
) -> list[str]:
    """A restore drill of ``copy`` into a scratch file in ``scratch`` (never the live
    database): download, decrypt, decompress, sha256, quick_check (``full``:
    integrity_check), row counts against the manifest. The problems found ([]: good)."""
    problems = copy.problems
    if problems:
        return problems
    work = scratch / f".offsite-drill-{os.getpid()}-{secrets.token_hex(4)}.db"
    try:
        try:
            _, sha = fetch(store, copy, work, identities=identities)
        except RefusedError as exc:  # the bytes do not decrypt or decompress
            return [exc.message]
        if sha != copy.manifest.get("sha256"):
            return ["sha256 of the restored database differs from the manifest"]
        facts = inspect_file(work, full)
        problems = list(facts.problems)
        expected = copy.manifest.get("row_counts") or {}
        if not problems and facts.row_counts != expected:
            problems.append(f"row counts {facts.row_counts} differ from the manifest's {expected}")
        return problems
    finally:
        work.unlink(missing_ok=True)


def prune_copies(
    store: ObjectStore,
    listing: RemoteListing,
    *,
    database: Path | None,
    keep: int,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    protect: Sequence[str] = (),
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[RemoteCopy]:
    """Delete the copies :func:`sidecar.backup.retention.retention` does not keep (the same policy
    as local backups: the newest complete copy is always kept, and every copy a kept one
    names as holding data since lost); ids in ``protect`` are kept too. Manifest first.
    Only ``database``'s copies are weighed (:meth:`RemoteListing.of`): a copy of another
    database sharing the prefix is never deleted by this one's retention."""
    listing = listing.of(database)
    by_id = {c.id: c for c in listing.copies}
    _, delete = retention(
        [c.as_backup() for c in listing.copies],
        keep=keep,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        now=now or datetime.now(UTC),
    )
    wanted = {remote_id(p) for p in protect}
    gone = [by_id[b.id] for b in delete if b.id not in wanted]
    if not dry_run:
        for copy in gone:
            store.delete(copy.manifest_key)
            if copy.data is not None:
                store.delete(copy.data.key)
    log.info("offsite.pruned", deleted=[c.id for c in gone], dry_run=dry_run)
    return gone
