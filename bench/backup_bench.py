"""Backup benchmark: sidecar's online backup against cp+fsync, sqlite3 .backup, VACUUM INTO.

    .venv/bin/python bench/backup_bench.py --sizes 100M,1G --runs 3

For each size it builds (or reuses) a portfolio-like database in WAL mode under bench/out/
(users, portfolios, transactions with indexes), then, round after round so that a noisy
machine hurts every method alike, runs each method in its own subprocess (peak RSS per
method: the parent's and its children's) with the database warm in the page cache and no
dirty pages pending. The sidecar's backups run in-process (``create_backup``) with direct I/O
(the default) and through the page cache (``SIDECAR_BACKUP_IO=cached``), and once as the whole
``sidecar backup`` process (start-up included). It prints one markdown table per size with
medians, ratios to cp+fsync and CPU-seconds per GB (user + system of the method's process
and its children: what a backup costs on a 1-vCPU machine), the same backups pinned to one
core (`taskset -c 0`; ``--no-one-core`` skips them), then the latency of a writer committing
every 10 ms:

- during a plain WAL backup (the app keeps committing; compared with an idle stretch);
- during a deploy-like window: the sidecar holds ``BEGIN IMMEDIATE``, backs up, commits, so
  the writer is blocked for the whole of it (what ``sidecar deploy`` costs the app);
- during a backup of a rollback-journal copy of the database (writers wait for the copy).

Every timed run starts from the same settled state: no dirty pages, the disk idle for
``--settle`` seconds, the database warm. Nothing here asserts timings. Results also go to
bench/out/results-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SQLITE_CLI = shutil.which("sqlite3")
LEVELS = ("checksum", "quick", "full")
# Seconds the disk is left idle before every timed run (--settle). On this machine's virtio
# disk the same `cp`+fsync of 1 GB takes 0.6 s or 2.9 s depending on what the run before it
# left behind (a gigabyte just written or unlinked: this file system is mounted with
# discard); every run, the baselines' included, starts from the same idle state instead.
DEFAULT_SETTLE_S = 5.0
settle_s = DEFAULT_SETTLE_S
ONE_CORE = True  # --no-one-core: skip the runs pinned to one core


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def label(size: int) -> str:
    return f"{size >> 30}G" if size >= 1 << 30 and size % (1 << 30) == 0 else f"{size >> 20}M"


# ---- the database ------------------------------------------------------------------------


def build(db: Path, size: int) -> None:
    """A portfolio-like WAL database of about ``size`` bytes (reused when already there)."""
    if db.exists() and db.stat().st_size >= size * 0.95:
        return
    remove_database(db)
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
    while db.stat().st_size + Path(f"{db}-wal").stat().st_size < size:
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


def rollback_copy(db: Path, target: Path) -> None:
    """The same database in rollback-journal (DELETE) mode."""
    if target.exists() and target.stat().st_size == db.stat().st_size:
        return
    target.unlink(missing_ok=True)
    shutil.copyfile(db, target)
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA journal_mode=delete")
    conn.close()


def warm(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, 8 << 20):
            pass
    finally:
        os.close(fd)


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM), or getrusage's where /proc is missing."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- one method, in a fresh process --------------------------------------------------------


def run_method(method: str, db: Path, workdir: Path) -> dict[str, Any]:
    """Runs inside a fresh subprocess: one method, timed, with its own peak RSS."""
    out = workdir / "copy.db"
    for p in workdir.glob("copy.db*"):
        p.unlink()
    extra: dict[str, Any] = {}
    from sidecar.backup.create import create_backup  # noqa: PLC0415 - after sys.path is set

    cpu_before = cpu_seconds()
    started = time.monotonic()
    if method == "cp":
        subprocess.run(["cp", str(db), str(out)], check=True)
        fsync_path(out)
        seconds = time.monotonic() - started
    elif method == "sqlite3-backup":
        if SQLITE_CLI:
            subprocess.run([SQLITE_CLI, str(db), f".backup '{out}'"], check=True)
        else:
            src, dst = sqlite3.connect(db), sqlite3.connect(out)
            src.backup(dst)
            src.close()
            dst.close()
        fsync_path(out)  # durable, like the others
        seconds = time.monotonic() - started
    elif method == "vacuum-into":
        conn = sqlite3.connect(db)
        conn.execute("VACUUM INTO ?", (str(out),))
        conn.close()
        fsync_path(out)
        seconds = time.monotonic() - started
    elif method.startswith("command-"):
        # The whole `sidecar backup` process: interpreter, imports, settings, the backup,
        # retention, the JSON result (what a user or a cron job runs).
        bk_dir = workdir / method
        shutil.rmtree(bk_dir, ignore_errors=True)
        env = {**os.environ, "SIDECAR_DATABASE": str(db), "SIDECAR_BACKUP_DIR": str(bk_dir)}
        level = method.removeprefix("command-")
        subprocess.run(
            [sys.executable, "-m", "sidecar", "backup", "--verify", level, "--json"],
            check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = time.monotonic() - started
        shutil.rmtree(bk_dir, ignore_errors=True)
    else:
        # sidecar-<level> (direct I/O, the default) or sidecar-cached-<level> (page cache)
        name = method.removeprefix("sidecar-")
        level = name.removeprefix("cached-")
        bk_dir = workdir / f"sidecar-{name}"
        shutil.rmtree(bk_dir, ignore_errors=True)
        info = create_backup(
            db,
            bk_dir,
            environment="bench",
            reason="manual",
            verify=level,  # type: ignore[arg-type]
            on_progress=lambda done, total: None,
            io="cached" if name.startswith("cached-") else "direct",
        )
        seconds = time.monotonic() - started
        extra = {
            "lock_s": info.manifest["durations"]["read_lock_s"],
            "wal_copied": info.manifest.get("wal_copied"),
            "copy_method": info.manifest["copier"]["method"],
            "copier_rss_mib": (info.manifest["copier"]["peak_rss_kib"] or 0) / 1024,
        }
        # Removed after the clock stopped, as the baselines' copies are (unlinking 1 GB on
        # a file system mounted with discard takes ~0.2 s here).
        shutil.rmtree(bk_dir, ignore_errors=True)
    cpu = cpu_seconds() - cpu_before
    own = peak_rss_mib()
    # getrusage's children figure carries the parent's RSS over exec (vfork): use the copier's
    # own VmHWM when there is one.
    children = extra.pop("copier_rss_mib", None)
    if children is None:
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    for p in workdir.glob("copy.db*"):
        p.unlink()
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rss_self_mib": own,
        "rss_children_mib": children,
        **extra,
    }


def cpu_seconds() -> float:
    """User + system CPU of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def remove_database(db: Path) -> None:
    """``db`` and whatever SQLite and the sidecar keep beside it."""
    for suffix in ("", "-wal", "-shm", ".sidecar-lease"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def settle(db: Path) -> None:
    """Before a timed run: no dirty pages pending (an earlier run's writeback must not be
    billed to this one), the disk idle for settle_s, the database warm in the page cache."""
    os.sync()
    time.sleep(settle_s)
    warm(db)


def once(method: str, db: Path, workdir: Path, *, cpus: str = "") -> dict[str, Any]:
    """One run, from the settled state; ``cpus`` ("0"): pinned to those cores."""
    settle(db)
    pin = ["--cpus", cpus] if cpus else []
    done = subprocess.run(
        [sys.executable, __file__, "--run", method, "--db", str(db), "--dir", str(workdir), *pin],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---- a writer, and what it sees ------------------------------------------------------------


def writer(db: str, log_file: str, stop_file: str) -> None:
    """Commit every 10 ms until told to stop; log ``start_time latency`` of each commit."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=60)
    with open(log_file, "w", encoding="utf-8") as out:
        while not os.path.exists(stop_file):
            t0 = time.time()
            m0 = time.monotonic()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO writes(at) VALUES (?)", (t0,))
            conn.execute("COMMIT")
            out.write(f"{t0} {time.monotonic() - m0}\n")
            out.flush()
            time.sleep(0.01)
    conn.close()


def deploy_like(db: str, level: str, workdir: str) -> None:
    """What deploy does to the app: BEGIN IMMEDIATE, back up under it, COMMIT."""
    from sidecar import database  # noqa: PLC0415
    from sidecar.backup.create import create_backup  # noqa: PLC0415

    bk_dir = Path(workdir) / "sidecar-deploy"
    shutil.rmtree(bk_dir, ignore_errors=True)
    with database.write_lock(Path(db), timeout=30) as conn:
        t0 = time.monotonic()
        create_backup(
            Path(db),
            bk_dir,
            environment="bench",
            reason="deploy",
            verify=level,  # type: ignore[arg-type]
            on_progress=lambda done, total: None,
        )
        conn.execute("COMMIT")
        held = time.monotonic() - t0
    shutil.rmtree(bk_dir, ignore_errors=True)
    print(json.dumps({"held_s": held}))


# The desired schema of the real deploy below: the built database plus what a release adds
# (two columns, a table, an index on a small table).
DEPLOY_SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT, plan TEXT);
CREATE TABLE portfolios (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL
    REFERENCES users(id), name TEXT NOT NULL, created_at TEXT);
CREATE TABLE transactions (id INTEGER PRIMARY KEY, portfolio_id INTEGER NOT NULL
    REFERENCES portfolios(id), symbol TEXT, quantity REAL, price REAL, at TEXT,
    note TEXT, fee REAL);
CREATE INDEX transactions_portfolio ON transactions(portfolio_id, at);
CREATE INDEX transactions_symbol ON transactions(symbol);
CREATE TABLE writes (id INTEGER PRIMARY KEY, at REAL);
CREATE TABLE watchlist (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id),
    symbol TEXT NOT NULL);
CREATE INDEX users_name ON users(name);
"""


def real_deploy(db: Path, workdir: Path) -> dict[str, Any]:
    """`sidecar migrate` (the deploy without containers) of DEPLOY_SCHEMA on ``db``: its own
    report of how long the app's writes were blocked (BEGIN IMMEDIATE to COMMIT)."""
    schema = workdir / "deploy-schema.sql"
    schema.write_text(DEPLOY_SCHEMA)
    bk_dir = workdir / "sidecar-migrate"
    shutil.rmtree(bk_dir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIDECAR_LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "migrate", "--database", str(db), "--schema",
         str(schema), "--backup-dir", str(bk_dir), "--quiet-period", "0", "--json"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    shutil.rmtree(bk_dir, ignore_errors=True)
    report = json.loads(done.stdout)
    assert report["changed"], done.stderr  # noqa: S101 - the benchmark measures a change
    return {"held_s": float(report["write_blocked_s"]), "seconds": float(report["seconds"])}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"commits": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return {
        "commits": len(values),
        "p50_ms": 1000 * statistics.median(values),
        "p99_ms": 1000 * p99,
        "max_ms": 1000 * values[-1],
    }


def with_writer(db: Path, workdir: Path, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``action`` while a writer commits every 10 ms; the writer's latency during it,
    and during an idle stretch of the same length just before (the machine's own noise)."""
    log, stop = workdir / "latency.txt", workdir / "stop"
    stop.unlink(missing_ok=True)
    settle(db)
    proc = subprocess.Popen([sys.executable, __file__, "--writer", str(db), str(log), str(stop)])
    try:
        time.sleep(1.0)
        idle_from = time.time()
        time.sleep(2.0)
        started = time.time()
        result = action()
        ended = time.time()
    finally:
        stop.touch()
        proc.wait()
    rows = [tuple(map(float, line.split())) for line in log.read_text().splitlines() if line]
    # A commit counts as "during" when it started before the action ended and finished after
    # it started: the one blocked for the whole window is included.
    during = [lat for t, lat in rows if t < ended and t + lat > started]
    idle = [lat for t, lat in rows if idle_from <= t < idle_from + 2.0]
    return {**result, "during": percentiles(during), "idle": percentiles(idle)}


# ---- the report ----------------------------------------------------------------------------


def bench_size(size: int, runs: int, workdir: Path, full_max: int) -> dict[str, Any]:
    db = workdir / f"bench-{label(size)}.db"
    t0 = time.monotonic()
    build(db, size)
    real = db.stat().st_size
    ready = time.monotonic() - t0
    print(f"\n### {label(size)} database: {real / 1e6:.0f} MB (ready in {ready:.0f} s)")
    methods = [
        "cp", "sqlite3-backup", "vacuum-into", "sidecar-cached-checksum",
        "sidecar-cached-quick", "sidecar-checksum", "sidecar-quick", "command-quick",
    ]  # fmt: skip
    if size <= full_max:
        methods.append("sidecar-full")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for run in range(runs):
        # Rotated each round: a method's run is slowed by what the one before it left behind
        # (1 GB just unlinked on a file system mounted with discard), so every method takes
        # its turn after each other one.
        for method in methods[run % len(methods) :] + methods[: run % len(methods)]:
            results[method].append(once(method, db, workdir))
            seconds = results[method][-1]["seconds"]
            print(f"  run {run + 1} {method}: {seconds:.2f} s", file=sys.stderr, flush=True)
    medians = {m: _median(rs) for m, rs in results.items()}
    base = medians["cp"]["seconds"]

    print(f"\nmedian of {runs} runs, database warm, every copy fsynced; x cp = / cp+fsync\n")
    print(
        "| method | seconds | x cp | MB/s | CPU s/GB | read lock s | peak RSS parent "
        "| peak RSS child | runs (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in medians.items():
        lock = f"{r['lock_s']:.2f}" if "lock_s" in r else ""
        every = ", ".join(f"{x['seconds']:.2f}" for x in results[name])
        print(
            f"| {_name(name)} | {r['seconds']:.2f} | {r['seconds'] / base:.2f} "
            f"| {real / 1e6 / r['seconds']:.0f} | {r['cpu_s'] / (real / 1e9):.2f} | {lock} "
            f"| {r['rss_self_mib']:.0f} MiB | {r['rss_children_mib']:.0f} MiB | {every} |"
        )
    one_core = _one_core(db, workdir, runs, real) if ONE_CORE else {}

    def backup(level: str, target: Path) -> Callable[[], dict[str, Any]]:
        return lambda: once(f"sidecar-{level}", target, workdir)

    def deploy(level: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, __file__, "--deploy", str(db), level, str(workdir)],
            check=True,
            capture_output=True,
            text=True,
        )
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    rollback = workdir / f"bench-{label(size)}-rollback.db"
    rollback_copy(db, rollback)
    # A real deploy changes the database: each run on a fresh copy (made outside the timing);
    # the run with the median window is reported.
    target = workdir / f"bench-{label(size)}-deploy.db"

    def real_deploys() -> dict[str, Any]:
        """Each run paired with a `cp`+fsync of the same file just before it: the disk's speed
        drifts over minutes here, so a ratio to the median `cp` of another moment is noisier
        than the median of the paired ratios."""
        done = []
        for _ in range(runs):
            remove_database(target)
            shutil.copyfile(db, target)
            cp = float(once("cp", db, workdir)["seconds"])
            run = with_writer(target, workdir, lambda: real_deploy(target, workdir))
            done.append({**run, "cp_s": cp, "ratio": float(run["held_s"]) / cp})
        done.sort(key=lambda w: float(w["held_s"]))
        return {
            **done[len(done) // 2],
            "runs_s": [round(float(w["held_s"]), 2) for w in done],
            "paired_cp_s": [round(float(w["cp_s"]), 2) for w in done],
            "paired_ratio": statistics.median(float(w["ratio"]) for w in done),
        }

    writers = {
        "WAL backup, checksum": with_writer(db, workdir, backup("checksum", db)),
        "WAL backup, quick": with_writer(db, workdir, backup("quick", db)),
        "WAL backup, quick, page cache (`SIDECAR_BACKUP_IO=cached`)": with_writer(
            db, workdir, backup("cached-quick", db)
        ),
        "deploy-like (BEGIN IMMEDIATE + backup + COMMIT), checksum": with_writer(
            db, workdir, lambda: deploy("checksum")
        ),
        "deploy-like (BEGIN IMMEDIATE + backup + COMMIT), quick": with_writer(
            db, workdir, lambda: deploy("quick")
        ),
        "rollback-journal backup, checksum": with_writer(
            rollback, workdir, backup("checksum", rollback)
        ),
        "real deploy (`sidecar migrate`: 2 columns, a table, an index), quick": real_deploys(),
    }
    rollback.unlink(missing_ok=True)
    remove_database(target)
    print("\nwriter committing every 10 ms (BEGIN IMMEDIATE, INSERT, COMMIT; synchronous=FULL)\n")
    print("| during | window s | x cp | commits | p50 ms | p99 ms | max ms | idle p99 / max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, w in writers.items():
        window = w.get("held_s", w.get("seconds", 0.0))
        d, i = w["during"], w["idle"]
        print(
            f"| {name} | {window:.2f} | {window / base:.2f} | {d['commits']} "
            f"| {d['p50_ms']:.1f} | {d['p99_ms']:.1f} | {d['max_ms']:.1f} "
            f"| {i['p99_ms']:.1f} / {i['max_ms']:.1f} |"
        )
    for name, w in writers.items():
        if "runs_s" in w:
            print(
                f"\n{name}: the median of {len(w['runs_s'])} runs, windows {w['runs_s']} s; "
                f"`cp`+fsync of the same file just before each: {w['paired_cp_s']} s; "
                f"median of the paired ratios: {w['paired_ratio']:.2f}x"
            )
    return {
        "size": real,
        "runs": results,
        "medians": medians,
        "one_core": one_core,
        "writer": writers,
    }


def _one_core(db: Path, workdir: Path, runs: int, real: int) -> dict[str, Any]:
    """cp and the sidecar's backups again, every process pinned to core 0 (a 1-vCPU VPS:
    the quick_check can no longer hide on a second core)."""
    methods = [
        "cp", "sidecar-cached-checksum", "sidecar-cached-quick", "sidecar-checksum",
        "sidecar-quick",
    ]  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for run in range(runs):
        for method in methods[run % len(methods) :] + methods[: run % len(methods)]:
            results[method].append(once(method, db, workdir, cpus="0"))
    medians = {m: _median(rs) for m, rs in results.items()}
    base = medians["cp"]["seconds"]
    print(f"\none core (`taskset -c 0`), median of {runs} runs\n")
    print("| method | seconds | x cp | CPU s/GB | runs (s) |")
    print("|---|---:|---:|---:|---|")
    for name, r in medians.items():
        every = ", ".join(f"{x['seconds']:.2f}" for x in results[name])
        print(
            f"| {_name(name)} | {r['seconds']:.2f} | {r['seconds'] / base:.2f} "
            f"| {r['cpu_s'] / (real / 1e9):.2f} | {every} |"
        )
    return {"runs": results, "medians": medians}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: float(r["seconds"]))
    middle = dict(ordered[len(ordered) // 2])
    for key in ("rss_self_mib", "rss_children_mib"):
        middle[key] = max(float(r[key]) for r in runs)  # peak: the worst run
    if "lock_s" in middle:
        middle["lock_s"] = statistics.median(float(r["lock_s"]) for r in runs)
    middle["cpu_s"] = statistics.median(float(r["cpu_s"]) for r in runs)
    return middle


def _name(method: str) -> str:
    if method == "sqlite3-backup":
        return "sqlite3 `.backup` (CLI)" if SQLITE_CLI else "backup API (Python, one step)"
    if method.startswith("command-"):
        return f"`sidecar backup --verify {method.removeprefix('command-')}` (whole process)"
    if method.startswith("sidecar-cached-"):
        level = method.removeprefix("sidecar-cached-")
        return f"sidecar backup, verify={level}, page cache (`cached`)"
    return {"cp": "cp + fsync", "vacuum-into": "VACUUM INTO + fsync"}.get(
        method, method.replace("sidecar-", "sidecar backup, verify=") + ", direct I/O"
    )


def machine() -> dict[str, str]:
    mem = (
        Path("/proc/meminfo").read_text().split("\n", 1)[0]
        if Path("/proc/meminfo").exists()
        else ""
    )
    return {
        "cpus": str(os.cpu_count()),
        "memory": " ".join(mem.split()[1:]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite3 cli": subprocess.run(
            [SQLITE_CLI, "--version"], capture_output=True, text=True, check=False
        ).stdout.split(" ")[0]
        if SQLITE_CLI
        else "absent (Python backup API used)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="100M,1G", help="database sizes, e.g. 100M,1G")
    parser.add_argument("--runs", type=int, default=3, help="runs per method (median)")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--full-max", default="100M", help="largest size to run verify=full on (~90 s/GB)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the built databases")
    parser.add_argument(
        "--settle", type=float, default=DEFAULT_SETTLE_S, help="idle seconds before every timed run"
    )
    parser.add_argument(
        "--no-one-core", action="store_true", help="skip the runs pinned to one core"
    )
    parser.add_argument("--cpus", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--writer", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--deploy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global settle_s, ONE_CORE  # noqa: PLW0603 - knobs for every run of this process
    settle_s = args.settle
    ONE_CORE = not args.no_one_core
    if args.cpus:
        # Inherited by every child (the copier, cp): like `taskset -c`.
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.writer:
        writer(*args.writer)
        return
    if args.deploy:
        deploy_like(*args.deploy)
        return
    workdir: Path = args.dir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.run:
        print(json.dumps(run_method(args.run, args.db, workdir)))
        return
    info = machine()
    print("## Backup\n")
    print(", ".join(f"{k}: {v}" for k, v in info.items()))
    report: dict[str, Any] = {"machine": info, "sizes": []}
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        report["sizes"].append(bench_size(size, args.runs, workdir, parse_size(args.full_max)))
        if not args.keep:
            for p in workdir.glob(f"bench-{label(size)}*"):
                p.unlink()
    out = workdir / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
