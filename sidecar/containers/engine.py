"""Connect to the Docker engine from the environment, and find the configured app on it."""

from __future__ import annotations

import os

import docker
import docker.errors

from sidecar.containers import retry
from sidecar.containers.apps import AppRef
from sidecar.containers.control import AppControl
from sidecar.containers.describe import short
from sidecar.errors import UnavailableError
from sidecar.logs import get_logger

log = get_logger(__name__)

DEFAULT_SOCKET = "/var/run/docker.sock"


def connect(*, required: bool) -> AppControl | None:
    """An :class:`AppControl` on the engine from the environment (``DOCKER_HOST`` or the
    default socket), or None when there is none and ``required`` is false (a Kubernetes init
    container has no socket: the restart step is skipped and says so)."""
    where = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    attempts = 4 if required else 1
    try:
        client = retry.retrying(
            "connect",
            transient=retry.transient_connect,
            attempts=attempts,
            multiplier=0.5,
            max_wait=4,
        )(docker.from_env)
    except (docker.errors.DockerException, OSError) as exc:
        reason = retry.connect_reason(exc)
        if reason == "permission":
            message = f"permission denied on the Docker socket {where}"
            hint = (
                "give the sidecar's user the socket's group: group_add: [\"${DOCKER_GID}\"] "
                "with DOCKER_GID=$(stat -c %g /var/run/docker.sock), or use a socket proxy"
            )
        elif reason == "missing":
            message = f"no Docker API: {where} does not exist"
            hint = (
                "mount /var/run/docker.sock into the sidecar (and group_add the socket's gid), "
                "or point DOCKER_HOST at a socket proxy"
            )
        else:
            message = f"the Docker API at {where} is unreachable: {short(exc)}"
            hint = retry.API_HINT
        if not required:
            event = log.warning if reason == "permission" else log.info
            event("docker.unavailable", docker_host=where, reason=message, hint=hint)
            return None
        raise UnavailableError(message, hint=hint) from None
    log.debug("docker.connected", docker_host=where)
    return AppControl(client)


def find_app(app: str | None, *, label: str | None) -> tuple[AppControl, AppRef]:
    """The engine (required) and the app on it: ``app`` by service or name, or by ``label``."""
    control = connect(required=True)
    assert control is not None  # noqa: S101 - required=True raises instead of returning None
    return control, control.find(app, label=label)
