"""The program: one command, its exit code (the code cache: tests/unit/test_codecache.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_program_runs_a_command_and_exits_with_its_code(tmp_path: Path) -> None:
    env = {**os.environ, "SIDECAR_DATABASE": str(tmp_path / "none.db")}
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "version"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip()
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "deploy", "--schema", str(tmp_path / "nope.sql")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr  # a missing schema is a usage error, as before
