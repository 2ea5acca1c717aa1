"""Drive the real Compose v2 CLI on the repository's docker-compose.yml, one project per test."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import DEMO_IMAGE, ROOT, SIDECAR_IMAGE, TEST_LABEL


def docker_gid() -> str:
    return str(os.stat("/var/run/docker.sock").st_gid)


@dataclass
class ComposeProject:
    client: Any
    tmp: Path
    name: str = field(default_factory=lambda: f"sidecartest{uuid.uuid4().hex[:8]}")
    overrides: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def override(self, text: str) -> None:
        path = self.tmp / f"override-{len(self.overrides)}.yml"
        path.write_text(text)
        self.overrides.append(path)

    def command(self, *args: str) -> list[str]:
        files = ["-f", str(ROOT / "docker-compose.yml")]
        for path in self.overrides:
            files += ["-f", str(path)]
        return ["docker", "compose", "--project-directory", str(ROOT), "-p", self.name,
                *files, *args]  # fmt: skip

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "SIDECAR_IMAGE": SIDECAR_IMAGE,
            "DEMO_IMAGE": DEMO_IMAGE,
            "DOCKER_GID": docker_gid(),
            "DEMO_HTTP_PORT": "0",  # any free port on 127.0.0.1: tests run side by side
            **self.env,
        }
        result = subprocess.run(
            self.command(*args), env=env, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def container(self, service: str, *, oneoff: bool = False) -> Any:
        filters = {
            "label": [
                f"com.docker.compose.project={self.name}",
                f"com.docker.compose.service={service}",
            ]
        }
        found = [
            c
            for c in self.client.containers.list(all=True, filters=filters)
            if (c.labels.get("com.docker.compose.oneoff") == "True") == oneoff
        ]
        assert found, f"no {service} container in {self.name}"
        return found[0]

    def wait_exit(self, service: str, timeout: float = 240) -> int:
        container = self.container(service)
        result = container.wait(timeout=timeout)
        return int(result["StatusCode"])

    def wait_healthy(self, service: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container = self.container(service)
            container.reload()
            if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                return container
            time.sleep(0.5)
        raise AssertionError(f"{service} not healthy after {timeout}s: {container.attrs['State']}")

    def logs(self, service: str) -> str:
        raw: bytes = self.container(service).logs(stdout=True, stderr=True)
        return raw.decode("utf-8", "replace")

    def events(self, service: str) -> list[dict[str, Any]]:
        """The JSON lines a service printed (the demo app's events, the sidecar's logs)."""
        found = []
        for line in self.logs(service).splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def volume(self, name: str) -> str:
        return f"{self.name}_{name}"

    def query(self, sql: str) -> Any:
        """Run one read-only query against the data volume's database, from a throwaway
        container of the sidecar image (never from the host: the volume is the interface).

        The volume is mounted read-write although the connection is read-only: a WAL reader
        must be able to create the ``-shm`` file when no other connection has it open."""
        script = (
            "import json, sqlite3, sys\n"
            "c = sqlite3.connect('file:/app/data/portfolio.db?mode=ro', uri=True)\n"
            "print(json.dumps(c.execute(sys.argv[1]).fetchall()))\n"
        )
        output = self.client.containers.run(
            SIDECAR_IMAGE, ["-c", script, sql], entrypoint=["python3"], remove=True,
            volumes={self.volume("data"): {"bind": "/app/data", "mode": "rw"}},
            labels={TEST_LABEL: "1"},
        )  # fmt: skip
        return json.loads(output.decode())

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def committed_ids(project: ComposeProject) -> list[int]:
    return [e["id"] for e in project.events("app") if e.get("event") == "committed"]


def wait_committed(project: ComposeProject, count: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = committed_ids(project)
        if len(ids) >= count:
            return ids
        time.sleep(0.3)
    raise AssertionError(
        f"the app committed fewer than {count} rows: {project.logs('app')[-2000:]}"
    )
