"""The diff: two catalogues in, a plan out. Pure: reads nothing, writes nothing.

Every difference is an operation (additive), drift (destructive or narrowing: reported,
never executed) or refused (it would need invented data). See docs/design.md, 'The diff'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from sidecar.schema.catalogue import Catalogue, Column, Entity, Table
from sidecar.schema.clauses import (
    default_clause,
    drop_not_null,
    is_constant,
    is_null,
    is_unique_index,
)
from sidecar.schema.operations import (
    AddColumn,
    CopyColumn,
    CreateIndex,
    CreateTable,
    CreateTrigger,
    CreateView,
    Drift,
    ForeignKeyChange,
    Operation,
    Plan,
    RebuildTable,
    Refusal,
    Reject,
    Relax,
    ReplaceView,
)
from sidecar.schema.sql import fold, names_in, quoted, shape, tokens_of, top_words
from sidecar.schema.writable import (
    foreign_key_changes,
    indexes_by_table,
    kept_types,
    rejecting,
    relaxing,
)


@dataclass
class _Diff:
    row_counts: dict[str, int]
    copies: dict[tuple[str, str], str] = field(default_factory=dict)
    creates: list[Operation] = field(default_factory=list)
    adds: list[Operation] = field(default_factory=list)
    rebuilds: list[Operation] = field(default_factory=list)
    others: list[Operation] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    relax: list[Relax] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    foreign_keys: list[ForeignKeyChange] = field(default_factory=list)
    refused_columns: set[tuple[str, str]] = field(default_factory=set)  # (table, column)

    def rows(self, table: str) -> int:
        return self._folded.get(fold(table), 0)

    @cached_property
    def _folded(self) -> dict[str, int]:
        return {fold(t): n for t, n in self.row_counts.items()}


# Bookkeeping tables that other tools keep in the app's database and never put in the
# schema they generate: their absence from the desired schema is not drift (it would make
# every such user's `--strict` deploy fail). They are kept, like every table. The one list:
TOOL_TABLES: frozenset[str] = frozenset(
    {
        "_prisma_migrations",  # Prisma Migrate's history (prisma-engines, flavour/sqlite.rs)
        "_litestream_seq",  # Litestream forces WAL writes with it (litestream, db.go init)
        "_litestream_lock",  # Litestream takes the write lock through it (db.go init)
    }
)


def make_plan(
    live: Catalogue,
    desired: Catalogue,
    *,
    row_counts: dict[str, int],
    copies: Mapping[tuple[str, str], str] | None = None,
) -> Plan:
    """Compare the live and desired catalogues. ``row_counts``: live table -> rows;
    ``copies``: (folded table, folded new column) -> the live column it copies. See
    docs/design.md, 'The diff'."""
    diff = _Diff(row_counts, dict(copies or {}))
    _diff_tables(live, desired, diff)
    for kind in ("indexes", "views", "triggers"):
        _diff_entities(getattr(live, kind), getattr(desired, kind), diff, live, desired)
    live_indexes, desired_indexes = indexes_by_table(live), indexes_by_table(desired)
    for table in desired.tables:
        current = live.table(table.name)
        if current is not None and not (current.virtual or table.virtual):
            diff.rejects += rejecting(
                current,
                table,
                live_indexes.get(fold(table.name), []),
                desired_indexes.get(fold(table.name), []),
                desired,
            )
    # An index over a refused new column is refused with it (listed only as refused).
    others = [op for op in diff.others if not _over_refused(op, diff.refused_columns)]
    operations = (*diff.creates, *diff.adds, *diff.rebuilds, *others)
    return Plan(
        tuple(operations),
        tuple(diff.drift),
        tuple(diff.refused),
        tuple(diff.relax),
        tuple(diff.rejects),
        foreign_keys=tuple(diff.foreign_keys),
    )


def _diff_tables(live: Catalogue, desired: Catalogue, diff: _Diff) -> None:
    """Tables to create or compare, and the live tables the desired schema lacks."""
    for table in desired.tables:
        current = live.table(table.name)
        if current is None:
            if live.view(table.name) is not None:
                diff.drift.append(
                    Drift(
                        "table_changed",
                        quoted(table.name),
                        "is a view in the database, a table in the desired schema",
                    )
                )
                continue
            diff.creates.append(CreateTable(table.name, table.sql))
        else:
            _diff_table(current, table, diff, desired)
    for table in live.tables:
        if desired.table(table.name) is None and fold(table.name) not in TOOL_TABLES:
            changes = () if table.virtual else tuple(foreign_key_changes(table, None, desired))
            diff.drift.append(
                Drift(
                    "table_missing",
                    quoted(table.name),
                    "table not in the desired schema (kept, never dropped"
                    + ("; its foreign keys to desired tables dropped)" if changes else ")"),
                )
            )
            if changes:
                _classify_columns(table, [], (), diff, foreign_keys=changes)


def _over_refused(op: Operation, refused: set[tuple[str, str]]) -> bool:
    if not isinstance(op, CreateIndex) or not refused:
        return False
    names = set(names_in(tokens_of(op.sql)))
    return any(table == fold(op.table) and column in names for table, column in refused)


def _diff_table(live: Table, desired: Table, diff: _Diff, catalogue: Catalogue) -> None:
    name = quoted(live.name)
    if live.virtual or desired.virtual:
        if shape(live.sql) != shape(desired.sql):
            diff.drift.append(Drift("table_changed", name, "virtual table definition differs"))
        return
    for flag, label in (
        (live.without_rowid != desired.without_rowid, "WITHOUT ROWID"),
        (live.strict != desired.strict, "STRICT"),
    ):
        if flag:
            diff.drift.append(Drift("table_changed", name, f"{label} differs (not changed)"))
    diff.refused += kept_types(live, desired)
    new_columns: list[Column] = []
    relax = {fold(r.column): r for r in relaxing(live, desired)}
    changes = foreign_key_changes(live, desired, catalogue)
    changed = {c.before: c.after for c in changes}
    for column in desired.columns:
        if column.hidden == 1:
            continue
        current = live.column(column.name)
        if current is None:
            new_columns.append(column)
            continue
        relaxed = fold(column.name) in relax
        after = changed.get(current.definition, current.definition)
        after = drop_not_null(after) if relaxed else after
        notes = ["NOT NULL relaxed"] if relaxed else []
        notes += ["foreign key changed"] if current.definition in changed else []
        if notes and shape(after, 1) == column.shape:
            continue  # the rebuild removes the only differences
        if current.shape != column.shape:
            diff.drift.append(
                Drift(
                    "column_changed",
                    quoted(live.name, column.name),
                    f"is `{current.definition}`, desired `{column.definition}` "
                    + (
                        f"({', '.join(notes)}, otherwise not changed)" if notes else "(not changed)"
                    ),
                )
            )
    for column in live.columns:
        if column.hidden != 1 and desired.column(column.name) is None:
            notes = ["NOT NULL relaxed"] if fold(column.name) in relax else []
            notes += ["foreign key dropped"] if column.definition in changed else []
            diff.drift.append(
                Drift(
                    "column_missing",
                    quoted(live.name, column.name),
                    "column not in the desired schema (kept, never dropped"
                    + "".join(f"; {note}" for note in notes)
                    + ")",
                )
            )
    new_constraints = _diff_constraints(live, desired, new_columns, diff, changed)
    _classify_columns(
        live,
        new_columns,
        new_constraints,
        diff,
        relax=tuple(relax.values()),
        foreign_keys=tuple(changes),
    )


def _diff_constraints(
    live: Table,
    desired: Table,
    new_columns: list[Column],
    diff: _Diff,
    changed: Mapping[str, str],
) -> tuple[str, ...]:
    """New table constraints over new columns only (applied by the rebuild); the rest drift,
    but for the foreign keys a rebuild ``changed`` (live text -> its new text, "" dropped)."""
    name = quoted(live.name)
    new_names = {fold(c.name) for c in new_columns}
    live_constraints = {shape(changed.get(c, c)) for c in live.constraints}
    desired_constraints = {shape(c) for c in desired.constraints}
    new_constraints = []
    for text in live.constraints:
        if text in changed and (not changed[text] or shape(changed[text]) in desired_constraints):
            continue  # the change is listed (ForeignKeyChange), not drift
        if shape(text) not in desired_constraints:
            diff.drift.append(
                Drift(
                    "constraint_missing",
                    name,
                    f"constraint `{text}` not in the desired schema (kept)",
                )
            )
    for text in desired.constraints:
        if shape(text) in live_constraints:
            continue
        if _constraint_columns(text, desired) <= new_names and new_names:
            new_constraints.append(text)
        else:
            diff.drift.append(
                Drift(
                    "constraint_changed",
                    name,
                    f"new constraint `{text}` over existing columns could reject "
                    "existing rows (not applied)",
                )
            )
    return tuple(new_constraints)


def _classify_columns(
    live: Table,
    columns: list[Column],
    constraints: tuple[str, ...],
    diff: _Diff,
    *,
    relax: tuple[Relax, ...] = (),
    foreign_keys: tuple[ForeignKeyChange, ...] = (),
) -> None:
    rows = diff.rows(live.name)
    in_place: list[Column] = []
    reasons: list[str] = []
    refused = False
    if constraints:
        reasons.append("new table constraint")
    if relax or foreign_keys:
        reasons.append("so the new app can write")
    copies: list[tuple[Column, str]] = []
    for column in columns:
        source = diff.copies.get((fold(live.name), fold(column.name)))
        # A copy gives every row a value: classified as on an empty table.
        verdict = classify_column(column, 0 if source else rows)
        if source is not None and not isinstance(verdict, Refusal):
            copies.append((column, source))
            if verdict:
                reasons.append(f"{column.name}: {verdict.replace('table is empty', 'copied')}")
            continue
        if isinstance(verdict, Refusal):
            diff.refused.append(replace(verdict, object=quoted(live.name, column.name)))
            diff.refused_columns.add((fold(live.name), fold(column.name)))
            refused = True
        elif verdict:
            reasons.append(f"{column.name}: {verdict}")
        else:
            in_place.append(column)
    if refused or not (columns or relax or foreign_keys):
        return
    if reasons:
        diff.relax += relax
        diff.foreign_keys += foreign_keys
        diff.rebuilds.append(
            RebuildTable(
                live.name,
                tuple(c.definition for c in columns),
                constraints,
                tuple(reasons),
                rows,
                tuple(r.column for r in relax),
                tuple((c.name, source) for c, source in copies),
                tuple((c.before, c.after) for c in foreign_keys),
            )
        )
    else:
        diff.adds += [AddColumn(live.name, c.name, c.definition) for c in in_place]
        diff.adds += [
            CopyColumn(live.name, c.name, c.definition, source, rows) for c, source in copies
        ]


def classify_column(column: Column, rows: int) -> Refusal | str | None:  # noqa: PLR0911 (a decision table)
    """How a new column can be added: None in place, a reason string for a rebuild, or a
    :class:`Refusal` when it would need invented data."""
    tokens = tokens_of(column.definition)[1:]
    words = top_words(tokens)
    default = default_clause(tokens)
    if "primary" in words:
        return Refusal(
            "",
            "a new PRIMARY KEY column on an existing table",
            "create a new table instead; existing rows cannot be given keys",
        )
    null_default = is_null(default)
    if column.notnull and null_default and not column.generated:
        if rows > 0:
            return Refusal(
                "",
                f"NOT NULL without a default on a table with {rows} row(s)",
                "give the column a DEFAULT, or add it as nullable and backfill it",
            )
        return "NOT NULL without a default (table is empty)"
    if "unique" in words:
        if not null_default and rows > 1:
            return Refusal(
                "",
                f"UNIQUE with a default would give {rows} rows the same value",
                "add it without a default (NULLs are distinct), then fill it",
            )
        return "UNIQUE"
    if column.hidden == 3:
        return "generated STORED"
    if column.generated and column.notnull:
        return "NOT NULL generated column"
    if "check" in words:
        return "CHECK"
    if default is not None and not is_constant(default):
        return f"non-constant default {' '.join(t.text for t in default)}"
    if "references" in words and not null_default:
        return "REFERENCES with a non-NULL default"
    return None


def _constraint_columns(text: str, table: Table) -> set[str]:
    """Folded names of the table's columns that a table constraint mentions."""
    names = {fold(c.name) for c in table.columns}
    tokens = tokens_of(text)
    # REFERENCES parent(col): the parent's columns are not this table's.
    end = next((i for i, t in enumerate(tokens) if t.is_word("references")), len(tokens))
    return set(names_in(tokens[:end])) & names


def _diff_entities(
    live: Sequence[Entity],
    desired: Sequence[Entity],
    diff: _Diff,
    catalogue: Catalogue,
    wanted_catalogue: Catalogue,
) -> None:
    current = {fold(e.name): e for e in live}
    wanted = {fold(e.name) for e in desired}
    for entity in desired:
        existing = current.get(fold(entity.name))
        if existing is None and entity.type == "view" and catalogue.table(entity.name):
            diff.drift.append(
                Drift(
                    "view_changed",
                    quoted(entity.name),
                    "is a table in the database, a view in the desired schema (not changed)",
                )
            )
        elif existing is None:
            diff.others.append(_create(entity, diff, catalogue))
        elif existing.shape != entity.shape and entity.type == "view":
            _replace_view(existing, entity, diff, catalogue, wanted_catalogue)
        elif existing.shape != entity.shape:
            diff.drift.append(
                Drift(
                    f"{entity.type}_changed",
                    quoted(entity.name),
                    f"{entity.type} definition differs (not changed)",
                )
            )
    for entity in live:
        # The index or trigger of a table the desired schema lacks: that table's drift says it.
        gone = (
            entity.type != "view"
            and catalogue.table(entity.table) is not None
            and wanted_catalogue.table(entity.table) is None
        )
        if fold(entity.name) not in wanted and not gone:
            diff.drift.append(
                Drift(
                    f"{entity.type}_missing",
                    quoted(entity.name),
                    f"{entity.type} not in the desired schema (kept)",
                )
            )


def _replace_view(
    live: Entity, view: Entity, diff: _Diff, catalogue: Catalogue, wanted: Catalogue
) -> None:
    """A view whose definition changed is replaced (it holds no data), the triggers on it
    kept as they are; refused when a view or trigger the desired schema lacks (or has
    otherwise, for a trigger) reads it: the new definition could break that one."""
    name = fold(view.name)
    on_it = [t.sql for t in catalogue.triggers if fold(t.table) == name]
    wanted_views = {fold(v.name) for v in wanted.views}
    wanted_triggers = {fold(t.name): t.shape for t in wanted.triggers}
    for other in (*catalogue.views, *catalogue.triggers):
        if fold(other.name) == name or other.sql in on_it:
            continue
        if name not in names_in(tokens_of(other.sql)[2:]):
            continue
        same = (
            fold(other.name) in wanted_views
            if other.type == "view"
            else wanted_triggers.get(fold(other.name)) == other.shape
        )
        if not same:
            diff.refused.append(
                Refusal(
                    quoted(view.name),
                    f"its definition changed, and the {other.type} {quoted(other.name)}, kept "
                    "as it is, reads it: the new definition could break it",
                    f"add {quoted(other.name)} to the desired schema as it should read the new "
                    f"view, or drop it yourself (a {other.type} holds no data)",
                )
            )
            return
    diff.others.append(ReplaceView(view.name, view.sql, tuple(on_it)))


def _create(entity: Entity, diff: _Diff, catalogue: Catalogue) -> Operation:
    if entity.type == "index":
        unique = is_unique_index(entity.sql)
        rows = diff.rows(entity.table) if catalogue.table(entity.table) else 0
        return CreateIndex(entity.name, entity.table, entity.sql, unique, rows)
    if entity.type == "view":
        return CreateView(entity.name, entity.sql)
    return CreateTrigger(entity.name, entity.table, entity.sql)
