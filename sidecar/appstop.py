"""A durable record of the app containers the sidecar stopped, beside the lease on the data
volume: ``<db>.sidecar-stopped``.

The pipeline stops an app that never lets go of its database (SQLite's exclusive locking
mode) and starts it again in a ``finally``. A SIGKILL, an OOM kill or a host reboot skips that
``finally``: the app stays down, and nothing in Docker says that the sidecar did it. So the
stop is written down first (fsynced, renamed into place), and the record is removed only once
the app has been started again. The next run under the lease (:func:`start_recorded`) finds
the record, starts the containers it names that are still stopped, and removes it.

The record lives on the data volume, beside the lease, because that is what every sidecar of
this database shares (the backups folder may be another volume, or missing).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sidecar.containers.apps import AppRef, Apps, Replica
from sidecar.fs import fsync_dir
from sidecar.logs import get_logger

log = get_logger(__name__)

RECORD_SUFFIX = ".sidecar-stopped"


def record_path(db: Path) -> Path:
    return db.with_name(db.name + RECORD_SUFFIX)


def read_record(db: Path) -> dict[str, Any] | None:
    """The record of an unfinished stop, or None. An unreadable record counts as one (with
    no containers): it must not be ignored silently."""
    path = record_path(db)
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"containers": [], "unreadable": True}
    return loaded if isinstance(loaded, dict) else {"containers": [], "unreadable": True}


def recorded_app(record: dict[str, Any]) -> AppRef | None:

    replicas = tuple(
        Replica(str(c.get("name", "?")), str(c.get("id", "")))
        for c in record.get("containers", [])
        if isinstance(c, dict) and c.get("id")
    )
    if not replicas:
        return None
    return AppRef(name=", ".join(r.name for r in replicas), id=replicas[0].id, replicas=replicas)


def _write(db: Path, app: AppRef, command: str) -> None:
    path = record_path(db)
    document = {
        "containers": [{"name": r.name, "id": r.id} for r in app.containers],
        "command": command,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "stopped_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    _fsync_folder(path.parent)


def _clear(db: Path) -> None:
    record_path(db).unlink(missing_ok=True)
    _fsync_folder(db.parent)


def _fsync_folder(folder: Path) -> None:
    with suppress(OSError):
        fsync_dir(folder)


@contextmanager
def stopped(
    db: Path, apps: Apps, app: AppRef, *, timeout: float, command: str = "deploy"
) -> Iterator[None]:
    """``apps.stopped(app)``, recorded: the record is on disk before the first stop and is
    removed only after the app was started again. If starting it fails, or this process dies
    in between, the record stays for the next run (:func:`start_recorded`)."""
    _write(db, app, command)
    body_error: BaseException | None = None
    try:
        with apps.stopped(app, timeout=timeout):
            try:
                yield
            except BaseException as exc:  # noqa: BLE001 (re-raised below, once started)
                body_error = exc
    except BaseException as start_error:
        # Starting it again failed: the record stays, and the next run tries again.
        if body_error is not None and start_error is not body_error:
            start_error.__context__ = body_error
        raise
    _clear(db)
    if body_error is not None:
        raise body_error


def describe(record: dict[str, Any]) -> str:
    """One line about a record, for a summary or a health check."""
    names = [str(c.get("name", "?")) for c in record.get("containers", []) if isinstance(c, dict)]
    return (
        f"{', '.join(names) or 'the app'} stopped by sidecar {record.get('command', '?')} "
        f"since {record.get('stopped_at', '?')} and not started again: "
        f"docker start {' '.join(names) or '<app>'} (or run sidecar deploy)"
    )


def start_recorded(db: Path, apps: Apps | None, app: AppRef | None) -> tuple[list[str], list[str]]:
    """Start what an interrupted run stopped (call it under the lease): the names started,
    and warnings for what could not be (no Docker API, no app configured). The record is
    removed once nothing it names is left stopped.

    Only containers of the configured ``app`` are started: the record sits on a volume the
    app can write, so it never decides alone which containers the sidecar touches."""
    record = read_record(db)
    if record is None:
        return [], []
    recorded = recorded_app(record)
    since = f"since {record.get('stopped_at', '?')} by {record.get('command', '?')}"
    if recorded is None:
        _clear(db)
        log.warning("app.stop_record_unreadable", record=str(record_path(db)))
        return [], []
    if apps is None or app is None:
        log.warning("app.left_stopped", containers=recorded.name, stopped=since,
                    hint="no Docker API or no SIDECAR_APP here: start it by hand")  # fmt: skip
        return [], [describe(record)]
    ours = {r.id for r in app.containers}
    targets = tuple(r for r in recorded.containers if r.id in ours)
    foreign = [r.name for r in recorded.containers if r.id not in ours]
    if foreign:
        log.warning("app.stop_record_ignored", containers=foreign,
                    reason="not the configured app's containers (any more)")  # fmt: skip
    started: list[str] = []
    if targets:
        log.info("app.starting_after_interrupted_run",
                 containers=", ".join(r.name for r in targets), stopped=since)  # fmt: skip
        names = ", ".join(r.name for r in targets)
        started = apps.start_stopped(replace(app, name=names, id=targets[0].id, replicas=targets))
    _clear(db)
    return started, []
