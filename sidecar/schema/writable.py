"""The new app can write: the live database must accept every row the desired schema accepts.

A kept column that would reject one only by its NOT NULL is relaxed (:func:`relaxing`); a
kept foreign key that would block the new app's writes to its parent is changed by the same
rebuild (:func:`foreign_key_changes`); a kept key or STRICT type that rejects values the
desired schema accepts refuses the change (:func:`kept_types`); every other kept constraint
that would reject one is reported (:func:`rejecting`). See docs/design.md, 'The new app can
write (issue 17)'.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.schema.catalogue import Catalogue, Column, Entity, Table
from sidecar.schema.clauses import (
    check_expressions,
    constraint_body,
    drop_not_null,
    drop_references,
    foreign_key_actions,
    index_parts,
    is_unique_index,
    null_default,
    paren_names,
    with_actions,
)
from sidecar.schema.operations import ForeignKeyChange, Refusal, Reject, Relax
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


def _foreign_keys(table: Table) -> list[tuple[frozenset[str], str, str, bool]]:
    """(child columns folded, parent table folded, text, inline) of every foreign key of
    ``table``: the text is the column definition (inline ``REFERENCES``) or the table
    constraint (``FOREIGN KEY``) that holds it."""
    found = []
    for column in table.columns:
        if "references" not in column.definition.lower():
            continue
        tokens: Sequence[Token] = tokens_of(column.definition)
        for i, token in top_level(tokens):
            if token.is_word("references") and i + 1 < len(tokens):
                found.append(
                    (frozenset({fold(column.name)}), tokens[i + 1].norm, column.definition, True)
                )
    for text in table.constraints:
        tokens = constraint_body(tokens_of(text))
        if len(tokens) > 2 and tokens[0].is_word("foreign"):
            children, after = paren_names(tokens, 1)
            if after + 1 < len(tokens) and tokens[after].is_word("references"):
                found.append((frozenset(children), tokens[after + 1].norm, text, False))
    return found


def foreign_key_changes(
    live: Table, desired: Table | None, desired_catalogue: Catalogue
) -> list[ForeignKeyChange]:
    """The kept foreign keys of ``live`` that would fail the new app's writes or take its
    rows, and what the rebuild makes of each (``desired``: None when the desired schema lacks
    the table). Only the constraint changes, never a column or a row:

    - the desired table has the same key (child columns, parent) with other ``ON DELETE`` /
      ``ON UPDATE``: it takes the desired ones (a kept RESTRICT fails the new app's delete
      that the desired CASCADE or SET NULL allows; a kept CASCADE deletes rows the desired
      RESTRICT protects);
    - a child column is gone from the desired table, or the whole table is (and the parent is
      a desired table): dropped, since nothing the new app reads relies on it, and kept it
      blocks the new app's deletes and updates of the parent's rows (or its CASCADE deletes
      kept rows with them).

    See docs/design.md, 'The new app can write (issue 17)'."""
    wanted = {} if desired is None else {(c, p): t for c, p, t, _ in _foreign_keys(desired)}
    found = []
    for children, parent, text, inline in _foreign_keys(live):
        parent_table = desired_catalogue.table(parent)
        target = quoted(parent_table.name if parent_table else parent)
        theirs = wanted.get((children, parent))
        gone = sorted(c for c in children if desired is None or desired.column(c) is None)
        if desired is None or gone:
            if desired is None and (parent_table is None or fold(parent) == fold(live.name)):
                continue  # its parent is no desired table: the new app never writes it
            names = ", ".join(quoted(c.name) for c in live.columns if fold(c.name) in gone)
            what = "its table is" if desired is None else f"{names} is"
            reason = (
                f"{what} not in the desired schema: kept, it would block (or cascade into kept "
                f"rows) the new app's DELETE and UPDATE of {target} rows"
            )
            after = drop_references(text) if inline else ""
        elif theirs is not None and foreign_key_actions(theirs) != foreign_key_actions(text):
            delete, update = (a.upper() for a in foreign_key_actions(theirs))
            reason = (
                f"the desired schema's ON DELETE {delete} ON UPDATE {update}: the new app's "
                f"deletes and updates of {target} rows rely on them"
            )
            after = with_actions(text, theirs)
        else:
            continue
        found.append(ForeignKeyChange(live.name, text, after, reason))
    return found


def _rowid_alias(table: Table, column: Column) -> bool:
    """SQLite's rowid alias: the one INTEGER PRIMARY KEY column of a rowid table (not
    ``INTEGER PRIMARY KEY DESC``), which stores integers only and is given one when left out."""
    return (
        not table.without_rowid
        and column.pk == 1
        and sum(1 for c in table.columns if c.pk) == 1
        and column.type.upper() == "INTEGER"
        and "desc" not in top_words(tokens_of(column.definition)[1:])
    )


def _strict_type(declared: str) -> str:
    """A STRICT table's column type as it checks values (INT and INTEGER are the same)."""
    upper = declared.upper()
    return "INTEGER" if upper == "INT" else upper


def kept_types(live: Table, desired: Table) -> list[Refusal]:
    """Kept type facts of ``live`` that reject values ``desired`` accepts, which no rebuild
    can change without rewriting stored values (a deploy never does): refused.

    - a rowid alias (INTEGER PRIMARY KEY) where the desired column is not an integer: the
      new app's text key fails with "datatype mismatch" (Prisma's Int -> String @id);
    - a desired rowid alias where the kept key is not one: the new app leaves the key out
      for the database to assign, and the kept key does not assign it;
    - a STRICT table whose desired table is not STRICT, or whose kept column's desired type
      differs: the kept type rejects values of the desired one.

    See docs/design.md, 'The new app can write (issue 17)'."""
    found = []
    for column in live.columns:
        wanted = desired.column(column.name)
        if wanted is None or column.hidden != 0:
            continue
        kept, alias = _rowid_alias(live, column), _rowid_alias(desired, wanted)
        if kept and not alias and "INT" not in wanted.type.upper():
            reason = (
                f"the kept `{column.definition}` is the table's rowid, which holds integers "
                f"only; the desired `{wanted.definition}` takes other keys (the new app's "
                "INSERT would fail: datatype mismatch)"
            )
        elif alias and not kept:
            reason = (
                f"the desired `{wanted.definition}` is the table's rowid, given a value when "
                f"the new app leaves it out; the kept `{column.definition}` is not (the new "
                "app's INSERT would fail or store no key)"
            )
        else:
            continue
        found.append(
            Refusal(
                quoted(live.name, column.name),
                reason,
                "a deploy never rewrites stored keys (nor the rows that reference them): keep "
                "the key's type in the desired schema, or add the new key as a new column and "
                "move to it in steps",
            )
        )
    if live.strict:
        found += _kept_strict(live, desired)
    return found


def _kept_strict(live: Table, desired: Table) -> list[Refusal]:
    """A kept STRICT table's column types that reject values the desired table accepts."""
    narrower = [
        column.name
        for column in live.columns
        if (wanted := desired.column(column.name)) is not None
        and column.hidden == 0
        and _strict_type(column.type) != "ANY"
        and (not desired.strict or _strict_type(wanted.type) != _strict_type(column.type))
    ]
    if not narrower:
        return []
    why = "is not STRICT" if not desired.strict else "declares other types"
    return [
        Refusal(
            quoted(live.name),
            f"the kept STRICT table checks the types of {', '.join(quoted(n) for n in narrower)}; "
            f"the desired table {why}, so the new app's values of another type would fail",
            "a deploy never changes a table's STRICT types (that would rewrite or refuse stored "
            "values): keep the table and its types as they are in the desired schema",
        )
    ]


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
    # A column of a composite key is not unique alone: that key is its table constraint.
    single_key = sum(1 for c in table.columns if c.pk) == 1
    for column in table.columns:
        maybe = "unique" in column.definition.lower()
        words = top_words(tokens_of(column.definition)[1:]) if maybe else []
        if "unique" in words or (keys and column.pk and single_key):
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
    found += _rejecting_key(live, desired, desired_indexes)
    wanted_checks = {norm for norm, _ in _check_clauses(desired)}
    for norm, text in _check_clauses(live):
        if norm not in wanted_checks:
            found.append(
                Reject("check", quoted(live.name), f"CHECK {text}: not in the desired schema")
            )
    wanted_keys = {(c, p) for c, p, _, _ in _foreign_keys(desired)}
    for children, parent, _, _ in _foreign_keys(live):
        gone = any(desired.column(c) is None for c in children)
        if (children, parent) in wanted_keys or gone:  # gone: dropped (foreign_key_changes)
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
                "foreign keys on, as Prisma does: on its inserts, and on its deletes and updates "
                "of the parent's rows)",
            )
        )
    return found


def _rejecting_key(live: Table, desired: Table, desired_indexes: Sequence[Entity]) -> list[Reject]:
    """The kept PRIMARY KEY, when no desired key or unique constraint over the same or fewer
    columns makes it redundant (Prisma's ``@id`` -> ``@@id([a, b])``: the kept single key
    rejects the new app's second row with the same ``a``). A key column the new app no longer
    writes is harmless (a rowid alias is assigned; other keys take NULL)."""
    key = [c for c in live.columns if c.pk]
    if not key or any(desired.column(c.name) is None for c in key):
        return []
    columns = frozenset(fold(c.name) for c in key)
    if any(d and d <= columns for d, _ in _uniques(desired, desired_indexes, keys=True)):
        return []
    names = ", ".join(c.name for c in sorted(key, key=lambda c: c.pk))
    return [
        Reject(
            "primary_key",
            quoted(live.name),
            f"PRIMARY KEY ({names}): the desired schema allows two rows with the same "
            f"{names} (its key is wider); a deploy never changes a table's key",
        )
    ]


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
