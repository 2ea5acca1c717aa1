"""Where a verified backup's CPU goes, stage by stage, on one database.

    .venv/bin/python bench/cpu_stages.py --size 1G [--runs 3]

Each stage is run on its own, on the same warm database, and timed by CPU (user + system of
this process and of the children it waited for) as well as by the clock: the backup is CPU
bound once the disk is fast, and CPU-seconds say what each stage costs on a 1-vCPU machine
even when the machine is busy with other work. The stages are what ``sidecar backup`` does:
start the CLI and the copier child, copy the file with direct I/O (the default: written and
read back past the page cache, compared, hashed) or in the kernel with the page-cache
verifier's parts (read the source and the copy back, hash and compare), ``quick_check`` the
file (as SQLite reads it by default, and through a memory map), and read the manifest's
facts. The whole command (both ways) and ``cp`` + fsync close the table. Nothing here asserts
timings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from backup_bench import build, fsync_path, label, parse_size, warm  # noqa: E402

from sidecar import sqlite  # noqa: E402
from sidecar.backup.verify import inspect_file  # noqa: E402

CHUNK = 2 << 20
SIDECAR = [sys.executable, "-m", "sidecar.cli"]


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_all(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    buf, offset = bytearray(CHUNK), 0
    try:
        while n := os.preadv(fd, [buf], offset):
            offset += n
    finally:
        os.close(fd)


def kernel_copy(src: Path, dst: Path) -> None:
    size = src.stat().st_size
    s = os.open(src, os.O_RDONLY)
    d = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    offset = 0
    try:
        while offset < size:
            offset += os.copy_file_range(s, d, 8 << 20, offset, offset)
        os.fsync(d)
    finally:
        os.close(s)
        os.close(d)


def sha256(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    digest, buf, offset = hashlib.sha256(), bytearray(CHUNK), 0
    try:
        while n := os.preadv(fd, [buf], offset):
            digest.update(memoryview(buf)[:n])
            offset += n
    finally:
        os.close(fd)


def compare(path: Path, other: Path) -> None:
    """Both files read, then compared chunk by chunk: this row includes two reads."""
    a, b = os.open(path, os.O_RDONLY), os.open(other, os.O_RDONLY)
    x, y, offset = bytearray(CHUNK), bytearray(CHUNK), 0
    try:
        while n := os.preadv(a, [x], offset):
            os.preadv(b, [y], offset)
            if x != y:
                raise SystemExit("copies differ")
            offset += n
    finally:
        os.close(a)
        os.close(b)


def quick_check(path: Path, mmap: bool) -> None:
    with sqlite.immutable(path) as conn:
        if mmap:
            conn.execute(f"PRAGMA mmap_size={1 << 40}")
        problems = sqlite.quick_check(conn)
    if problems:
        raise SystemExit(f"quick_check: {problems[:3]}")


def run(argv: list[str], **env: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **env})


def copier_start() -> None:
    # The child prints "ready" and, with no job on stdin, exits 1: its start-up alone.
    subprocess.run(
        [sys.executable, "-m", "sidecar.backup.child"], input=b"", capture_output=True, check=False
    )


def direct_copy(src: Path, dst: Path) -> None:
    """The copier's default path: read, direct write, read back from the disk, compare,
    sha256, fsync (sidecar.backup.copy with direct I/O)."""
    from sidecar.backup import copy  # noqa: PLC0415
    from sidecar.fs import create_exclusive  # noqa: PLC0415

    dst.unlink(missing_ok=True)
    s, d = os.open(src, os.O_RDONLY), create_exclusive(dst, 0o600, None, readable=True)
    stats = copy.CopyStats()
    try:
        copy.copy_verified(s, d, direct=True, stats=stats)
    finally:
        os.close(s)
        os.close(d)
    if stats.method != "direct":
        raise SystemExit(f"no direct I/O here ({stats.method})")


def cp_fsync(src: Path, dst: Path) -> None:
    subprocess.run(["cp", str(src), str(dst)], check=True)
    fsync_path(dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    size = parse_size(args.size)
    args.dir.mkdir(parents=True, exist_ok=True)
    db = args.dir / f"bench-{label(size)}.db"
    build(db, size)
    gb = db.stat().st_size / 1e9
    work = Path(tempfile.mkdtemp(dir=args.dir))
    copy, backups = work / "copy.db", work / "backups"
    kernel_copy(db, copy)

    def backup(level: str, io: str = "direct") -> Callable[[], None]:
        def go() -> None:
            shutil.rmtree(backups, ignore_errors=True)
            run([*SIDECAR, "backup", "--database", str(db), "--backup-dir", str(backups),
                 "--verify", level, "--log-format", "json"], SIDECAR_BACKUP_IO=io)  # fmt: skip

        return go

    stages: list[tuple[str, Callable[[], None]]] = [
        ("`sidecar version` (CLI start-up)", lambda: run([*SIDECAR, "version"])),
        ("copier child start-up", copier_start),
        ("copy_file_range + fsync", lambda: kernel_copy(db, work / "kcopy.db")),
        (
            "direct I/O copy: read, write, read back from the disk, compare, sha256, fsync",
            lambda: direct_copy(db, work / "dcopy.db"),
        ),
        ("read the source (2 MiB preads)", lambda: read_all(db)),
        ("read the copy back", lambda: read_all(copy)),
        ("sha256 (with its read)", lambda: sha256(db)),
        ("read both + compare", lambda: compare(db, copy)),
        ("quick_check (SQLite's reads)", lambda: quick_check(copy, mmap=False)),
        ("quick_check (memory-mapped)", lambda: quick_check(copy, mmap=True)),
        (
            "manifest facts (schema hash, row counts)",
            lambda: print(inspect_file(copy, None).page_count, file=sys.stderr),
        ),
        ("cp + fsync", lambda: cp_fsync(db, work / "cp.db")),
        ("`sidecar backup --verify checksum`, page cache", backup("checksum", "cached")),
        ("`sidecar backup --verify quick`, page cache", backup("quick", "cached")),
        ("`sidecar backup --verify checksum`, direct I/O", backup("checksum")),
        ("`sidecar backup --verify quick`, direct I/O", backup("quick")),
    ]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in stages}
    for _ in range(args.runs):
        for name, stage in stages:
            warm(db)
            c0, t0 = cpu(), time.perf_counter()
            stage()
            results[name].append((cpu() - c0, time.perf_counter() - t0))
            print(f"  {name}: {results[name][-1][0]:.2f} CPU s", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{db.stat().st_size / 1e6:.0f} MB database, warm; median of {args.runs} runs\n")
    print("| stage | CPU s | CPU s/GB | wall s |")
    print("|---|---:|---:|---:|")
    for name, _ in stages:
        c = statistics.median(r[0] for r in results[name])
        w = statistics.median(r[1] for r in results[name])
        print(f"| {name} | {c:.2f} | {c / gb:.2f} | {w:.2f} |")


if __name__ == "__main__":
    main()
