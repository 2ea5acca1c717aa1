"""The program's start-up read-ahead: it reads compiled files and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sidecar import program


def test_warm_files_reads_every_compiled_module_under_the_roots_and_imports_none(
    tmp_path: Path,
) -> None:
    package = tmp_path / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "sub" / "__pycache__").mkdir(parents=True)
    for path in (
        package / "__pycache__" / "a.cpython-311.pyc",
        package / "sub" / "__pycache__" / "b.cpython-311.pyc",
        package / "not_cached.py",  # source files are left to the import
    ):
        path.write_bytes(b"x")
    unreadable = package / "__pycache__" / "c.cpython-311.pyc"
    unreadable.mkdir()  # a folder where a file was expected: skipped, never an error
    before = set(sys.modules)
    read = program.warm_files([str(package), str(tmp_path / "missing")])
    assert read == 2
    assert set(sys.modules) == before


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
