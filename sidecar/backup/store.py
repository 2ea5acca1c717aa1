"""The backups folder: each backup and its manifest, listing, finding, the folder lock,
leftovers of interrupted runs, and the history file."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar.backup.names import (
    BACKUP_NAME,
    EPOCH,
    HISTORY_NAME,
    LOCK_NAME,
    MAX_NAME,
    PARTIAL_NAME,
    TIMESTAMP,
    is_source,
    manifest_path,
)
from sidecar.backup.verification import known_problem
from sidecar.errors import ConfigError, RefusedError, UnavailableError
from sidecar.fs import file_mode, fsync_dir
from sidecar.logs import get_logger

log = get_logger(__name__)


CLOCK_SLACK_S = 300.0  # the clocks of containers on one host agree far better than this


@dataclass(frozen=True)
class BackupInfo:
    """One backup in the backups folder, as named and described by its manifest."""

    id: str
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = EPOCH
    stem: str = ""
    environment: str = ""
    seq: int = 0
    size: int = 0
    reason: str = "unknown"
    compressed: bool = False
    # Why the backup cannot be trusted now, known without reading it (see known_problem).
    problem: str | None = None

    @property
    def verified(self) -> bool:
        """A manifest written by sidecar (only ever after verification passed), and nothing
        known against the file since: the last ``verify`` passed, or it never ran and the
        file is as large as the manifest says and not modified after it."""
        return bool(self.manifest.get("verified")) and self.problem is None

    @property
    def source(self) -> str:
        """The database this backup was taken of, as its manifest names it ("" without one)."""
        return str(self.manifest.get("source") or "")

    @property
    def database(self) -> Path:
        """The database this backup belongs to: the manifest's source; for a file without
        one, only its name's stem is known."""
        return Path(self.source or self.stem)

    def belongs_to(self, db: Path) -> bool:
        """Whether this is a backup of ``db`` (:func:`is_source`, by the manifest's source).
        A file without a manifest is judged by its name's stem, the only thing known about
        it (it is never restored)."""
        if self.source:
            return is_source(Path(self.source), db)
        return self.stem == db.stem

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.path)

    @property
    def sort_key(self) -> tuple[datetime, int, str]:
        """Newest last, by name: a backup is never named before one already in the folder
        (:func:`names.new_backup_path`), whatever the clock did meanwhile."""
        return (self.created_at, self.seq, self.id)

    def age_s(self, now: datetime) -> float:
        """Seconds since the backup was taken; negative when it is dated in the future."""
        return (now - self.taken_at).total_seconds()

    def in_future(self, now: datetime) -> bool:
        """Taken more than :data:`CLOCK_SLACK_S` after ``now``: the clock is behind now, or
        was ahead then; its age says nothing (health, alerts and the deploy treat it as no
        fresh backup)."""
        return self.age_s(now) < -CLOCK_SLACK_S

    @property
    def taken_at(self) -> datetime:
        """When the backup was taken by the clock of the time (its manifest's); the name's
        stamp may be later than that, after the clock went back (see new_backup_path)."""
        with suppress(KeyError, TypeError, ValueError):
            taken = datetime.fromisoformat(str(self.manifest["created_at"]))
            if taken.tzinfo is not None:
                return taken
        return self.created_at

    @classmethod
    def load(cls, path: Path) -> BackupInfo | None:
        """The backup at ``path``, or None when the name is not one sidecar gives."""
        match = BACKUP_NAME.match(path.name)
        if match is None:
            return None
        manifest: dict[str, Any] = {}
        with suppress(OSError, ValueError):
            loaded = json.loads(manifest_path(path).read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and loaded.get("id") == path.name:
                manifest = loaded
        try:
            st: os.stat_result | None = path.lstat()
        except OSError:
            st = None
        size = st.st_size if st is not None else 0
        created = datetime.strptime(match["ts"], TIMESTAMP).replace(tzinfo=UTC)
        return cls(
            id=path.name,
            path=path,
            manifest=manifest,
            created_at=created,
            stem=match["stem"],
            environment=match["env"],
            seq=int(match["seq"] or 0),
            size=size,
            reason=str(manifest.get("reason", "unknown")),
            compressed=bool(match["zst"]),
            problem=known_problem(path, manifest, st) if manifest else None,
        )

    @property
    def rows_vanished(self) -> dict[str, Any] | None:
        """The manifest's :func:`rows_vanished` finding, when this backup has one."""
        found = self.manifest.get("rows_vanished")
        return found if isinstance(found, dict) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "created_at": self.created_at.isoformat(),
            "size": self.size,
            "reason": self.reason,
            "verified": self.verified,
            "problem": self.problem,
            "source": self.source or None,
            "compressed": self.compressed,
            "environment": self.environment,
            "sha256": self.manifest.get("sha256"),
            "rows_vanished": self.rows_vanished,
        }


@contextmanager
def folder_lock(backup_dir: Path, *, shared: bool = False, timeout: float = 60.0) -> Iterator[None]:
    """Serialise backup runs on one folder, so cleaning leftovers never hits a live partial.

    A separate lock file: an flock on it is unrelated to SQLite's locks on the database.
    """
    fd = os.open(backup_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UnavailableError(
                        f"another sidecar is writing to {backup_dir}",
                        hint="wait for the running backup to finish, then retry",
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def clean_partials(backup_dir: Path) -> list[str]:
    """Delete leftovers of interrupted runs: only names matching sidecar's partial pattern."""
    removed = []
    for entry in os.scandir(backup_dir):
        if PARTIAL_NAME.match(entry.name) and not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
            removed.append(entry.name)
    if removed:
        fsync_dir(backup_dir)
        log.info("backup.cleaned", files=removed)
    return removed


def not_a_folder(backup_dir: Path) -> ConfigError:
    return ConfigError(
        f"backups folder {backup_dir} is not a folder",
        hint="set SIDECAR_BACKUP_DIR to the backups volume's mount point",
    )


def refuse_fresh_over_backups(db: Path, backup_dir: Path, *, allow_fresh: bool) -> None:
    """Refuse to create ``db`` from empty while ``backup_dir`` holds verified backups: a
    missing database beside backups is lost data or a wrong path, not a first deployment.
    ``allow_fresh`` (SIDECAR_ALLOW_FRESH) says it is on purpose."""
    if allow_fresh:
        return
    # Every backup sidecar wrote a manifest for counts, even one modified since or found
    # corrupt by ``verify``: it still says a database lived here (``verified`` now also means
    # "nothing known against the file", which is no reason to create an empty one over it).
    verified = [b for b in list_backups(backup_dir) if b.manifest.get("verified")]
    if not verified:
        return
    ours = [b for b in verified if b.belongs_to(db)]
    hint = "to start with an empty database on purpose: SIDECAR_ALLOW_FRESH=1 (--allow-fresh)"
    if ours:
        doubtful = sum(1 for b in ours if not b.verified)
        doubt = f", {doubtful} of them changed or corrupt since" if doubtful else ""
        raise RefusedError(
            f"database {db} is missing, but {len(ours)} verified backup(s) of it exist "
            f"(newest {ours[0].id}{doubt}): refusing to create an empty one",
            hint="mount the data volume (or fix SIDECAR_DATABASE); to bring the data back: "
            f"`sidecar restore latest`; {hint}",
        )
    others = sorted({str(b.database) for b in verified})
    raise RefusedError(
        f"database {db} is missing, and {backup_dir} holds backups of "
        f"{', '.join(others)} only: refusing to create an empty one",
        hint=f"check SIDECAR_DATABASE (a typo?) and that the data volume is mounted; {hint}",
    )


def list_backups(backup_dir: Path) -> list[BackupInfo]:
    """Backups sidecar named, newest first. Symlinks and other files are never listed."""
    try:
        entries = list(os.scandir(backup_dir))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise not_a_folder(backup_dir) from None
    found = []
    for entry in entries:
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            continue
        info = BackupInfo.load(Path(entry.path))
        if info is not None:
            found.append(info)
    return sorted(found, key=lambda b: b.sort_key, reverse=True)


def backups_of(backup_dir: Path, database: Path | None) -> list[BackupInfo]:
    """The backups of ``database`` (:meth:`BackupInfo.belongs_to`), newest first; every
    backup when no database is configured. The one notion of "this database's backups"
    that every command uses: two databases may share one backups folder."""
    found = list_backups(backup_dir)
    return found if database is None else [b for b in found if b.belongs_to(database)]


def latest_verified(backup_dir: Path, database: Path | None = None) -> BackupInfo | None:
    """The newest verified backup of ``database`` (of any database when None)."""
    return next((b for b in backups_of(backup_dir, database) if b.verified), None)


def missing_backups(backup_dir: Path, database: Path | None = None) -> list[str]:
    """IDs whose manifest exists but whose backup file is gone (deleted by hand, lost); only
    those whose manifest names ``database`` when given."""
    try:
        names = set(os.listdir(backup_dir))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise not_a_folder(backup_dir) from None
    gone = [
        name.removesuffix(".json")
        for name in names
        if name.endswith(".json")
        and BACKUP_NAME.match(name.removesuffix(".json"))
        and name.removesuffix(".json") not in names
    ]
    if database is not None:
        gone = [g for g in gone if _manifest_names(backup_dir / f"{g}.json", database)]
    return sorted(gone)


def _manifest_names(path: Path, database: Path) -> bool:
    """Whether the manifest at ``path`` is of ``database`` (unreadable: judged by its name)."""
    match = BACKUP_NAME.match(path.name.removesuffix(".json"))
    try:
        source = json.loads(path.read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        source = None
    if source:
        return is_source(Path(str(source)), database)
    return match is not None and match["stem"] == database.stem


def find_backup(
    backup_dir: Path,
    backup_id: str,
    *,
    verified_only: bool = False,
    database: Path | None = None,
) -> BackupInfo:
    """The listed backup named ``backup_id``, or ``latest``: the newest of ``database``'s
    backups (:func:`backups_of`). Never a path: no traversal. A backup named by its ID is
    found whichever database it belongs to; the caller decides what that may be used for."""
    if len(backup_id) > MAX_NAME or not backup_id.isprintable():
        shown = backup_id[:40].encode("unicode_escape").decode("ascii")
        raise RefusedError(
            f"'{shown}{'...' if len(backup_id) > 40 else ''}' is not a backup name",
            hint="run sidecar list and pass one of the IDs it shows",
        )
    if backup_id != os.path.basename(backup_id) or backup_id in ("", ".", ".."):
        raise RefusedError(
            f"{backup_id!r} is a path; only backup names from `sidecar list` are accepted",
            hint="run sidecar list and pass one of the IDs it shows",
        )
    backups = list_backups(backup_dir)
    if backup_id == "latest":
        ours = [b for b in backups if database is None or b.belongs_to(database)]
        pool = [b for b in ours if b.verified] if verified_only else ours
        if not pool:
            raise no_backups_of(database, backups, backup_dir, verified=verified_only)
        return pool[0]
    for info in backups:
        if info.id == backup_id:
            return info
    candidate = backup_dir / backup_id
    if candidate.is_symlink():
        raise RefusedError(f"{backup_id} is a symlink", hint="backups must be regular files")
    raise RefusedError(
        f"no backup named {backup_id} in {backup_dir}", hint="run sidecar list to see the IDs"
    )


def no_backups_of(
    database: Path | None, backups: Sequence[BackupInfo], backup_dir: Path, *, verified: bool
) -> RefusedError:
    """The refusal when ``database`` has no (verified) backup, naming the databases whose
    backups the folder does hold: never fall back to another database's backup."""
    kind = "verified backups" if verified else "backups"
    others = sorted({str(b.database) for b in backups if not verified or b.verified})
    if database is None or not others:
        return RefusedError(f"no {kind} in {backup_dir}", hint="take one with: sidecar backup")
    return RefusedError(
        f"no {kind} of {database} in {backup_dir}; it holds {kind} of {', '.join(others)}",
        hint="check SIDECAR_DATABASE; to restore another database's backup into this one on "
        "purpose, name it: sidecar restore <id> --from-other-database",
    )


def rows_vanished(previous: BackupInfo, row_counts: dict[str, int]) -> dict[str, Any] | None:
    """Whether most of the data in ``previous`` is gone from a database now holding
    ``row_counts`` (fewer than a tenth of its rows): what a wiped volume looks like.
    See docs/design.md, 'Rows vanished'.
    """
    now = sum(int(n) for n in row_counts.values())
    carried = previous.rows_vanished
    if carried is not None and now * 10 < int(carried.get("rows_before", 0)):
        return {**carried, "rows_now": now}
    before = {t: int(n) for t, n in previous.manifest.get("row_counts", {}).items()}
    total = sum(before.values())
    if not total or now * 10 >= total:
        return None
    shrunk = {
        t: {"before": n, "now": int(row_counts.get(t, 0))}
        for t, n in before.items()
        if n and int(row_counts.get(t, 0)) * 10 < n
    }
    return {"since": previous.id, "rows_before": total, "rows_now": now, "tables": shrunk}


def append_history(backup_dir: Path, record: dict[str, Any], *, group: int | None = None) -> None:
    """Append one JSON line to ``sidecar-history.jsonl`` beside the backups (O_APPEND)."""
    line = json.dumps({"at": datetime.now(UTC).isoformat(), **record}, default=str) + "\n"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(backup_dir / HISTORY_NAME, flags, file_mode(group))
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
