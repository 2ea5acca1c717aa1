"""Fixtures shared by unit and integration tests.

Integration tests (``@pytest.mark.integration``) use the real Docker engine and the images
that ``scripts/setup`` builds. They never skip when Docker is missing: they fail, loudly.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIDECAR_IMAGE = os.environ.get("SIDECAR_IMAGE", "sidecar:local")
DEMO_IMAGE = os.environ.get("DEMO_IMAGE", "sidecar-demo-app:local")
# The demo app's next release (scripts/setup builds it with DEMO_VERSION=2).
DEMO_V2_IMAGE = os.environ.get("DEMO_V2_IMAGE", f"{DEMO_IMAGE}-v2")
# Everything a test creates carries this label, so a crashed run can be cleaned by label.
TEST_LABEL = "io.sidecar.test"

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 (any failure here means: no engine)
        pytest.fail(f"integration tests need a Docker engine ({exc}); run ./scripts/setup")
    for image in (SIDECAR_IMAGE, DEMO_IMAGE, DEMO_V2_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing; run ./scripts/setup")
    yield client
    client.close()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    run = uuid.uuid4().hex[:8]
    return lambda prefix: f"sidecar-test-{prefix}-{run}"


@pytest.fixture
def volumes(
    docker_client: Any, unique_name: Callable[[str], str]
) -> Iterator[Callable[[str], str]]:
    """Factory of named volumes, removed after the test (with any container still using them)."""
    created: list[str] = []

    def make(prefix: str) -> str:
        name = unique_name(prefix)
        docker_client.volumes.create(name, labels={TEST_LABEL: "1"})
        created.append(name)
        return name

    yield make
    for name in created:
        for container in docker_client.containers.list(all=True, filters={"volume": name}):
            container.remove(force=True)
        docker_client.volumes.get(name).remove(force=True)


@pytest.fixture
def containers(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """``run(image, **kwargs)``: a detached container, force-removed after the test."""
    created: list[Any] = []

    def run(image: str, **kwargs: Any) -> Any:
        labels = {TEST_LABEL: "1", **kwargs.pop("labels", {})}
        container = docker_client.containers.run(image, detach=True, labels=labels, **kwargs)
        created.append(container)
        return container

    yield run
    for container in created:
        with contextlib.suppress(Exception):  # already gone is fine
            container.remove(force=True)


def run_once(
    docker_client: Any, image: str, command: list[str], *, stderr: bool = True, **kwargs: Any
) -> tuple[int, str]:
    """Run a container to completion; (exit code, output: stdout and, unless ``stderr`` is
    false, stderr, merged line by line in the order Docker read them). Always removed."""
    labels = {TEST_LABEL: "1", **kwargs.pop("labels", {})}
    container = docker_client.containers.run(image, command, detach=True, labels=labels, **kwargs)
    try:
        status = container.wait(timeout=300)
        output = container.logs(stdout=True, stderr=stderr).decode("utf-8", "replace")
        return int(status["StatusCode"]), output
    finally:
        container.remove(force=True)
