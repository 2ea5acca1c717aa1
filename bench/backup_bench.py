"""Backup benchmark: sidecar's online backup against cp+fsync, sqlite3 .backup, VACUUM INTO.

    .venv/bin/python bench/backup_bench.py --size-mb 1024 --dir bench/out

Builds a portfolio-like database (users, portfolios, transactions with indexes) in WAL
mode, then runs each method in its own subprocess (so peak RSS is per method, children
included) with the database warm in the page cache, and prints one table. A last run takes
a sidecar backup while a writer process commits every 10 ms and reports its commit latency.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(db: Path, size_mb: int) -> None:
    if db.exists() and db.stat().st_size >= size_mb << 20:
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=OFF")  # building only; the benchmark measures the backup
    conn.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT);
        CREATE TABLE portfolios (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL
            REFERENCES users(id), name TEXT NOT NULL, created_at TEXT);
        CREATE TABLE transactions (id INTEGER PRIMARY KEY, portfolio_id INTEGER NOT NULL
            REFERENCES portfolios(id), symbol TEXT, quantity REAL, price REAL, at TEXT,
            note TEXT);
        CREATE INDEX transactions_portfolio ON transactions(portfolio_id, at);
        CREATE INDEX transactions_symbol ON transactions(symbol);
        CREATE TABLE writes (id INTEGER PRIMARY KEY, at REAL);
        """
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO users(email, name) VALUES (?, ?)",
        [(f"u{i}@x", f"user {i}") for i in range(10000)],
    )
    conn.executemany(
        "INSERT INTO portfolios(user_id, name, created_at) VALUES (?, 'main', datetime('now'))",
        [(i % 10000 + 1,) for i in range(20000)],
    )
    conn.execute("COMMIT")
    batch = 50000
    while db.stat().st_size + Path(f"{db}-wal").stat().st_size < size_mb << 20:
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s "
            "WHERE value < ?) "
            "INSERT INTO transactions(portfolio_id, symbol, quantity, price, at, note) "
            "SELECT abs(random()) % 20000 + 1, char(65 + abs(random()) % 26, 65 + value % 26), "
            "abs(random()) % 1000, abs(random()) % 100000 / 100.0, datetime('now'), "
            "hex(randomblob(60)) FROM s",
            (batch,),
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def warm(path: Path) -> None:
    with path.open("rb") as handle:
        while handle.read(8 << 20):
            pass


def run_method(method: str, db: Path, out: Path) -> dict[str, float]:
    """Runs inside a fresh subprocess: one method, timed, with its own peak RSS."""
    for p in out.parent.glob(f"{out.name}*"):
        p.unlink()
    started = time.monotonic()
    if method == "cp":
        subprocess.run(["cp", str(db), str(out)], check=True)
        subprocess.run(["sync", str(out)], check=True)
    elif method == "sqlite3-backup":
        subprocess.run(["/usr/bin/sqlite3", str(db), f".backup '{out}'"], check=True)
        subprocess.run(["sync", str(out)], check=True)  # durable, like the others
    elif method == "vacuum-into":
        conn = sqlite3.connect(db)
        conn.execute("VACUUM INTO ?", (str(out),))
        conn.close()
        subprocess.run(["sync", str(out)], check=True)
    else:
        from sidecar.backup import create_backup  # noqa: PLC0415 - after sys.path is set

        level = method.removeprefix("sidecar-")
        bk_dir = out.parent / f"sidecar-{level}"
        shutil.rmtree(bk_dir, ignore_errors=True)
        create_backup(
            db,
            bk_dir,
            environment="bench",
            reason="manual",
            verify=level,  # type: ignore[arg-type]
            on_progress=lambda done, total: None,
        )
    seconds = time.monotonic() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "rss_self_mib": own, "rss_children_mib": children}


def writer(db: str, seconds_file: str, stop_file: str) -> None:
    """Commit every 10 ms until told to stop; append each commit's latency (s) to a file."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=60)
    with open(seconds_file, "w", encoding="utf-8") as out:
        while not os.path.exists(stop_file):
            t0 = time.monotonic()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO writes(at) VALUES (?)", (time.time(),))
            conn.execute("COMMIT")
            out.write(f"{time.monotonic() - t0}\n")
            out.flush()
            time.sleep(0.01)


def sub(method: str, db: Path, workdir: Path, repeat: int = 1) -> dict[str, float]:
    """Median of ``repeat`` runs, each starting warm and with no dirty pages pending."""
    runs = []
    for _ in range(repeat):
        os.sync()  # writeback left by an earlier run must not be billed to this one
        warm(db)
        runs.append(_sub_once(method, db, workdir))
    runs.sort(key=lambda r: r["seconds"])
    return runs[len(runs) // 2]


def _sub_once(method: str, db: Path, workdir: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--run", method, "--db", str(db), "--dir", str(workdir)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def latencies(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def under_writer(db: Path, workdir: Path) -> dict[str, float]:
    lat, stop = workdir / "latency.txt", workdir / "stop"
    stop.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--writer", str(db), str(lat), str(stop)])
    time.sleep(2.0)
    before = len(latencies(lat))
    result = sub("sidecar-quick", db, workdir)
    during = latencies(lat)[before:]
    stop.touch()
    proc.wait()
    during.sort()
    return {
        **result,
        "commits": len(during),
        "p50_ms": 1000 * statistics.median(during),
        "p99_ms": 1000 * during[int(len(during) * 0.99) - 1],
        "max_ms": 1000 * during[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--db", type=Path)
    parser.add_argument("--run")
    parser.add_argument("--writer", nargs=3)
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (median)")
    parser.add_argument("--skip-full", action="store_true", help="skip integrity_check (~90 s/GB)")
    args = parser.parse_args()
    if args.writer:
        writer(*args.writer)
        return
    workdir: Path = args.dir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.run:
        print(json.dumps(run_method(args.run, args.db, workdir / "copy.db")))
        return
    db = workdir / "bench.db"
    t0 = time.monotonic()
    build(db, args.size_mb)
    size = db.stat().st_size
    print(f"database: {size / 1e6:.0f} MB (built/reused in {time.monotonic() - t0:.0f}s)")
    methods = ["cp", "sqlite3-backup", "vacuum-into", "sidecar-checksum", "sidecar-quick"]
    if not args.skip_full:
        methods.append("sidecar-full")
    results = {m: sub(m, db, workdir, 1 if m == "sidecar-full" else args.repeat) for m in methods}
    results["sidecar-quick+writer"] = under_writer(db, workdir)
    base = results["cp"]["seconds"]
    print(f"median of {args.repeat} runs, file warm, every copy fsynced")
    print(f"{'method':<22}{'seconds':>9}{'x cp':>7}{'MB/s':>8}{'RSS self':>10}{'RSS kids':>10}")
    for name, r in results.items():
        print(
            f"{name:<22}{r['seconds']:>9.2f}{r['seconds'] / base:>7.2f}"
            f"{size / 1e6 / r['seconds']:>8.0f}"
            f"{r['rss_self_mib']:>9.0f}M{r['rss_children_mib']:>9.0f}M"
        )
    w = results["sidecar-quick+writer"]
    print(
        f"writer every 10 ms during sidecar-quick (WAL): {w['commits']:.0f} commits, "
        f"p50 {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms, max {w['max_ms']:.1f} ms"
    )
    for p in workdir.glob("copy.db*"):
        p.unlink()


if __name__ == "__main__":
    main()
