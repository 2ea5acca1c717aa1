"""Hand-written fakes for the Docker seam, recording what was asked of them.

- :class:`FakeDocker` stands for a ``docker.DockerClient`` under :class:`AppControl`: only
  ``containers.list(all=, filters=)`` and ``containers.get(ref)``, and containers with the
  handful of attributes and methods AppControl uses.
- :class:`FakeApps` stands for :class:`AppControl` itself, for pipeline tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from sidecar.containers.apps import PROJECT_LABEL, SERVICE_LABEL, AppRef
from sidecar.errors import HealthError

_ids = itertools.count(1)


def api_error(status: int, message: str = "boom") -> docker.errors.APIError:
    """An APIError as the SDK raises it, with an HTTP status."""

    class Response:
        status_code = status
        reason = message
        url = "http+docker://localhost/fake"

    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls(message, response=Response(), explanation=message)


@dataclass
class FakeContainer:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    healthcheck: bool = False
    running: bool = True
    id: str = field(default_factory=lambda: f"{next(_ids):064x}")
    starts: int = 1
    calls: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=lambda: ["listening on :3000"])
    health: str = "healthy"
    restart_policy: str = "no"
    exit_code: int = 0

    @property
    def attrs(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "Status": "running" if self.running else "exited",
            "Running": self.running,
            "ExitCode": 0 if self.running else self.exit_code,
            "StartedAt": f"2025-01-01T00:00:{self.starts:02d}Z",
        }
        if self.healthcheck:
            state["Health"] = {
                "Status": self.health,
                "Log": [{"ExitCode": 0 if self.health == "healthy" else 1, "Output": ""}],
            }
        return {
            "State": state,
            "RestartCount": 0,
            "HostConfig": {"RestartPolicy": {"Name": self.restart_policy}},
        }

    def reload(self) -> None:
        self.calls.append("reload")

    def stop(self, timeout: int | None = None) -> None:
        self.calls.append(f"stop:{timeout}")
        self.running = False

    def start(self) -> None:
        self.calls.append("start")
        if not self.running:
            self.starts += 1
        self.running = True

    def restart(self, timeout: int | None = None) -> None:
        self.calls.append(f"restart:{timeout}")
        self.starts += 1
        self.running = True

    def logs(self, tail: int | None = None) -> bytes:
        return "\n".join(self.log_lines[-(tail or len(self.log_lines)) :]).encode()


class FakeContainers:
    def __init__(self, owner: FakeDocker) -> None:
        self.owner = owner

    def list(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[Any]:
        self.owner.record(f"list:{filters}")
        wanted = (filters or {}).get("label", [])
        include_stopped = all
        return [
            c
            for c in self.owner.items
            if (include_stopped or c.running) and _labels_match(c.labels, wanted)
        ]

    def get(self, ref: str) -> Any:
        self.owner.record(f"get:{ref}")
        for c in self.owner.items:
            if ref in (c.name, c.id) or (len(ref) >= 12 and c.id.startswith(ref)):
                return c
        raise api_error(404, f"No such container: {ref}")


def _labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


class FakeDocker:
    """``containers.list/get`` over a list of :class:`FakeContainer`. ``fail`` queues errors
    raised by the next calls (transient ones exercise the retries)."""

    def __init__(self, *items: FakeContainer) -> None:
        self.items = list(items)
        self.containers = FakeContainers(self)
        self.fail: list[BaseException] = []
        self.api_calls: list[str] = []

    def record(self, call: str) -> None:
        self.api_calls.append(call)
        if self.fail:
            raise self.fail.pop(0)


def compose_container(project: str, service: str, number: int = 1, **kwargs: Any) -> FakeContainer:
    labels = {PROJECT_LABEL: project, SERVICE_LABEL: service, **kwargs.pop("labels", {})}
    return FakeContainer(name=f"{project}-{service}-{number}", labels=labels, **kwargs)


@dataclass
class FakeApps:
    """Stands for :class:`~sidecar.containers.control.AppControl` in pipeline tests; records
    calls."""

    app: AppRef = field(default_factory=lambda: AppRef(name="demo-app-1", id="0" * 64))
    healthy: bool = True
    calls: list[str] = field(default_factory=list)
    # path -> a tar stream in chunks, for get_archive (SIDECAR_SCHEMA=app:/path)
    archives: dict[str, list[bytes]] = field(default_factory=dict)

    def find(self, app: str | None, *, label: str | None = None) -> AppRef:
        self.calls.append(f"find:{app}:{label}")
        return self.app

    @contextmanager
    def stopped(self, app: AppRef, *, timeout: float) -> Iterator[None]:
        self.calls.append(f"stop:{app.name}")
        try:
            yield
        finally:
            self.calls.append(f"start:{app.name}")

    def restart(self, app: AppRef, *, timeout: float) -> None:
        self.calls.append(f"restart:{app.name}")

    def start_stopped(self, app: AppRef) -> list[str]:
        self.calls.append(f"start_stopped:{app.name}")
        return [r.name for r in app.containers]

    def wait_healthy(self, app: AppRef, *, timeout: float) -> None:
        self.calls.append(f"wait_healthy:{app.name}")
        if not self.healthy:
            raise HealthError(f"app container {app.name} not healthy", hint="fake")

    def get_archive(self, app: AppRef, path: str) -> Iterator[bytes]:
        self.calls.append(f"get_archive:{app.name}:{path}")
        if path not in self.archives:
            raise api_error(404, f"Could not find the file {path} in container {app.name}")
        return iter(self.archives[path])
