"""The stop request that SIGTERM sets: it must never deadlock the process it is meant to stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sidecar.signals import Stop, stop_on_sigterm

# Enters stop_on_sigterm CYCLES times and spins on short waits until the signal arrives: the
# shape of the schedule loop, with the wait's lock taken and released thousands of times a
# second. With threading.Event in place of Stop this deadlocked in 3 runs out of 4.
CHILD = """
import sys
from sidecar.logs import configure
from sidecar.signals import stop_on_sigterm
configure("json")
for _ in range(int(sys.argv[1])):
    with stop_on_sigterm() as stop:
        print("ready", flush=True)
        while not stop.wait(0.0001):
            pass
print("done", flush=True)
"""
CYCLES = 3000


def _readline(proc: subprocess.Popen[str], deadline: float) -> str:
    out = proc.stdout
    assert out is not None
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(out.readline()), daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    return got[0].strip() if got else ""


def test_sigterm_during_a_busy_wait_loop_never_deadlocks(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(CYCLES)],
            stdout=subprocess.PIPE,
            stderr=stderr,  # a file, not a pipe: an unread pipe fills up and blocks the logs
            text=True,
        )
    try:
        deadline = time.monotonic() + 60
        for cycle in range(CYCLES):
            line = _readline(proc, deadline)
            assert line == "ready", f"the process stopped answering after {cycle} signals"
            time.sleep(0.001)
            proc.send_signal(signal.SIGTERM)
        assert _readline(proc, deadline) == "done"
        proc.wait(timeout=10)
    finally:
        proc.kill()
    lines = log.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    received = [e for e in events if e.get("event") == "signal.received"]
    assert len(received) == CYCLES  # every signal acknowledged in the log, from the watcher
    assert {e["signal"] for e in received} == {"SIGTERM"}


def test_a_set_from_another_thread_wakes_a_long_wait_at_once() -> None:
    stop = Stop()
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert stop.wait(60) is True
    assert time.monotonic() - started < 5


def test_wait_times_out_false_and_the_first_reason_stays() -> None:
    stop = Stop()
    assert stop.wait(0.01) is False
    assert not stop.is_set()
    stop.set("SIGTERM")
    stop.set("SIGINT")
    assert stop.reason == "SIGTERM"
    assert stop.wait(0) is True
    assert stop.wait(-1) is True  # a negative timeout is "now", never an error


def test_close_releases_a_waiter_without_setting() -> None:
    stop = Stop()
    threading.Timer(0.05, stop.close).start()
    assert stop.wait(60) is False
    assert not stop.is_set()


def test_handlers_are_restored_after_the_block() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_sigterm() as stop:
        assert signal.getsignal(signal.SIGTERM) is not before
        assert not stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is before
