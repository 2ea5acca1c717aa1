"""The Docker seam against a hand-written fake client: finding, scoping, undo, retries."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest
import requests
from structlog.testing import capture_logs

from sidecar.containers import engine, identity
from sidecar.containers.apps import PROJECT_LABEL, AppRef, Apps, Replica
from sidecar.containers.control import AppControl
from sidecar.containers.identity import own_container_ids
from sidecar.errors import ConfigError, ExitCode, HealthError, UnavailableError
from tests.fakes import FakeApps, FakeContainer, FakeDocker, api_error, compose_container


def control(client: FakeDocker, project: str | None = "a", **kwargs: Any) -> AppControl:
    options: dict[str, Any] = {"steady": 0.05, "poll_interval": 0.01, "retry_wait": 0.001}
    return AppControl(client, project=project, detect_project=False, **{**options, **kwargs})


# -- find ---------------------------------------------------------------------------------


def test_finds_the_service_of_our_own_project_only() -> None:
    ours = compose_container("a", "app")
    theirs = compose_container("b", "app")
    client = FakeDocker(theirs, ours, compose_container("a", "sidecar"))
    ref = control(client, "a").find("app")
    assert (ref.name, ref.id, ref.project, ref.service) == ("a-app-1", ours.id, "a", "app")
    assert ref.containers == (Replica("a-app-1", ours.id),)


def test_a_container_named_app_in_another_project_never_matches() -> None:
    named = FakeContainer(name="app", labels={PROJECT_LABEL: "b"})
    with pytest.raises(ConfigError) as caught:
        control(FakeDocker(named), "a").find("app")
    assert caught.value.exit_code == ExitCode.USAGE
    message = str(caught.value)
    assert "service 'app' in Compose project 'a'" in message
    assert "container name or id 'app'" in message
    assert "Compose service name" in (caught.value.hint or "")


def test_a_plain_container_name_works_outside_a_project() -> None:
    named = FakeContainer(name="portfolio")
    ref = control(FakeDocker(named), None).find("portfolio")
    assert ref.id == named.id


def test_name_lookup_is_exact_not_a_substring_or_short_prefix() -> None:
    named = FakeContainer(name="portfolio-app")
    client = FakeDocker(named)
    with pytest.raises(ConfigError):
        control(client, None).find("portfolio")
    assert control(client, None).find(named.id[:12]).id == named.id


def test_inside_a_project_a_name_match_needs_our_label() -> None:
    ours = FakeContainer(name="legacy-app", labels={PROJECT_LABEL: "a"})
    ref = control(FakeDocker(ours), "a").find("legacy-app")
    assert ref.id == ours.id


def test_label_lookup_is_scoped_to_our_project_too() -> None:
    ours = compose_container("a", "web", labels={"io.sidecar.app": "1"})
    theirs = compose_container("b", "web", labels={"io.sidecar.app": "1"})
    client = FakeDocker(theirs, ours)
    ref = control(client, "a").find(None, label="io.sidecar.app=1")
    assert ref.containers == (Replica(ours.name, ours.id),)
    # Without a project of our own, an explicit label is the scope.
    assert len(control(client, None).find(None, label="io.sidecar.app=1").containers) == 2


def test_service_wins_over_name_and_name_over_label() -> None:
    service = compose_container("a", "app")
    named = FakeContainer(name="app", labels={PROJECT_LABEL: "a"})
    labelled = FakeContainer(name="x", labels={PROJECT_LABEL: "a", "role": "app"})
    client = FakeDocker(labelled, named, service)
    assert control(client).find("app", label="role=app").id == service.id
    client.items.remove(service)
    assert control(client).find("app", label="role=app").id == named.id
    client.items.remove(named)
    assert control(client).find("app", label="role=app").id == labelled.id


def test_one_off_and_own_containers_are_never_the_app() -> None:
    oneoff = compose_container("a", "app", 2, labels={"com.docker.compose.oneoff": "True"})
    me = compose_container("a", "sidecar")
    client = FakeDocker(oneoff, me)
    apps = AppControl(client, detect_project=False)
    apps._self_id = me.id  # as detection would set it
    with pytest.raises(ConfigError):
        apps.find(me.name)
    with pytest.raises(ConfigError):
        control(client).find("app")


def test_a_scaled_service_is_acted_on_as_a_whole() -> None:
    replicas = [compose_container("a", "app", n) for n in (2, 1, 3)]
    client = FakeDocker(*replicas)
    apps = control(client)
    ref = apps.find("app")
    assert [r.name for r in ref.containers] == ["a-app-1", "a-app-2", "a-app-3"]
    assert ref.name == "a-app-1, a-app-2, a-app-3"
    with apps.stopped(ref, timeout=5):
        assert not any(c.running for c in replicas)
    assert all(c.running for c in replicas)
    apps.restart(ref, timeout=5)
    assert all(c.starts == 3 for c in replicas)


def test_a_bad_label_and_nothing_configured_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        control(FakeDocker()).find(None, label="=x")
    with pytest.raises(ConfigError, match="no app configured"):
        control(FakeDocker()).find(None)


def test_own_project_is_detected_from_our_container(monkeypatch: pytest.MonkeyPatch) -> None:
    me = compose_container("a", "sidecar")
    app = compose_container("a", "app")
    theirs = compose_container("b", "app")
    mountinfo = (
        f"700 690 8:1 /var/lib/docker/containers/{me.id}/hostname /etc/hostname rw - ext4 x rw\n"
    )
    client = FakeDocker(theirs, app, me)
    apps = AppControl(client)
    monkeypatch.setattr(
        identity, "_read", lambda path: mountinfo if path.endswith("mountinfo") else ""
    )
    assert apps.project == "a"
    assert apps.find("app").id == app.id


def test_own_container_ids_prefers_mountinfo_and_ignores_host_views() -> None:
    full = "ab" * 32
    other = "cd" * 32
    mountinfo = "\n".join(
        [
            # The host's own view lists other containers' shm mounts: not us.
            f"1 2 0:5 / /var/lib/docker/containers/{other}/mounts/shm rw - tmpfs shm rw",
            f"3 4 8:1 /var/lib/docker/containers/{full}/resolv.conf /etc/resolv.conf rw - ext4",
        ]
    )
    cgroup = f"12:memory:/docker/{full}\n0::/\n"
    ids = own_container_ids(
        hostname="abababababab", env_hostname="web-1", mountinfo=mountinfo, cgroup=cgroup
    )
    assert ids == [full, "abababababab"]
    assert own_container_ids(hostname="laptop", env_hostname=None, mountinfo="", cgroup="") == []


# -- stop / start / restart ---------------------------------------------------------------


def test_stopped_starts_the_app_again_when_the_body_raises() -> None:
    app = compose_container("a", "app")
    apps = control(FakeDocker(app))
    ref = apps.find("app")
    seen_running: list[bool] = []

    def body() -> None:
        with apps.stopped(ref, timeout=7.5):
            seen_running.append(app.running)
            raise RuntimeError("migration failed")

    with capture_logs() as logs, pytest.raises(RuntimeError):
        body()
    assert seen_running == [False]
    assert app.running
    assert [c for c in app.calls if c != "reload"] == ["stop:8", "start"]
    assert [e["event"] for e in logs if e["event"].startswith("app.")] == [
        "app.stopping",
        "app.stopped",
        "app.starting",
        "app.started",
    ]


def test_stopped_on_keyboard_interrupt_too_and_leaves_stopped_ones_alone() -> None:
    up = compose_container("a", "app", 1)
    down = compose_container("a", "app", 2, running=False)
    apps = control(FakeDocker(up, down))
    with pytest.raises(KeyboardInterrupt), apps.stopped(apps.find("app"), timeout=1):
        raise KeyboardInterrupt
    assert up.running
    assert not down.running  # it was not running before: the undo is exactly what was done


def test_a_failed_start_is_an_unavailable_error_with_a_hint() -> None:
    app = compose_container("a", "app")
    client = FakeDocker(app)
    apps = control(client, attempts=2)
    ref = apps.find("app")
    with pytest.raises(UnavailableError) as caught, apps.stopped(ref, timeout=1):
        client.fail = [api_error(500)] * 4
    assert "could not start the app again" in str(caught.value)
    assert f"docker start {app.name}" in (caught.value.hint or "")


def test_restart_logs_and_restarts_once() -> None:
    app = compose_container("a", "app")
    apps = control(FakeDocker(app))
    with capture_logs() as logs:
        apps.restart(apps.find("app"), timeout=10)
    assert [c for c in app.calls if c.startswith("restart")] == ["restart:10"]
    events = [e["event"] for e in logs]
    assert events[-2:] == ["app.restarting", "app.restarted"]


# -- retries ------------------------------------------------------------------------------


def test_transient_api_errors_are_retried() -> None:
    app = compose_container("a", "app")
    client = FakeDocker(app)
    client.fail = [api_error(502), requests.exceptions.ConnectionError("reset")]
    with capture_logs() as logs:
        ref = control(client).find("app")
    assert ref.id == app.id
    assert [e["event"] for e in logs].count("docker.retrying") == 2


def test_retries_run_out_into_unavailable_exit_5() -> None:
    client = FakeDocker(compose_container("a", "app"))
    client.fail = [api_error(503)] * 10
    with pytest.raises(UnavailableError) as caught:
        control(client, attempts=3).find("app")
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert "Docker API" in str(caught.value)
    assert caught.value.hint
    assert len(client.api_calls) == 3


def test_client_errors_are_not_retried() -> None:
    client = FakeDocker(compose_container("a", "app"))
    client.fail = [api_error(403, "forbidden by the socket proxy")]
    with pytest.raises(UnavailableError, match="forbidden"):
        control(client).find("app")
    assert len(client.api_calls) == 1


def test_a_retried_restart_does_not_restart_twice() -> None:
    app = compose_container("a", "app")
    client = FakeDocker(app)
    apps = control(client)
    ref = apps.find("app")
    real_restart = app.restart

    def restart_then_drop(timeout: int | None = None) -> None:
        real_restart(timeout)
        app.restart = real_restart  # type: ignore[method-assign]
        raise requests.exceptions.ConnectionError("connection dropped after the restart")

    app.restart = restart_then_drop  # type: ignore[method-assign]
    apps.restart(ref, timeout=1)
    assert app.starts == 2


# -- health -------------------------------------------------------------------------------


def test_wait_healthy_waits_for_the_healthcheck() -> None:
    app = compose_container("a", "app", healthcheck=True, health="starting")
    apps = control(FakeDocker(app))
    ref = apps.find("app")
    with pytest.raises(HealthError) as caught:
        apps.wait_healthy(ref, timeout=0.1)
    assert caught.value.exit_code == ExitCode.HEALTH
    assert app.name in str(caught.value)
    assert "health starting" in str(caught.value)
    app.health = "healthy"
    with capture_logs() as logs:
        apps.wait_healthy(ref, timeout=1)
    assert logs[-1]["event"] == "app.healthy"
    assert logs[-1]["healthcheck"] is True


def test_without_a_healthcheck_steady_running_is_enough() -> None:
    app = compose_container("a", "app")
    apps = control(FakeDocker(app), steady=0.1)
    with capture_logs() as logs:
        apps.wait_healthy(apps.find("app"), timeout=2)
    assert logs[-1]["event"] == "app.healthy"
    assert logs[-1]["seconds"] >= 0.1


def test_an_exited_app_fails_fast_with_its_last_log_line() -> None:
    app = compose_container("a", "app", running=False, exit_code=3)
    app.log_lines = ["starting", "Error: no such table: Watchlist"]
    apps = control(FakeDocker(app))
    with pytest.raises(HealthError) as caught:
        apps.wait_healthy(apps.find("app"), timeout=30)
    assert "exit code 3" in str(caught.value)
    assert "no such table: Watchlist" in str(caught.value)


def test_an_exited_app_that_docker_will_restart_is_waited_for() -> None:
    app = compose_container("a", "app", running=False, restart_policy="unless-stopped")
    apps = control(FakeDocker(app))
    with pytest.raises(HealthError, match="not healthy after"):
        apps.wait_healthy(apps.find("app"), timeout=0.1)


def test_app_ref_without_replicas_is_one_container() -> None:
    ref = AppRef(name="demo", id="f" * 64)
    assert ref.containers == (Replica("demo", "f" * 64),)


# -- connect ------------------------------------------------------------------------------


def _refuse(exc: BaseException) -> Any:
    def from_env() -> Any:
        raise docker.errors.DockerException(f"Error while fetching server API version: {exc}")

    return from_env


def test_no_socket_is_none_when_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        docker, "from_env", _refuse(FileNotFoundError(2, "No such file or directory"))
    )
    with capture_logs() as logs:
        assert engine.connect(required=False) is None
    assert logs[0]["event"] == "docker.unavailable"
    assert logs[0]["log_level"] == "info"


def test_no_socket_is_exit_5_with_a_hint_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        docker, "from_env", _refuse(FileNotFoundError(2, "No such file or directory"))
    )
    with pytest.raises(UnavailableError) as caught:
        engine.connect(required=True)
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert "does not exist" in str(caught.value)
    assert "/var/run/docker.sock" in (caught.value.hint or "")


def test_permission_denied_hints_at_group_add(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker, "from_env", _refuse(PermissionError(13, "Permission denied")))
    with pytest.raises(UnavailableError) as caught:
        engine.connect(required=True)
    assert "permission denied" in str(caught.value)
    assert "group_add" in (caught.value.hint or "")
    assert "DOCKER_GID" in (caught.value.hint or "")


def test_connect_returns_a_control_on_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeDocker()
    monkeypatch.setattr(docker, "from_env", lambda: client)
    apps = engine.connect(required=True)
    assert isinstance(apps, AppControl)


def test_the_real_control_and_the_fake_fit_the_same_seam() -> None:
    # Checked by mypy: both satisfy the Protocol the pipeline can be typed against.
    seams: list[Apps] = [control(FakeDocker(compose_container("a", "app"))), FakeApps()]
    for apps in seams:
        ref = apps.find("app")
        with apps.stopped(ref, timeout=1):
            pass
        apps.restart(ref, timeout=1)
        apps.wait_healthy(ref, timeout=1)
