from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from sidecar.errors import ConfigError, RefusedError
from sidecar.schedule import next_run, run_forever, validate
from sidecar.signals import Stop

T0 = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)


def test_interval_schedules() -> None:
    assert next_run("6h", T0) == T0 + timedelta(hours=6)
    assert next_run("90s", T0) == T0 + timedelta(seconds=90)


def test_cron_schedules_in_utc() -> None:
    assert next_run("0 3 * * *", T0) == datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    assert next_run("*/15 * * * *", T0) == datetime(2026, 11, 25, 10, 45, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["every day", "0 3 * *", "61 * * * *", "0s"])
def test_bad_schedules_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="SIDECAR_SCHEDULE"):
        validate(bad)


def test_run_forever_runs_each_slot_and_survives_a_failed_job() -> None:
    stop = Stop()
    calls: list[int] = []

    def job() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RefusedError("disk full", hint="prune")  # logged, the loop goes on
        if len(calls) == 3:
            stop.set()

    runs = run_forever("10ms", job, stop)
    assert runs == 3
    assert calls == [0, 1, 2]


def test_run_forever_returns_at_once_when_stopped_while_waiting() -> None:
    stop = Stop()
    threading.Timer(0.1, stop.set).start()
    assert run_forever("1h", lambda: None, stop) == 0
