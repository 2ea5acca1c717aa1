"""The release layout (the app ``depends_on`` the sidecar, ``service_completed_successfully``):
Compose creates the new app container and starts it only once the sidecar has exited 0, so
the sidecar must never start an app that was not running when its deploy began.

The real :class:`AppControl` over the hand-written Docker fake, the real pipeline on real
SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sidecar.containers.control import AppControl
from sidecar.errors import UnavailableError
from sidecar.pipeline.run import run_deploy
from tests.fakes import FakeDocker, compose_container
from tests.unit.test_pipeline import digest, make_db, settings_for


def control(client: FakeDocker) -> AppControl:
    return AppControl(client, project="a", detect_project=False, steady=0.05, poll_interval=0.01)


def app_events(logs: list[MutableMapping[str, Any]]) -> list[str]:
    return [e["event"] for e in logs if e["event"].startswith("app.")]


@pytest.mark.parametrize("state", ["created", "stopped"])
def test_an_app_not_running_when_the_deploy_began_is_left_for_compose(
    tmp_path: Path, state: str
) -> None:
    settings = settings_for(tmp_path)
    make_db(settings.require_database())
    # Created (never started) and stopped look alike to the engine: not running.
    app = compose_container("a", "app", running=False, starts=0 if state == "created" else 1)
    with capture_logs() as logs:
        report = run_deploy(settings, apps=control(FakeDocker(app)))
    assert report.changed
    assert report.backup
    assert not report.restarted
    assert not app.running
    assert [c for c in app.calls if c != "reload"] == []  # never started, stopped, restarted
    assert app_events(logs) == ["app.found", "app.left_for_compose"]
    # No app runs: no lull to wait for (SIDECAR_QUIET_PERIOD is downtime here).
    assert "quiesce.skipped" in [e["event"] for e in logs]
    assert report.quiet is None
    left = next(e for e in logs if e["event"] == "app.left_for_compose")
    assert left["container"] == "a-app-1"
    assert "service_completed_successfully" in left["hint"]


def test_restart_policy_always_leaves_a_created_app_alone_too(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SIDECAR_RESTART="always")
    make_db(settings.require_database())
    app = compose_container("a", "app", running=False)
    report = run_deploy(settings, apps=control(FakeDocker(app)))
    assert not report.restarted
    assert app.calls == []


def test_a_running_app_is_still_restarted_after_a_change(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SIDECAR_QUIET_PERIOD="100ms")
    make_db(settings.require_database())
    app = compose_container("a", "app", healthcheck=True)
    with capture_logs() as logs:
        report = run_deploy(settings, apps=control(FakeDocker(app)))
    assert report.restarted
    assert [c for c in app.calls if c.startswith("restart")] == ["restart:30"]
    assert "app.left_for_compose" not in app_events(logs)
    assert report.quiet is True  # a running app's lull is still waited for


def test_of_a_scaled_service_only_the_replicas_that_ran_are_restarted(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    make_db(settings.require_database())
    up = compose_container("a", "app", 1)
    created = compose_container("a", "app", 2, running=False)
    with capture_logs() as logs:
        report = run_deploy(settings, apps=control(FakeDocker(up, created)))
    assert report.restarted
    assert [c for c in up.calls if c.startswith("restart")] == ["restart:30"]
    assert created.calls == []
    assert not created.running
    left = [e["container"] for e in logs if e["event"] == "app.left_for_compose"]
    assert left == [created.name]


def test_a_lock_held_while_the_app_is_not_running_is_exit_5_and_nothing_is_stopped(
    tmp_path: Path,
) -> None:
    """The stop-and-start of an exclusive-mode app is for an app found running: when the app
    is not running, whoever holds the lock is not the app, and the sidecar must not start it."""
    settings = settings_for(tmp_path, SIDECAR_WAIT_TIMEOUT="500ms")
    db = make_db(settings.require_database())
    app = compose_container("a", "app", running=False)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        before = digest(db)
        with pytest.raises(UnavailableError) as caught:
            run_deploy(settings, apps=control(FakeDocker(app)))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert caught.value.exit_code == 5
    assert app.calls == []
    assert digest(db) == before
