"""How sidecar names what it writes in the backups folder, and which database a backup is of.

Only files whose names match these patterns are ever listed or deleted: a backups volume may
hold other things, and "never delete a file it did not create" is a promise.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from sidecar.logs import get_logger
from sidecar.settings import Compression

log = get_logger(__name__)

HISTORY_NAME = "sidecar-history.jsonl"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP = "%Y%m%dT%H%M%SZ"
_ENV = r"[A-Za-z0-9][A-Za-z0-9.-]*"
_BASE = rf"(?P<stem>.+)_backup_(?P<env>{_ENV})_(?P<ts>\d{{8}}T\d{{6}}Z)(?:_(?P<seq>\d+))?\.db"
MAX_NAME = 255  # NAME_MAX on Linux: a longer name cannot be a file in the backups folder
BACKUP_NAME = re.compile(rf"^{_BASE}(?P<zst>\.zst)?$")
# Everything sidecar writes before it is complete; the next run deletes only these.
PARTIAL_NAME = re.compile(
    rf"^\.{_BASE.replace('?P<', '?P<p_')}[A-Za-z0-9.]*\.partial(?:-wal|-shm|-journal)?$"
)
LOCK_NAME = ".sidecar-backup.lock"
# The last verification of a backup, beside its manifest (see verification.record).
VERIFICATION_SUFFIX = ".verify.json"
VERIFICATION_NAME = re.compile(rf"^{_BASE}(?:\.zst)?{re.escape(VERIFICATION_SUFFIX)}$")
CHANGED = "modified after its manifest was written: run sidecar verify"


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def verification_path(path: Path) -> Path:
    return path.with_name(path.name + VERIFICATION_SUFFIX)


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


def new_backup_path(
    db: Path, backup_dir: Path, environment: str, now: datetime, compress: Compression
) -> Path:
    """``<stem>_backup_<env>_<UTC stamp>.db``, with ``_N`` after the stamp when one with that
    stamp is there already.

    Never named before a backup already in the folder: backups sort by (stamp, N), and
    `restore latest` and retention take the newest. After the clock went back (a host clock
    that was ahead, then corrected) the name takes the newest stamp there and the N after the
    highest one with it (never a lower N freed by prune). When the backup was taken is in its
    manifest (``created_at``, BackupInfo.taken_at)."""
    prefix = f"{db.stem}_backup_{environment}_"
    stamp, seq = now.astimezone(UTC).strftime(TIMESTAMP), 0
    newest = _newest(backup_dir, prefix)
    if newest is not None and newest[0] >= stamp:
        if newest[0] > stamp:
            log.warning(
                "backup.clock_behind",
                now=stamp,
                newest=newest[0],
                hint="a backup in the folder is dated after now: the clock went back, or was "
                "ahead; this one is named after it so that it is still the newest",
            )
        stamp, seq = newest[0], newest[1] + 1
    suffix = ".db.zst" if compress == "zstd" else ".db"
    while True:  # a name nothing else has taken meanwhile (another database's, ...)
        name = f"{prefix}{stamp}{f'_{seq}' if seq else ''}"
        taken = any(
            os.path.lexists(backup_dir / f"{name}{ext}{extra}")
            for ext in (".db", ".db.zst")
            for extra in ("", ".json")
        )
        if not taken:
            return backup_dir / f"{name}{suffix}"
        seq += 1


def _newest(backup_dir: Path, prefix: str) -> tuple[str, int] | None:
    """The latest (stamp, N) among the backups and manifests named ``prefix<stamp>[_N]...``."""
    try:
        names = os.listdir(backup_dir)
    except OSError:
        return None
    found = [
        (match["ts"], int(match["seq"] or 0))
        for name in names
        if name.startswith(prefix)
        and (match := BACKUP_NAME.match(name.removesuffix(".json"))) is not None
    ]
    return max(found, default=None)


def same_file(a: Path, b: Path) -> bool:
    """The same database path: equal once made absolute, or once symlinks are resolved.
    By path, not by inode: a restore gives the database a new inode, and a missing database
    has none."""
    if os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b)):
        return True
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def is_source(source: Path, db: Path) -> bool:
    """Whether a backup taken of ``source`` is a backup of ``db``: the same path, or the
    same file name where ``source``'s folder is not visible here (another mount point).
    See docs/design.md, 'Which database a backup is of'."""
    if not source.is_absolute():
        # A manifest written before sources were made absolute: which folder "app.db" was
        # in is unknown, so it is no database's backup (restore it by its ID, on purpose,
        # with --from-other-database). Never guessed from the current folder.
        return False
    if same_file(source, db):
        return True
    if os.path.isdir(source.parent):
        return False
    return source.name == db.name
