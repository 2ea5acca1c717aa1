"""The last verification of each backup, recorded beside it (``<id>.verify.json``), so that
`list`, `health` and `restore latest` know it without reading the file again."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar.backup.names import CHANGED, manifest_path, partial_path, verification_path
from sidecar.fs import write_exclusive
from sidecar.logs import get_logger

log = get_logger(__name__)


def load_verification(path: Path) -> dict[str, Any] | None:
    """The last verification of the backup at ``path``, when recorded and readable."""
    try:
        loaded = json.loads(verification_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) and loaded.get("id") == path.name else None


def record_verification(
    path: Path, problems: Sequence[str], *, level: str, st: os.stat_result
) -> None:
    """Write the result of a verification beside the backup (``<id>.verify.json``), with
    the file's size and mtime as they were when it was read: :func:`known_problem` trusts a
    record only while the file is still that file. Best effort: a read-only backups folder
    (a verification job) keeps its result on stdout only."""
    record = {
        "id": path.name,
        "ok": not problems,
        "problems": list(problems),
        "level": level,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    final = verification_path(path)
    work = partial_path(final)
    try:
        work.unlink(missing_ok=True)
        write_exclusive(work, json.dumps(record, sort_keys=True).encode() + b"\n", 0o600, None)
        os.replace(work, final)
    except OSError as exc:
        with suppress(OSError):
            work.unlink(missing_ok=True)
        log.warning("backup.check_not_recorded", id=path.name, error=exc.strerror or str(exc))


def known_problem(path: Path, manifest: dict[str, Any], st: os.stat_result | None) -> str | None:
    """What is known against a backup without reading it: its last recorded verification
    failed; or (no record for the file as it is now) its size differs from the manifest's,
    or it was modified after its manifest was written (sidecar writes the file first and
    never touches it again). A passing record for the file as it is now clears the last."""
    if st is None:
        return "the file cannot be read"
    expected = manifest.get("size")
    if isinstance(expected, int) and st.st_size != expected:
        return f"size {st.st_size} differs from the manifest's {expected}"
    record = load_verification(path)
    if record is not None and (record.get("size"), record.get("mtime_ns")) == (
        st.st_size,
        st.st_mtime_ns,
    ):
        found = record.get("problems") or ["failed"]
        ok = bool(record.get("ok"))
        return None if ok else f"verify found it corrupt ({record.get('at')}): {found[0]}"
    with suppress(OSError):
        if st.st_mtime_ns > manifest_path(path).stat().st_mtime_ns:
            return CHANGED
    return None
