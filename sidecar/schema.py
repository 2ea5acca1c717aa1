"""Pure schema logic: catalogue models, diff -> plan, classification (loading: schema_input).

Planning never writes: :func:`read_catalogue` only reads ``sqlite_master`` and pragmas, and
:func:`make_plan` is a pure function of two catalogues and the live row counts. The plan is
data (small frozen objects) that can be printed, serialised, checked and then applied by
:mod:`sidecar.migrate`.

Every difference is classified as:

* an **operation** (additive): create table, add column in place, rebuild table (additive
  but SQLite cannot ``ALTER`` it in place), create index, view or trigger;
* **drift** (destructive or narrowing): reported, never executed;
* **refused** (impossible without inventing data): carries a ``hint``.

Names compare like SQLite compares them: case-insensitively for ASCII letters only.

This module is longer than most because it carries a small SQL tokenizer: column and
constraint texts are compared token by token (quoting, case and spacing do not matter) and a
rebuild keeps each live column definition verbatim.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

from sidecar.checks import quote_ident
from sidecar.logs import get_logger

log = get_logger(__name__)

# --------------------------------------------------------------------------- tokenizer

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\n\r\f]+)
   |(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
   |(?P<blob>[xX]'[^']*')
   |(?P<string>'(?:[^']|'')*'?)
   |(?P<ident>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
   |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
   |(?P<word>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)
   |(?P<op>\|\||<<|>>|<=|>=|==|!=|<>|->>|->|.)
    """,
    re.VERBOSE | re.DOTALL,
)
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """SQLite's identifier comparison: ASCII letters case-insensitive, everything else exact."""
    return name.translate(_ASCII_FOLD)


class Token(NamedTuple):
    kind: str
    text: str
    start: int
    end: int

    @property
    def value(self) -> str:
        """An identifier without its quotes (``"a""b"`` -> ``a"b``); other tokens as written."""
        if self.kind == "ident":
            body = self.text[1:-1]
            quote = self.text[0]
            return body if quote == "[" else body.replace(quote * 2, quote)
        return self.text

    @property
    def norm(self) -> str:
        """What matters for comparison: names folded and unquoted, literals exact."""
        if self.kind in ("ident", "word"):
            return fold(self.value)
        return self.text

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and fold(self.text) in words


def iter_tokens(sql: str) -> Iterator[Token]:
    """Meaningful tokens of ``sql`` (whitespace and comments left out), lazily."""
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "op"
        if kind not in ("ws", "comment"):
            yield Token(kind, match.group(), match.start(), match.end())


def tokenize(sql: str) -> list[Token]:
    """Meaningful tokens of ``sql``: whitespace and comments left out."""
    return list(iter_tokens(sql))


def _split_top(sql: str, tokens: Sequence[Token]) -> list[tuple[str, list[Token]]]:
    """Split tokens at commas outside parentheses: [(raw text, tokens)] per item."""
    items: list[tuple[str, list[Token]]] = []
    current: list[Token] = []
    depth = 0
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        if token.text == "," and depth == 0:
            if current:
                items.append((sql[current[0].start : current[-1].end], current))
            current = []
            continue
        current.append(token)
    if current:
        items.append((sql[current[0].start : current[-1].end], current))
    return items


def _parenthesised(tokens: Sequence[Token], start: int) -> tuple[int, int]:
    """Index of the first ``(`` at or after ``start`` and of its matching ``)``."""
    opening = next(i for i in range(start, len(tokens)) if tokens[i].text == "(")
    depth = 0
    for i in range(opening, len(tokens)):
        if tokens[i].text == "(":
            depth += 1
        elif tokens[i].text == ")":
            depth -= 1
            if depth == 0:
                return opening, i
    raise ValueError("unbalanced parentheses")


def _top_words(tokens: Sequence[Token]) -> list[str]:
    """Bare words outside parentheses, folded: the keywords of a column definition."""
    words = []
    depth = 0
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.kind == "word":
            words.append(fold(token.text))
    return words


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Column:
    """One column: ``pragma table_xinfo`` plus its definition text from the CREATE TABLE."""

    name: str
    type: str
    notnull: bool
    default: str | None
    pk: int
    hidden: int  # 0 normal, 1 hidden (virtual tables), 2 generated VIRTUAL, 3 generated STORED
    definition: str  # as written, name included: '"currency" TEXT NOT NULL DEFAULT \'USD\''

    @property
    def generated(self) -> bool:
        return self.hidden in (2, 3)

    @cached_property
    def shape(self) -> tuple[str, ...]:
        """The definition after the name, normalised: equal shapes mean equal columns."""
        return tuple(token.norm for token in tokenize(self.definition)[1:])


@dataclass(frozen=True)
class Table:
    name: str
    sql: str
    columns: tuple[Column, ...]
    constraints: tuple[str, ...] = ()  # table constraints as written
    options: str = ""  # after the closing parenthesis: WITHOUT ROWID, STRICT
    without_rowid: bool = False
    strict: bool = False
    virtual: bool = False

    def column(self, name: str) -> Column | None:
        return self._by_name.get(fold(name))

    @cached_property
    def _by_name(self) -> dict[str, Column]:
        return {fold(c.name): c for c in self.columns}

    @property
    def autoincrement(self) -> bool:
        return any(t.is_word("autoincrement") for t in tokenize(self.sql))


@dataclass(frozen=True)
class Entity:
    """An index, view or trigger: compared by its SQL text, token by token."""

    type: str
    name: str
    table: str
    sql: str

    @cached_property
    def shape(self) -> tuple[str, ...]:
        return tuple(token.norm for token in tokenize(self.sql))


@dataclass(frozen=True)
class Catalogue:
    tables: tuple[Table, ...] = ()
    indexes: tuple[Entity, ...] = ()
    views: tuple[Entity, ...] = ()
    triggers: tuple[Entity, ...] = ()
    # Every CREATE statement in creation order (what a fresh database is made from).
    statements: tuple[str, ...] = ()

    def table(self, name: str) -> Table | None:
        return self._tables.get(fold(name))

    def view(self, name: str) -> Entity | None:
        return self._views.get(fold(name))

    @cached_property
    def _tables(self) -> dict[str, Table]:
        return {fold(t.name): t for t in self.tables}

    @cached_property
    def _views(self) -> dict[str, Entity]:
        return {fold(v.name): v for v in self.views}


def parse_create_table(sql: str) -> tuple[dict[str, str], tuple[str, ...], str]:
    """Column definitions by folded name, table constraints and trailing options of a
    ``CREATE TABLE`` statement as stored in ``sqlite_master``."""
    tokens = tokenize(sql)
    try:
        opening, closing = _parenthesised(tokens, 0)
    except (StopIteration, ValueError):
        return {}, (), ""
    columns: dict[str, str] = {}
    constraints: list[str] = []
    for text, item in _split_top(sql, tokens[opening + 1 : closing]):
        if item[0].is_word("constraint", "primary", "unique", "check", "foreign"):
            constraints.append(text)
        else:
            columns[fold(item[0].value)] = text
    options = sql[tokens[closing].end :].strip()
    return columns, tuple(constraints), options


def read_catalogue(conn: sqlite3.Connection) -> Catalogue:
    """The catalogue of the ``main`` database. Read-only; works inside a transaction.

    SQLite's internal ``sqlite_*`` tables, automatic indexes (compared through their table's
    constraints) and the shadow tables of virtual tables are left out.
    """
    kinds = {
        str(row[0]): (str(row[1]), bool(row[2]), bool(row[3]))
        for row in conn.execute(
            "SELECT name, type, wr, strict FROM pragma_table_list WHERE schema = 'main'"
        )
    }
    tables: list[Table] = []
    indexes: list[Entity] = []
    views: list[Entity] = []
    triggers: list[Entity] = []
    statements: list[str] = []
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_master ORDER BY rowid"
    ).fetchall()
    for kind, raw_name, raw_table, raw_sql in rows:
        if raw_sql is None or str(raw_name).startswith("sqlite_"):
            continue
        name, table, sql = str(raw_name), str(raw_table), str(raw_sql)
        if kind == "table":
            table_type, without_rowid, strict = kinds.get(name, ("table", False, False))
            if table_type == "shadow":
                continue
            tables.append(_read_table(conn, name, sql, table_type, wr=without_rowid, strict=strict))
        elif kind == "index":
            indexes.append(Entity("index", name, table, sql))
        elif kind == "view":
            views.append(Entity("view", name, table, sql))
        elif kind == "trigger":
            triggers.append(Entity("trigger", name, table, sql))
        statements.append(sql)
    return Catalogue(
        tuple(tables), tuple(indexes), tuple(views), tuple(triggers), tuple(statements)
    )


def _read_table(
    conn: sqlite3.Connection, name: str, sql: str, table_type: str, *, wr: bool, strict: bool
) -> Table:
    definitions, constraints, options = parse_create_table(sql)
    columns = []
    for cid, col, ctype, notnull, default, pk, hidden in conn.execute(
        'SELECT cid, name, type, "notnull", dflt_value, pk, hidden '
        "FROM pragma_table_xinfo(?, 'main') ORDER BY cid",
        (name,),
    ):
        del cid
        text = definitions.get(fold(str(col))) or f"{quote_ident(str(col))} {ctype}".strip()
        columns.append(
            Column(
                str(col),
                str(ctype),
                bool(notnull),
                None if default is None else str(default),
                int(pk),
                int(hidden),
                text,
            )
        )
    return Table(
        name, sql, tuple(columns), constraints, options, wr, strict, table_type == "virtual"
    )


# --------------------------------------------------------------------------- plan items


def _q(*names: str) -> str:
    return ".".join(quote_ident(n) for n in names)


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
        return f"create table {_q(self.table)}"


@dataclass(frozen=True)
class AddColumn(Operation):
    kind: ClassVar[str] = "add_column"
    table: str
    column: str
    definition: str

    def __str__(self) -> str:
        return f"add column {_q(self.table)}: {self.definition} (in place)"


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
            f"copy {_q(self.table, self.source)} into new column {_q(self.column)} (rename, "
            f"opt-in): add column {self.definition} in place, {self.rows} row(s) copied and "
            "verified"
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

    def __str__(self) -> str:
        added = "; ".join((*self.columns, *self.constraints))
        what = [
            f"copy {_q(self.table, old)} into new column {_q(new)} (rename, opt-in)"
            for new, old in self.copies
        ]
        what += [f"add {added}"] if added else []
        if self.relax:
            what.append("relax NOT NULL of " + ", ".join(_q(c) for c in self.relax))
        why = "; ".join(self.reasons)
        return (
            f"rebuild table {_q(self.table)} to {' and '.join(what)} ({why}; "
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
        text = f"create {'unique ' if self.unique else ''}index {_q(self.name)} on {_q(self.table)}"
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
        return f"create view {_q(self.name)}"


@dataclass(frozen=True)
class CreateTrigger(Operation):
    kind: ClassVar[str] = "create_trigger"
    name: str
    table: str
    sql: str

    def __str__(self) -> str:
        return f"create trigger {_q(self.name)} on {_q(self.table)}"


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
        return f"{_q(self.table, self.column)}: `{self.before}` -> `{self.after}` ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": str(self)}


@dataclass(frozen=True)
class Reject(Drift):
    """A kept constraint that would reject a row the desired schema accepts (a UNIQUE index
    or constraint, a CHECK, a foreign key the desired schema lacks; ``kind``: unique, check,
    foreign_key). Never changed (dropping a constraint narrows what the database guarantees):
    reported, like drift, and ``--strict`` fails."""


@dataclass(frozen=True)
class Plan:
    operations: tuple[Operation, ...] = ()
    drift: tuple[Drift, ...] = ()
    refused: tuple[Refusal, ...] = ()
    relax: tuple[Relax, ...] = ()
    rejects: tuple[Reject, ...] = ()
    # What the preview could not check against the live rows; checked when applied.
    unchecked: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "operations": [op.to_dict() for op in self.operations],
            "drift": [item.to_dict() for item in self.drift],
            "refused": [item.to_dict() for item in self.refused],
            "relax": [item.to_dict() for item in self.relax],
            "rejects": [item.to_dict() for item in self.rejects],
            "unchecked": list(self.unchecked),
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


# --------------------------------------------------------------------------- diff


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
    """Compare the live and desired catalogues. Pure: reads nothing, writes nothing.

    ``row_counts`` (live table -> rows) decides what an empty table may receive (a NOT NULL
    column without a default) and what the plan says about lock times. ``copies``: (folded
    table, folded new column) -> the live column whose values the new column is given (a
    rename made safe, :func:`sidecar.history.copies`).
    """
    diff = _Diff(row_counts, dict(copies or {}))
    for table in desired.tables:
        current = live.table(table.name)
        if current is None:
            if live.view(table.name) is not None:
                diff.drift.append(
                    Drift(
                        "table_changed",
                        _q(table.name),
                        "is a view in the database, a table in the desired schema",
                    )
                )
                continue
            diff.creates.append(CreateTable(table.name, table.sql))
        else:
            _diff_table(current, table, diff)
    for table in live.tables:
        if desired.table(table.name) is None and fold(table.name) not in TOOL_TABLES:
            diff.drift.append(
                Drift(
                    "table_missing",
                    _q(table.name),
                    "table not in the desired schema (kept, never dropped)",
                )
            )
    for kind in ("indexes", "views", "triggers"):
        _diff_entities(getattr(live, kind), getattr(desired, kind), diff, live, desired)
    live_indexes, desired_indexes = _indexes_by_table(live), _indexes_by_table(desired)
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
    )


def _over_refused(op: Operation, refused: set[tuple[str, str]]) -> bool:
    if not isinstance(op, CreateIndex) or not refused:
        return False
    names = {t.norm for t in tokenize(op.sql) if t.kind in ("word", "ident")}
    return any(table == fold(op.table) and column in names for table, column in refused)


def _diff_table(live: Table, desired: Table, diff: _Diff) -> None:
    name = _q(live.name)
    if live.virtual or desired.virtual:
        if _norm_sql(live.sql) != _norm_sql(desired.sql):
            diff.drift.append(Drift("table_changed", name, "virtual table definition differs"))
        return
    for flag, label in (
        (live.without_rowid != desired.without_rowid, "WITHOUT ROWID"),
        (live.strict != desired.strict, "STRICT"),
    ):
        if flag:
            diff.drift.append(Drift("table_changed", name, f"{label} differs (not changed)"))
    new_columns: list[Column] = []
    relax = {fold(r.column): r for r in relaxing(live, desired)}
    for column in desired.columns:
        if column.hidden == 1:
            continue
        current = live.column(column.name)
        relaxed = relax.get(fold(column.name))
        if current is None:
            new_columns.append(column)
        elif relaxed and _shape(relaxed.after) == column.shape:
            continue  # NOT NULL was the only difference, and the relax removes it
        elif current.shape != column.shape:
            diff.drift.append(
                Drift(
                    "column_changed",
                    _q(live.name, column.name),
                    f"is `{current.definition}`, desired `{column.definition}` "
                    + ("(NOT NULL relaxed, otherwise not changed)" if relaxed else "(not changed)"),
                )
            )
    for column in live.columns:
        if column.hidden != 1 and desired.column(column.name) is None:
            diff.drift.append(
                Drift(
                    "column_missing",
                    _q(live.name, column.name),
                    "column not in the desired schema (kept, never dropped"
                    + ("; NOT NULL relaxed)" if fold(column.name) in relax else ")"),
                )
            )
    new_constraints = _diff_constraints(live, desired, new_columns, diff)
    _classify_columns(live, new_columns, new_constraints, diff, tuple(relax.values()))


def _diff_constraints(
    live: Table, desired: Table, new_columns: list[Column], diff: _Diff
) -> tuple[str, ...]:
    """New table constraints over new columns only (applied by the rebuild); the rest drift."""
    name = _q(live.name)
    new_names = {fold(c.name) for c in new_columns}
    live_constraints = {_norm_sql(c) for c in live.constraints}
    desired_constraints = {_norm_sql(c) for c in desired.constraints}
    new_constraints = []
    for text in live.constraints:
        if _norm_sql(text) not in desired_constraints:
            diff.drift.append(
                Drift(
                    "constraint_missing",
                    name,
                    f"constraint `{text}` not in the desired schema (kept)",
                )
            )
    for text in desired.constraints:
        if _norm_sql(text) in live_constraints:
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
    relax: tuple[Relax, ...] = (),
) -> None:
    rows = diff.rows(live.name)
    in_place: list[Column] = []
    reasons: list[str] = []
    refused = False
    if constraints:
        reasons.append("new table constraint")
    if relax:
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
            diff.refused.append(replace(verdict, object=_q(live.name, column.name)))
            diff.refused_columns.add((fold(live.name), fold(column.name)))
            refused = True
        elif verdict:
            reasons.append(f"{column.name}: {verdict}")
        else:
            in_place.append(column)
    if refused or not (columns or relax):
        return
    if reasons:
        diff.relax += relax
        diff.rebuilds.append(
            RebuildTable(
                live.name,
                tuple(c.definition for c in columns),
                constraints,
                tuple(reasons),
                rows,
                tuple(r.column for r in relax),
                tuple((c.name, source) for c, source in copies),
            )
        )
    else:
        diff.adds += [AddColumn(live.name, c.name, c.definition) for c in in_place]
        diff.adds += [
            CopyColumn(live.name, c.name, c.definition, source, rows) for c, source in copies
        ]


_CONSTANTS = ("null", "true", "false")


def classify_column(column: Column, rows: int) -> Refusal | str | None:  # noqa: PLR0911 (a decision table)
    """How a new column can be added: None in place, a reason string for a rebuild, or a
    :class:`Refusal` when it would need invented data."""
    tokens = tokenize(column.definition)[1:]
    words = _top_words(tokens)
    default = _default_tokens(tokens)
    if "primary" in words:
        return Refusal(
            "",
            "a new PRIMARY KEY column on an existing table",
            "create a new table instead; existing rows cannot be given keys",
        )
    null_default = default is None or (len(default) == 1 and default[0].is_word("null"))
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
    if default is not None and not _constant(default):
        return f"non-constant default {' '.join(t.text for t in default)}"
    if "references" in words and not null_default:
        return "REFERENCES with a non-NULL default"
    return None


def _default_tokens(tokens: Sequence[Token]) -> list[Token] | None:
    depth = 0
    for i, token in enumerate(tokens):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.is_word("default"):
            rest = tokens[i + 1 :]
            if rest and rest[0].text == "(":
                _, closing = _parenthesised(rest, 0)
                return list(rest[: closing + 1])
            if rest and rest[0].text in ("+", "-"):
                return list(rest[:2])
            return list(rest[:1])
    return None


def _constant(default: Sequence[Token]) -> bool:
    if len(default) == 2 and default[0].text in ("+", "-"):
        return default[1].kind == "number"
    if len(default) != 1:
        return False
    token = default[0]
    return token.kind in ("string", "number", "blob") or token.is_word(*_CONSTANTS)


def _constraint_columns(text: str, table: Table) -> set[str]:
    """Folded names of the table's columns that a table constraint mentions."""
    names = {fold(c.name) for c in table.columns}
    mentioned = {t.norm for t in tokenize(text) if t.kind in ("word", "ident")}
    # REFERENCES parent(col): the parent's columns are not this table's.
    tokens = tokenize(text)
    for i, token in enumerate(tokens):
        if token.is_word("references"):
            mentioned = {t.norm for t in tokens[:i] if t.kind in ("word", "ident")}
            break
    return mentioned & names


def _norm_sql(sql: str) -> tuple[str, ...]:
    return tuple(t.norm for t in tokenize(sql))


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
                    _q(entity.name),
                    "is a table in the database, a view in the desired schema (not changed)",
                )
            )
        elif existing is None:
            diff.others.append(_create(entity, diff, catalogue))
        elif existing.shape != entity.shape:
            diff.drift.append(
                Drift(
                    f"{entity.type}_changed",
                    _q(entity.name),
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
                    _q(entity.name),
                    f"{entity.type} not in the desired schema (kept)",
                )
            )


def _create(entity: Entity, diff: _Diff, catalogue: Catalogue) -> Operation:
    if entity.type == "index":
        unique = len(tokenize(entity.sql)) > 1 and tokenize(entity.sql)[1].is_word("unique")
        rows = diff.rows(entity.table) if catalogue.table(entity.table) else 0
        return CreateIndex(entity.name, entity.table, entity.sql, unique, rows)
    if entity.type == "view":
        return CreateView(entity.name, entity.sql)
    return CreateTrigger(entity.name, entity.table, entity.sql)


def index_parts(sql: str) -> tuple[list[str], str | None]:
    """The indexed expressions (ASC/DESC dropped) and the WHERE clause of a CREATE INDEX."""
    tokens = tokenize(sql)
    on = next(i for i, t in enumerate(tokens) if t.is_word("on"))
    opening, closing = _parenthesised(tokens, on)
    terms = []
    for _, item in _split_top(sql, tokens[opening + 1 : closing]):
        end = len(item)
        while end > 1 and item[end - 1].is_word("asc", "desc"):
            end -= 1
        terms.append(sql[item[0].start : item[end - 1].end])
    rest = tokens[closing + 1 :]
    where = sql[rest[1].start : rest[-1].end] if rest and rest[0].is_word("where") else None
    return terms, where


# --------------------------------------------------------------------------- the new app writes
#
# The rule: the live database must accept every row the desired schema accepts. A kept
# column that would reject one only by its NOT NULL is relaxed (:func:`relaxing`); every other
# kept constraint that would reject one is reported (:func:`rejecting`). docs/design.md
# "The new app can write" says what "would reject" means for each.


@functools.lru_cache(maxsize=65536)
def _tokens(sql: str) -> tuple[Token, ...]:
    """:func:`tokenize`, cached: the same definitions are read by several rules per plan."""
    return tuple(iter_tokens(sql))


def _shape(definition: str) -> tuple[str, ...]:
    return tuple(token.norm for token in _tokens(definition)[1:])


def _norm(sql: str) -> tuple[str, ...]:
    return tuple(token.norm for token in _tokens(sql))


def _same_table(live: Table, desired: Table, live_indexes: Sequence[Entity],
                desired_indexes: Sequence[Entity]) -> bool:  # fmt: skip
    """Column for column, constraint for constraint, index for index the same: the common
    case of a deploy, where no kept constraint can reject what the other schema accepts."""
    return (
        [(fold(c.name), c.shape) for c in live.columns]
        == [(fold(c.name), c.shape) for c in desired.columns]
        and sorted(_norm(c) for c in live.constraints)
        == sorted(_norm(c) for c in desired.constraints)
        and sorted(i.shape for i in live_indexes) == sorted(i.shape for i in desired_indexes)
    )


def _depth0(tokens: Sequence[Token]) -> Iterator[tuple[int, Token]]:
    """(index, token) of the tokens outside parentheses."""
    depth = 0
    for i, token in enumerate(tokens):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0:
            yield i, token


def drop_not_null(definition: str) -> str:
    """A column definition without its ``NOT NULL`` clauses (a ``CONSTRAINT name`` before one
    and an ``ON CONFLICT`` after one included); every other character as written."""
    tokens = _tokens(definition)
    spans: list[tuple[int, int]] = []
    for i, token in _depth0(tokens):
        if i == 0 or not token.is_word("not") or i + 1 >= len(tokens):
            continue
        if not tokens[i + 1].is_word("null"):
            continue
        start, end = i, i + 2
        if i >= 3 and tokens[i - 2].is_word("constraint"):
            start = i - 2
        if (
            end + 2 < len(tokens)
            and tokens[end].is_word("on")
            and tokens[end + 1].is_word("conflict")
        ):
            end += 3
        spans.append((tokens[start].start, tokens[end - 1].end))
    text = definition
    for begin, finish in reversed(spans):
        head, tail = text[:begin].rstrip(), text[finish:].lstrip()
        text = f"{head} {tail}" if tail else head
    return text


def _null_default(column: Column) -> bool:
    if "default" not in column.definition.lower():
        return True
    default = _default_tokens(_tokens(column.definition)[1:])
    return default is None or (len(default) == 1 and default[0].is_word("null"))


def relaxing(live: Table, desired: Table) -> list[Relax]:
    """The kept columns of ``live`` whose NOT NULL rejects rows ``desired`` accepts: gone
    from the desired table without a non-NULL default (the new app's INSERT leaves them out),
    or optional there (the new app may write NULL). Primary key and generated columns are
    left alone: the app never writes a generated column, and a key is the table's identity."""
    found = []
    for column in live.columns:
        if column.hidden != 0 or column.pk or not column.notnull:
            continue
        wanted = desired.column(column.name)
        if wanted is None and _null_default(column):
            reason = "not in the desired schema: the new app's rows leave it out"
        elif wanted is not None and not wanted.notnull and not wanted.pk:
            reason = "optional in the desired schema: the new app may write NULL"
        else:
            continue
        after = drop_not_null(column.definition)
        found.append(Relax(live.name, column.name, column.definition, after, reason))
    return found


def _constraint_body(tokens: Sequence[Token]) -> Sequence[Token]:
    """A table constraint's tokens after its ``CONSTRAINT name``."""
    return tokens[2:] if tokens and tokens[0].is_word("constraint") else tokens


def _names_in(tokens: Sequence[Token]) -> list[str]:
    return [t.norm for t in tokens if t.kind in ("word", "ident") and not t.is_word("asc", "desc")]


def _paren_names(tokens: Sequence[Token], start: int) -> tuple[list[str], int]:
    """The folded names inside the parentheses at or after ``start``, and the index after."""
    opening, closing = _parenthesised(tokens, start)
    return _names_in(tokens[opening + 1 : closing]), closing + 1


def _checks(table: Table) -> list[tuple[tuple[str, ...], str]]:
    """(normalised expression, text) of every CHECK of ``table``, column or table level."""
    texts = [*(c.definition for c in table.columns), *table.constraints]
    return [(_norm(e), e) for text in texts for e in check_expressions(text)]


def _foreign_keys(table: Table) -> list[tuple[frozenset[str], str]]:
    """(child columns folded, parent table folded) of every foreign key of ``table``."""
    found = []
    for column in table.columns:
        if "references" not in column.definition.lower():
            continue
        tokens: Sequence[Token] = _tokens(column.definition)
        for i, token in _depth0(tokens):
            if token.is_word("references") and i + 1 < len(tokens):
                found.append((frozenset({fold(column.name)}), tokens[i + 1].norm))
    for text in table.constraints:
        tokens = _constraint_body(_tokens(text))
        if len(tokens) > 2 and tokens[0].is_word("foreign"):
            children, after = _paren_names(tokens, 1)
            if after + 1 < len(tokens) and tokens[after].is_word("references"):
                found.append((frozenset(children), tokens[after + 1].norm))
    return found


def _indexes_by_table(catalogue: Catalogue) -> dict[str, list[Entity]]:
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
        words = _top_words(_tokens(column.definition)[1:]) if maybe else []
        if "unique" in words or (keys and column.pk):
            found.append((frozenset({fold(column.name)}), f"UNIQUE ({column.name})"))
    for text in table.constraints:
        tokens = _constraint_body(_tokens(text))
        if tokens and (tokens[0].is_word("unique") or (keys and tokens[0].is_word("primary"))):
            names, _ = _paren_names(tokens, 0)
            found.append((frozenset(names), text))
    for index in indexes:
        tokens = _tokens(index.sql)
        if not (len(tokens) > 1 and tokens[1].is_word("unique")):
            continue
        terms, where = index_parts(index.sql)
        plain = [_tokens(term) for term in terms]
        simple = where is None and all(
            len(t) == 1 and t[0].kind in ("word", "ident") for t in plain
        )
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
    row ``desired`` accepts. A column the desired table lacks holds its default in the new
    app's rows; a NULL there never collides in a UNIQUE key and is never checked by a foreign
    key, so a constraint over such a column is harmless."""
    if _same_table(live, desired, live_indexes, desired_indexes):
        return []
    gone_null = {
        fold(c.name)
        for c in live.columns
        if desired.column(c.name) is None and c.hidden == 0 and _null_default(c)
    }
    found: list[Reject] = []
    kept_unique = _uniques(live, live_indexes, keys=False)
    wanted_unique = _uniques(desired, desired_indexes, keys=True) if kept_unique else []
    wanted_sql = {_norm(label) for _, label in wanted_unique}
    for columns, label in kept_unique:
        covered = any(d and d <= columns for d, _ in wanted_unique) if columns else False
        if covered or _norm(label) in wanted_sql or columns & gone_null:
            continue
        found.append(
            Reject("unique", _q(live.name), f"`{label}`: the desired schema allows duplicates")
        )
    wanted_checks = {norm for norm, _ in _checks(desired)}
    for norm, text in _checks(live):
        if norm not in wanted_checks:
            found.append(Reject("check", _q(live.name), f"CHECK {text}: not in the desired schema"))
    wanted_keys = set(_foreign_keys(desired))
    for children, parent in _foreign_keys(live):
        if (children, parent) in wanted_keys or children & gone_null:
            continue
        why = (
            f"the desired schema lacks table {_q(parent)}"
            if desired_catalogue.table(parent) is None
            else "not in the desired schema"
        )
        cols = ", ".join(sorted(children))
        found.append(
            Reject(
                "foreign_key",
                _q(live.name),
                f"foreign key ({cols}) -> {_q(parent)}: {why} (enforced when the app turns "
                "foreign keys on, as Prisma does)",
            )
        )
    return found


def column_words(definition: str) -> list[str]:
    """The keywords of a column definition outside parentheses, folded (name left out)."""
    return _top_words(_tokens(definition)[1:])


def new_column_value(definition: str) -> tuple[str, str | None]:
    """What an existing row holds in a new column: (SQL expression, COLLATE name or None).

    A generated column: its expression; otherwise its DEFAULT (a bare name in a DEFAULT is a
    string, as SQLite reads it), or NULL."""
    tokens = _tokens(definition)[1:]
    top = list(_depth0(tokens))
    collate = next(
        (tokens[i + 1].value for i, t in top if t.is_word("collate") and i + 1 < len(tokens)),
        None,
    )
    for i, token in top:
        if token.is_word("as") and i + 1 < len(tokens) and tokens[i + 1].text == "(":
            opening, closing = _parenthesised(tokens, i + 1)
            return definition[tokens[opening].start : tokens[closing].end], collate
    default = _default_tokens(tokens)
    if not default:
        return "NULL", collate
    if len(default) == 1 and default[0].kind in ("word", "ident") and not _constant(default):
        word = default[0]
        if not word.is_word("current_time", "current_date", "current_timestamp"):
            return "'" + word.value.replace("'", "''") + "'", collate
    return definition[default[0].start : default[-1].end], collate


@functools.lru_cache(maxsize=65536)
def check_expressions(text: str) -> tuple[str, ...]:
    """The expressions of the CHECK clauses of a column definition or table constraint."""
    if "check" not in text.lower():  # most definitions: no tokenizing
        return ()
    tokens = _tokens(text)
    found = []
    for i, token in _depth0(tokens):
        if token.is_word("check") and i + 1 < len(tokens) and tokens[i + 1].text == "(":
            opening, closing = _parenthesised(tokens, i + 1)
            found.append(text[tokens[opening].start : tokens[closing].end])
    return tuple(found)


def references(text: str) -> tuple[list[str], str, list[str]] | None:
    """(child columns, parent table, parent columns: [] for its primary key) of a column
    definition's REFERENCES clause or of a FOREIGN KEY table constraint; None without one."""
    tokens = _constraint_body(_tokens(text))
    children: list[str] = []
    if tokens and tokens[0].is_word("foreign"):
        opening, closing = _parenthesised(tokens, 0)
        children = [t.value for t in tokens[opening + 1 : closing] if t.kind in ("word", "ident")]
    elif tokens:
        children = [tokens[0].value]
    for i, token in _depth0(tokens):
        if token.is_word("references") and i + 1 < len(tokens):
            rest = tokens[i + 2 :]
            parents: list[str] = []
            if rest and rest[0].text == "(":
                opening, closing = _parenthesised(rest, 0)
                parents = [
                    t.value for t in rest[opening + 1 : closing] if t.kind in ("word", "ident")
                ]
            return children, tokens[i + 1].value, parents
    return None


def unique_terms(constraint: str) -> str | None:
    """``(a, b)`` of a ``UNIQUE (a, b)`` table constraint (as written); None for others."""
    tokens = _constraint_body(_tokens(constraint))
    if not (tokens and tokens[0].is_word("unique")):
        return None
    opening, closing = _parenthesised(tokens, 0)
    return constraint[tokens[opening].start : tokens[closing].end]
