"""Long-running mode under Compose: the `backups` service (profile `backups`, the same image)
starts once the deploy service exited 0, stays up, takes scheduled backups, reports their
freshness through the image's HEALTHCHECK command, and exits 0 on SIGTERM (`docker compose
stop`). The deploy service itself must exit: the app starts only then."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.compose import ComposeProject
from tests.integration.test_deploy_compose import start_app

pytestmark = pytest.mark.integration


def scheduled_backups(project: ComposeProject) -> list[dict[str, Any]]:
    return [
        e
        for e in project.events("backups")
        if e.get("event") == "backup.created" and e.get("reason") == "scheduled"
    ]


def test_scheduled_backups_after_deploy_then_sigterm_exits_0(project: ComposeProject) -> None:
    project.env["SIDECAR_SCHEDULE"] = "2s"
    project.env["COMPOSE_PROFILES"] = "backups"
    start_app(project, schema=None)
    project.run("up", "-d", "backups")
    # The deploy ran first, and exited 0 (the app is up).
    assert project.wait_exit("sidecar") == 0
    assert any(e.get("event") == "deploy.done" for e in project.events("sidecar"))

    deadline = time.monotonic() + 120
    while len(scheduled_backups(project)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(scheduled_backups(project)) >= 2, project.logs("backups")
    sidecar = project.container("backups")
    sidecar.reload()
    assert sidecar.status == "running"

    # The image's HEALTHCHECK command: healthy while backups are fresh, exit 4 once the last
    # verified backup is older than SIDECAR_MAX_BACKUP_AGE.
    fresh = sidecar.exec_run(["sidecar", "health", "--backups-only"])
    assert fresh.exit_code == 0, fresh.output.decode()
    stale = sidecar.exec_run(
        ["sidecar", "health", "--backups-only"], environment={"SIDECAR_MAX_BACKUP_AGE": "1ms"}
    )
    assert stale.exit_code == 4, stale.output.decode()
    assert b"last backup" in stale.output

    # SIGTERM: the current step finishes or aborts safely, then exit 0.
    project.run("stop", "--timeout", "60", "backups")
    sidecar.reload()
    assert sidecar.attrs["State"]["ExitCode"] == 0, project.logs("backups")
    assert any(e.get("event") == "schedule.stopped" for e in project.events("backups"))

    # Every backup the schedule announced is listed as verified.
    listed = project.run("run", "--rm", "--no-deps", "sidecar", "verify", "--json")
    assert '"ok": true' in listed.stdout, listed.stdout
