"""The new app can write: the live database must accept every row the desired schema accepts.

A kept column that would reject one only by its NOT NULL is relaxed (:func:`relaxing`); every
other kept constraint that would reject one is reported (:func:`rejecting`). See
docs/design.md, 'The new app can write (issue 17)'.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.schema.catalogue import Catalogue, Entity, Table
from sidecar.schema.clauses import (
    check_expressions,
    constraint_body,
    drop_not_null,
    index_parts,
    is_unique_index,
    null_default,
    paren_names,
)
from sidecar.schema.operations import Reject, Relax
from sidecar.schema.sql import Token, fold, quoted, shape, tokens_of, top_level, top_words


def _same_table(live: Table, desired: Table, live_indexes: Sequence[Entity],
                desired_indexes: Sequence[Entity]) -> bool:  # fmt: skip
    """Column for column, constraint for constraint, index for index the same: the common
    case of a deploy, where no kept constraint can reject what the other schema accepts."""
    return (
        [(fold(c.name), c.shape) for c in live.columns]
        == [(fold(c.name), c.shape) for c in desired.columns]
        and sorted(shape(c) for c in live.constraints)
        == sorted(shape(c) for c in desired.constraints)
        and sorted(i.shape for i in live_indexes) == sorted(i.shape for i in desired_indexes)
    )


def relaxing(live: Table, desired: Table) -> list[Relax]:
    """The kept columns of ``live`` whose NOT NULL rejects rows ``desired`` accepts: gone
    from the desired table without a non-NULL default, or optional there. Primary key and
    generated columns are left alone. See docs/design.md, 'The new app can write (issue 17)'."""
    found = []
    for column in live.columns:
        if column.hidden != 0 or column.pk or not column.notnull:
            continue
        wanted = desired.column(column.name)
        if wanted is None and null_default(column.definition):
            reason = "not in the desired schema: the new app's rows leave it out"
        elif wanted is not None and not wanted.notnull and not wanted.pk:
            reason = "optional in the desired schema: the new app may write NULL"
        else:
            continue
        after = drop_not_null(column.definition)
        found.append(Relax(live.name, column.name, column.definition, after, reason))
    return found


def _check_clauses(table: Table) -> list[tuple[tuple[str, ...], str]]:
    """(normalised expression, text) of every CHECK of ``table``, column or table level."""
    texts = [*(c.definition for c in table.columns), *table.constraints]
    return [(shape(e), e) for text in texts for e in check_expressions(text)]


def _foreign_keys(table: Table) -> list[tuple[frozenset[str], str]]:
    """(child columns folded, parent table folded) of every foreign key of ``table``."""
    found = []
    for column in table.columns:
        if "references" not in column.definition.lower():
            continue
        tokens: Sequence[Token] = tokens_of(column.definition)
        for i, token in top_level(tokens):
            if token.is_word("references") and i + 1 < len(tokens):
                found.append((frozenset({fold(column.name)}), tokens[i + 1].norm))
    for text in table.constraints:
        tokens = constraint_body(tokens_of(text))
        if len(tokens) > 2 and tokens[0].is_word("foreign"):
            children, after = paren_names(tokens, 1)
            if after + 1 < len(tokens) and tokens[after].is_word("references"):
                found.append((frozenset(children), tokens[after + 1].norm))
    return found


def indexes_by_table(catalogue: Catalogue) -> dict[str, list[Entity]]:
    """The indexes of ``catalogue`` by their table's folded name."""
    found: dict[str, list[Entity]] = {}
    for index in catalogue.indexes:
        found.setdefault(fold(index.table), []).append(index)
    return found


def _uniques(
    table: Table, indexes: Sequence[Entity], *, keys: bool
) -> list[tuple[frozenset[str], str]]:
    """(plain columns folded, label) of every UNIQUE constraint and unique index of ``table``
    (and its PRIMARY KEY when ``keys``). An expression or partial index has no plain columns:
    its columns set is empty and only an identical index in the other schema covers it."""
    found: list[tuple[frozenset[str], str]] = []
    for column in table.columns:
        maybe = "unique" in column.definition.lower()
        words = top_words(tokens_of(column.definition)[1:]) if maybe else []
        if "unique" in words or (keys and column.pk):
            found.append((frozenset({fold(column.name)}), f"UNIQUE ({column.name})"))
    for text in table.constraints:
        tokens = constraint_body(tokens_of(text))
        if tokens and (tokens[0].is_word("unique") or (keys and tokens[0].is_word("primary"))):
            names, _ = paren_names(tokens, 0)
            found.append((frozenset(names), text))
    for index in indexes:
        if not is_unique_index(index.sql):
            continue
        terms, where = index_parts(index.sql)
        plain = [tokens_of(term) for term in terms]
        simple = where is None and all(len(t) == 1 and t[0].is_name for t in plain)
        found.append((frozenset(t[0].norm for t in plain) if simple else frozenset(), index.sql))
    return found


def rejecting(
    live: Table,
    desired: Table,
    live_indexes: Sequence[Entity],
    desired_indexes: Sequence[Entity],
    desired_catalogue: Catalogue,
) -> list[Reject]:
    """Kept constraints of ``live`` (a table the desired schema keeps) that would reject a
    row ``desired`` accepts. A constraint over a column the desired table lacks (NULL in the
    new app's rows) is harmless. See docs/design.md, 'The new app can write (issue 17)'."""
    if _same_table(live, desired, live_indexes, desired_indexes):
        return []
    gone_null = {
        fold(c.name)
        for c in live.columns
        if desired.column(c.name) is None and c.hidden == 0 and null_default(c.definition)
    }
    found = _rejecting_uniques(live, desired, live_indexes, desired_indexes, gone_null)
    wanted_checks = {norm for norm, _ in _check_clauses(desired)}
    for norm, text in _check_clauses(live):
        if norm not in wanted_checks:
            found.append(
                Reject("check", quoted(live.name), f"CHECK {text}: not in the desired schema")
            )
    wanted_keys = set(_foreign_keys(desired))
    for children, parent in _foreign_keys(live):
        if (children, parent) in wanted_keys or children & gone_null:
            continue
        why = (
            f"the desired schema lacks table {quoted(parent)}"
            if desired_catalogue.table(parent) is None
            else "not in the desired schema"
        )
        cols = ", ".join(sorted(children))
        found.append(
            Reject(
                "foreign_key",
                quoted(live.name),
                f"foreign key ({cols}) -> {quoted(parent)}: {why} (enforced when the app turns "
                "foreign keys on, as Prisma does)",
            )
        )
    return found


def _rejecting_uniques(
    live: Table,
    desired: Table,
    live_indexes: Sequence[Entity],
    desired_indexes: Sequence[Entity],
    gone_null: set[str],
) -> list[Reject]:
    """The kept UNIQUE constraints and indexes that no desired one covers."""
    found: list[Reject] = []
    kept_unique = _uniques(live, live_indexes, keys=False)
    wanted_unique = _uniques(desired, desired_indexes, keys=True) if kept_unique else []
    wanted_sql = {shape(label) for _, label in wanted_unique}
    for columns, label in kept_unique:
        covered = any(d and d <= columns for d, _ in wanted_unique) if columns else False
        if covered or shape(label) in wanted_sql or columns & gone_null:
            continue
        found.append(
            Reject("unique", quoted(live.name), f"`{label}`: the desired schema allows duplicates")
        )
    return found
