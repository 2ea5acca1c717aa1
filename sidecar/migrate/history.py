"""What the desired schema's history says beyond its end state, judged against the live
database: Prisma's bookkeeping, renames, possible renames, data statements not executed.
See docs/design.md, "What a history says beyond its end state".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from sidecar.logs import get_logger
from sidecar.migrate import prisma
from sidecar.schema.catalogue import Catalogue, read_catalogue
from sidecar.schema.desired import Desired, NotExecuted, Rename
from sidecar.schema.diff import TOOL_TABLES
from sidecar.schema.operations import AddColumn, Drift, Operation, Plan, Refusal
from sidecar.schema.sql import fold
from sidecar.sqlite import quote_ident

log = get_logger(__name__)
T = TypeVar("T")
RENAME_HINT = (
    "rename in steps (expand and contract): add the new {what} beside the old one and let "
    "the app write both and copy the old values, then stop using the old one in a later "
    "release (it is kept, never dropped)"
)
COPY_HINT = (
    "; or, for a column, SIDECAR_RENAMES=copy copies the old values into the new column in "
    "one deploy (the app stopped for the change)"
)
Copies = Mapping[tuple[str, str], str]  # (folded table, folded new column) -> old column


def copies(conn: sqlite3.Connection | None, desired: Catalogue, mode: str) -> Copies:
    """The column renames that ``SIDECAR_RENAMES=copy`` (``mode``) makes safe: the new
    column added holding the old column's value in every row, the old column kept (and
    relaxed like any kept column the desired schema lacks). For :func:`make_plan`.
    A rename that cannot be copied exactly stays refused (logged with the reason)."""
    if mode != "copy" or conn is None or not isinstance(desired, Desired) or not desired.renames:
        return {}
    live = read_catalogue(conn)
    found: dict[tuple[str, str], str] = {}
    for rename in _pending(conn, desired, live):
        why = _uncopyable(rename, live, desired)
        if why is not None:
            log.warning("history.rename_not_copied", table=rename.table, old=rename.old,
                        new=rename.new, reason=why)  # fmt: skip
            continue
        table = live.table(rename.table)
        old = table.column(rename.old) if table is not None else None
        if old is not None:
            found[(fold(rename.table), fold(rename.new))] = old.name
    return found


def _pending(conn: sqlite3.Connection | None, desired: Desired, live: Catalogue) -> list[Rename]:
    """The renames of migrations Prisma has not applied, still to do in the live database."""
    done = prisma.applied(prisma.rows(conn)) if desired.migrations else set()
    return [r for r in desired.renames if r.migration not in done and _still_to_do(r, live)]


def _uncopyable(rename: Rename, live: Catalogue, desired: Catalogue) -> str | None:
    """Why a rename cannot be made safe by a copy; None when it can."""
    if not rename.column:
        return "a table rename (every index, trigger, view and foreign key would have to follow)"
    wanted, current = desired.table(rename.table), live.table(rename.table)
    new = wanted.column(rename.new) if wanted is not None else None
    old = current.column(rename.old) if current is not None else None
    if new is None or old is None:
        return "the desired schema lacks the new column"
    if wanted is not None and wanted.column(rename.old) is not None:
        return "the desired schema still has the old column"
    if new.hidden or old.hidden:
        return "a generated column"
    if affinity(new.type) != affinity(old.type):
        return f"the types differ ({old.type!r} -> {new.type!r}): a copy would convert values"
    return None


def affinity(declared: str) -> str:
    """SQLite's type affinity of a declared type (https://www.sqlite.org/datatype3.html)."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def review(
    conn: sqlite3.Connection | None,
    plan: Plan,
    desired: Catalogue,
    copied: Copies | None = None,
    not_renamed: Sequence[str] = (),
) -> Plan:
    """``plan`` amended by the desired schema's history (module docstring). Read-only;
    ``conn`` None plans a database that does not exist yet. ``copied``: the renames the
    plan makes safe (:func:`copies`, given to :func:`make_plan`): not refused.
    ``not_renamed``: the new names the user says are no rename (``SIDECAR_NOT_RENAMED``)."""
    copied = copied or {}
    # The live catalogue again only when something needs it: planning 1,000 tables reads it once.
    dropped = any(d.kind in ("table_missing", "column_missing") for d in plan.drift)
    needed = dropped or (isinstance(desired, Desired) and bool(desired.renames))
    live = read_catalogue(conn) if conn is not None and needed else Catalogue()
    operations, drift, refused = list(plan.operations), list(plan.drift), list(plan.refused)
    renames: Sequence[Rename] = ()
    unsafe: list[Rename] = []
    refusals: list[Refusal] = []
    if isinstance(desired, Desired):
        recorded = prisma.rows(conn) if desired.migrations else []
        refused += prisma.failed_refusals(recorded)
        refused += prisma.missing_refusals(recorded, desired.migrations)
        prisma.warn_changed(recorded, desired.migrations)
        done = prisma.applied(recorded)
        renames = _pending(conn, desired, live)
        unsafe = [r for r in renames if (fold(r.table), fold(r.new)) not in copied]
        refusals = [_refusal(r, conn) for r in unsafe]
        drift += [
            Drift("not_executed", f"migration {item.migration}", _not_executed(item))
            for item in desired.not_executed
            if item.migration not in done
        ]
    possible = _unconfirmed(possible_renames(live, desired, conn, known=renames), not_renamed)
    # Refused only where the old name holds data the new one would be created without; an
    # empty old table or an all-NULL old column moves nothing: said, as drift.
    holding = [r for r in possible if _holds_data(conn, r)]
    drift += [_possible_drift(r, conn) for r in possible if r not in holding]
    history = isinstance(desired, Desired) and bool(desired.migrations)
    unsafe += holding
    refusals += [_possible_refusal(r, conn, history=history) for r in holding]
    # A refused rename first, in place of what the end state says of its new name.
    made = {_q(r.table, r.new) for r in unsafe if r.column}
    refused = refusals + [x for x in refused if x.object not in made]
    # What the end state would make of a refused rename is refused with it, not applied.
    operations = [op for op in operations if not any(_makes(op, r) for r in unsafe)]
    bookkeeping = prisma.bookkeeping(conn, desired)
    if bookkeeping is not None and not refused:
        operations.append(bookkeeping)
    return replace(plan, operations=tuple(operations), drift=tuple(drift), refused=tuple(refused))


def _not_executed(item: NotExecuted) -> str:
    if item.column:
        return (
            f"the table rebuild's copy computes {_q(item.table, item.column)} ({item.where}), "
            f"a data statement, not executed: `{item.statement}` (run it yourself if the new "
            "app needs it)"
        )
    return (
        f"`{item.statement}` ({item.where}): a data statement, not executed "
        "(run it yourself if the new app needs it)"
    )


def _unconfirmed(possible: list[Rename], not_renamed: Sequence[str]) -> list[Rename]:
    """The possible renames not named in ``SIDECAR_NOT_RENAMED`` (``table``,
    ``table.column``: the new name); those named are logged, and created as new."""
    confirmed = {fold(name.strip()) for name in not_renamed}
    left = []
    for rename in possible:
        if fold(_new_name(rename)) in confirmed:
            log.info("history.not_a_rename", old=_old_name(rename), new=_new_name(rename),
                     setting="SIDECAR_NOT_RENAMED")  # fmt: skip
        else:
            left.append(rename)
    return left


def _still_to_do(rename: Rename, live: Catalogue) -> bool:
    """The live database still holds the old name and lacks the new one."""
    table = live.table(rename.table)
    if table is None:
        return False
    if rename.column:
        return table.column(rename.old) is not None and table.column(rename.new) is None
    return live.table(rename.new) is None


def _makes(op: Operation, rename: Rename) -> bool:
    """``op`` creates the new name of ``rename`` (empty)."""
    if rename.column:
        return isinstance(op, AddColumn) and (fold(op.table), fold(op.column)) == (
            fold(rename.table),
            fold(rename.new),
        )
    # The new table, and what the end state builds on it (its indexes, triggers).
    return fold(getattr(op, "table", "")) == fold(rename.new)


def _refusal(rename: Rename, conn: sqlite3.Connection | None) -> Refusal:
    rows = _rows(conn, rename.table)
    if rename.column:
        old, new = _q(rename.table, rename.old), _q(rename.table, rename.new)
        empty = f"{new} would be added empty while {old} keeps the values of {rows} row(s)"
    else:
        old, new = _q(rename.old), _q(rename.new)
        empty = f"{new} would be created empty while {old} keeps its {rows} row(s)"
    return Refusal(
        f"{old} renamed to {new}",
        f"migration {rename.migration} ({rename.where}) renames it; applied by its end "
        f"state, {empty}",
        RENAME_HINT.format(what="column") + COPY_HINT
        if rename.column
        else RENAME_HINT.format(what="table"),
    )


def possible_renames(
    live: Catalogue,
    desired: Catalogue,
    conn: sqlite3.Connection | None,
    *,
    known: Sequence[Rename] = (),
) -> list[Rename]:
    """A table or column the desired schema lacks while exactly one of the same shape
    appears: possibly a rename, which the end state alone would make an empty copy while the
    rows stay under the old name. As :class:`Rename` (no migration: found by shape)."""
    if conn is None:
        return []
    seen = {(fold(r.table), fold(r.old)) for r in known}
    found = []
    for old, new in _pairs(
        [t for t in live.tables if _kept(t.name, desired)],
        [t for t in desired.tables if live.table(t.name) is None],
        lambda t: tuple((fold(c.name), c.shape) for c in t.columns),
    ):
        if (fold(old.name), fold(old.name)) not in seen:
            found.append(Rename("", "", old.name, old.name, new.name))
    for table in desired.tables:
        current = live.table(table.name)
        if current is None:
            continue
        gone = [c for c in current.columns if c.hidden != 1 and table.column(c.name) is None]
        added = [c for c in table.columns if c.hidden != 1 and current.column(c.name) is None]
        for old_column, new_column in _pairs(gone, added, lambda c: c.shape):
            if (fold(current.name), fold(old_column.name)) not in seen:
                found.append(
                    Rename("", "", current.name, old_column.name, new_column.name, column=True)
                )
    return found


def _old_name(rename: Rename) -> str:
    """``table`` or ``table.column``: how SIDECAR_NOT_RENAMED names things."""
    return f"{rename.table}.{rename.old}" if rename.column else rename.old


def _new_name(rename: Rename) -> str:
    return f"{rename.table}.{rename.new}" if rename.column else rename.new


def _kept(name: str, desired: Catalogue) -> bool:
    return desired.table(name) is None and fold(name) not in TOOL_TABLES


def _pairs(old: list[T], new: list[T], key: Callable[[T], object]) -> Iterator[tuple[T, T]]:
    """(old, new) where exactly one new item has the old one's shape, and vice versa."""
    for item in old:
        matches = [n for n in new if key(n) == key(item)]
        if len(matches) == 1 and sum(key(o) == key(matches[0]) for o in old) == 1:
            yield item, matches[0]


def _possible_refusal(rename: Rename, conn: sqlite3.Connection | None, *, history: bool) -> Refusal:
    if rename.column:
        old, new = _q(rename.table, rename.old), _q(rename.table, rename.new)
        what = "column"
    else:
        old, new = _q(rename.old), _q(rename.new)
        what = "table"
    rows = _rows(conn, rename.table)
    if rename.column and history:
        how = (
            f"make the migration say so (`ALTER TABLE {_q(rename.table)} RENAME COLUMN "
            f"{_q(rename.old)} TO {_q(rename.new)};` in place of the drop and the add) and "
            "deploy with SIDECAR_RENAMES=copy, or rename in steps (expand and contract)"
        )
    else:
        how = RENAME_HINT.format(what=what)
    return Refusal(
        f"{old} -> {new}",
        f"possibly a rename: {new} would be created empty beside {old} ({rows} row(s)), "
        "which has the same shape",
        f"if it is a rename: {how}; if {new} is a new {what}, not {old} renamed: "
        f"SIDECAR_NOT_RENAMED={_new_name(rename)}",
    )


def _holds_data(conn: sqlite3.Connection | None, rename: Rename) -> bool:
    """Whether the old table has a row, or the old column a non-NULL value."""
    if conn is None:
        return False
    where = f" WHERE {quote_ident(rename.old)} IS NOT NULL" if rename.column else ""
    sql = f"SELECT EXISTS (SELECT 1 FROM {quote_ident(rename.table)}{where})"
    return bool(conn.execute(sql).fetchone()[0])


def _possible_drift(rename: Rename, conn: sqlite3.Connection | None) -> Drift:
    what = "column" if rename.column else "table"
    old = _q(rename.table, rename.old) if rename.column else _q(rename.old)
    new = _q(rename.table, rename.new) if rename.column else _q(rename.new)
    held = f"{_rows(conn, rename.table)} row(s), all NULL there" if rename.column else "no rows"
    return Drift(
        "possible_rename",
        f"{old} -> {new}",
        f"possibly a rename: {new} is created empty beside {old} ({held}: nothing to move), "
        f"which has the same shape. If it is one: {RENAME_HINT.format(what=what)}",
    )


def _rows(conn: sqlite3.Connection | None, table: str) -> int:
    if conn is None:
        return 0
    return int(conn.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0])


def _q(*names: str) -> str:
    return ".".join(quote_ident(n) for n in names)
