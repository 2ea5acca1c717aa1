"""Smoke tests on the real engine: the image builds, runs as non-root, shares the data volume."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from sidecar.backup import snapshot
from tests.conftest import DEMO_IMAGE, ROOT, SIDECAR_IMAGE, run_once

pytestmark = pytest.mark.integration


def _base_image(docker_client: Any) -> str:
    """The base the setup used: recorded as the BASE_IMAGE build arg's effect on the image."""
    env_file = ROOT / ".env"
    for line in env_file.read_text().splitlines():
        if line.startswith("SIDECAR_BASE_IMAGE="):
            return line.split("=", 1)[1]
    raise AssertionError(".env has no SIDECAR_BASE_IMAGE; run ./scripts/setup")


def test_image_builds_from_the_dockerfile(docker_client: Any, unique_name: Any) -> None:
    tag = f"{unique_name('build')}:smoke"
    image, _ = docker_client.images.build(
        path=str(ROOT), buildargs={"BASE_IMAGE": _base_image(docker_client)}, tag=tag, rm=True
    )
    try:
        config = image.attrs["Config"]
        assert config["Entrypoint"] == ["sidecar"]
        assert config["User"] == "sidecar:sidecar"
        assert config["Healthcheck"]["Test"][-2:] == ["health", "--backups-only"]
    finally:
        docker_client.images.remove(tag, force=True)


def test_version_runs_as_non_root(docker_client: Any) -> None:
    code, output = run_once(docker_client, SIDECAR_IMAGE, ["--json", "version"], stderr=False)
    assert code == 0, output
    document = json.loads(output)
    assert document["ok"] is True
    assert document["sqlite"].startswith("3.")
    code, uid = run_once(docker_client, SIDECAR_IMAGE, ["-u"], entrypoint=["id"])
    assert code == 0
    assert uid.strip() not in ("", "0")


CACHE_PROBE = """
import sys
from sidecar import codecache
cache = codecache.install()
import json, sidecar.cli, sidecar.commands.deploy, sidecar.pipeline.run, sidecar.containers.engine
loaders = {type(m.__spec__.loader).__name__ for n, m in sys.modules.items()
           if n.startswith(("sidecar.", "docker", "structlog", "json")) and n != "sidecar.codecache"
           and getattr(m, "__spec__", None) and (m.__spec__.origin or "").endswith(".py")}
print(json.dumps({"path": codecache.default_path(), "loaded": cache and cache.loaded,
                  "loaders": sorted(loaders)}))
"""


def test_the_image_has_a_code_cache_its_program_uses(docker_client: Any) -> None:
    """Every pure-Python module a deploy imports at the top comes from the image's cache."""
    code, output = run_once(
        docker_client, SIDECAR_IMAGE, ["-c", CACHE_PROBE], entrypoint=["python"]
    )
    assert code == 0, output
    found = json.loads(output.strip().splitlines()[-1])
    assert found["path"] == "/opt/sidecar/sidecar-code.cache"
    assert found["loaded"] > 300
    assert found["loaders"] == ["CachedSourceLoader"]


def test_the_copier_child_starts_from_the_code_cache(docker_client: Any) -> None:
    """Started as the snapshot starts it; without a job on stdin it says ready and stops."""
    code, output = run_once(
        docker_client,
        SIDECAR_IMAGE,
        ["-c", snapshot.CHILD_START, snapshot.CHILD_MODULE],
        entrypoint=["python3"],
    )
    assert code == 1, output  # no "go" line: nothing to do
    ready = json.loads(output.strip().splitlines()[0])
    assert ready == {"event": "ready", "code_cache": True}


def test_demo_app_writes_and_sidecar_sees_the_rows(
    docker_client: Any, volumes: Any, containers: Any
) -> None:
    data = volumes("data")
    app = containers(DEMO_IMAGE, volumes={data: {"bind": "/app/data", "mode": "rw"}})
    deadline = time.monotonic() + 30
    committed: list[int] = []
    while time.monotonic() < deadline and len(committed) < 20:
        time.sleep(0.5)
        logs = app.logs().decode()
        committed = [json.loads(line)["id"] for line in logs.splitlines() if '"committed"' in line]
    assert len(committed) >= 20, app.logs().decode()[-2000:]
    code, output = run_once(
        docker_client,
        SIDECAR_IMAGE,
        ["--json", "health"],
        environment={"SIDECAR_DATABASE": "file:/app/data/portfolio.db"},
        volumes={data: {"bind": "/app/data", "mode": "rw"}},
        stderr=False,  # Docker merges the streams line by line: a log line can land mid-document
    )
    assert code == 0, output
    report = json.loads(output)
    assert report["row_counts"]["Transaction"] >= len(committed)
