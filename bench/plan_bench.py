"""Schema engine benchmark: planning time by table count, ADD COLUMN in place against a rebuild.

    .venv/bin/python bench/plan_bench.py                      # 10/100/1000 tables, 1M rows
    .venv/bin/python bench/plan_bench.py --rows 100000 --runs 5

Planning: a live database with N tables (5 columns, 1 index each) and a desired schema that
adds a column to every table and one new table. Timed separately: loading the desired schema
(SQLite parses it in memory), reading the live catalogue, and the diff itself. Median of
``--runs`` runs.

Migrating: one table with ``--rows`` rows; an in-place ``ADD COLUMN`` (constant default) and
a verified rebuild (``DEFAULT CURRENT_TIMESTAMP``), each applied and verified in one
transaction like a deploy, then committed. Median of ``--runs`` runs on fresh copies.

Prints one table per part (markdown with ``--markdown``). No assertion on timings: this
reports, it does not judge.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar import database, logs  # noqa: E402 (after the path tweak)
from sidecar.migrate import apply  # noqa: E402 (after the path tweak)
from sidecar.schema.catalogue import read_catalogue  # noqa: E402 (after the path tweak)
from sidecar.schema.desired import load_desired  # noqa: E402 (after the path tweak)
from sidecar.schema.diff import make_plan  # noqa: E402 (after the path tweak)


def median_seconds(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def table_sql(i: int, *, extra: bool) -> str:
    columns = [
        "id INTEGER PRIMARY KEY AUTOINCREMENT",
        '"userId" INTEGER NOT NULL',
        "name TEXT NOT NULL",
        "amount REAL",
        '"createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP',
    ]
    if extra:
        columns.append("note TEXT DEFAULT ''")
    return (
        f'CREATE TABLE "Table{i}" ({", ".join(columns)});\n'
        f'CREATE INDEX "Table{i}_userId_idx" ON "Table{i}"("userId");\n'
    )


def bench_plan(folder: Path, tables: int, runs: int) -> tuple[float, float, float, int]:
    db = folder / f"plan{tables}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(
        "BEGIN;" + "".join(table_sql(i, extra=False) for i in range(tables)) + "COMMIT;"
    )
    conn.close()
    desired_file = folder / f"desired{tables}.sql"
    desired_file.write_text(
        "".join(table_sql(i, extra=True) for i in range(tables))
        + 'CREATE TABLE "New" (id INTEGER PRIMARY KEY);\n'
    )
    desired = load_desired(desired_file)
    conn = database.connect(db, readonly=True)
    live = read_catalogue(conn)
    counts = database.row_counts(conn)
    load = median_seconds(runs, lambda: load_desired(desired_file))
    read = median_seconds(runs, lambda: read_catalogue(conn))
    diff = median_seconds(runs, lambda: make_plan(live, desired, row_counts=counts))
    operations = len(make_plan(live, desired, row_counts=counts).operations)
    conn.close()
    return load, read, diff, operations


def bench_migrate(folder: Path, rows: int, runs: int) -> list[tuple[str, float, float, float, str]]:
    base = folder / "rows.db"
    conn = sqlite3.connect(base, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.executescript(table_sql(0, extra=False))
    conn.execute("BEGIN")
    conn.executemany(
        'INSERT INTO "Table0" ("userId", name, amount) VALUES (?, ?, ?)',
        ((i % 1000, f"name {i}", i * 0.5) for i in range(rows)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    base_sql = table_sql(0, extra=False)
    variants = {
        "ADD COLUMN in place": base_sql.replace(
            "CURRENT_TIMESTAMP)", "CURRENT_TIMESTAMP, fee REAL NOT NULL DEFAULT 0)"
        ),
        "verified rebuild": base_sql.replace(
            "CURRENT_TIMESTAMP)",
            'CURRENT_TIMESTAMP, "updatedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)',
        ),
    }
    results = []
    for label, sql in variants.items():
        desired_file = folder / "desired_rows.sql"
        desired_file.write_text(sql)
        desired = load_desired(desired_file)
        kinds: set[str] = set()
        timings: list[tuple[float, float, float]] = []
        for _ in range(runs):
            copy = folder / "copy.db"
            shutil.copyfile(base, copy)
            started = time.perf_counter()
            with database.write_lock(copy, 5) as locked:
                counts = database.row_counts(locked)
                plan = make_plan(read_catalogue(locked), desired, row_counts=counts)
                kinds |= {op.kind for op in plan.operations}
                applying = time.perf_counter()
                for op in plan.operations:
                    apply.apply_operation(locked, op)
                verifying = time.perf_counter()
                apply.verify(locked, desired, counts)
                done = time.perf_counter()
                locked.execute("COMMIT")
            ended = time.perf_counter()
            timings.append((verifying - applying, done - verifying, ended - started))
        apply_s, verify_s, total_s = (statistics.median(t) for t in zip(*timings, strict=True))
        results.append((label, apply_s, verify_s, total_s, ", ".join(sorted(kinds))))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="10,100,1000", help="table counts to plan")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the migrate part")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args()
    logs.configure("json", "warning")
    runs = max(3, args.runs)
    show = markdown_table if args.markdown else text_table
    if args.markdown:
        print("## Plan time\n")
    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        folder = Path(tmp)
        print(f"plan time, median of {runs} runs (SQLite {sqlite3.sqlite_version})\n")
        rows = []
        for tables in (int(n) for n in args.tables.split(",")):
            load, read, diff, ops = bench_plan(folder, tables, runs)
            total = load + read + diff
            rows.append([str(tables), *(f"{t:.3f}" for t in (load, read, diff, total)), str(ops)])
        show(("tables", "load desired s", "read live s", "diff s", "total s", "ops"), rows)
        if args.rows > 0:
            print(
                f"\nmigrate time on a {args.rows:,}-row table, median of {runs} runs\n"
                "(apply: the operations, a rebuild includes its hash proof; verify: quick_check,\n"
                " foreign keys, row counts, re-plan; total: with planning and COMMIT)\n"
            )
            show(
                ("change", "apply s", "verify s", "total s", "operations"),
                [
                    [label, f"{apply_s:.3f}", f"{verify_s:.3f}", f"{total_s:.3f}", kinds]
                    for label, apply_s, verify_s, total_s, kinds in bench_migrate(
                        folder, args.rows, runs
                    )
                ],
            )
    return 0


def text_table(header: tuple[str, ...], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    for row in [list(header), *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def markdown_table(header: tuple[str, ...], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
