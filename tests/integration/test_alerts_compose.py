"""The Compose demo's long-running `backups` service with deploy/monitoring/compose.metrics.yml
serves /metrics from its container, and what it serves is what its backups did; a deploy
whose app never turns healthy is notified with the way back."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, SIDECAR_IMAGE
from tests.integration.compose import ComposeProject, docker_gid
from tests.integration.test_deploy_compose import start_app
from tests.receiver import receiver

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_scheduled_sidecar_in_the_demo_serves_metrics(project: ComposeProject) -> None:
    project.overrides.append(ROOT / "deploy" / "monitoring" / "compose.metrics.yml")
    project.env.update(
        {"SIDECAR_SCHEDULE": "1h", "SIDECAR_METRICS_PORT": "0", "COMPOSE_PROFILES": "backups"}
    )
    start_app(project, schema=None)  # the deploy ran first and exited 0: the app is up
    project.run("up", "-d", "backups")
    published = project.run("port", "backups", "9473").stdout.strip()
    port = int(published.rsplit(":", 1)[1])
    assert published.startswith("127.0.0.1:")

    deadline = time.monotonic() + 120
    labels = frozenset({("database", "portfolio.db"), ("kind", "backup")})
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    while time.monotonic() < deadline:
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if ("sidecar_last_exit_code", labels) in samples:
            break
        time.sleep(1)
    # The long-running service's own first backup, as /metrics reports it.
    assert samples.get(("sidecar_last_exit_code", labels)) == 0, project.logs("backups")
    assert ("sidecar_last_success_timestamp_seconds", labels) in samples
    db = frozenset({("database", "portfolio.db")})
    assert samples[("sidecar_backups_kept", db)] >= 1
    assert samples[("sidecar_backup_newest_age_seconds", db)] < 600
    assert ("sidecar_duration_seconds", db | {("step", "copy")}) in samples

    project.run("stop", "--timeout", "60", "backups")
    service = project.container("backups")
    service.reload()
    assert service.attrs["State"]["ExitCode"] == 0, project.logs("backups")


def test_an_app_never_healthy_after_the_restart_is_notified_with_the_way_back(
    containers: Any, tmp_path: Path, unique_name: Any
) -> None:
    """The sidecar image, a real app that turns unhealthy after the deploy's restart, and a
    webhook receiver on 127.0.0.1 (the sidecar shares the host's network, so 127.0.0.1 is
    the same address on both sides). The README's notification is this test's message."""
    from tests.integration.test_faults import (
        FLAG_HEALTHCHECK,
        SIDECAR_ENV,
        own,
        sidecar_volumes,
        start_stack,
    )

    stack = start_stack(tmp_path, containers, unique_name, healthcheck=FLAG_HEALTHCHECK)
    backups = tmp_path / "backups"
    backups.mkdir()
    own(backups)
    flag = stack.data / "force-unhealthy"
    with receiver() as hook, receiver() as hc:
        sidecar = containers(
            SIDECAR_IMAGE, command=["deploy"], network_mode="host",
            environment={**SIDECAR_ENV, "SIDECAR_APP": stack.app.name,
                         "SIDECAR_HEALTHY_TIMEOUT": "10s",
                         "SIDECAR_NOTIFY": f"json://127.0.0.1:{hook.port}/hook",
                         "SIDECAR_PING_URL": hc.url("/ping/f3b1")},
            volumes={**sidecar_volumes(stack, {str(backups): {"bind": "/backups", "mode": "rw"}}),
                     "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
            group_add=[docker_gid()],
        )  # fmt: skip
        for chunk in sidecar.logs(stream=True, follow=True):
            if b'"app.restarting"' in chunk:
                flag.touch()
                break
        code = int(sidecar.wait(timeout=300)["StatusCode"])
        output = sidecar.logs().decode("utf-8", "replace")
        assert code == 4, output[-3000:]
        [request] = hook.wait_for(1)
        assert hc.paths() == ["/ping/f3b1/start", "/ping/f3b1/fail"], output[-3000:]
    flag.unlink()
    message = request.json()
    (tmp_path / "notification.json").write_text(json.dumps(message, indent=2))
    print("NOTIFICATION", json.dumps(message))  # the README pastes this one
    backup = next(p.name for p in backups.iterdir() if p.name.endswith(".db"))
    assert message["type"] == "failure"
    assert message["title"].startswith(
        "sidecar: deploy of /app/data/portfolio.db: the app is not healthy after the restart "
        "(exit 4) on "
    )
    lines = message["message"].splitlines()
    assert any(line.startswith("error: app container ") for line in lines)
    assert f"backup: {backup}" in lines
    assert f"restore: sidecar restore {backup}" in lines
    assert any(line.startswith("host: ") for line in lines)
    assert hc.requests[1].body.decode().startswith("exit_code=4\n")
