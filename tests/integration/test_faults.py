"""Fault injection on real processes and containers: the sidecar is killed, the Docker API
vanishes, the backups volume is full or read-only, the app dies or never gets healthy. After
each fault the data is intact: integrity_check ok, the schema entirely old or entirely new,
every id a writer reported committed still present, every backup `list` calls valid passes
`verify`, and the next deploy succeeds.

Random choices come from one seed, printed at the start (``SIDECAR_FAULT_SEED=<n>`` replays a
run); ``SIDECAR_FAULT_KILLS`` sets the number of SIGKILL points (default 30).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sidecar.backup.names import PARTIAL_NAME
from tests.conftest import DEMO_IMAGE, ROOT, SIDECAR_IMAGE, run_once
from tests.faults.badinput import run_cli
from tests.integration.compose import docker_gid

pytestmark = pytest.mark.integration

V1 = ROOT / "deploy" / "schema" / "v1" / "schema.sql"
V2 = ROOT / "deploy" / "schema" / "v2"
APP_UID = 10001  # the images' user: the app and the sidecar both write the database files
Catalogue = frozenset[tuple[str, str, str, str]]


# --------------------------------------------------------------------------- databases


def make_v1(db: Path, rows: int = 300) -> Path:
    """The demo app's v1 database (WAL), with a user, a portfolio and ``rows`` transactions."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=wal")
        conn.executescript(V1.read_text())
        conn.execute("BEGIN")
        conn.execute("INSERT INTO \"User\" (email, name) VALUES ('ada@example.com', 'Ada')")
        conn.execute("INSERT INTO \"Portfolio\" (userId, name) VALUES (1, 'Main')")
        conn.executemany(
            'INSERT INTO "Transaction" (portfolioId, symbol, quantity, price) '
            "VALUES (1, 'SEED', ?, 2.5)",
            [(i,) for i in range(rows)],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return db


def catalogue(db: Path) -> Catalogue:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        rows = conn.execute("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master")
        return frozenset((str(a), str(b), str(c), str(d)) for a, b, c, d in rows)
    finally:
        conn.close()


def integrity(db: Path) -> list[str]:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def stored_ids(db: Path) -> set[int]:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return {int(r[0]) for r in conn.execute('SELECT id FROM "Transaction"')}
    finally:
        conn.close()


def partials(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if PARTIAL_NAME.match(p.name))


# --------------------------------------------------------------------------- processes


@dataclass
class Writer:
    """tests/faults/writer.py in a real process; ``committed`` fills as it prints."""

    proc: subprocess.Popen[str]
    committed: list[int] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, db: Path, interval: float = 0.02) -> Writer:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.writer", str(db), "--interval", str(interval)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        writer = cls(proc)
        writer._reader = threading.Thread(target=writer._read, daemon=True)
        writer._reader.start()
        return writer

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if "committed" in event:
                    self.committed.append(int(event["committed"]))

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.committed) < count:
            assert self.proc.poll() is None, "the writer died"
            assert time.monotonic() < deadline, f"the writer committed {len(self.committed)} rows"
            time.sleep(0.01)

    def stop(self) -> list[int]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(
                f"the writer ignored SIGTERM for 30 s; it was at:\n{err}"
            ) from None
        if self._reader is not None:
            self._reader.join(timeout=10)
        return list(self.committed)


def sidecar_env(db: Path, backups: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SIDECAR_DATABASE": f"file:{db}",
        "SIDECAR_SCHEMA": str(V2),
        "SIDECAR_BACKUP_DIR": str(backups),
        "SIDECAR_QUIET_PERIOD": "200ms",
        "SIDECAR_WAIT_TIMEOUT": "1s",
        "SIDECAR_MIN_FREE_MARGIN": "1M",
        "SIDECAR_LOG_FORMAT": "json",
        # No Docker for the kill test: the restart step is skipped (and says so).
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        **extra,
    }


def start_sidecar(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m sidecar`` in its own process group (a container's worth of processes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", *argv], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def run_sidecar(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    proc = start_sidecar(argv, env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def assert_backups_verify(db: Path, backups: Path, context: str) -> int:
    """Every backup `sidecar list` calls verified passes `sidecar verify <id>`."""
    env = sidecar_env(db, backups)
    listed = run_cli(["list", "--json"], env)
    assert listed.code == 0, f"{context}: list failed: {listed.stderr[-500:]}"
    valid = [b["id"] for b in json.loads(listed.stdout)["backups"] if b["verified"]]
    for backup_id in valid:
        checked = run_cli(["verify", backup_id], env)
        assert checked.code == 0, f"{context}: {backup_id} is listed valid, verify says: " + (
            checked.stdout + checked.stderr
        )
    return len(valid)


# --------------------------------------------------------------------------- SIGKILL


@dataclass(frozen=True)
class References:
    v1: Catalogue
    v2: Catalogue
    normal_s: float


def calibrate(folder: Path) -> References:
    """One undisturbed deploy with the writer running: its duration and the v2 catalogue."""
    db = make_v1(folder / "data" / "portfolio.db")
    v1 = catalogue(db)
    writer = Writer.start(db)
    writer.wait_for(5)
    started = time.monotonic()
    code, output = run_sidecar(["deploy"], sidecar_env(db, folder / "backups"))
    normal = time.monotonic() - started
    committed = writer.stop()
    assert code == 0, output[-3000:]
    assert set(committed) <= stored_ids(db)
    v2 = catalogue(db)
    assert v2 != v1
    return References(v1, v2, normal)


def seed() -> int:
    chosen = int(os.environ.get("SIDECAR_FAULT_SEED") or random.randrange(2**32))  # noqa: S311
    print(f"SIDECAR_FAULT_SEED={chosen}")  # shown by pytest with -s or on failure
    return chosen


def test_sigkill_at_random_points_during_deploy_loses_nothing(tmp_path: Path) -> None:
    chosen = seed()
    rng = random.Random(chosen)  # noqa: S311 - kill points, not secrets
    refs = calibrate(tmp_path / "calibrate")
    kills = int(os.environ.get("SIDECAR_FAULT_KILLS", "30"))
    summary = {"old": 0, "new": 0}
    for i in range(kills):
        delay = rng.uniform(0.0, refs.normal_s)
        whole_group = rng.random() < 0.5
        context = (
            f"SIDECAR_FAULT_SEED={chosen} kill {i} after {delay:.3f}s "
            f"({'process group' if whole_group else 'main process only'})"
        )
        state = kill_once(tmp_path / f"kill{i:02d}", delay, whole_group, refs, context)
        summary[state] += 1
    print(f"SIGKILL summary over {kills} kills (normal deploy {refs.normal_s:.2f}s): {summary}")
    assert summary["old"] + summary["new"] == kills


def kill_once(folder: Path, delay: float, whole_group: bool, refs: References, context: str) -> str:
    """One SIGKILL during a deploy under a live writer, then every check. 'old' or 'new'."""
    db = make_v1(folder / "data" / "portfolio.db")
    backups = folder / "backups"
    env = sidecar_env(db, backups)
    writer = Writer.start(db)
    try:
        writer.wait_for(3)
        proc = start_sidecar(["deploy"], env)
        time.sleep(delay)  # the kill point, chosen at random within a normal run
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if not whole_group:
            # A copier child notices its parent is gone and stops; give it the time to.
            _wait_group_gone(proc.pid, context)
    except BaseException:
        with contextlib.suppress(Exception):  # never hide the first failure behind this one
            writer.stop()
        raise
    committed = writer.stop()

    problems = integrity(db)
    assert problems == ["ok"], f"{context}: integrity_check: {problems[:5]}"
    schema = catalogue(db)
    assert schema in (refs.v1, refs.v2), f"{context}: a schema neither old nor new: " + str(
        sorted(schema ^ refs.v2)[:6]
    )
    lost = set(committed) - stored_ids(db)
    assert not lost, f"{context}: committed ids lost: {sorted(lost)[:10]}"
    assert_backups_verify(db, backups, context)

    code, output = run_sidecar(["deploy"], env)
    assert code == 0, f"{context}: the next deploy failed:\n{output[-3000:]}"
    assert catalogue(db) == refs.v2, f"{context}: the next deploy did not leave v2"
    assert set(committed) <= stored_ids(db), f"{context}: ids lost by the next deploy"
    assert partials(backups) == [], f"{context}: partial files left: {partials(backups)}"
    assert_backups_verify(db, backups, context)
    return "old" if schema == refs.v1 else "new"


def _wait_group_gone(pgid: int, context: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            raise AssertionError(f"{context}: the sidecar's children outlived it by {timeout}s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- containers


@dataclass
class Stack:
    """The demo app in a real container, writing to a host folder (owned by the images'
    user) that the sidecar container mounts too."""

    data: Path
    app: Any
    v1: Catalogue

    @property
    def db(self) -> Path:
        return self.data / "portfolio.db"

    def committed(self) -> list[int]:
        ids = []
        for line in self.app.logs(stdout=True, stderr=False).decode().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "committed":
                    ids.append(int(event["id"]))
        return ids

    def wait_committed(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.committed()) < count:
            assert time.monotonic() < deadline, self.app.logs()[-2000:]
            time.sleep(0.2)

    def assert_intact(self, *, schemas: tuple[Catalogue, ...]) -> Catalogue:
        """integrity_check ok, the schema one of ``schemas``, every committed id present."""
        assert integrity(self.db) == ["ok"]
        schema = catalogue(self.db)
        assert schema in schemas, "the schema is neither entirely old nor entirely new"
        lost = set(self.committed()) - stored_ids(self.db)
        assert not lost, f"committed ids lost: {sorted(lost)[:10]}"
        return schema


def own(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        os.chown(item, APP_UID, APP_UID)


def start_stack(
    tmp_path: Path, containers: Any, unique_name: Any, env: dict[str, str] | None = None,
    **app: Any,
) -> Stack:  # fmt: skip
    data = tmp_path / "data"
    make_v1(data / "portfolio.db", rows=40_000)  # about 1.5 MB: more than a 1 MiB tmpfs
    v1 = catalogue(data / "portfolio.db")
    own(data)
    container = containers(
        DEMO_IMAGE, name=unique_name("app"), environment={"DEMO_INTERVAL": "0.05", **(env or {})},
        volumes={str(data): {"bind": "/app/data", "mode": "rw"}}, **app,
    )  # fmt: skip
    made = Stack(data, container, v1)
    made.wait_committed(10)
    return made


@pytest.fixture
def stack(tmp_path: Path, containers: Any, unique_name: Any) -> Stack:
    return start_stack(tmp_path, containers, unique_name)


def sidecar_volumes(stack: Stack, backups: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {
        str(stack.data): {"bind": "/app/data", "mode": "rw"},
        str(V2): {"bind": "/schema", "mode": "ro"},
        **backups,
    }


SIDECAR_ENV = {
    "SIDECAR_DATABASE": "/app/data/portfolio.db",
    "SIDECAR_SCHEMA": "/schema",
    "SIDECAR_QUIET_PERIOD": "200ms",
    "SIDECAR_WAIT_TIMEOUT": "2s",
    "SIDECAR_LOG_FORMAT": "json",
}


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def test_backups_volume_full_exits_5_and_changes_nothing(
    docker_client: Any, stack: Stack, unique_name: Any
) -> None:
    name = unique_name("full")
    docker_client.volumes.create(
        name, driver="local", labels={"io.sidecar.test": "1"},
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"},
    )  # fmt: skip
    try:
        volumes = sidecar_volumes(stack, {name: {"bind": "/backups", "mode": "rw"}})
        code, output = run_once(docker_client, SIDECAR_IMAGE, ["deploy"],
                                environment=SIDECAR_ENV, volumes=volumes)  # fmt: skip
        assert code == 5, output[-3000:]
        assert "/backups" in error_line(output)
        assert "free space" in error_line(output)
        stack.wait_committed(len(stack.committed()) + 5)  # the app kept writing
        stack.assert_intact(schemas=(stack.v1,))
        code, listing = run_once(docker_client, SIDECAR_IMAGE, ["-c", "ls -A /backups"],
                                 entrypoint=["sh"], volumes=volumes)  # fmt: skip
        assert code == 0, listing
        assert not [n for n in listing.split() if ".partial" in n or n.endswith(".db")], listing
    finally:
        for container in docker_client.containers.list(all=True, filters={"volume": name}):
            container.remove(force=True)
        docker_client.volumes.get(name).remove(force=True)


def test_read_only_backups_volume_is_a_clear_error_and_changes_nothing(
    docker_client: Any, stack: Stack, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    own(backups)
    volumes = sidecar_volumes(stack, {str(backups): {"bind": "/backups", "mode": "ro"}})
    code, output = run_once(docker_client, SIDECAR_IMAGE, ["deploy"],
                            environment=SIDECAR_ENV, volumes=volumes)  # fmt: skip
    assert code == 2, output[-3000:]
    assert "/backups" in error_line(output)
    assert "writable" in error_line(output)
    assert list(backups.iterdir()) == []
    stack.wait_committed(len(stack.committed()) + 5)
    stack.assert_intact(schemas=(stack.v1,))


def deploy_watching(
    containers: Any,
    stack: Stack,
    backups: Path,
    actions: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    volumes: dict[str, Any] | None = None,
) -> tuple[int, str, set[str]]:
    """Run `deploy` in the sidecar image against the app; when the sidecar logs an event named
    in ``actions``, run that fault once. (exit code, output, the events that fired)."""
    own(backups)
    sidecar = containers(
        SIDECAR_IMAGE, command=["deploy"],
        environment={**SIDECAR_ENV, "SIDECAR_APP": stack.app.name,
                     "SIDECAR_HEALTHY_TIMEOUT": "60s", **(env or {})},
        volumes=volumes or {**sidecar_volumes(stack, {str(backups): {"bind": "/backups",
                                                                       "mode": "rw"}}),
                            "/var/run/docker.sock": {"bind": "/var/run/docker.sock",
                                                     "mode": "rw"}},
        group_add=[docker_gid()],
    )  # fmt: skip
    fired: set[str] = set()
    buffer = b""
    for chunk in sidecar.logs(stream=True, follow=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line).get("event")
                if event in actions and event not in fired:
                    fired.add(event)
                    actions[event]()
    code = int(sidecar.wait(timeout=300)["StatusCode"])
    return code, sidecar.logs().decode("utf-8", "replace"), fired


def test_app_killed_during_the_deploy_is_started_again_and_nothing_is_lost(
    containers: Any, stack: Stack, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    code, output, fired = deploy_watching(
        containers, stack, backups, {"backup.created": stack.app.kill}
    )
    assert fired == {"backup.created"}, output[-3000:]
    assert code == 0, output[-3000:]
    stack.app.reload()
    assert stack.app.attrs["State"]["Running"] is True
    stack.wait_committed(len(stack.committed()) + 5)  # writing again, on the new schema
    assert stack.assert_intact(schemas=(stack.v1, catalogue(stack.db))) != stack.v1
    assert assert_backups_verify(stack.db, backups, "app killed") == 1


_SECOND = 1_000_000_000
# The app's healthcheck, failing while the data volume holds a file named force-unhealthy.
FLAG_HEALTHCHECK = {
    "test": ["CMD-SHELL", "test ! -e /app/data/force-unhealthy && python3 /app/healthcheck.py"],
    "interval": _SECOND, "timeout": 3 * _SECOND, "retries": 2, "start_period": 2 * _SECOND,
}  # fmt: skip


def test_app_never_healthy_after_the_restart_exits_4_and_keeps_the_data(
    containers: Any, tmp_path: Path, unique_name: Any
) -> None:
    stack = start_stack(tmp_path, containers, unique_name, healthcheck=FLAG_HEALTHCHECK)
    backups = tmp_path / "backups"
    backups.mkdir()
    flag = stack.data / "force-unhealthy"
    code, output, fired = deploy_watching(
        containers, stack, backups, {"app.restarting": flag.touch},
        env={"SIDECAR_HEALTHY_TIMEOUT": "10s"},
    )  # fmt: skip
    assert fired == {"app.restarting"}, output[-3000:]
    assert code == 4, output[-3000:]
    assert "not healthy" in error_line(output)
    flag.unlink()
    # The change was committed before the restart (the app is the unhealthy part, not the
    # data): the schema is entirely new, every committed row is there, the backup verifies.
    assert stack.assert_intact(schemas=(stack.v1, catalogue(stack.db))) != stack.v1
    assert assert_backups_verify(stack.db, backups, "never healthy") == 1


class CuttableProxy:
    """A unix-socket proxy in front of the Docker API that dies for good (listener, open
    connections and socket file) on the first request containing ``cut_on``, before that
    request reaches the engine: the engine vanishing mid-run."""

    def __init__(self, path: Path, cut_on: bytes) -> None:
        self.path, self.cut_on = path, cut_on
        self.cut = threading.Event()
        self.requests = 0
        self._sockets: list[socket.socket] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        path.chmod(0o777)  # the sidecar runs as uid 10001
        self._server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect("/var/run/docker.sock")
        self._sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.cut_on in data:
                self.kill()
                return
            self.requests += 1
            with contextlib.suppress(OSError):
                upstream.sendall(data)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def kill(self) -> None:
        self.cut.set()
        for sock in [self._server, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.path.unlink(missing_ok=True)


def test_docker_api_vanishing_mid_deploy_exits_5_and_leaves_the_app_running(
    containers: Any, stack: Stack, tmp_path: Path
) -> None:
    proxy_dir = tmp_path / "proxy"
    proxy_dir.mkdir()
    proxy_dir.chmod(0o755)
    proxy = CuttableProxy(proxy_dir / "docker.sock", cut_on=b"/restart")
    backups = tmp_path / "backups"
    backups.mkdir()
    volumes = {
        **sidecar_volumes(stack, {str(backups): {"bind": "/backups", "mode": "rw"}}),
        str(proxy_dir): {"bind": "/proxy", "mode": "rw"},
    }
    try:
        code, output, _ = deploy_watching(
            containers, stack, backups, {},
            env={"DOCKER_HOST": "unix:///proxy/docker.sock"}, volumes=volumes,
        )  # fmt: skip
    finally:
        proxy.kill()
    assert proxy.requests > 0, "the sidecar never used the Docker API"
    assert proxy.cut.is_set(), f"the sidecar never asked for a restart:\n{output[-3000:]}"
    assert code == 5, output[-3000:]
    assert "Docker" in error_line(output)
    stack.app.reload()
    assert stack.app.attrs["State"]["Running"] is True  # never left stopped
    stack.wait_committed(len(stack.committed()) + 5)
    stack.assert_intact(schemas=(stack.v1, catalogue(stack.db)))
    assert assert_backups_verify(stack.db, backups, "Docker API cut") == 1


# A health query that takes seconds: the deploy stays between `app.stopped` and COMMIT long
# enough for the test to SIGKILL it there, every time.
SLOW_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000)\n"
    "SELECT count(*) > 0 FROM c;\n"
)


def test_an_app_stopped_by_a_killed_deploy_is_started_by_the_next_run(
    docker_client: Any, containers: Any, tmp_path: Path, unique_name: Any
) -> None:
    """Issue 11, item 3: an exclusive-locking app, the deploy SIGKILLed right after it stopped
    the app. The next deploy, even one with nothing to do, starts the app again and says so."""
    stack = start_stack(tmp_path, containers, unique_name, env={"DEMO_LOCKING_MODE": "exclusive"})
    backups = tmp_path / "backups"
    backups.mkdir()
    own(backups)
    slow = tmp_path / "slow.sql"
    slow.write_text(SLOW_QUERY)
    slow.chmod(0o644)
    volumes = {
        **sidecar_volumes(stack, {str(backups): {"bind": "/backups", "mode": "rw"}}),
        str(slow): {"bind": "/health.sql", "mode": "ro"},
        str(V1): {"bind": "/schema-v1.sql", "mode": "ro"},
        "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
    }
    env = {**SIDECAR_ENV, "SIDECAR_APP": stack.app.name, "SIDECAR_HEALTHY_TIMEOUT": "60s"}
    sidecar = containers(
        SIDECAR_IMAGE, command=["deploy"], volumes=volumes, group_add=[docker_gid()],
        environment={**env, "SIDECAR_HEALTH_QUERIES": "/health.sql"},
    )  # fmt: skip
    buffer = b""
    for chunk in sidecar.logs(stream=True, follow=True):
        buffer += chunk
        if b'"event": "app.stopped"' in buffer:
            sidecar.kill()
            break
    sidecar.wait(timeout=60)
    assert b'"event": "app.starting"' not in sidecar.logs(), sidecar.logs()[-3000:]
    stack.app.reload()
    assert stack.app.attrs["State"]["Running"] is False  # the kill left it down

    # Nothing to do for this deploy (the database holds v1): it must still start the app.
    code, output = run_once(
        docker_client, SIDECAR_IMAGE, ["deploy"], volumes=volumes, group_add=[docker_gid()],
        environment={**env, "SIDECAR_SCHEMA": "/schema-v1.sql"},
    )  # fmt: skip
    assert code == 0, output[-3000:]
    summary = [line for line in output.splitlines() if line.startswith("deploy: ")]
    assert summary, output[-3000:]
    assert f"started {stack.app.name} again" in summary[0], output[-3000:]
    stack.app.reload()
    assert stack.app.attrs["State"]["Running"] is True
    assert not (stack.data / "portfolio.db.sidecar-stopped").exists()
    stack.wait_committed(len(stack.committed()) + 5)  # writing again


def test_a_one_shot_backup_may_stop_an_exclusive_app_briefly_when_allowed(
    docker_client: Any, containers: Any, tmp_path: Path, unique_name: Any
) -> None:
    """Issue 11: one-shot backups of an exclusive-locking app always failed (exit 5). With
    SIDECAR_BACKUP_STOP_APP=1 the sidecar stops it, backs up, and starts it again."""
    stack = start_stack(tmp_path, containers, unique_name, env={"DEMO_LOCKING_MODE": "exclusive"})
    backups = tmp_path / "backups"
    backups.mkdir()
    own(backups)
    volumes = {
        **sidecar_volumes(stack, {str(backups): {"bind": "/backups", "mode": "rw"}}),
        "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
    }
    env = {**SIDECAR_ENV, "SIDECAR_APP": stack.app.name}
    code, output = run_once(docker_client, SIDECAR_IMAGE, ["backup"], volumes=volumes,
                            environment=env, group_add=[docker_gid()])  # fmt: skip
    assert code == 5, output[-3000:]
    assert "SIDECAR_BACKUP_STOP_APP=1" in output
    code, output = run_once(
        docker_client, SIDECAR_IMAGE, ["backup"], volumes=volumes, group_add=[docker_gid()],
        environment={**env, "SIDECAR_BACKUP_STOP_APP": "1"},
    )  # fmt: skip
    assert code == 0, output[-3000:]
    assert '"event": "app.stopped"' in output
    stack.app.reload()
    assert stack.app.attrs["State"]["Running"] is True
    assert not (stack.data / "portfolio.db.sidecar-stopped").exists()
    stack.wait_committed(len(stack.committed()) + 5)  # writing again
    assert assert_backups_verify(stack.db, backups, "backup with the app stopped") == 1
