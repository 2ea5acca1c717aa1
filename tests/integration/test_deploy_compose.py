"""The product end to end: the README's docker-compose.yml on the real engine with the real
Compose v2 CLI, a live demo app committing rows, and the sidecar doing its whole job.

These are the running-app flow (a change made while the app runs, the way to migrate before
swapping code): the project starts on v1 (the sidecar creates the database from the v1 app's
migrations, then Compose starts the app), then the next schema is mounted into the sidecar
(`SIDECAR_SCHEMA=/schema`) and it deploys beside the running app: lull, lock, backup, change,
restart. Releases with `docker compose up -d` are in test_release_compose.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SIDECAR_IMAGE, TEST_LABEL, run_once
from tests.integration.compose import ComposeProject, committed_ids, wait_committed

pytestmark = pytest.mark.integration

V2_TABLES = {"User", "Portfolio", "Transaction", "Watchlist"}
V2 = ROOT / "deploy/schema/v2"


def start_app(project: ComposeProject, rows: int = 30, schema: Path | None = V2) -> Any:
    """`up -d --wait` on v1, then (``schema``) the next schema mounted for the sidecar."""
    project.run("up", "-d", "--wait", "app")
    wait_committed(project, rows)
    if schema is not None:
        mount_schema(project, schema)
    app = project.container("app")
    app.reload()
    return app


def mount_schema(project: ComposeProject, folder: Path) -> None:
    project.override(
        "services:\n  sidecar:\n    environment:\n      SIDECAR_SCHEMA: /schema\n"
        f"    volumes:\n      - {folder}:/schema:ro\n"
    )


def deploy(project: ComposeProject, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the sidecar service as Compose does on `up`; its exit code and summary event."""
    if args:
        project.override(
            "services:\n  sidecar:\n    command: " + json.dumps(["deploy", *args]) + "\n"
        )
    project.run("up", "-d", "--no-deps", "sidecar")
    code = project.wait_exit("sidecar")
    summary = [e for e in project.events("sidecar") if e.get("event", "").startswith("deploy.")]
    return code, (summary[-1] if summary else {})


def tables(project: ComposeProject) -> set[str]:
    """The app's tables: not SQLite's, nor Prisma's bookkeeping (the first start created the
    database from the app's migrations folder, and recorded them there, as Prisma does)."""
    rows = project.query("SELECT name FROM sqlite_master WHERE type='table'")
    return {r[0] for r in rows if not r[0].startswith(("sqlite_", "_prisma_migrations"))}


def columns(project: ComposeProject, table: str) -> set[str]:
    return {r[1] for r in project.query(f'PRAGMA table_info("{table}")')}


def app_starts(project: ComposeProject) -> int:
    return sum(1 for e in project.events("app") if e.get("event") == "app.started")


def test_compose_up_backs_up_migrates_and_restarts_the_app_once(project: ComposeProject) -> None:
    app = start_app(project)
    started_before = app.attrs["State"]["StartedAt"]
    assert "Watchlist" not in tables(project)

    code, summary = deploy(project)
    assert code == 0, project.logs("sidecar")
    assert summary["event"] == "deploy.done"
    assert summary["changed"] is True
    assert summary["backup"]
    assert summary["quiet"] is True, "the sidecar did not wait for the app's lull"
    events = [e.get("event") for e in project.events("sidecar")]
    assert events.index("quiesce.quiet") < events.index("backup.created")

    # The app was restarted exactly once, and is healthy again and writing.
    app = project.wait_healthy("app")
    assert app.attrs["State"]["StartedAt"] != started_before
    assert app_starts(project) == 2
    before = len(committed_ids(project))
    wait_committed(project, before + 10)

    # The schema is the desired one: new table and columns, nothing lost.
    assert tables(project) == V2_TABLES
    assert {"currency"} <= columns(project, "User")
    assert {"fee"} <= columns(project, "Transaction")
    assert {"updatedAt", "createdAt", "name", "userId"} <= columns(project, "Portfolio")

    # Every id the app logged as committed is in the database.
    project.run("stop", "app")
    logged = set(committed_ids(project))
    stored = {r[0] for r in project.query('SELECT id FROM "Transaction"')}
    assert logged, "the app logged no commits"
    assert logged <= stored, f"lost committed ids: {sorted(logged - stored)[:10]}"

    # The backup taken before the change verifies.
    verify = project.run("run", "--rm", "--no-deps", "sidecar", "verify", "--json")
    report = json.loads(verify.stdout)
    assert report["ok"] is True
    assert len(report["backups"]) == 1


def test_one_shot_backup_while_the_app_writes(project: ComposeProject) -> None:
    start_app(project)
    result = project.run("run", "--rm", "--no-deps", "sidecar", "backup", "--json")
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["backup"]["id"].startswith("portfolio_backup_production_")
    assert document["backup"]["manifest"]["row_counts"]["Transaction"] > 0
    listed = json.loads(project.run("run", "--rm", "--no-deps", "sidecar", "list", "--json").stdout)
    assert [b["id"] for b in listed["backups"]] == [document["backup"]["id"]]
    verified = project.run("run", "--rm", "--no-deps", "sidecar", "verify", "--json")
    assert json.loads(verified.stdout)["ok"] is True
    # The app kept committing during the backup.
    before = len(committed_ids(project))
    wait_committed(project, before + 5)


def test_an_app_that_never_releases_the_lock_is_stopped_and_started_again(
    project: ComposeProject,
) -> None:
    project.override(
        "services:\n"
        "  app:\n"
        "    environment:\n"
        "      DEMO_LOCKING_MODE: exclusive\n"
        "  sidecar:\n"
        "    environment:\n"
        "      SIDECAR_WAIT_TIMEOUT: 3s\n"
        "      SIDECAR_QUIET_PERIOD: 500ms\n"
    )
    start_app(project)
    code, summary = deploy(project)
    assert code == 0, project.logs("sidecar")
    assert summary["app_stopped"] is True
    project.wait_healthy("app")
    # Stopped once and started once: two starts in all, no extra restart on top.
    assert app_starts(project) == 2
    # An exclusive-mode app keeps every other reader out: look at the schema once it is down.
    project.run("stop", "app")
    assert tables(project) == V2_TABLES


def test_destructive_schema_is_reported_never_executed(project: ComposeProject) -> None:
    app = start_app(project, schema=ROOT / "deploy/schema/destructive")
    before_tables = tables(project)
    code, summary = deploy(project)
    assert code == 0, project.logs("sidecar")
    assert summary["drift"], summary
    assert tables(project) == before_tables
    # The one change: the kept "Transaction" loses its foreign key to "Portfolio" (the new
    # app's deletes there would fail on it); every table, column and row stays.
    assert project.query('PRAGMA foreign_key_list("Transaction")') == []
    app.reload()

    code, _ = deploy(project, "--strict")
    assert code == 3
    assert "drift" in project.logs("sidecar")
    assert tables(project) == before_tables


def test_failing_health_query_rolls_back_and_leaves_the_app_alone(
    project: ComposeProject, tmp_path: Path
) -> None:
    failing = tmp_path / "health.sql"
    failing.write_text('SELECT count(*) = -1 FROM "User";\n')
    start_app(project)
    project.override(f"services:\n  sidecar:\n    volumes:\n      - {failing}:/health.sql:ro\n")
    code, _ = deploy(project)
    assert code == 4, project.logs("sidecar")
    assert "health query failed" in project.logs("sidecar")
    assert "Watchlist" not in tables(project)
    assert "currency" not in columns(project, "User")
    assert app_starts(project) == 1


def test_two_sidecars_at_once_one_deploys_the_other_waits(project: ComposeProject) -> None:
    start_app(project)
    first = project.run("run", "-d", "--no-deps", "sidecar", "deploy")
    second = project.run("run", "-d", "--no-deps", "sidecar", "deploy")
    ids = [first.stdout.strip(), second.stdout.strip()]
    results = []
    for container_id in ids:
        container = project.client.containers.get(container_id)
        code = container.wait(timeout=240)["StatusCode"]
        logs = container.logs().decode()
        results.append((code, logs))
        container.remove(force=True)
    assert [code for code, _ in results] == [0, 0], results
    combined = "\n".join(logs for _, logs in results)
    assert "lease.waiting" in combined
    changed = [json.loads(line)["changed"] for _, logs in results for line in logs.splitlines()
               if '"deploy.done"' in line]  # fmt: skip
    assert sorted(changed) == [False, True]
    assert tables(project) == V2_TABLES


def test_init_container_without_socket_or_app(docker_client: Any, volumes: Any) -> None:
    """Kubernetes-style: no Docker socket, the app not started yet, a fresh volume."""
    data, backups = volumes("data"), volumes("backups")
    mounts = {
        data: {"bind": "/app/data", "mode": "rw"},
        backups: {"bind": "/backups", "mode": "rw"},
        str(ROOT / "deploy/schema/v2"): {"bind": "/schema", "mode": "ro"},
    }
    env = {"SIDECAR_DATABASE": "/app/data/portfolio.db", "SIDECAR_SCHEMA": "/schema"}
    code, output = run_once(docker_client, SIDECAR_IMAGE, ["deploy"], environment=env,
                            volumes=mounts)  # fmt: skip
    assert code == 0, output
    assert "restart.skipped" in output
    started = time.monotonic()
    code, output = run_once(docker_client, SIDECAR_IMAGE, ["deploy", "--json"],
                            environment=env, volumes=mounts)  # fmt: skip
    assert code == 0, output
    assert '"changed": false' in output
    assert time.monotonic() - started < 30


def test_one_shot_restore_stops_the_app_and_starts_it_again(project: ComposeProject) -> None:
    start_app(project)
    taken = json.loads(
        project.run("run", "--rm", "--no-deps", "sidecar", "backup", "--json").stdout
    )
    backup_id = taken["backup"]["id"]
    restored = project.run("run", "--rm", "--no-deps", "sidecar", "restore", backup_id, "--json")
    document = json.loads(restored.stdout)
    assert document["ok"] is True
    assert document["safety_backup"]
    # The app was stopped for the swap and started again, and is healthy and writing.
    project.wait_healthy("app")
    assert app_starts(project) == 2
    wait_committed(project, len(committed_ids(project)) + 5)


def _readme_restore_command() -> list[str]:
    """The README's own `docker compose run ... restore latest` line, after `docker compose`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("docker compose run") and " restore latest" in line
    )
    return line.split("#", 1)[0].split()[2:]


def test_the_readmes_restore_command_keeps_a_stopped_app_stopped(project: ComposeProject) -> None:
    """The user stops the app, then restores with the README's command: Compose must not
    start the app again through the sidecar's depends_on, and the sidecar must not either
    (it starts only what it stopped)."""
    start_app(project)
    project.run("run", "--rm", "--no-deps", "sidecar", "backup")
    project.run("stop", "app")
    restored = project.run(*_readme_restore_command(), "--json")
    document = json.loads(restored.stdout)
    assert document["ok"] is True
    assert document["safety_backup"]
    app = project.container("app")
    app.reload()
    assert app.attrs["State"]["Running"] is False, "the restore started the stopped app"
    assert app_starts(project) == 1


def test_restore_force_refuses_while_an_app_in_another_container_writes(
    project: ComposeProject,
) -> None:
    """Without SIDECAR_APP the sidecar cannot stop the app: its WAL-mode connection (a lock
    the kernel shows across containers, its pid not visible) refuses even --force, and every
    commit the app makes keeps landing in the live database."""
    start_app(project)
    project.run("run", "--rm", "--no-deps", "sidecar", "backup")
    result = project.run(
        "run", "--rm", "--no-deps", "-e", "SIDECAR_APP=", "sidecar",
        "restore", "latest", "--force", "--json", check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert "a process this sidecar cannot see" in error["message"]
    assert "WAL-mode connection" in error["message"]
    assert "SIDECAR_APP" in error["hint"]
    ids = wait_committed(project, len(committed_ids(project)) + 5)
    stored = {row[0] for row in project.query('SELECT id FROM "Transaction"')}
    assert set(ids) <= stored


def test_a_wiped_data_volume_is_noticed_and_the_last_good_backup_kept(
    project: ComposeProject,
) -> None:
    """The data volume is lost; on the next `up` the app re-creates its empty schema, which
    every health check accepts. The backups must say so, and keep the data."""
    start_app(project)
    # Months of data, in short: 20,000 more transactions (through the volume, like the app).
    script = (
        "import sqlite3\n"
        "c = sqlite3.connect('/app/data/portfolio.db', timeout=30)\n"
        'c.executemany(\'INSERT INTO "Transaction" (portfolioId, symbol, quantity, price) '
        "VALUES (1, ?, 1, 1.0)', [('OLD',)] * 20000)\n"
        "c.commit()\n"
    )
    project.client.containers.run(
        SIDECAR_IMAGE, ["-c", script], entrypoint=["python3"], remove=True,
        volumes={project.volume("data"): {"bind": "/app/data", "mode": "rw"}},
        labels={TEST_LABEL: "1"},
    )  # fmt: skip
    code, summary = deploy(project)
    assert code == 0, project.logs("sidecar")
    good = summary["backup"]

    # The volume goes (a host rebuilt, a `down -v` by mistake); the backups volume stays.
    project.run("rm", "--stop", "--force", "app", "sidecar")
    project.client.volumes.get(project.volume("data")).remove()
    # The release layout runs the sidecar first: a missing database next to verified
    # backups is refused (exit 3), and Compose never starts the app on an empty volume.
    refused = project.run("up", "-d", "app", check=False)
    assert refused.returncode != 0
    assert 'service "sidecar" didn\'t complete successfully: exit 3' in refused.stderr
    assert "sidecar restore latest" in project.logs("sidecar")
    assert project.container("app").status == "created"

    # Started empty on purpose (SIDECAR_ALLOW_FRESH) or by an app that creates its own
    # schema: every health check accepts the young database. The next backup says so.
    project.override("services:\n  sidecar:\n    environment:\n      SIDECAR_ALLOW_FRESH: '1'\n")
    start_app(project, rows=5, schema=None)
    assert project.query("SELECT count(*) FROM \"Transaction\" WHERE symbol = 'OLD'") == [[0]]
    backup = project.run("run", "--rm", "--no-deps", "sidecar", "backup")
    warning = next(
        json.loads(line) for line in backup.stderr.splitlines() if '"backup.rows_vanished"' in line
    )
    assert warning["since"] == good
    assert f"sidecar restore {good}" in warning["hint"]

    # Routine backups of the empty database never push the good one out (SIDECAR_KEEP=2).
    for _ in range(3):
        project.run("run", "--rm", "--no-deps", "-e", "SIDECAR_KEEP=2", "sidecar", "backup")
    listed = json.loads(project.run("run", "--rm", "--no-deps", "sidecar", "list", "--json").stdout)
    ids = [b["id"] for b in listed["backups"]]
    assert good in ids
    assert len(ids) == 3  # the two newest, and the one that holds the data
