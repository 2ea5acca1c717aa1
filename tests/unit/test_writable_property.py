"""Property (issue 17): after ``migrate``, the live database accepts every row the desired
schema accepts, and every old row and value is still there.

Hypothesis draws a live table (required and optional columns, defaults, UNIQUE, CHECK, a
foreign key to itself) with rows, then a desired schema that keeps, drops or loosens each
column and adds new ones (Prisma's nullable ``@unique`` among them). After ``sidecar
migrate``, rows drawn to satisfy the *desired* schema are inserted the way the new app would
(only the desired columns, foreign keys on): none may fail unless ``plan`` reported a kept
constraint that rejects them (``rejects``), and those reports are the exceptions the rule
allows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sidecar import cli
from sidecar.sqlite import quote_ident as q

Draw = Callable[[st.SearchStrategy[Any]], Any]
NAMES = ["a", "b c", "order", "Ünï", "MixedCase", 'x"y']
NEW_NAMES = ["handle", "new one", "Zeta"]


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    notnull: bool
    default: str | None  # SQL literal
    unique: bool
    check: bool  # CHECK (col IS NULL OR col <> 'bad')
    references: bool  # REFERENCES the table itself (id)

    def sql(self) -> str:
        parts = [q(self.name), self.type]
        if self.notnull:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.unique:
            parts.append("UNIQUE")
        if self.check:
            parts.append(f"CHECK ({q(self.name)} IS NULL OR {q(self.name)} <> 'bad')")
        if self.references:
            parts.append('REFERENCES "T" ("id")')
        return " ".join(parts)


@dataclass(frozen=True)
class Case:
    live: list[Col]
    desired: list[Col]
    indexes: list[str]  # extra CREATE statements of the desired schema
    rows: list[dict[str, Any]]


@st.composite
def columns(draw: st.DrawFn, name: str, *, new: bool) -> Col:
    kind = draw(st.sampled_from(["TEXT", "INTEGER"]))
    notnull = draw(st.booleans())
    default = draw(st.sampled_from([None, "'d'", "7"])) if (new or draw(st.booleans())) else None
    if new and notnull and default is None:
        default = "'d'"  # a new NOT NULL column needs a default (else it is refused)
    unique = draw(st.booleans()) and (not new or default is None)
    return Col(
        name,
        kind,
        notnull,
        default,
        unique,
        check=draw(st.booleans()),
        references=kind == "INTEGER" and not new and not unique and draw(st.booleans()),
    )


def value_for(draw: Draw, col: Col, fresh: int, ids: list[int]) -> Any:
    """A value ``col`` accepts (UNIQUE: fresh; REFERENCES: an existing id)."""
    if not col.notnull and draw(st.booleans()):
        return None
    if col.references:
        if ids:
            return draw(st.sampled_from(ids))
        return None if not col.notnull else fresh  # the row's own id (inserted with it)
    if col.unique:
        return f"u{fresh}" if col.type == "TEXT" else 1000 + fresh
    if col.type == "INTEGER":
        return draw(st.integers(-5, 5))
    text = draw(st.sampled_from(["a", "b", "bad", "Ünï"]))
    return "ok" if col.check and text == "bad" else text


@st.composite
def cases(draw: st.DrawFn) -> Case:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    live = [draw(columns(n, new=False)) for n in names]
    desired: list[Col] = []
    for col in live:
        fate = draw(st.sampled_from(["keep", "keep", "drop", "drop", "optional", "loosen"]))
        if fate == "keep":
            desired.append(col)
        elif fate == "optional":
            desired.append(Col(col.name, col.type, False, col.default, col.unique, col.check,
                               col.references))  # fmt: skip
        elif fate == "loosen":  # the new app no longer declares the constraints
            desired.append(Col(col.name, col.type, col.notnull, col.default, False, False, False))
    added = draw(st.lists(st.sampled_from(NEW_NAMES), max_size=2, unique=True))
    new = [draw(columns(n, new=True)) for n in added]
    indexes = []
    for col in new:
        if not col.unique and col.default is None and draw(st.booleans()):
            # Prisma's `handle String? @unique`: ADD COLUMN, then CREATE UNIQUE INDEX.
            indexes.append(
                f'CREATE UNIQUE INDEX {q("T_" + col.name + "_key")} ON "T" ({q(col.name)});'
            )
    rows: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 4))):
        ids = [r["id"] for r in rows]
        row: dict[str, Any] = {"id": i + 1}
        for col in live:
            row[col.name] = value_for(draw, col, i + 1, ids)
        rows.append(row)
    return Case(live, desired + new, indexes, rows)


def create(cols: list[Col]) -> str:
    body = ", ".join(['"id" INTEGER PRIMARY KEY', *(c.sql() for c in cols)])
    return f'CREATE TABLE "T" ({body});'


def migrate(folder: Path, db: Path) -> tuple[int, dict[str, Any]]:
    env = {
        "SIDECAR_DATABASE": str(db),
        "SIDECAR_SCHEMA": str(folder / "schema.sql"),
        "SIDECAR_BACKUP_DIR": str(folder / "backups"),
        "SIDECAR_QUIET_PERIOD": "0",
        "SIDECAR_LOG_LEVEL": "error",
        "SIDECAR_VERIFY": "checksum",  # the backup's own checks are tested elsewhere
    }
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["migrate", "--json"], env=env)
    return code, json.loads(out.getvalue())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.data())
def test_the_live_database_accepts_every_row_the_desired_schema_accepts(
    case: Case, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        db = folder / "app.db"
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute(create(case.live))
        for row in case.rows:
            cols = ", ".join(q(c) for c in row)
            conn.execute(f'INSERT INTO "T" ({cols}) VALUES ({", ".join("?" * len(row))})',
                         list(row.values()))  # fmt: skip
        live_names = ", ".join(q(c) for c in ["id", *(c.name for c in case.live)])
        before = conn.execute(f'SELECT {live_names} FROM "T" ORDER BY id').fetchall()
        conn.close()
        (folder / "schema.sql").write_text("\n".join([create(case.desired), *case.indexes]))

        code, report = migrate(folder, db)
        assert code == 0, report
        rejects = report["plan"].get("rejects", [])
        event(f"relaxed {len(report['plan'].get('relax', []))}, rejects {len(rejects)}")

        conn = sqlite3.connect(db, isolation_level=None)
        try:
            # Every old row and value, unchanged.
            assert conn.execute(f'SELECT {live_names} FROM "T" ORDER BY id').fetchall() == before
            # The new app's rows: only the desired columns, foreign keys enforced.
            conn.execute("PRAGMA foreign_keys = ON")
            ids = [r[0] for r in before]
            failed = None
            for k in range(3):
                row_id = 100 + k
                row = {"id": row_id}
                for col in case.desired:
                    # A column under one of the desired schema's unique indexes takes fresh
                    # values too: the desired schema itself rejects duplicates there.
                    indexed = any(q("T_" + col.name + "_key") in sql for sql in case.indexes)
                    as_written = dataclasses.replace(col, unique=True) if indexed else col
                    row[col.name] = value_for(data.draw, as_written, row_id, ids)
                cols = ", ".join(q(c) for c in row)
                marks = ", ".join("?" * len(row))
                try:
                    conn.execute(f'INSERT INTO "T" ({cols}) VALUES ({marks})', list(row.values()))
                except sqlite3.IntegrityError as exc:
                    failed = f"{exc} for {row}"
                    break
                ids.append(row_id)
        finally:
            conn.close()
        # A row the desired schema accepts fails only where plan said a kept constraint
        # would reject it.
        assert failed is None or rejects, f"{failed}, and plan reported nothing"
        event("rejected, as reported" if failed else "every row accepted")
