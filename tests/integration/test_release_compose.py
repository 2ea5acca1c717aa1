"""Releases with `docker compose up -d` in the README's release layout (the app `depends_on`
the sidecar, `service_completed_successfully`; the schema read from the app's own image), on
the real engine with the real Compose CLI: v1 -> v2 under the demo app's writes, the old
layout's deadlock as a regression test, a refused v3 and the way back."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO_IMAGE, DEMO_V2_IMAGE, TEST_LABEL
from tests.integration.compose import ComposeProject, committed_ids, wait_committed

pytestmark = pytest.mark.integration

# The layout the README used before: the sidecar waits for a healthy app.
OLD_LAYOUT = """\
services:
  app:
    depends_on: !reset {}
  sidecar:
    depends_on:
      app:
        condition: service_healthy
"""
# v3: a required column with no default, as `prisma migrate dev` writes it (a rebuild).
V3_MIGRATION = """\
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_User" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "email" TEXT NOT NULL,
  "name" TEXT, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "currency" TEXT NOT NULL DEFAULT 'USD', "country" TEXT NOT NULL);
INSERT INTO "new_User" ("createdAt", "currency", "email", "id", "name")
  SELECT "createdAt", "currency", "email", "id", "name" FROM "User";
DROP TABLE "User";
ALTER TABLE "new_User" RENAME TO "User";
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
PRAGMA foreign_keys=ON;
"""


class LogFollower:
    """Every committed id a container logs, until it stops (Compose removes the old app's
    container on a release, and its logs with it)."""

    def __init__(self, container: Any) -> None:
        self.ids: list[int] = []
        self._thread = threading.Thread(target=self._follow, args=(container,), daemon=True)
        self._thread.start()

    def _follow(self, container: Any) -> None:
        buffer = b""
        for chunk in container.logs(stream=True, follow=True):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b'{"event": "committed"'):
                    self.ids.append(json.loads(line)["id"])

    def finish(self, timeout: float = 60) -> list[int]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the old app never stopped"
        return self.ids


def stored_ids(project: ComposeProject) -> set[int]:
    return {r[0] for r in project.query('SELECT id FROM "Transaction"')}


def schema_sql(project: ComposeProject) -> list[Any]:
    return list(project.query("SELECT type, name, sql FROM sqlite_master ORDER BY name"))


def health(project: ComposeProject) -> dict[str, Any]:
    """GET /health on the app's published port (127.0.0.1), as its users see it."""
    port = project.run("port", "app", "3000").stdout.strip().rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


def in_backup(project: ComposeProject, backup_id: str) -> tuple[set[str], set[int]]:
    """The tables and transaction ids of a backup file, read in a throwaway container."""
    script = (
        "import json, sqlite3, sys\n"
        "c = sqlite3.connect(f'file:/backups/{sys.argv[1]}?immutable=1', uri=True)\n"
        "t = [r[0] for r in c.execute(\"SELECT name FROM sqlite_master WHERE type='table'\")]\n"
        "i = [r[0] for r in c.execute('SELECT id FROM \"Transaction\"')]\n"
        "print(json.dumps([t, i]))\n"
    )
    output = project.client.containers.run(
        DEMO_IMAGE, ["-c", script, backup_id], entrypoint=["python3"], remove=True,
        user="root", labels={TEST_LABEL: "1"},
        volumes={project.volume("backups"): {"bind": "/backups", "mode": "ro"}},
    )  # fmt: skip
    tables, ids = json.loads(output.decode())
    return set(tables), set(ids)


def sidecar_events(project: ComposeProject) -> list[str]:
    return [str(e.get("event")) for e in project.events("sidecar")]


def release(project: ComposeProject, image: str) -> Any:
    project.env["DEMO_IMAGE"] = image
    return project.run("up", "-d", check=False)


def start_on(project: ComposeProject, image: str, rows: int = 30) -> LogFollower:
    project.env["DEMO_IMAGE"] = image
    # Not --wait: in the old layout nothing waits for the sidecar, whose exit fails --wait.
    project.run("up", "-d")
    assert project.wait_exit("sidecar") == 0, project.logs("sidecar")
    project.wait_healthy("app")
    wait_committed(project, rows)
    return LogFollower(project.container("app"))


def test_a_release_with_up_d_migrates_before_the_new_code_starts(
    project: ComposeProject,
) -> None:
    old_app = start_on(project, DEMO_IMAGE)
    # First start: the sidecar created the database from the v1 image's migrations, and
    # left the app, created and not started, for Compose to start.
    assert "deploy.created" in sidecar_events(project)
    assert "app.left_for_compose" in sidecar_events(project)
    # The schema read from the running v1 app: nothing to do.
    plan = json.loads(project.run("run", "--rm", "--no-deps", "sidecar", "plan", "--json").stdout)
    assert plan["ok"] is True
    assert plan["operations"] == []

    result = release(project, DEMO_V2_IMAGE)
    assert result.returncode == 0, result.stderr
    assert project.wait_exit("sidecar") == 0
    app = project.wait_healthy("app")
    assert app.attrs["Config"]["Image"] == DEMO_V2_IMAGE

    # The sidecar migrated with the app down, left it to Compose, and never restarted it.
    events = sidecar_events(project)
    summary = [e for e in project.events("sidecar") if e.get("event") == "deploy.done"][-1]
    assert summary["changed"] is True
    assert summary["restarted"] is False
    assert events.count("app.left_for_compose") == 2
    assert "app.restarting" not in events
    fetched = [e for e in project.events("sidecar") if e.get("event") == "schema.fetched"]
    assert fetched[-1]["source"] == "app:/app/prisma/migrations"

    # v2 is healthy and reads and writes the new columns.
    wait_committed(project, len(committed_ids(project)) + 10)
    document = health(project)
    assert document["ok"] is True
    assert document["version"] == 2
    assert document["data"]["currency"] == "USD"
    assert document["data"]["watchlist"] >= 1
    assert document["data"]["fees"]["total"] > 0

    # Prisma's bookkeeping holds both migrations of the v2 image, finished: a
    # `prisma migrate deploy` of the same folder would have nothing to do.
    recorded = project.query(
        "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL"
        " AND rolled_back_at IS NULL ORDER BY 1"
    )
    assert [r[0] for r in recorded] == ["20261101000000_init", "20261201000000_release_v2"]

    # Every row v1 committed is there.
    before = old_app.finish()
    assert before, "the v1 app logged no commits"
    missing = set(before) - stored_ids(project)
    assert not missing, f"lost committed ids: {sorted(missing)[:10]}"

    # A verified backup of the database as v1 left it, taken just before the change.
    verified = json.loads(
        project.run("run", "--rm", "--no-deps", "sidecar", "verify", "--json").stdout
    )
    assert verified["ok"] is True
    listed = json.loads(project.run("run", "--rm", "--no-deps", "sidecar", "list", "--json").stdout)
    (backup,) = listed["backups"]
    assert backup["id"] == summary["backup"]
    assert backup["verified"] is True
    tables, ids = in_backup(project, backup["id"])
    assert "Watchlist" not in tables  # v1's schema
    assert set(before) <= ids  # the old app had stopped: every row it committed


def test_the_old_layout_deadlocks_on_that_release_and_the_new_one_does_not(
    project: ComposeProject,
) -> None:
    """The layout the README had (the sidecar waits for a healthy app): Compose recreates
    the app first, v2 cannot work on the v1 schema, the sidecar never runs."""
    project.override(OLD_LAYOUT)
    start_on(project, DEMO_IMAGE, rows=10)
    old = release(project, DEMO_V2_IMAGE)
    assert old.returncode != 0
    assert "dependency failed to start" in old.stderr
    assert "is unhealthy" in old.stderr
    assert sidecar_events(project).count("deploy.done") == 1  # the first start's: none since
    project.run("stop", "app")
    assert "Watchlist" not in {row[1] for row in schema_sql(project)}

    # The release layout, same project, same release: it goes through.
    project.overrides.clear()
    new = release(project, DEMO_V2_IMAGE)
    assert new.returncode == 0, new.stderr
    assert project.wait_exit("sidecar") == 0
    project.wait_healthy("app")
    assert health(project)["version"] == 2


def build_v3(project: ComposeProject, tmp_path: Path) -> str:
    """v2's image plus a migration that needs a NOT NULL column without default."""
    context = tmp_path / "v3"
    folder = context / "20261215000000_country"
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text(V3_MIGRATION)
    (context / "Dockerfile").write_text(
        f"FROM {DEMO_V2_IMAGE}\n"
        "COPY 20261215000000_country/ /app/prisma/migrations/20261215000000_country/\n"
    )
    tag = f"{DEMO_IMAGE.rsplit(':', 1)[0]}:v3-{project.name}"
    project.client.images.build(path=str(context), tag=tag, rm=True, labels={TEST_LABEL: "1"})
    return tag


def test_a_refused_release_changes_nothing_and_one_command_goes_back(
    project: ComposeProject, tmp_path: Path
) -> None:
    v3 = build_v3(project, tmp_path)
    try:
        old_app = start_on(project, DEMO_V2_IMAGE)
        result = release(project, v3)
        # What `docker compose up -d` shows, as the README documents it.
        assert result.returncode == 1
        assert 'service "sidecar" didn\'t complete successfully: exit 3' in result.stderr
        assert project.wait_exit("sidecar") == 3
        logs = project.logs("sidecar")
        assert 'error: refused: "User"."country": NOT NULL without a default' in logs
        assert "hint: give the column a DEFAULT" in logs
        # Nothing changed: no backup was needed (the refusal is read-only), the schema is
        # v2's, every committed row is there; the new app was created and never started.
        assert project.container("app").status == "created"
        before = old_app.finish()
        after_schema = schema_sql(project)
        assert "country" not in json.dumps(after_schema)
        assert set(before) <= stored_ids(project)
        listed = project.run("run", "--rm", "--no-deps", "sidecar", "list", "--json")
        assert json.loads(listed.stdout)["backups"] == []

        # The way back: the previous release's image. Its schema is the database's, the
        # sidecar has nothing to do, Compose starts the app.
        back = release(project, DEMO_V2_IMAGE)
        assert back.returncode == 0, back.stderr
        assert project.wait_exit("sidecar") == 0
        assert "nothing to do" in project.logs("sidecar").splitlines()[-1]
        project.wait_healthy("app")
        assert health(project)["version"] == 2
        assert schema_sql(project) == after_schema
    finally:
        project.down()
        project.client.images.remove(v3, force=True)


def test_links_in_the_apps_schema_folder_are_refused_exit_2(
    project: ComposeProject, tmp_path: Path
) -> None:
    context = tmp_path / "evil"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {DEMO_IMAGE}\nUSER root\n"
        "RUN ln -s /etc/passwd /app/prisma/migrations/zz_evil.sql\nUSER app:app\n"
    )
    tag = f"{DEMO_IMAGE.rsplit(':', 1)[0]}:evil-{project.name}"
    project.client.images.build(path=str(context), tag=tag, rm=True, labels={TEST_LABEL: "1"})
    try:
        project.env["DEMO_IMAGE"] = tag
        started = time.monotonic()
        result = project.run("up", "-d", check=False)
        assert result.returncode == 1
        assert 'service "sidecar" didn\'t complete successfully: exit 2' in result.stderr
        logs = project.logs("sidecar")
        assert "zz_evil.sql is a symbolic link" in logs
        # Refused before anything: no database was created.
        ls = project.client.containers.run(
            DEMO_IMAGE, ["-c", "import os; print(os.listdir('/app/data'))"],
            entrypoint=["python3"], remove=True, labels={TEST_LABEL: "1"},
            volumes={project.volume("data"): {"bind": "/app/data", "mode": "ro"}},
        )  # fmt: skip
        assert b"portfolio.db" not in ls
        assert time.monotonic() - started < 120
    finally:
        project.down()
        project.client.images.remove(tag, force=True)
