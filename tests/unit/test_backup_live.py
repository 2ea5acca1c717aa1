"""Backups under a live writer process, kill -9, disk full: the promises that need processes.

Run as a module, this file is also the helper the tests start in child processes:
``writer`` (an app committing every few ms) or a fault-injecting copier (``BK_FAULT``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar import database, fs
from sidecar.backup import child, copy, snapshot, store
from sidecar.backup.create import create_backup
from sidecar.backup.names import LOCK_NAME
from sidecar.backup.verify import verify_backup
from sidecar.errors import HealthError, UnavailableError
from sidecar.settings import VerifyLevel
from tests.unit.conftest import bk_build_db, bk_other_connection, has_direct_io

ROOT = Path(__file__).resolve().parents[2]
HELPER = "tests.unit.test_backup_live"


def _writer(db: str, log_path: str, stop_path: str) -> None:
    """The app: one commit every ~3 ms; records each id only after its COMMIT returned."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=60)
    with open(log_path, "a", encoding="utf-8") as log:
        while not os.path.exists(stop_path):
            conn.execute("BEGIN IMMEDIATE")
            row_id = conn.execute("INSERT INTO writes(at) VALUES (?)", (time.time(),)).lastrowid
            conn.execute(
                "INSERT INTO transactions(portfolio_id, amount, note) "
                "VALUES (1, 1, randomblob(4000))"
            )
            conn.execute("COMMIT")
            log.write(f"{row_id}\n")
            log.flush()
            time.sleep(0.003)
    conn.close()


def _faulty_copier() -> int:
    """The real copier with its writes to the backup slowed down, failing with ENOSPC after
    N bytes, or silently flipping a byte (``BK_FAULT`` = slow | enospc:N | flip), through
    ``copy_file_range``, with ``BK_PATH=read-write`` through its buffers, with
    ``BK_PATH=direct`` with direct I/O."""
    real_pwrite, real_copy = os.pwrite, os.copy_file_range
    fault = os.environ.get("BK_FAULT", "")
    written = [0]

    def before(length: int) -> None:
        if fault == "slow":
            time.sleep(0.2)
        elif fault.startswith("enospc:") and written[0] + length > int(fault.split(":")[1]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def pwrite(fd: int, data: Any, offset: int) -> int:  # Any: os.pwrite takes any buffer
        before(len(data))
        if fault == "flip" and written[0] == 0 and len(data) > 100:
            # In place and back (direct I/O writes from an aligned buffer, never from a copy).
            view = memoryview(data)
            view[100] ^= 0x01
            try:
                done = real_pwrite(fd, view, offset)
            finally:
                view[100] ^= 0x01
        else:
            done = real_pwrite(fd, data, offset)
        written[0] += done
        return done

    def copy_file_range(
        src: int, dst: int, count: int, offset_src: int | None = None, offset_dst: int | None = None
    ) -> int:
        before(count)
        copied = real_copy(src, dst, count, offset_src, offset_dst)
        if fault == "flip" and written[0] == 0 and copied > 100:
            at = (offset_dst or 0) + 100
            real_pwrite(dst, bytes([os.pread(dst, 1, at)[0] ^ 0x01]), at)
        written[0] += copied
        return copied

    os.pwrite = pwrite
    os.copy_file_range = copy_file_range
    if os.environ.get("BK_PATH") == "read-write":
        copy.copies_bytes = lambda fd: False
    if os.environ.get("BK_PATH") != "direct":
        copy.direct_mode = lambda fd, on=True: False
    return child.main()


def _ids(path: Path) -> list[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return [int(r[0]) for r in conn.execute("SELECT id FROM writes ORDER BY id")]
    finally:
        conn.close()


def _logged(log_path: Path) -> list[int]:
    text = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
    return [int(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def bk_writer(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(commit log, stop flag) for a writer; the flag is set afterwards whatever happened."""
    log_path, stop = tmp_path / "committed.log", tmp_path / "stop"
    yield log_path, stop
    stop.touch()


def _start_writer(db: Path, log_path: Path, stop: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", HELPER, "writer", str(db), str(log_path), str(stop)], cwd=ROOT
    )
    deadline = time.monotonic() + 20
    while len(_logged(log_path)) < 30:
        assert proc.poll() is None, "the writer died"
        assert time.monotonic() < deadline, "the writer never got going"
        time.sleep(0.01)
    return proc


def _old_reader(db: Path) -> subprocess.Popen[str]:
    """Another process inside a read transaction: checkpoints cannot backfill past it."""
    return bk_other_connection(db, "SELECT count(*) FROM writes", in_transaction=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("journal", "old_reader"), [("wal", False), ("wal", True), ("delete", False)]
)
def test_backup_under_a_busy_writer_is_a_gap_free_prefix(
    tmp_path: Path, bk_writer: tuple[Path, Path], journal: str, old_reader: bool
) -> None:
    """A gap-free prefix holding every commit from before the backup began.

    WAL mode has two paths: the db file alone (the usual one: a checkpoint run inside the
    backup's read transaction backfilled every frame), and db + -wal folded together, which
    an app's long read transaction forces by keeping frames out of the db file.
    """
    log_path, stop = bk_writer
    db = bk_build_db(tmp_path / "portfolio.db", journal=journal, rows=6000, blob=1024)
    writer = _start_writer(db, log_path, stop)
    reader = _old_reader(db) if old_reader else None
    copied_wal = []
    try:
        if reader is not None:  # frames the reader keeps out of the db file
            target = len(_logged(log_path)) + 20
            while len(_logged(log_path)) < target:
                time.sleep(0.01)
        for _ in range(2):
            before = _logged(log_path)
            info = create_backup(
                db, tmp_path / "backups", environment="production", reason="manual"
            )
            ids = _ids(info.path)
            assert ids == list(range(1, len(ids) + 1)), "the backup has a gap"
            assert len(ids) >= max(before), "a commit from before the backup is missing"
            assert verify_backup(info) == []
            # Counted in the live snapshot while the copy was made (direct I/O), or in the
            # copy: either way the copy's own rows, the writer committing all along.
            copy_conn = sqlite3.connect(f"file:{info.path}?immutable=1", uri=True)
            try:
                assert info.manifest["row_counts"] == database.row_counts(copy_conn)
            finally:
                copy_conn.close()
            copied_wal.append(info.manifest["wal_copied"])
            if info.manifest["wal_copied"]:
                assert info.manifest["wal_frames_folded"] > 0
        if reader is not None:
            assert all(copied_wal), "the -wal path (frames folded into the copy) was not taken"
        if journal == "delete":
            assert not any(copied_wal)
        # The writer kept committing after the backups: nothing was left blocked.
        after = len(_logged(log_path))
        time.sleep(0.1)
        assert len(_logged(log_path)) > after
    finally:
        if reader is not None:
            reader.communicate("\n", timeout=10)
        stop.touch()
        writer.wait(timeout=30)
    assert set(ids) <= set(_logged(log_path))


@pytest.mark.timeout(60)
def test_an_idle_wal_database_is_copied_without_its_wal(tmp_path: Path) -> None:
    """Quiesced (the deploy case): the db file alone is the snapshot; nothing to fold."""
    db = bk_build_db(tmp_path / "portfolio.db", journal="wal", rows=500)
    app = sqlite3.connect(db, isolation_level=None)  # keeps the -wal alive, with frames
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.executemany("INSERT INTO writes(at) VALUES (?)", [(float(i),) for i in range(50)])
    assert Path(f"{db}-wal").stat().st_size > 0
    info = create_backup(db, tmp_path / "backups", environment="production", reason="manual")
    app.close()
    assert info.manifest["wal_copied"] is False
    assert info.manifest["wal_frames_folded"] == 0
    assert len(_ids(info.path)) == 50
    assert verify_backup(info, full=True) == []


def test_a_database_that_cannot_be_checkpointed_is_copied_with_its_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only database refuses the checkpoint: the -wal is copied and folded instead."""
    db = bk_build_db(tmp_path / "portfolio.db", journal="wal", rows=500)
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.executemany("INSERT INTO writes(at) VALUES (?)", [(float(i),) for i in range(50)])
    real = database.connect

    def read_only(path: Path, **kwargs: Any) -> sqlite3.Connection:
        return real(path, readonly=True, busy_timeout=kwargs.get("busy_timeout", 5.0))

    monkeypatch.setattr(database, "connect", read_only)
    info = create_backup(db, tmp_path / "backups", environment="production", reason="manual")
    app.close()
    assert info.manifest["wal_copied"] is True
    assert info.manifest["wal_frames_folded"] > 0
    # Folded and hashed again: a copy read whole afterwards is made through the page cache.
    assert info.manifest["copier"]["method"] != "direct"
    assert len(_ids(info.path)) == 50
    assert verify_backup(info, full=True) == []


def _backup_in_subprocess(db: Path, bk_dir: Path, fault: str) -> subprocess.Popen[bytes]:
    code = (
        "from pathlib import Path\n"
        "from sidecar.backup import create, snapshot\n"
        f"snapshot.CHILD_MODULE = {HELPER!r}\n"
        f"create.create_backup(Path({str(db)!r}), Path({str(bk_dir)!r}),"
        " environment='production', reason='manual')\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "BK_FAULT": fault},
        start_new_session=True,
    )


def _wait_for_partial(bk_dir: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not (bk_dir.exists() and any(n.endswith(".partial") for n in os.listdir(bk_dir))):
        assert proc.poll() is None, "the backup ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("whole_group", [True, False])
def test_kill_9_leaves_nothing_valid_and_the_next_run_cleans_up(
    tmp_path: Path, whole_group: bool
) -> None:
    db = bk_build_db(tmp_path / "portfolio.db", rows=5000, blob=1024)
    bk_dir = tmp_path / "backups"
    proc = _backup_in_subprocess(db, bk_dir, "slow")
    _wait_for_partial(bk_dir, proc)
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)  # docker kill: parent and copier together
    else:
        os.kill(proc.pid, signal.SIGKILL)  # only the parent: the orphaned copier must stop
    proc.wait(timeout=10)

    assert not any(b.verified for b in store.list_backups(bk_dir))
    if not whole_group:
        deadline = time.monotonic() + 10  # the orphan notices within one slow chunk
        while any(n.endswith(".partial") for n in os.listdir(bk_dir)):
            assert time.monotonic() < deadline, "the orphaned copier kept writing"
            time.sleep(0.05)
    info = create_backup(db, bk_dir, environment="production", reason="manual")
    names = set(os.listdir(bk_dir))
    assert names == {info.id, f"{info.id}.json", LOCK_NAME}
    assert [b.id for b in store.list_backups(bk_dir)] == [info.id]


def _with_faulty_copier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, path: str
) -> tuple[Path, str, Path]:
    """A database, its sha256 and a backups folder, with the copier child replaced by the
    fault-injecting one (``BK_FAULT``) on the direct, kernel or read-write ``path``."""
    if path == "direct" and not has_direct_io(tmp_path):
        pytest.skip("this file system has no direct I/O")  # it would test the kernel path
    db = bk_build_db(tmp_path / "portfolio.db", rows=3000, blob=1024)
    monkeypatch.setattr(snapshot, "CHILD_MODULE", HELPER)
    monkeypatch.setenv("BK_FAULT", fault)
    monkeypatch.setenv("BK_PATH", path)
    return db, hashlib.sha256(db.read_bytes()).hexdigest(), tmp_path / "backups"


@pytest.mark.parametrize("path", ["direct", "kernel", "read-write"])
def test_disk_full_mid_write_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    db, source_sha, bk_dir = _with_faulty_copier(tmp_path, monkeypatch, f"enospc:{1 << 20}", path)
    with pytest.raises(UnavailableError, match="filled up") as caught:
        create_backup(db, bk_dir, environment="production", reason="manual")
    assert "prune" in (caught.value.hint or "")
    assert os.listdir(bk_dir) == [LOCK_NAME]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == source_sha


@pytest.mark.parametrize("path", ["direct", "kernel", "read-write"])
def test_a_backup_file_that_differs_from_the_bytes_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The copier's write path flips a byte: the read-back catches it, nothing is kept."""
    db, source_sha, bk_dir = _with_faulty_copier(tmp_path, monkeypatch, "flip", path)
    levels: list[VerifyLevel] = ["checksum", "quick"]
    for level in levels:
        with pytest.raises(HealthError, match="differs from the bytes read") as caught:
            create_backup(db, bk_dir, environment="production", reason="manual", verify=level)
        assert caught.value.exit_code == 4
        assert os.listdir(bk_dir) == [LOCK_NAME]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == source_sha


def test_copier_reports_enospc_and_removes_its_file(tmp_path: Path) -> None:
    """The real copier, unpatched, against /dev/full-like failure: through the fd layer."""
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20))
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="No space") as caught:
            fs.pump(fs.read_chunks(src.open("rb")), fd)
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ENOSPC


if __name__ == "__main__":
    if sys.argv[1:2] == ["writer"]:
        _writer(*sys.argv[2:5])
    else:
        raise SystemExit(_faulty_copier())
