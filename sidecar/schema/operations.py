"""A plan is data: small frozen operations, drift, refusals, relaxes and rejects.

Planning makes them (:mod:`sidecar.schema.diff`); they can be printed, serialised and
reviewed before :mod:`sidecar.migrate` applies the operations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from sidecar.schema.clauses import references
from sidecar.schema.sql import quoted


@dataclass(frozen=True)
class Operation:
    kind: ClassVar[str] = "operation"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.kind, **asdict(self), "summary": str(self)}


@dataclass(frozen=True)
class CreateTable(Operation):
    kind: ClassVar[str] = "create_table"
    table: str
    sql: str

    def __str__(self) -> str:
        return f"create table {quoted(self.table)}"


@dataclass(frozen=True)
class AddColumn(Operation):
    kind: ClassVar[str] = "add_column"
    table: str
    column: str
    definition: str

    def __str__(self) -> str:
        return f"add column {quoted(self.table)}: {self.definition} (in place)"


@dataclass(frozen=True)
class CopyColumn(Operation):
    """A column rename made safe (``SIDECAR_RENAMES=copy``): the new column added in place
    and given the old column's value in every row, in the same transaction; the old column
    kept (and relaxed like any kept column the desired schema lacks)."""

    kind: ClassVar[str] = "copy_column"
    table: str
    column: str  # the new column
    definition: str
    source: str  # the old column
    rows: int = 0

    def __str__(self) -> str:
        return (
            f"copy {quoted(self.table, self.source)} into new column {quoted(self.column)} "
            f"(rename, opt-in): add column {self.definition} in place, {self.rows} row(s) "
            "copied and verified"
        )


@dataclass(frozen=True)
class RebuildTable(Operation):
    """Additive, but SQLite cannot ALTER it in place: the verified 12-step table rebuild."""

    kind: ClassVar[str] = "rebuild_table"
    table: str
    columns: tuple[str, ...]  # new column definitions, as written in the desired schema
    constraints: tuple[str, ...] = ()  # new table constraints over new columns only
    reasons: tuple[str, ...] = ()
    rows: int = 0
    relax: tuple[str, ...] = ()  # live columns whose NOT NULL is dropped (see Relax)
    copies: tuple[tuple[str, str], ...] = ()  # (new column, old column): a rename copied
    # (live text, new text) of each foreign key changed so the new app can write (see
    # ForeignKeyChange): a column definition or table constraint; "" drops a constraint.
    foreign_keys: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        added = "; ".join((*self.columns, *self.constraints))
        what = [
            f"copy {quoted(self.table, old)} into new column {quoted(new)} (rename, opt-in)"
            for new, old in self.copies
        ]
        what += [f"add {added}"] if added else []
        if self.relax:
            what.append("relax NOT NULL of " + ", ".join(quoted(c) for c in self.relax))
        dropped = sum(1 for _, after in self.foreign_keys if references(after) is None)
        if dropped:
            what.append(f"drop {dropped} foreign key(s) of columns or a table the app dropped")
        if len(self.foreign_keys) > dropped:
            given = len(self.foreign_keys) - dropped
            what.append(f"give {given} foreign key(s) the desired ON DELETE/UPDATE")
        why = "; ".join(self.reasons)
        return (
            f"rebuild table {quoted(self.table)} to {' and '.join(what)} ({why}; "
            f"{self.rows} row(s) copied and verified)"
        )


@dataclass(frozen=True)
class CreateIndex(Operation):
    kind: ClassVar[str] = "create_index"
    name: str
    table: str
    sql: str
    unique: bool = False
    rows: int = 0

    def __str__(self) -> str:
        unique = "unique " if self.unique else ""
        text = f"create {unique}index {quoted(self.name)} on {quoted(self.table)}"
        if self.rows >= 100_000:
            # Measured: about 1.6 s per million rows, all of it under the write lock.
            text += f" (~{self.rows * 1.6e-6:.1f}s under the write lock for {self.rows} rows)"
        return text


@dataclass(frozen=True)
class CreateView(Operation):
    kind: ClassVar[str] = "create_view"
    name: str
    sql: str

    def __str__(self) -> str:
        return f"create view {quoted(self.name)}"


@dataclass(frozen=True)
class ReplaceView(Operation):
    """A view whose definition changed: dropped and created as desired in the transaction (a
    view holds no data), and the triggers on it (which its drop deletes) created again as
    they were."""

    kind: ClassVar[str] = "replace_view"
    name: str
    sql: str
    triggers: tuple[str, ...] = ()  # the live triggers on the view, as they are

    def __str__(self) -> str:
        again = f", its {len(self.triggers)} trigger(s) kept" if self.triggers else ""
        return f"replace view {quoted(self.name)} with the desired definition{again}"


@dataclass(frozen=True)
class CreateTrigger(Operation):
    kind: ClassVar[str] = "create_trigger"
    name: str
    table: str
    sql: str

    def __str__(self) -> str:
        return f"create trigger {quoted(self.name)} on {quoted(self.table)}"


@dataclass(frozen=True)
class Drift:
    """A difference that would destroy or narrow something: reported, never executed."""

    kind: str  # table_missing, column_missing, column_changed, table_changed, ...
    object: str
    detail: str

    def __str__(self) -> str:
        return f"{self.object}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": str(self)}


@dataclass(frozen=True)
class Refusal:
    """An additive change that cannot be made without inventing data."""

    object: str
    reason: str
    hint: str

    def __str__(self) -> str:
        return f"{self.object}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": str(self)}


@dataclass(frozen=True)
class Relax:
    """A kept live column whose ``NOT NULL`` would reject rows the desired schema accepts:
    the column is gone from the desired schema (the new app leaves it out) or optional there
    (the new app writes NULL). Its NOT NULL is dropped by a verified rebuild; nothing else
    about it changes."""

    table: str
    column: str
    before: str  # the live definition
    after: str  # the same text without its NOT NULL
    reason: str

    def __str__(self) -> str:
        return (
            f"{quoted(self.table, self.column)}: `{self.before}` -> `{self.after}` ({self.reason})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": str(self)}


@dataclass(frozen=True)
class ForeignKeyChange:
    """A kept foreign key that would make the new app's writes fail or take its rows, changed
    by the verified rebuild (never a column, never a row): given the desired schema's
    ``ON DELETE`` / ``ON UPDATE`` when only those differ, or dropped when it guards a column
    or table the desired schema no longer has (its parent's rows, which the new app deletes
    and updates, would be blocked, or its own rows deleted by a CASCADE)."""

    table: str
    before: str  # the live text: a table constraint, or a column definition with REFERENCES
    after: str  # the same text changed; "" when a table constraint is dropped
    reason: str

    def __str__(self) -> str:
        after = f"`{self.after}`" if self.after else "dropped"
        return f"{quoted(self.table)}: `{self.before}` -> {after} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": str(self)}


@dataclass(frozen=True)
class Reject(Drift):
    """A kept constraint that would reject a row the desired schema accepts (a UNIQUE index
    or constraint, a CHECK, a foreign key the desired schema lacks, a narrower PRIMARY KEY;
    ``kind``: unique, check, foreign_key, primary_key). Never changed (dropping a constraint
    narrows what the database guarantees): reported, like drift, and ``--strict`` fails."""


@dataclass(frozen=True)
class Plan:
    operations: tuple[Operation, ...] = ()
    drift: tuple[Drift, ...] = ()
    refused: tuple[Refusal, ...] = ()
    relax: tuple[Relax, ...] = ()
    rejects: tuple[Reject, ...] = ()
    foreign_keys: tuple[ForeignKeyChange, ...] = ()  # changed by a rebuild so the app can write
    # What the preview could not test against the live rows, tested when applied (the
    # name is the JSON document's key, which only ever grows).
    unchecked: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "operations": [op.to_dict() for op in self.operations],
            "drift": [item.to_dict() for item in self.drift],
            "refused": [item.to_dict() for item in self.refused],
            "relax": [item.to_dict() for item in self.relax],
            "rejects": [item.to_dict() for item in self.rejects],
            "unchecked": list(self.unchecked),
            "foreign_keys": [item.to_dict() for item in self.foreign_keys],
        }

    def refusing(
        self, refused: Iterable[tuple[Operation, Refusal]], unchecked: Iterable[str] = ()
    ) -> Plan:
        """This plan with ``refused`` operations moved from the operations to the refusals
        (a refused item is listed only as refused)."""
        pairs = list(refused)
        gone = [op for op, _ in pairs]
        return replace(
            self,
            operations=tuple(op for op in self.operations if op not in gone),
            refused=(*self.refused, *(refusal for _, refusal in pairs)),
            unchecked=(*self.unchecked, *unchecked),
        )
