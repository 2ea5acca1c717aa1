"""Offsite copies, measured: a backup of ``--mb`` MiB uploaded through the whole pipeline
(zstd + age + multipart, then proof and manifest) against the same file uploaded plain with the
same client (obstore, same part size), against ``cp`` + fsync of it; the peak RSS of each (a
child process apiece); and a restore drill of the uploaded copy. The S3 server is moto_server
on 127.0.0.1 (tests/s3server.py): its speed bounds both uploads alike.

    .venv/bin/python bench/offsite_bench.py --mb 1024

Nothing here asserts: it measures and prints a markdown table (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
mode, path, url, work = sys.argv[1:5]
from sidecar.offsite.store import Remote, S3Store
store = S3Store(Remote("bench", "p", endpoint=url, access_key_id="a", secret_access_key="b"))
started = time.monotonic()
extra = {}
if mode == "plain":
    from sidecar.fs import read_chunks
    def chunks():
        with open(path, "rb") as handle:
            yield from read_chunks(handle)
    store.put("p/plain", chunks)
elif mode == "pipeline":
    from sidecar.backup.store import BackupInfo
    from sidecar.offsite import copies
    info = BackupInfo.load(Path(path))
    done = copies.upload(store, info, recipients=[os.environ["BENCH_RECIPIENT"]])
    extra = {"object_bytes": done.size, "proof": done.proof}
elif mode == "cp":
    import shutil
    target = Path(work) / "copy.db"
    shutil.copyfile(path, target)
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    target.unlink()
elif mode == "drill":
    import pyrage
    from sidecar.offsite import copies
    listing = copies.list_copies(store)
    ident = pyrage.x25519.Identity.from_str(os.environ["BENCH_IDENTITY"])
    problems = copies.drill(store, listing.copies[0], Path(work), identities=[ident])
    extra = {"problems": problems}
seconds = time.monotonic() - started
if mode == "plain":
    store.delete("p/plain")  # moto holds objects in memory: the next upload starts as this one did
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, **extra}))
"""


def build_db(path: Path, mib: int, *, incompressible: bool = False) -> None:
    """About ``mib`` MiB of rows: half random bytes, half zeros (compresses about 2x), or
    random bytes only (``incompressible``: zstd saves nothing, the upload sends it all)."""
    body = "randomblob(4000)" if incompressible else "randomblob(2000) || zeroblob(2000)"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    rows = mib * 256  # 4 KiB a row
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        f"INSERT INTO t(body) SELECT {body} FROM n",
        (rows,),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--incompressible", action="store_true", help="random bytes only")
    args = parser.parse_args()
    import pyrage  # noqa: PLC0415 - as the rest, after ROOT is on sys.path

    from sidecar.backup.create import create_backup  # noqa: PLC0415
    from tests.s3server import s3_server  # noqa: PLC0415

    scratch = ROOT / "bench" / "out"  # ignored by git; on the disk the backups would use
    scratch.mkdir(exist_ok=True)
    identity = pyrage.x25519.Identity.generate()
    env = {
        **os.environ,
        "BENCH_RECIPIENT": str(identity.to_public()),
        "BENCH_IDENTITY": str(identity),
    }
    with tempfile.TemporaryDirectory(dir=scratch) as tmp, s3_server() as server:
        work = Path(tmp)
        server.make_bucket("bench")
        db = work / "bench.db"
        build_db(db, args.mb, incompressible=args.incompressible)
        info = create_backup(
            db, work / "backups", environment="bench", reason="bench", verify="checksum"
        )
        size = info.size
        results = {}
        for mode in ("cp", "plain", "pipeline", "drill"):
            out = (
                subprocess.run(
                    [sys.executable, "-c", CHILD, mode, str(info.path), server.url, str(work)],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=ROOT,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            results[mode] = json.loads(out)
            print(mode, results[mode], file=sys.stderr)
    server_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    plain = results["plain"]["seconds"]
    print(
        f"backup {size / 2**20:.0f} MiB; object {results['pipeline']['object_bytes'] / 2**20:.0f}"
        f" MiB (zstd level 1 + age); moto_server peak RSS {server_rss} MiB\n"
    )
    print("| step | seconds | MiB/s (backup bytes) | x plain upload | peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    for mode, name in (
        ("cp", "cp + fsync"),
        ("plain", "plain upload (obstore)"),
        ("pipeline", "zstd + age + multipart + proof + manifest"),
        ("drill", "drill: download, decrypt, decompress, sha256, quick_check"),
    ):
        r = results[mode]
        print(
            f"| {name} | {r['seconds']:.1f} | {size / 2**20 / r['seconds']:.0f} | "
            f"{r['seconds'] / plain:.2f} | {r['peak_mib']} |"
        )
    print(
        f"\ndrill problems: {results['drill']['problems']}; proof: {results['pipeline']['proof']}"
    )


if __name__ == "__main__":
    main()
