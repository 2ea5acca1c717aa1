"""Regressions for the issue 11/17 review fixes (docs/safety.md, last section), through the CLI
on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar import catalog, cli
from tests.unit.test_pipeline import env_for, make_db


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]) -> str:
    """Run the CLI: the exit code, then stderr's error and hint lines."""
    code = cli.main(argv, env=env)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    return f"exit {code}\n" + "\n".join(lines)


@pytest.mark.parametrize("damage", ["touched", "recorded corrupt"])
def test_a_missing_database_is_refused_over_changed_or_corrupt_backups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    env = env_for(tmp_path)
    db = make_db(Path(env["SIDECAR_DATABASE"]))
    assert _run(capsys, ["backup"], env) == "exit 0\n"
    (backup,) = catalog.list_backups(tmp_path / "backups")
    if damage == "touched":
        st = backup.path.stat()
        os.utime(backup.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    else:
        with backup.path.open("r+b") as f:
            f.seek(4096)
            f.write(b"\xff" * 512)
        assert _run(capsys, ["verify", backup.id], env).startswith("exit 4")
    (now,) = catalog.list_backups(tmp_path / "backups")
    assert not now.verified  # what the refusal used to filter on
    for side in ("", "-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)

    said = _run(capsys, ["deploy", "--restart", "never"], env)
    assert said.startswith("exit 3\nerror: database ")
    assert "1 of them changed or corrupt since" in said
    assert not db.exists()
    assert _run(capsys, ["deploy", "--restart", "never", "--allow-fresh"], env) == "exit 0\n"
    assert db.exists()
