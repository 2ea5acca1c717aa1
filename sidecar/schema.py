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

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
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
class RebuildTable(Operation):
    """Additive, but SQLite cannot ALTER it in place: the verified 12-step table rebuild."""

    kind: ClassVar[str] = "rebuild_table"
    table: str
    columns: tuple[str, ...]  # new column definitions, as written in the desired schema
    constraints: tuple[str, ...] = ()  # new table constraints over new columns only
    reasons: tuple[str, ...] = ()
    rows: int = 0

    def __str__(self) -> str:
        added = "; ".join((*self.columns, *self.constraints))
        why = "; ".join(self.reasons)
        return (
            f"rebuild table {_q(self.table)} to add {added} ({why}; "
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
class Plan:
    operations: tuple[Operation, ...] = ()
    drift: tuple[Drift, ...] = ()
    refused: tuple[Refusal, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "operations": [op.to_dict() for op in self.operations],
            "drift": [item.to_dict() for item in self.drift],
            "refused": [item.to_dict() for item in self.refused],
        }

    def with_refused(self, extra: Iterable[Refusal]) -> Plan:
        return replace(self, refused=(*self.refused, *extra))


# --------------------------------------------------------------------------- diff


@dataclass
class _Diff:
    row_counts: dict[str, int]
    creates: list[Operation] = field(default_factory=list)
    adds: list[Operation] = field(default_factory=list)
    rebuilds: list[Operation] = field(default_factory=list)
    others: list[Operation] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

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


def make_plan(live: Catalogue, desired: Catalogue, *, row_counts: dict[str, int]) -> Plan:
    """Compare the live and desired catalogues. Pure: reads nothing, writes nothing.

    ``row_counts`` (live table -> rows) decides what an empty table may receive (a NOT NULL
    column without a default) and what the plan says about lock times.
    """
    diff = _Diff(row_counts)
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
    operations = (*diff.creates, *diff.adds, *diff.rebuilds, *diff.others)
    return Plan(tuple(operations), tuple(diff.drift), tuple(diff.refused))


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
    for column in desired.columns:
        if column.hidden == 1:
            continue
        current = live.column(column.name)
        if current is None:
            new_columns.append(column)
        elif current.shape != column.shape:
            diff.drift.append(
                Drift(
                    "column_changed",
                    _q(live.name, column.name),
                    f"is `{current.definition}`, desired `{column.definition}` (not changed)",
                )
            )
    for column in live.columns:
        if column.hidden != 1 and desired.column(column.name) is None:
            diff.drift.append(
                Drift(
                    "column_missing",
                    _q(live.name, column.name),
                    "column not in the desired schema (kept, never dropped)",
                )
            )
    new_constraints = _diff_constraints(live, desired, new_columns, diff)
    _classify_columns(live, new_columns, new_constraints, diff)


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
    live: Table, columns: list[Column], constraints: tuple[str, ...], diff: _Diff
) -> None:
    rows = diff.rows(live.name)
    in_place: list[Column] = []
    reasons: list[str] = []
    refused = False
    if constraints:
        reasons.append("new table constraint")
    for column in columns:
        verdict = classify_column(column, rows)
        if isinstance(verdict, Refusal):
            diff.refused.append(replace(verdict, object=_q(live.name, column.name)))
            refused = True
        elif verdict:
            reasons.append(f"{column.name}: {verdict}")
        else:
            in_place.append(column)
    if refused or not columns:
        return
    if reasons:
        diff.rebuilds.append(
            RebuildTable(
                live.name, tuple(c.definition for c in columns), constraints, tuple(reasons), rows
            )
        )
    else:
        diff.adds += [AddColumn(live.name, c.name, c.definition) for c in in_place]


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
