"""The docker-SDK side of the seam: find, stop, start, restart and watch the app's containers.

Scoped to the sidecar's own Compose project, never its own container; every API call retried
when transient. See docs/design.md, 'The Docker seam'.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import docker.errors

from sidecar.containers import identity, retry
from sidecar.containers.apps import (
    ONEOFF_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    AppRef,
    Replica,
    left_for_compose,
)
from sidecar.containers.describe import clip, describe, short, will_restart
from sidecar.errors import ConfigError, HealthError, UnavailableError
from sidecar.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class AppControl:
    """Find, stop, start, restart and watch the app's containers; nothing else. ``project``
    (our Compose project) is detected from our own container unless given or ``detect_project``
    is false."""

    def __init__(
        self,
        client: Any,
        *,
        project: str | None = None,
        detect_project: bool = True,
        steady: float = 2.0,
        poll_interval: float = 0.5,
        attempts: int = 5,
        retry_wait: float = 0.5,
    ) -> None:
        self._client = client
        self._project = project
        self._self_id: str | None = None
        self._self_service: str | None = None
        self._self_name: str | None = None
        self._detect = detect_project and project is None
        self._steady = steady
        self._poll = poll_interval
        self._attempts = attempts
        self._retry_wait = retry_wait

    # -- who are we ------------------------------------------------------------------------

    @property
    def project(self) -> str | None:
        """Our Compose project (detected once, on first use), or None outside one."""
        if self._detect:
            self._detect = False
            me = self._find_self()
            if me is not None:
                self._self_id = str(me.id)
                self._project = (me.labels or {}).get(PROJECT_LABEL)
                self._self_service = (me.labels or {}).get(SERVICE_LABEL)
                self._self_name = str(me.name)
                log.info("docker.self", container=me.name, project=self._project)
        return self._project

    def _find_self(self) -> Any | None:
        candidates = identity.candidates()
        for candidate in candidates:
            container = self._get(candidate)
            if container is not None and str(container.id).startswith(candidate):
                return container
        if candidates:
            log.warning(
                "docker.self_unknown",
                candidates=candidates,
                hint="cannot tell our own container: only explicit names/labels work",
            )
        return None

    # -- find ------------------------------------------------------------------------------

    def find(self, app: str | None, *, label: str | None = None) -> AppRef:
        """The app's container(s). In order: the Compose service ``app`` of our own project;
        a container named (or with the id) ``app``; containers matching ``label``
        (``key=value`` or ``key``). Inside a Compose project, every match must carry our
        project's label. Raises :class:`ConfigError` (exit 2) naming what was searched."""
        if not app and not label:
            raise ConfigError("no app configured", hint="set SIDECAR_APP or SIDECAR_APP_LABEL")
        project = self.project
        self._refuse_self(app)
        scope = f" in Compose project {project!r}" if project else ""
        searched: list[str] = []
        if app and project:
            searched.append(f"service {app!r}{scope}")
            found = self._list([f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={app}"])
            if found:
                return self._ref(found, how="service")
        if app:
            searched.append(f"container name or id {app!r}{scope}")
            container = self._get(app)
            if (
                container is not None
                and self._is_candidate(container)
                and (container.name == app or str(container.id).startswith(app))
            ):
                return self._ref([container], how="name")
        if label:
            if not re.fullmatch(r"[^=\s]+(=.*)?", label):
                raise ConfigError(
                    f"SIDECAR_APP_LABEL: expected key=value, got {label!r}",
                    hint="fix SIDECAR_APP_LABEL",
                )
            searched.append(f"label {label!r}{scope}")
            labels = [label] + ([f"{PROJECT_LABEL}={project}"] if project else [])
            found = self._list(labels)
            if found:
                return self._ref(found, how="label")
        raise ConfigError(
            "no app container found: searched " + "; ".join(searched),
            hint="is SIDECAR_APP the Compose service name (or the container's name)? "
            "is the app running in the same Compose project as the sidecar?",
        )

    def _refuse_self(self, app: str | None, found: Iterable[Any] = ()) -> None:
        """The sidecar's own container, or a container of its own Compose service (the one
        `docker compose up` left, next to a `docker compose run` one-off), is never the app:
        restarting it would run another deploy. Exit 2."""
        own = [
            str(c.name)
            for c in found
            if str(c.id) == self._self_id
            or (
                self._self_service is not None
                and (c.labels or {}).get(SERVICE_LABEL) == self._self_service
                and (c.labels or {}).get(PROJECT_LABEL) == self._project
            )
        ]
        named = app is not None and (
            app in (self._self_service, self._self_name)
            or (self._self_id is not None and len(app) >= 12 and self._self_id.startswith(app))
        )
        if named or own:
            what = f"SIDECAR_APP {app!r}" if named else f"the app ({', '.join(own)})"
            raise ConfigError(
                f"{what} is the sidecar's own "
                + ("service" if self._self_service else "container"),
                hint="set SIDECAR_APP (--app) to the app's Compose service or container, "
                "not the sidecar's",
            )

    def _list(self, labels: list[str]) -> list[Any]:
        found = self._call(
            "list containers",
            lambda: self._client.containers.list(all=True, filters={"label": labels}),
        )
        return sorted((c for c in found if self._is_candidate(c)), key=lambda c: str(c.name))

    def _is_candidate(self, container: Any) -> bool:
        labels = container.labels or {}
        if labels.get(ONEOFF_LABEL) == "True" or str(container.id) == self._self_id:
            return False
        return self._project is None or labels.get(PROJECT_LABEL) == self._project

    def _ref(self, found: list[Any], *, how: str) -> AppRef:
        self._refuse_self(None, found)
        replicas = tuple(
            Replica(str(c.name), str(c.id), running=c.attrs["State"].get("Running") is True)
            for c in found
        )
        labels = found[0].labels or {}
        ref = AppRef(
            name=", ".join(r.name for r in replicas),
            id=replicas[0].id,
            project=labels.get(PROJECT_LABEL),
            service=labels.get(SERVICE_LABEL),
            replicas=replicas,
        )
        log.info("app.found", app=ref.name, by=how, replicas=len(replicas), project=ref.project,
                 running=sum(r.running for r in replicas))  # fmt: skip
        return ref

    # -- stop / start / restart ------------------------------------------------------------

    @contextmanager
    def stopped(self, app: AppRef, *, timeout: float) -> Iterator[None]:
        """Stop the app gracefully for the block; start it again on exit, whatever happens.
        Only the containers that were running are stopped and started: the undo is exact."""
        to_start: list[Replica] = []
        try:
            for replica in app.containers:
                container = self._container(replica)
                if container.attrs["State"].get("Running") is not True:
                    log.info("app.not_running", container=replica.name)
                    continue
                # Marked before the call: a stop interrupted half-way is still undone.
                to_start.append(replica)
                log.info("app.stopping", container=replica.name, timeout_s=timeout)
                started = time.monotonic()
                self._call(f"stop {replica.name}", partial(container.stop, timeout=_secs(timeout)))
                log.info("app.stopped", container=replica.name,
                         seconds=round(time.monotonic() - started, 3))  # fmt: skip
            yield
        finally:
            self._start_again(to_start)

    def _start_again(self, replicas: list[Replica]) -> None:
        failures: list[str] = []
        for replica in replicas:
            log.info("app.starting", container=replica.name)
            try:
                container = self._container(replica)
                self._call(f"start {replica.name}", container.start)
            except UnavailableError as exc:
                # An expected failure with its own message: no traceback in the log.
                log.error("app.start_failed", container=replica.name, error=str(exc))  # noqa: TRY400
                failures.append(replica.name)
                continue
            log.info("app.started", container=replica.name)
        if failures:
            raise UnavailableError(
                f"could not start the app again: {', '.join(failures)}",
                hint=f"start it by hand: docker start {' '.join(failures)}",
            )

    def start_stopped(self, app: AppRef) -> list[str]:
        """Start the containers of ``app`` (by id) that are not running; their names. For the
        app an interrupted run stopped (:mod:`sidecar.appstop`): gone, running or out of our
        project's scope, a container is left alone."""
        self.project  # noqa: B018 (our own project and container, detected before any scope check)
        to_start = []
        for replica in app.containers:
            container = self._get(replica.id)
            if container is None or not self._is_candidate(container):
                log.warning("app.not_started", container=replica.name,
                            reason="gone, or not in our Compose project")  # fmt: skip
            elif container.attrs["State"].get("Running") is not True:
                to_start.append(Replica(str(container.name), str(container.id)))
        self._start_again(to_start)
        return [r.name for r in to_start]

    def restart(self, app: AppRef, *, timeout: float) -> None:
        """Restart every container of the app that was running when it was found, one after
        the other (one that stopped since starts again). One that was not running is left
        for Compose (or the user) to start: ``app.left_for_compose``."""
        for replica in app.containers:
            if not replica.running:
                left_for_compose(replica.name)
                continue
            before = self._container(replica).attrs["State"].get("StartedAt")
            log.info("app.restarting", container=replica.name, timeout_s=timeout)
            started = time.monotonic()

            def once(replica: Replica = replica, before: Any = before) -> None:
                # A retried call may follow one that restarted it before the connection
                # dropped: restart exactly once.
                container = self._client.containers.get(replica.id)
                if container.attrs["State"].get("StartedAt") != before:
                    return
                container.restart(timeout=_secs(timeout))

            self._call(f"restart {replica.name}", once)
            log.info("app.restarted", container=replica.name,
                     seconds=round(time.monotonic() - started, 3))  # fmt: skip

    def get_archive(self, app: AppRef, path: str) -> Iterator[bytes]:
        """A tar stream of ``path`` inside the app's (first) container, whatever its state,
        through the archive endpoint: nothing runs in the container. NotFound passes through
        (no such path; the caller names it)."""
        replica = app.containers[0]
        container = self._container(replica)
        chunks, _stat = self._call(f"archive {replica.name}:{path}",
                                   lambda: container.get_archive(path))  # fmt: skip
        return iter(chunks)

    # -- health ----------------------------------------------------------------------------

    def wait_healthy(self, app: AppRef, *, timeout: float) -> None:
        """Wait until Docker reports each container ``healthy`` (with a HEALTHCHECK) or, without
        one, running steadily (not restarted for ``steady`` seconds). Raises
        :class:`HealthError` (exit 4) on an exit it will not recover from, or at ``timeout``."""
        deadline = time.monotonic() + timeout
        for replica in app.containers:
            self._wait_one(replica, deadline, timeout)

    def _wait_one(self, replica: Replica, deadline: float, timeout: float) -> None:
        started = time.monotonic()
        steady_key: tuple[Any, Any] | None = None
        steady_since = 0.0
        while True:
            container = self._container(replica)
            state = container.attrs.get("State", {})
            status = state.get("Status", "?")
            health = state.get("Health")
            if status in ("exited", "dead") and not will_restart(container.attrs):
                raise HealthError(
                    f"app container {replica.name} {status} (exit code {state.get('ExitCode')})"
                    f": {self._last_log_line(container)}",
                    hint=f"see docker logs {replica.name}",
                )
            if health:
                # A stopped container keeps its last health status: only a running one counts.
                if state.get("Running") and health.get("Status") == "healthy":
                    break
            elif state.get("Running"):
                key = (state.get("StartedAt"), container.attrs.get("RestartCount"))
                if key != steady_key:
                    steady_key, steady_since = key, time.monotonic()
                elif time.monotonic() - steady_since >= self._steady:
                    break
            else:
                steady_key = None
            if time.monotonic() >= deadline:
                raise HealthError(
                    f"app container {replica.name} not healthy after {timeout:g}s: "
                    + describe(state, self._last_log_line(container)),
                    hint=f"see docker logs {replica.name}; raise SIDECAR_HEALTHY_TIMEOUT "
                    "if the app starts slowly",
                )
            time.sleep(self._poll)
        log.info("app.healthy", container=replica.name, healthcheck=bool(health),
                 seconds=round(time.monotonic() - started, 3))  # fmt: skip

    def _last_log_line(self, container: Any) -> str:
        try:
            raw = self._call("logs", lambda: container.logs(tail=5))
        except UnavailableError:
            return "(no logs)"
        lines = [line for line in bytes(raw).decode("utf-8", "replace").splitlines() if line]
        return clip(lines[-1]) if lines else "(no output)"

    # -- API calls -------------------------------------------------------------------------

    def _container(self, replica: Replica) -> Any:
        container = self._get(replica.id)
        if container is None:
            raise UnavailableError(
                f"app container {replica.name} is gone",
                hint="it was removed while the sidecar worked on it: check docker ps -a",
            )
        return container

    def _get(self, ref: str) -> Any | None:
        """A container by name or id (prefix), or None when there is no such container."""
        try:
            return self._call(f"inspect {ref}", lambda: self._client.containers.get(ref))
        except docker.errors.NotFound:
            return None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` with bounded retries on transient errors; UnavailableError when they run
        out or on any other API error. NotFound passes through for the caller to judge."""
        try:
            return retry.retrying(
                what, transient=retry.transient, attempts=self._attempts,
                multiplier=self._retry_wait, max_wait=5,
            )(fn)  # fmt: skip
        except docker.errors.NotFound:
            raise
        except (docker.errors.DockerException, OSError) as exc:
            raise UnavailableError(
                f"Docker API: {what} failed: {short(exc)}", hint=retry.API_HINT
            ) from exc


def _secs(timeout: float) -> int:
    return max(0, math.ceil(timeout))
