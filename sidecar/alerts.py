"""Who hears about a run: dead-man pings, notifications and metrics around each unit of work.

Two ways in, both safe to call whatever is configured (with nothing configured they cost
nothing):

- ``with alerts.observing("backup") as run: ...; run.result = result`` around a unit of work
  (a backup, a deploy): the ``/start`` ping before it; after it, the metrics, the success or
  ``/fail`` ping and the notification, in that order. A restore or a migrate
  (``by_hand=True``) has its notification alone.
- ``alerts.event("offsite.failed", error=..., hint=..., exit_code=5, backup=id)`` from
  anywhere, one line: the notification (when SIDECAR_NOTIFY_ON wants it) and, for
  ``<kind>.done`` / ``<kind>.failed`` of offsite and drill, the metrics.

Neither ever changes the outcome: everything here runs after the work, is bounded in time
(:mod:`sidecar.deadline`) and turns its own failures into warning events. The CLI calls
:func:`configure` once with plain values.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar import notify
from sidecar.errors import ExitCode, SidecarError
from sidecar.logs import get_logger
from sidecar.notify import Event, Notifier
from sidecar.ping import Pinger

if TYPE_CHECKING:
    from sidecar.metrics import Metrics
    from sidecar.report import Result

log = get_logger(__name__)


@dataclass
class Channels:
    """Where news goes. Built by :func:`configure` from plain values."""

    database: Path | None
    host: str
    notifier: Notifier | None = None
    pinger: Pinger | None = None
    metrics_wanted: bool = False
    metrics_addr: str | None = None
    metrics_file: Path | None = None
    backup_dir: Path | None = None
    max_backup_age: float = 26 * 3600.0
    _metrics: Metrics | None = None

    @property
    def metrics(self) -> Metrics | None:
        """Built on first use: prometheus_client is imported only by runs that record."""
        if self.metrics_wanted and self._metrics is None:
            from sidecar.metrics import Metrics  # noqa: PLC0415 - see the docstring

            self._metrics = Metrics(self.database.name if self.database else "")
        return self._metrics


@dataclass
class Run:
    """One observed unit of work. The work sets ``result``; :func:`note` adds what only the
    work knows before it fails (the backup it took, that the app is what failed)."""

    kind: str
    by_hand: bool = False  # see observing()
    result: Result | None = None
    backup: str | None = None
    restore: str | None = None
    app_unhealthy: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


_channels: Channels | None = None
_current: ContextVar[Run | None] = ContextVar("sidecar_run", default=None)
_serving: list[str] = []  # the address served, once per process


def configure(
    *,
    database: Path | None,
    environment: str,
    notify_urls: str | None = None,
    notify_on: frozenset[str] = frozenset(),
    timeout: float = 5.0,
    ping_url: str | None = None,
    metrics_addr: str | None = None,
    metrics_file: Path | None = None,
    backup_dir: Path | None = None,
    max_backup_age: float = 26 * 3600.0,
) -> None:
    """Set the channels for this process (again: replaces them). ``metrics_addr``: where
    :func:`serve_metrics` serves /metrics."""
    global _channels  # noqa: PLW0603 - one process, one set of channels, set by the CLI
    if not (notify_urls or ping_url or metrics_addr or metrics_file):
        _channels = None
        return
    _channels = Channels(
        database=database,
        host=f"{socket.gethostname()} (environment {environment})",
        notifier=Notifier(notify_urls, on=notify_on, timeout=timeout) if notify_urls else None,
        pinger=Pinger(ping_url, timeout=timeout) if ping_url else None,
        metrics_wanted=bool(metrics_addr or metrics_file),
        metrics_addr=metrics_addr,
        metrics_file=metrics_file,
        backup_dir=backup_dir,
        max_backup_age=max_backup_age,
    )


def serve_metrics() -> None:
    """Serve /metrics on SIDECAR_METRICS_ADDR, once per process: the long-running mode calls
    it as its schedule starts (never a one-shot run, nor the HEALTHCHECK in the same
    container, which would find the port taken)."""
    channels = _channels
    if channels is None or not channels.metrics_addr or _serving:
        return
    metrics = channels.metrics
    if metrics is None:
        return
    _refresh_backups(channels)
    metrics.serve(channels.metrics_addr)
    _serving.append(channels.metrics_addr)


def event(
    name: str,
    *,
    error: str | None = None,
    hint: str | None = None,
    exit_code: int | None = None,
    backup: str | None = None,
    restore: str | None = None,
    seconds: float | None = None,
    **details: Any,
) -> None:
    """Announce ``name`` (one of :data:`sidecar.notify.EVENTS`). Never raises.

    ``offsite.done`` / ``offsite.failed`` / ``drill.done`` / ``drill.failed`` also set the
    metrics of their kind (last success or failure time, failures by exit code, duration).
    """
    channels = _channels
    if channels is None:
        return
    kind, _, outcome = name.partition(".")
    metrics = _guarded("metrics", lambda: channels.metrics)
    if metrics is not None and kind in ("offsite", "drill"):
        if outcome == "done":
            doc = {"seconds": seconds} if seconds is not None else {}
            _guarded("metrics", lambda: metrics.success(kind, doc))
        elif outcome == "failed":
            code = int(exit_code or ExitCode.BUG)
            _guarded("metrics", lambda: metrics.failure(kind, code))
        _write_metrics(channels)
    shown = {k: v for k, v in details.items() if v is not None}
    if seconds is not None:
        shown["seconds"] = round(seconds, 1)
    _announce(channels, Event(name, database=_db(channels), error=error, hint=hint,
                              exit_code=exit_code, backup=backup, restore=restore,
                              host=channels.host, details=shown))  # fmt: skip


def measure(kind: str, result: Result) -> None:
    """Metrics only, for a result that is news to nobody (``plan``: the pending changes)."""
    channels = _channels
    if channels is None or channels.metrics is None:
        return
    metrics = channels.metrics
    _guarded("metrics", lambda: metrics.record(kind, result.to_dict()))
    _write_metrics(channels)


def note(
    *, backup: str | None = None, restore: str | None = None, app_unhealthy: bool = False
) -> None:
    """Tell the current observed run what it did so far (no-op outside one)."""
    run = _current.get()
    if run is None:
        return
    run.backup = backup or run.backup
    run.restore = restore or run.restore
    run.app_unhealthy = app_unhealthy or run.app_unhealthy


@contextmanager
def observing(kind: str, *, enabled: bool = True, by_hand: bool = False) -> Iterator[Run]:
    """Observe one unit of work of ``kind`` (backup, deploy; see the module doc).

    ``by_hand``: a command a person runs (restore, migrate): its notification alone; the
    dead-man ping and the metrics time the scheduled work (backups and deploys)."""
    run = Run(kind, by_hand=by_hand)
    channels = _channels
    if channels is None or not enabled:
        yield run
        return
    token = _current.set(run)
    pinger = None if by_hand else channels.pinger
    if pinger is not None:
        pinger.start()
    try:
        yield run
    except SidecarError as exc:
        _failed(channels, run, pinger, error=exc.message, hint=exc.hint, code=int(exc.exit_code))
        raise
    except Exception as exc:
        hint = "this is a bug in sidecar; please report it with the log"
        _failed(
            channels,
            run,
            pinger,
            error=f"unexpected {type(exc).__name__}: {exc}",
            hint=hint,
            code=1,
        )
        raise
    else:
        _succeeded(channels, run, pinger)
    finally:
        _current.reset(token)


def _succeeded(channels: Channels, run: Run, pinger: Pinger | None) -> None:
    doc = _guarded("result", lambda: run.result.to_dict() if run.result else {}) or {}
    if doc.get("aborted"):
        # Stopped by a signal before any change: no run happened to report, or to ping for.
        log.info("alert.skipped", kind=run.kind, reason="aborted before any change")
        return
    if channels.metrics is not None and not run.by_hand:
        metrics = channels.metrics
        _guarded("metrics", lambda: metrics.success(run.kind, doc))
        _refresh_backups(channels)
        _write_metrics(channels)
    if pinger is not None:
        pinger.success(f"{run.kind} done")
    backup = _backup_id(doc) or run.backup
    if f"{run.kind}.done" in notify.EVENTS:
        _announce(channels, _event(channels, f"{run.kind}.done", backup=backup))
    if run.kind == "restore":  # it took an old backup: not news about the data's rows
        return
    # "catalog" names the event catalog.failed: kept as it was, others may alert on it
    vanished = _guarded("catalog", lambda: _vanished(channels, backup))
    if vanished:
        since = vanished.get("since")
        _announce(channels, _event(
            channels, "backup.rows_vanished", backup=backup,
            error=f"the database holds {vanished.get('rows_now')} rows, against "
            f"{vanished.get('rows_before')} in {since}",
            hint="if the volume was wiped or re-created, restore the data; if the reset was "
            "on purpose, delete that backup (and its .json) by hand",
            restore=f"sidecar restore {since}",
        ))  # fmt: skip


def _failed(
    channels: Channels, run: Run, pinger: Pinger | None, *, error: str, hint: str | None, code: int
) -> None:
    if channels.metrics is not None and not run.by_hand:
        metrics = channels.metrics
        _guarded(
            "metrics", lambda: metrics.failure(run.kind, code, app_unhealthy=run.app_unhealthy)
        )
        _refresh_backups(channels)
        _write_metrics(channels)
    if pinger is not None:
        pinger.fail(code, f"{error}\nhint: {hint}" if hint else error)
    name = f"{run.kind}.failed"
    if run.kind == "deploy" and run.app_unhealthy:
        name = "deploy.unhealthy"
    elif run.kind in ("deploy", "migrate") and code == ExitCode.REFUSED:
        name = f"{run.kind}.refused"
    if name in notify.EVENTS:
        _announce(channels, _event(channels, name, error=error, hint=hint, exit_code=code,
                                   backup=run.backup, restore=run.restore))  # fmt: skip
    if run.kind == "backup":
        stale = _guarded("catalog", lambda: _stale(channels))
        if stale is not None:
            _announce(channels, stale)


def _event(channels: Channels, name: str, **fields: Any) -> Event:
    return Event(name, database=_db(channels), host=channels.host, **fields)


def _db(channels: Channels) -> str | None:
    return str(channels.database) if channels.database else None


def _announce(channels: Channels, event: Event) -> None:
    log.info("alert.event", notify_event=event.name, failed=event.failed)
    if channels.notifier is not None:
        notifier = channels.notifier
        _guarded("notify", lambda: notifier.send(event))


def _backup_id(doc: dict[str, Any]) -> str | None:
    found = doc.get("backup")
    if isinstance(found, dict):
        found = found.get("id")
    return found if isinstance(found, str) else None


def _vanished(channels: Channels, backup: str | None) -> dict[str, Any] | None:
    if backup is None or channels.backup_dir is None:
        return None
    from sidecar.backup import store  # noqa: PLC0415 - keeps this module light to import

    return store.find_backup(channels.backup_dir, backup).rows_vanished


def _stale(channels: Channels) -> Event | None:
    """``backups.stale`` when the newest verified backup is older than the allowed age."""
    if channels.backup_dir is None or not channels.backup_dir.is_dir():
        return None
    from sidecar.backup import store  # noqa: PLC0415

    # This database's backups only: two databases may share one backups folder.
    newest = store.latest_verified(channels.backup_dir, channels.database)
    now = datetime.now(UTC)
    age = newest.age_s(now) if newest else None
    if newest is not None and age is not None and newest.in_future(now):
        when = (
            f"the newest verified backup is dated {-age / 3600:.1f}h in the "
            "future: check the host's clock"
        )
    elif age is not None and age <= channels.max_backup_age:
        return None
    elif age is not None:
        when = f"the newest verified backup is {age / 3600:.1f}h old"
    else:
        when = "there is no verified backup"
    return _event(
        channels, "backups.stale", backup=newest.id if newest else None,
        error=f"{when} (SIDECAR_MAX_BACKUP_AGE is {channels.max_backup_age / 3600:g}h)",
        hint="fix the failing backups (see backup.failed); the HEALTHCHECK is unhealthy now",
    )  # fmt: skip


def _refresh_backups(channels: Channels) -> None:
    metrics, folder = channels.metrics, channels.backup_dir
    if metrics is None or folder is None or not folder.is_dir():
        return
    from sidecar.backup import store  # noqa: PLC0415

    def refresh() -> None:
        verified = [b for b in store.backups_of(folder, channels.database) if b.verified]
        newest = verified[0] if verified else None
        metrics.backups(kept=len(verified), newest=newest.taken_at if newest else None,
                        vanished=bool(newest and newest.rows_vanished))  # fmt: skip

    _guarded("metrics", refresh)


def _write_metrics(channels: Channels) -> None:
    metrics, path = channels.metrics, channels.metrics_file
    if metrics is not None and path is not None:
        _guarded("metrics", lambda: metrics.write_textfile(path))


def _guarded(what: str, call: Callable[[], Any]) -> Any:
    """``call()``, or None and a warning event when it fails: news never fails a command."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - see the docstring
        error = exc.message if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}"
        log.warning(f"{what}.failed", error=error,
                    hint="monitoring only; the command's outcome stands")  # fmt: skip
        return None
