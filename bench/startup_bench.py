"""Start-up time of `sidecar version`, of the HEALTHCHECK (`sidecar health --backups-only`)
and of a one-shot `sidecar backup` of a small database, for this checkout and for an earlier
commit, measured in the same run, rounds interleaved.

    .venv/bin/python bench/startup_bench.py --before 47ffad5 [--runs 20]

The earlier commit is checked out into a temporary git worktree and run with the same
interpreter (and so the same installed libraries), by PYTHONPATH. Both run against the same
small database and backups folder. Prints the median and p90 wall time and the median CPU of
each command, per checkout. Nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def children_cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def time_command(
    tree: Path, args: list[str], env: dict[str, str], cwd: Path
) -> tuple[float, float]:
    c0, t0 = children_cpu(), time.perf_counter()
    # cwd: a folder without a sidecar package (`-m` puts the working directory first on the
    # search path, ahead of PYTHONPATH: run from the checkout, both would run its code).
    subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args],
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        check=False,
        cwd=cwd,
    )
    return time.perf_counter() - t0, children_cpu() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", required=True, help="the earlier commit to compare with")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        before = work / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before),
             args.before],
            check=True,
        )  # fmt: skip
        try:
            db, backups = work / "app.db", work / "backups"
            conn = sqlite3.connect(db)
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.commit()
            conn.close()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
                "SIDECAR_DATABASE": str(db),
                "SIDECAR_BACKUP_DIR": str(backups),
                "SIDECAR_LOG_FORMAT": "json",
            }
            subprocess.run(
                [sys.executable, "-m", "sidecar.cli", "backup"],
                env={**env, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                check=True,
                cwd=work,
            )
            # A one-shot backup of that small database: start-up and the fixed costs of a
            # backup (the copier child, the snapshot, the manifest, retention), no copying.
            commands = {"version": ["version"], "health --backups-only": ["health",
                        "--backups-only"], "backup (8 KB database)": ["backup"]}  # fmt: skip
            trees = {f"before ({args.before})": before, "now": ROOT}
            runs: dict[tuple[str, str], list[tuple[float, float]]] = {
                (t, c): [] for t in trees for c in commands
            }
            for _ in range(args.runs):
                for tree_name, tree in trees.items():
                    for name, argv in commands.items():
                        runs[tree_name, name].append(time_command(tree, argv, env, work))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                check=False,
            )
    print(f"\nmedian of {args.runs} runs each, interleaved\n")
    print("| command | checkout | wall ms (median) | wall ms (p90) | CPU ms (median) |")
    print("|---|---|---:|---:|---:|")
    for (tree_name, name), values in runs.items():
        walls = sorted(v[0] for v in values)
        p90 = walls[min(len(walls) - 1, int(len(walls) * 0.9))]
        print(
            f"| `sidecar {name}` | {tree_name} | {1000 * statistics.median(walls):.0f} "
            f"| {1000 * p90:.0f} | {1000 * statistics.median(v[1] for v in values):.0f} |"
        )


if __name__ == "__main__":
    main()
