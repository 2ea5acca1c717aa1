"""The seam the deploy needs from Docker: the app as a value (:class:`AppRef`, its
:class:`Replica` containers) and the :class:`Apps` Protocol that the real control and the
tests' fakes both satisfy. No Docker SDK here."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from sidecar.logs import get_logger

log = get_logger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"


@dataclass(frozen=True)
class Replica:
    """One container of the app."""

    name: str
    id: str
    # Whether it was running when found. One that was not (Compose created it and starts it
    # once the sidecar exits: the release layout) is never started by the sidecar.
    running: bool = True


@dataclass(frozen=True)
class AppRef:
    """The app: one container, or every replica of a scaled Compose service.

    ``name``/``id`` describe it for logs and reports (for several replicas, ``name`` lists
    them and ``id`` is the first one's). ``replicas`` is empty for a single container made by
    hand (a fake); use :attr:`containers` to iterate.
    """

    name: str
    id: str
    project: str | None = None
    service: str | None = None
    replicas: tuple[Replica, ...] = field(default=())

    @property
    def containers(self) -> tuple[Replica, ...]:
        return self.replicas or (Replica(self.name, self.id),)

    @property
    def running(self) -> bool:
        """Whether any of its containers was running when it was found."""
        return any(replica.running for replica in self.containers)

    def running_part(self) -> AppRef:
        """The same app, limited to the containers that were running when it was found."""
        ran = tuple(r for r in self.containers if r.running)
        return dataclasses.replace(self, name=", ".join(r.name for r in ran), id=ran[0].id,
                                   replicas=ran)  # fmt: skip


class Apps(Protocol):
    """The seam the pipeline needs; :class:`AppControl` is the real one, tests bring fakes."""

    def find(self, app: str | None, *, label: str | None = None) -> AppRef: ...

    def stopped(self, app: AppRef, *, timeout: float) -> AbstractContextManager[None]: ...

    def restart(self, app: AppRef, *, timeout: float) -> None: ...

    def start_stopped(self, app: AppRef) -> list[str]: ...

    def wait_healthy(self, app: AppRef, *, timeout: float) -> None: ...

    def get_archive(self, app: AppRef, path: str) -> Iterator[bytes]: ...


def left_for_compose(name: str) -> None:
    log.info(
        "app.left_for_compose",
        container=name,
        reason="not running when the deploy began",
        hint="Compose starts it once the sidecar has exited 0 (depends_on: "
        "service_completed_successfully); otherwise start it yourself",
    )
