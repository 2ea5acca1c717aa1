"""What the backups folder remembers about offsite copies, for `health` and `list --remote`
without a network call: the last upload (and the last good one), and restore drills.

One small JSON file, ``sidecar-offsite.json``, replaced atomically under the folder lock.
The local manifest of each uploaded backup also gets an ``offsite`` section, and every
upload, failure and drill is a line in the history file (store.append_history).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar.backup.store import BackupInfo, folder_lock
from sidecar.fs import create_exclusive, fsync_dir, pump

STATE_NAME = "sidecar-offsite.json"


def load(backup_dir: Path) -> dict[str, Any]:
    """The state ({} when there is none or it is unreadable)."""
    try:
        loaded = json.loads((backup_dir / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write_json(path: Path, document: dict[str, Any], group: int | None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = create_exclusive(tmp, 0o640 if group is not None else 0o600, group)
    try:
        pump([json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"], fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def update(backup_dir: Path, group: int | None = None, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the state (``drills`` is merged per copy id)."""
    with folder_lock(backup_dir):
        current = load(backup_dir)
        drills = {**current.get("drills", {}), **changes.pop("drills", {})}
        current = {**current, **changes, "drills": drills}
        _write_json(backup_dir / STATE_NAME, current, group)
    return current


def record_upload(info: BackupInfo, offsite: dict[str, Any], group: int | None) -> None:
    """Write ``offsite`` into the local manifest of ``info`` (atomically), then the state."""
    backup_dir = info.path.parent
    with folder_lock(backup_dir):
        manifest = {**info.manifest, "offsite": offsite}
        _write_json(info.manifest_path, manifest, group)
    at = datetime.now(UTC).isoformat()
    update(
        backup_dir,
        group,
        last_upload={"ok": True, "at": at, "id": offsite.get("id")},
        last_success={"at": at, "id": offsite.get("id")},
    )
