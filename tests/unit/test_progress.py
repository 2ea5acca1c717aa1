"""One progress helper for long work: a bar with throughput and ETA on a TTY after ~1 s,
``<what>.progress`` events every few seconds off a TTY."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from sidecar import logs, progress
from sidecar.backup import compression
from sidecar.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_tty_the_bar_waits_a_second_then_shows_rate_and_eta() -> None:
    clock, out = Clock(), io.StringIO()
    bar = Progress("upload", "b1.db", total=100_000_000, stream=out, tty=True, clock=clock)
    clock.now += 0.5
    bar.to(10_000_000)
    assert out.getvalue() == ""  # short work draws nothing
    clock.now += 1.5  # 2 s in, 40 MB done: 20 MB/s, 60 MB left: 3 s
    bar.to(40_000_000)
    line = out.getvalue().rsplit("\r", 1)[-1]
    assert line.startswith("upload b1.db [##########")
    assert " 40.0% " in line
    assert "20.0 MB/s" in line
    assert line.endswith("ETA 0:03")
    bar.finish()
    assert out.getvalue().endswith("\n")


def test_off_a_tty_a_progress_event_every_few_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json", "info")
    clock, out = Clock(), io.StringIO()
    with Progress("drill", "b1.db", total=1000, stream=out, tty=False, clock=clock) as bar:
        for _ in range(10):
            clock.now += 1.0
            bar.add(100)
    assert out.getvalue() == ""
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["event"] for e in events] == ["drill.progress"] * 3  # at 3 s, 6 s, 9 s
    assert events[0]["percent"] == 30.0
    assert events[0]["name"] == "b1.db"
    assert events[0]["eta_s"] == 7.0


def test_an_unknown_total_shows_bytes_and_rate() -> None:
    clock, out = Clock(), io.StringIO()
    bar = Progress("upload", "b1.db", stream=out, tty=True, clock=clock)
    clock.now += 2
    bar.add(4_000_000)
    assert "4.0 MB" in out.getvalue()
    assert "2.0 MB/s" in out.getvalue()


def test_compression_reports_through_the_same_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("json", "info")
    monkeypatch.setattr(progress, "EVERY", 0.0)
    src = tmp_path / "b.db"
    src.write_bytes(os.urandom(3 << 20))
    compression.zstd_compress(src, tmp_path / "b.db.zst", mode=0o600, group=None)
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    done = [e for e in events if e["event"] == "compress.progress"]
    assert done
    assert done[-1]["total_bytes"] == 3 << 20
    assert done[-1]["done_bytes"] == 3 << 20
