"""The Docker seam on the real engine: two Compose projects with the same service name, real
stop/start/restart, real HEALTHCHECKs, and self-detection from inside a sidecar container."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import sidecar
from sidecar.containers.apps import PROJECT_LABEL, SERVICE_LABEL
from sidecar.containers.control import AppControl
from sidecar.errors import ConfigError, HealthError
from tests.conftest import DEMO_IMAGE, SIDECAR_IMAGE, TEST_LABEL, run_once

pytestmark = pytest.mark.integration

NS = 1_000_000_000  # Docker healthcheck durations are nanoseconds


def compose_labels(project: str, service: str) -> dict[str, str]:
    return {PROJECT_LABEL: project, SERVICE_LABEL: service}


def app_starts(container: Any) -> int:
    logs: str = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    return logs.count('"event": "app.started"')


def started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


@pytest.fixture
def two_projects(
    containers: Callable[..., Any], unique_name: Callable[[str], str]
) -> tuple[str, Any, Any]:
    """Project A's and project B's ``app`` service: same service name, different projects."""
    project_a, project_b = unique_name("a"), unique_name("b")
    app_a = containers(
        DEMO_IMAGE, name=f"{project_a}-app-1", labels=compose_labels(project_a, "app")
    )
    app_b = containers(
        DEMO_IMAGE, name=f"{project_b}-app-1", labels=compose_labels(project_b, "app")
    )
    return project_a, app_a, app_b


def control(docker_client: Any, project: str | None) -> AppControl:
    return AppControl(docker_client, project=project, detect_project=False, poll_interval=0.2)


def test_finds_only_our_project_and_restarts_it_exactly_once(
    docker_client: Any, two_projects: tuple[str, Any, Any]
) -> None:
    project_a, app_a, app_b = two_projects
    apps = control(docker_client, project_a)
    ref = apps.find("app")
    assert ref.id == app_a.id
    assert ref.name == app_a.name
    # B's container, even by its exact name, is out of A's reach.
    with pytest.raises(ConfigError):
        apps.find(app_b.name)

    apps.wait_healthy(ref, timeout=60)
    before_a, before_b = started_at(app_a), started_at(app_b)
    with capture_logs() as logs:
        apps.restart(ref, timeout=10)
        apps.wait_healthy(ref, timeout=60)
    assert [e["event"] for e in logs if e["event"].startswith("app.")] == [
        "app.restarting",
        "app.restarted",
        "app.healthy",
    ]
    assert started_at(app_a) != before_a
    assert started_at(app_b) == before_b
    assert app_starts(app_a) == 2
    assert app_starts(app_b) == 1
    app_a.reload()
    assert app_a.attrs["State"]["Health"]["Status"] == "healthy"


def test_stopped_starts_the_app_again_when_the_body_raises(
    docker_client: Any, two_projects: tuple[str, Any, Any]
) -> None:
    project_a, app_a, _ = two_projects
    apps = control(docker_client, project_a)
    ref = apps.find("app")
    seen: list[bool] = []

    def deploy_that_fails() -> None:
        with apps.stopped(ref, timeout=10):
            app_a.reload()
            seen.append(app_a.attrs["State"]["Running"])
            raise RuntimeError("a migration failed")

    with pytest.raises(RuntimeError):
        deploy_that_fails()
    assert seen == [False]
    app_a.reload()
    assert app_a.attrs["State"]["Running"] is True
    apps.wait_healthy(ref, timeout=60)
    # The demo app stopped cleanly on SIGTERM (graceful stop) and started once more.
    logs = app_a.logs().decode()
    assert '"event": "app.stopped"' in logs
    assert app_starts(app_a) == 2


def test_without_a_healthcheck_steady_running_is_healthy(
    docker_client: Any, containers: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    project = unique_name("plain")
    app = containers(
        DEMO_IMAGE, labels=compose_labels(project, "app"), healthcheck={"test": ["NONE"]}
    )
    apps = AppControl(docker_client, project=project, steady=1.0, poll_interval=0.2)
    with capture_logs() as logs:
        apps.wait_healthy(apps.find("app"), timeout=30)
    assert logs[-1]["event"] == "app.healthy"
    assert logs[-1]["healthcheck"] is False
    assert logs[-1]["seconds"] >= 1.0
    app.reload()
    assert "Health" not in app.attrs["State"]


def test_an_app_that_exits_is_a_health_error_with_its_last_words(
    docker_client: Any, containers: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    project = unique_name("crash")
    script = "import sys; print('Error: no such column: currency', flush=True); sys.exit(3)"
    app = containers(
        DEMO_IMAGE, labels=compose_labels(project, "app"), entrypoint=["python3", "-c", script]
    )
    app.wait(timeout=30)
    apps = control(docker_client, project)
    started = time.monotonic()
    with pytest.raises(HealthError) as caught:
        apps.wait_healthy(apps.find("app"), timeout=60)
    assert time.monotonic() - started < 10  # it will not come back: no point waiting
    assert app.name in str(caught.value)
    assert "exit code 3" in str(caught.value)
    assert "no such column: currency" in str(caught.value)


def test_an_unhealthy_app_is_a_health_error_with_its_last_check(
    docker_client: Any, containers: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    project = unique_name("sick")
    check = "import sys; print('database is locked'); sys.exit(1)"
    containers(
        DEMO_IMAGE,
        labels=compose_labels(project, "app"),
        healthcheck={"test": ["CMD", "python3", "-c", check], "interval": NS // 2, "retries": 1},
    )
    apps = control(docker_client, project)
    ref = apps.find("app")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # let it turn unhealthy first
        container = docker_client.containers.get(ref.id)
        if container.attrs["State"]["Health"]["Status"] == "unhealthy":
            break
        time.sleep(0.2)
    with pytest.raises(HealthError) as caught:
        apps.wait_healthy(ref, timeout=2)
    assert "health unhealthy" in str(caught.value)
    assert "database is locked" in str(caught.value)


def test_the_sidecar_in_its_container_detects_its_own_project(
    docker_client: Any, two_projects: tuple[str, Any, Any]
) -> None:
    """Run as project A's sidecar does: its own labels decide which ``app`` it may touch."""
    project_a, app_a, _ = two_projects
    script = (
        "import json\n"
        "from sidecar.containers import engine as containers\n"
        "apps = containers.connect(required=True)\n"
        "ref = apps.find('app')\n"
        "print(json.dumps({'project': apps.project, 'id': ref.id}))\n"
    )
    box = seam_container(
        docker_client,
        script,
        labels=compose_labels(project_a, "sidecar"),
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        group_add=[str(os.stat("/var/run/docker.sock").st_gid)],
    )
    code, output = finish(box)
    assert code == 0, output
    document = json.loads(output.strip().splitlines()[-1])
    assert document == {"project": project_a, "id": app_a.id}


LEASE = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from sidecar.lease import hold_lease\n"
    "from sidecar.errors import SidecarError\n"
    "db, wait, hold = Path('/app/data/portfolio.db'), float(sys.argv[2]), float(sys.argv[3])\n"
    "try:\n"
    "    with hold_lease(db, wait=wait, command='deploy'):\n"
    "        print('held', flush=True)\n"
    "        time.sleep(hold)\n"
    "except SidecarError as exc:\n"
    "    print(exc, flush=True)\n"
    "    sys.exit(int(exc.exit_code))\n"
)


def test_the_lease_works_across_containers_on_one_volume(
    docker_client: Any, volumes: Callable[[str], str]
) -> None:
    """Two sidecar containers on one data volume: the second is refused while the first
    holds the lease, and gets it as soon as the first is killed (SIGKILL: no cleanup ran)."""
    data = {volumes("data"): {"bind": "/app/data", "mode": "rw"}}
    holder = seam_container(docker_client, LEASE, ["60", "300"], volumes=data)
    try:
        holder.start()
        deadline = time.monotonic() + 30
        while b"held" not in holder.logs(stdout=True, stderr=False):
            assert time.monotonic() < deadline, holder.logs().decode()
            time.sleep(0.2)
        refused = seam_container(docker_client, LEASE, ["1", "0"], volumes=data)
        code, output = finish(refused)
        assert code == 3, output
        assert "another sidecar holds the lease on /app/data/portfolio.db" in output
        assert holder.id[:12] in output  # the holder's hostname: its container id

        holder.kill()  # SIGKILL
        taker = seam_container(docker_client, LEASE, ["10", "0"], volumes=data)
        code, output = finish(taker)
        assert code == 0, output
        assert "held" in output
    finally:
        holder.remove(force=True)


def seam_container(
    docker_client: Any, script: str, args: list[str] | None = None, **kwargs: Any
) -> Any:
    """A created (not started) sidecar-image container that runs ``script`` with this
    checkout's sidecar package importable first: the source under test, whatever the image was
    built from."""
    labels = {TEST_LABEL: "1", **kwargs.pop("labels", {})}
    # sys.argv inside the script: ["-c", script, *args].
    box = docker_client.containers.create(
        SIDECAR_IMAGE,
        ["-c", "import sys; sys.path.insert(0, '/tmp/seam'); exec(sys.argv[1])", script]
        + (args or []),
        entrypoint=["python3"],
        labels=labels,
        **kwargs,
    )
    try:
        package = Path(sidecar.__file__).parent
        sources = {f"seam/sidecar/{p.relative_to(package)}": p for p in package.rglob("*.py")}
        box.put_archive("/tmp", _tar(sources))
    except Exception:
        box.remove(force=True)
        raise
    return box


def finish(box: Any) -> tuple[int, str]:
    """Start a seam container, wait for it to exit, remove it; its exit code and output."""
    try:
        box.start()
        status = box.wait(timeout=120)
        return int(status["StatusCode"]), box.logs(stdout=True, stderr=True).decode()
    finally:
        box.remove(force=True)


def _tar(files: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, path in files.items():
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_sidecar_refuses_its_own_service_as_the_app(
    docker_client: Any, containers: Callable[..., Any], unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """`docker compose run --rm sidecar deploy --app sidecar` (issue 11, item 9): the service
    container `up` left behind is the sidecar's own service; restarting it ran another deploy.
    The real CLI in the real image, labelled as Compose labels a one-off: exit 2, untouched."""
    project = unique_name("self")
    service_box = containers(
        DEMO_IMAGE, name=f"{project}-sidecar-1", labels=compose_labels(project, "sidecar")
    )
    before = started_at(service_box)
    schema = tmp_path / "schema.sql"
    schema.write_text("CREATE TABLE t (id INTEGER PRIMARY KEY);\n")
    schema.chmod(0o644)
    code, output = run_once(
        docker_client, SIDECAR_IMAGE, ["deploy", "--app", "sidecar"],
        labels={**compose_labels(project, "sidecar"), "com.docker.compose.oneoff": "True"},
        environment={"SIDECAR_DATABASE": "/tmp/app.db", "SIDECAR_SCHEMA": "/schema.sql",
                     "SIDECAR_LOG_FORMAT": "json"},
        volumes={str(schema): {"bind": "/schema.sql", "mode": "ro"},
                 "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        group_add=[str(os.stat("/var/run/docker.sock").st_gid)],
    )  # fmt: skip
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors == ["error: SIDECAR_APP 'sidecar' is the sidecar's own service"], output
    assert started_at(service_box) == before  # never restarted
