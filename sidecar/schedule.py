"""Long-running mode: scheduled backups after the deploy, until SIGTERM.

``SIDECAR_SCHEDULE`` is an interval (``6h``) or a cron expression (``0 3 * * *``, UTC). A failed
scheduled backup is logged and retried at the next slot; it never ends the process, and the
image's HEALTHCHECK turns unhealthy when backups stop succeeding for SIDECAR_MAX_BACKUP_AGE.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from croniter import croniter

from sidecar import alerts
from sidecar.errors import ConfigError, ExitCode, SidecarError
from sidecar.logs import get_logger
from sidecar.parsers import parse_duration
from sidecar.signals import Stop

log = get_logger(__name__)

T = TypeVar("T")


def next_run(schedule: str, after: datetime) -> datetime:
    """The next time ``schedule`` fires strictly after ``after`` (UTC)."""
    try:
        seconds = parse_duration(schedule)
    except ValueError:
        pass
    else:
        if seconds <= 0:
            raise ConfigError("SIDECAR_SCHEDULE: an interval must be positive", hint="e.g. 6h")
        return after + timedelta(seconds=seconds)
    if not croniter.is_valid(schedule):
        raise ConfigError(
            f"SIDECAR_SCHEDULE (--schedule): {schedule!r} is neither an interval nor a cron "
            "expression",
            hint="use an interval like 6h or a cron expression like '0 3 * * *' (UTC)",
        )
    fired: datetime = croniter(schedule, after).get_next(datetime)
    return fired


def validate(schedule: str) -> None:
    next_run(schedule, datetime.now(UTC))


def run_once(job: Callable[[], T], *, fatal: frozenset[ExitCode] = frozenset()) -> T | Exception:
    """Run one job of the long-running mode: its result, or its failure logged and returned,
    not raised (the job's own alerts announced it): the schedule outlives any one run. A
    failure whose exit code is in ``fatal`` is raised."""
    try:
        return job()
    except SidecarError as exc:
        if exc.exit_code in fatal:
            raise
        log.error(  # noqa: TRY400 (expected failure: one line, no traceback)
            "schedule.job_failed",
            error=exc.message,
            hint=exc.hint,
            exit_code=int(exc.exit_code),
        )
        return exc
    except Exception as exc:  # logged with its traceback, retried at the next slot
        log.exception(
            "schedule.job_crashed",
            error=repr(exc),
            hint="retried at the next slot; please report this with the log",
        )
        return exc


def run_forever(
    schedule: str,
    job: Callable[[], object],
    stop: Stop,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Run ``job`` at every slot of ``schedule`` until ``stop`` is set; returns the run count.
    /metrics (SIDECAR_METRICS_ADDR) is served from here on: this is the long-running mode."""
    alerts.serve_metrics()
    runs = 0
    while not stop.is_set():
        due = next_run(schedule, now())
        log.info("schedule.next", at=due.isoformat())
        if stop.wait(max(0.0, (due - now()).total_seconds())):
            break
        runs += 1
        run_once(job)
    log.info("schedule.stopped", runs=runs)
    return runs
