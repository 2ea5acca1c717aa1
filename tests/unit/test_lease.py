"""The lease: one sidecar per data volume, real processes contending on a real flock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sidecar.errors import ConfigError, ExitCode, RefusedError
from sidecar.lease import hold_lease, lease_path, read_holder
from tests.conftest import ROOT

# A holder in another process: takes the lease, says so, then holds it until told (a line on
# stdin) or killed.
HOLDER = """
import sys
from pathlib import Path
from sidecar.lease import hold_lease
from sidecar.logs import configure
configure("json")  # logs on stderr: stdout is the test's channel
with hold_lease(Path(sys.argv[1]), wait=10, command="deploy"):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "portfolio.db"


@pytest.fixture
def holder(db: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_acquire_and_release_writes_then_clears_holder_info(db: Path) -> None:
    with capture_logs() as logs, hold_lease(db, wait=1, command="deploy") as lease:
        info = read_holder(lease.path)
        assert info["pid"] == os.getpid()
        assert info["command"] == "deploy"
        assert {"hostname", "started_at"} <= info.keys()
    assert lease.path == lease_path(db) == db.with_name("portfolio.db.sidecar-lease")
    assert [e["event"] for e in logs] == ["lease.acquired", "lease.released"]
    # The file stays (deleting an flock file races); only its diagnostics are cleared.
    assert lease.path.exists()
    assert read_holder(lease.path) == {}


def test_a_second_holder_times_out_with_exit_3_naming_the_holder(
    db: Path, holder: subprocess.Popen[str]
) -> None:
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(RefusedError) as caught:  # noqa: SIM117
        with hold_lease(db, wait=0.5, command="deploy"):
            pytest.fail("the lease was held by another process")
    assert time.monotonic() - started >= 0.5
    assert caught.value.exit_code == ExitCode.REFUSED
    assert f"pid {holder.pid}" in str(caught.value)
    assert str(db) in str(caught.value)
    assert caught.value.hint
    waiting = [e for e in logs if e["event"] == "lease.waiting"]
    assert len(waiting) == 1  # announced once, not once per poll
    assert waiting[0]["holder"]["pid"] == holder.pid


def test_the_second_waits_and_gets_it_when_the_first_releases(
    db: Path, holder: subprocess.Popen[str]
) -> None:
    assert holder.stdin is not None
    timer = threading.Timer(0.6, lambda: (holder.stdin.write("go\n"), holder.stdin.flush()))  # type: ignore[union-attr]
    timer.start()
    try:
        with capture_logs() as logs, hold_lease(db, wait=10, command="deploy") as lease:
            assert read_holder(lease.path)["pid"] == os.getpid()
    finally:
        timer.cancel()
    assert 0.4 <= lease.waited_s < 5
    assert [e["event"] for e in logs] == ["lease.waiting", "lease.acquired", "lease.released"]
    assert holder.wait(5) == 0


def test_a_killed_holder_frees_the_lease(db: Path, holder: subprocess.Popen[str]) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(5)
    # The dead holder's diagnostics are still in the file; the kernel dropped its lock.
    assert read_holder(lease_path(db))["pid"] == holder.pid
    with hold_lease(db, wait=2, command="backup") as lease:
        assert lease.waited_s < 1
        assert read_holder(lease.path)["command"] == "backup"


def test_two_holders_in_one_process_contend_too(db: Path) -> None:
    with hold_lease(db, wait=1, command="deploy"), pytest.raises(RefusedError):  # noqa: SIM117
        with hold_lease(db, wait=0.2, command="deploy"):
            pytest.fail("flock must exclude a second open file description")


def test_a_garbled_lease_file_is_only_diagnostics(db: Path) -> None:
    lease_path(db).write_text("not json")
    with hold_lease(db, wait=1, command="deploy") as lease:
        assert json.loads(lease.path.read_text())["command"] == "deploy"


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigError) as caught,
        hold_lease(tmp_path / "nope" / "x.db", wait=1, command="deploy"),
    ):
        pass
    assert "does not exist" in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ConfigError), hold_lease(folder / "x.db", wait=1, command="deploy"):
            pass
    finally:
        folder.chmod(0o755)


def test_a_stop_request_ends_the_wait_for_the_lease(
    db: Path, holder: subprocess.Popen[str]
) -> None:
    from sidecar.signals import Aborted, Stop

    stop = Stop()
    threading.Timer(0.3, stop.set, args=("SIGTERM",)).start()
    started = time.monotonic()
    with pytest.raises(Aborted), hold_lease(db, wait=60, command="deploy", stop=stop):
        pytest.fail("the lease is held by another process")
    assert time.monotonic() - started < 5  # not the 60 s wait
