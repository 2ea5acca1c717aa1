"""The desired schema: its files, its statements, and what loading them says beyond DDL.

SQLite itself parses it in an in-memory database; statements that would be silently lost are
refused. See docs/design.md, 'Loading the desired schema'.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tomllib
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from sidecar.errors import ConfigError
from sidecar.logs import get_logger
from sidecar.schema.catalogue import Catalogue, read_catalogue
from sidecar.schema.sql import (
    Token,
    fold,
    iter_tokens,
    parenthesised,
    quoted,
    split_statements,
    split_top,
    tokenize,
    top_level,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    """One folder of a Prisma migrations history: ``<name>/migration.sql``."""

    name: str
    checksum: str  # sha256 hex of the migration.sql bytes: what Prisma records
    # What Prisma accepts as unchanged: the checksum, also with the line endings changed
    # (prisma-engines checksum.rs: git may turn LF into CRLF and back).
    checksums: tuple[str, ...] = ()
    missing: bool = False  # the folder has no migration.sql (Prisma's P3015 when it applies it)

    @classmethod
    def of(cls, name: str, script: bytes) -> Migration:
        variants = (script, script.replace(b"\r\n", b"\n"), script.replace(b"\n", b"\r\n"))
        sums = tuple(hashlib.sha256(v).hexdigest() for v in variants)
        return cls(name, sums[0], sums)


@dataclass(frozen=True)
class Rename:
    """A rename made by a migration: a table (``column`` None) or a column of ``table``."""

    migration: str
    where: str  # file:line
    table: str  # the table as the live database knows it (the old name for a table rename)
    old: str
    new: str
    column: bool = False


@dataclass(frozen=True)
class NotExecuted:
    """A data statement of a migrations history: never run against the live database.
    A table rebuild's copy that computes a column (Prisma's ``coalesce("c", default) AS "c"``
    for a field made required) is one too: ``statement`` is the ``UPDATE`` that would give
    the live table the same values, and ``table``, ``column`` name what it fills."""

    migration: str
    where: str
    statement: str
    table: str = ""
    column: str = ""


@dataclass(frozen=True)
class Desired(Catalogue):
    """The desired catalogue, and what its history says beyond the end state."""

    migrations: tuple[Migration, ...] = ()  # a Prisma history, in the order Prisma applies it
    renames: tuple[Rename, ...] = ()
    not_executed: tuple[NotExecuted, ...] = ()


_DECLARATIVE_HINT = (
    "the desired schema is declarative: describe the end state with CREATE statements; "
    "anything it lacks is reported as drift, never dropped"
)
_DATA_HINT = (
    "a desired schema describes tables, never rows, and is not run against your data: "
    "remove the statement, and run seeds or backfills yourself after the deploy"
)
# First keyword -> (what, hint). ATTACH/DETACH are refused even in a migrations history.
_REFUSED_STATEMENTS = {
    "drop": ("DROP statements are", _DECLARATIVE_HINT),
    "alter": ("ALTER TABLE ... DROP/RENAME statements are", _DECLARATIVE_HINT),
    "vacuum": ("VACUUM statements are", "remove the statement from the schema"),
    "attach": ("ATTACH statements are", "a desired schema may not open other files: remove it"),
    "detach": ("DETACH statements are", "remove the statement from the schema"),
}
_HEAD = 12  # CREATE TEMP TABLE IF NOT EXISTS schema . name AS: what the rules look at
_IGNORED_STATEMENTS = ("pragma", "begin", "commit", "end", "rollback", "savepoint", "release")
# Statements that read or write rows: SQLite would run them against the in-memory tables,
# and the live database would never see them.
_DATA_STATEMENTS = ("insert", "replace", "update", "delete", "select", "with", "values")


def desired_files(path: Path) -> list[Path]:
    """The ``.sql`` files of a desired schema, in the order they are applied."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(
            f"desired schema {path} does not exist",
            hint="set SIDECAR_SCHEMA to a .sql file or a folder of them, and check the mount",
        )
    # Name order, one level down included; hidden entries skipped (a ConfigMap mount's
    # ..data). See docs/design.md, 'Loading the desired schema'.
    found: dict[Path, Path] = {}
    try:
        for entry in sorted(path.iterdir()):
            if entry.name.startswith("."):
                continue
            children = sorted(entry.iterdir()) if entry.is_dir() else [entry]
            for file in children:
                if file.suffix == ".sql" and file.is_file() and not file.name.startswith("."):
                    found.setdefault(file.resolve(), file)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the desired schema folder {path}: {exc.strerror} ({exc.filename})",
            hint="check the schema mount and its permissions",
        ) from None
    files = sorted(found.values(), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise ConfigError(
            f"desired schema folder {path} holds no .sql files",
            hint="put the schema (CREATE statements) in one or more .sql files",
        )
    return files


def migration_scripts(root: Path) -> list[tuple[str, Path | None]]:
    """What ``prisma migrate deploy`` reads of a migrations folder: every folder in it is a
    migration, named by the folder, and only its ``migration.sql`` is read (None: missing).
    In name order; hidden entries skipped. Every other file is logged as ignored (a
    ``down.sql``, a README). See docs/design.md, 'Loading the desired schema'."""
    found: list[tuple[str, Path | None]] = []
    ignored: list[str] = []
    try:
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                if entry.name != "migration_lock.toml":
                    ignored.append(entry.name)
                continue
            script = entry / "migration.sql"
            found.append((entry.name, script if script.is_file() else None))
            ignored += [
                f"{entry.name}/{file.name}"
                for file in sorted(entry.iterdir())
                if file.name != "migration.sql" and not file.name.startswith(".")
            ]
    except OSError as exc:
        raise ConfigError(
            f"cannot read the migrations folder {root}: {exc.strerror} ({exc.filename})",
            hint="check the schema mount and its permissions",
        ) from None
    if ignored:
        log.info("schema.files_ignored", folder=str(root), files=ignored,
                 reason="prisma migrate deploy reads only <migration>/migration.sql")  # fmt: skip
    if not found:
        raise ConfigError(
            f"migrations folder {root} holds no migration folders",
            hint="point SIDECAR_SCHEMA at Prisma's migrations folder (<name>/migration.sql)",
        )
    return found


def is_migration_history(path: Path) -> bool:
    """A Prisma-style migrations folder: ``<folder>/migration.sql`` files replayed in order,
    DROP statements allowed (only the net result is compared)."""
    return path.is_dir() and (
        (path / "migration_lock.toml").exists() or any(path.glob("*/migration.sql"))
    )


def load_desired(path: Path) -> Desired:
    """Load a file, or a folder of ``.sql`` files in name order, into an in-memory database,
    so SQLite itself parses it. See docs/design.md, 'Loading the desired schema'."""
    history = is_migration_history(path)
    if history:
        _require_sqlite_provider(path / "migration_lock.toml")
    conn = sqlite3.connect(":memory:", isolation_level=None)
    loader = _Loader(conn, history=history)
    migrations: list[Migration] = []
    try:
        # One transaction for the whole load: much faster for big schemas. Transaction
        # statements in the files are ignored, so nothing can end it early.
        conn.execute("BEGIN")
        scripts = migration_scripts(path) if history else [(None, f) for f in desired_files(path)]
        for name, file in scripts:
            if file is None:
                migrations.append(Migration(str(name), "", missing=True))
                continue
            raw = _read(file)
            if name is not None:
                migrations.append(Migration.of(name, raw))
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{file}: not UTF-8 text (byte {exc.start})", hint="save the schema as UTF-8"
                ) from None
            loader.start(name or file.name)
            for line, statement in split_statements(text.lstrip("\ufeff")):
                loader.load(file, line, statement)
        catalogue = read_catalogue(conn)
    finally:
        conn.close()
    log.debug("schema.loaded", path=str(path), tables=len(catalogue.tables))
    return Desired(
        **{f: getattr(catalogue, f) for f in Catalogue.__dataclass_fields__},
        migrations=tuple(migrations),
        renames=tuple(loader.renames),
        not_executed=tuple(loader.not_executed),
    )


def _require_sqlite_provider(lock: Path) -> None:
    """Prisma's ``migration_lock.toml`` names the database the migrations were written for."""
    if not lock.is_file():
        return
    try:
        provider = tomllib.loads(lock.read_text(encoding="utf-8")).get("provider")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot read {lock}: {exc}", hint="it is Prisma's file: restore it from git"
        ) from None
    if provider not in (None, "sqlite"):
        raise ConfigError(
            f"{lock}: these migrations are for {provider!r}, not SQLite",
            hint="point SIDECAR_SCHEMA at the migrations of a datasource with provider sqlite",
        )


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {file}: {exc.strerror}",
            hint="check the schema file's mount and permissions",
        ) from None


def _snippet(statement: str) -> str:
    snippet = " ".join(statement.split())
    return snippet if len(snippet) <= 100 else snippet[:97] + "..."


@dataclass
class _Loader:
    """Runs one statement after another, and remembers what a history says beyond DDL."""

    conn: sqlite3.Connection
    history: bool
    migration: str = ""
    created: dict[str, str] = field(default_factory=dict)  # folded -> name, this migration
    copied_from: dict[str, str] = field(default_factory=dict)  # new table -> source table
    renames: list[Rename] = field(default_factory=list)
    not_executed: list[NotExecuted] = field(default_factory=list)

    def start(self, migration: str) -> None:
        self.migration = migration
        self.created.clear()
        self.copied_from.clear()

    def load(self, file: Path, line: int, statement: str) -> None:
        # The first tokens decide what a statement is; only ALTER and data statements are
        # read whole (tokenizing every CREATE of a big schema costs a second per 1,000).
        tokens = list(islice(iter_tokens(statement), _HEAD))
        first = next((fold(t.text) for t in tokens if t.kind == "word"), "")
        if first == "alter" or first in _DATA_STATEMENTS:
            tokens = tokenize(statement)
        snippet = _snippet(statement)
        where = f"{file}:{line}"
        if first in _IGNORED_STATEMENTS:
            log.debug("schema.statement_ignored", file=str(file), line=line, statement=snippet)
            return
        refused = _refusal(first, tokens, history=self.history)
        if refused is not None:
            what, hint = refused
            raise ConfigError(
                f"{where}: {what} not allowed in a desired schema: {snippet}", hint=hint
            )
        if not sqlite3.complete_statement(statement):
            raise ConfigError(
                f"{where}: incomplete statement (missing ';'?): {snippet}",
                hint="end every statement with ';'",
            )
        if first in _DATA_STATEMENTS or _is_temporary(tokens):
            self._data(statement, tokens, where, snippet)
            return
        if first == "alter":
            self._alter(tokens, where)
        try:
            self.conn.execute(statement)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"{where}: {exc} in statement: {snippet}",
                hint="fix the statement; the schema is checked by SQLite in an in-memory database",
            ) from None
        if first == "create" and len(tokens) > 2 and tokens[1].is_word("table"):
            name = _created_name(tokens)
            if name is not None:
                self.created[fold(name)] = name

    def _data(self, statement: str, tokens: list[Token], where: str, snippet: str) -> None:
        """A data statement in a history: the copy of a table rebuild, or not executed. A
        copy's computed column is a data statement of its own (never silently dropped)."""
        copy = _rebuild_copy(tokens)
        if copy is not None and fold(copy[0]) in self.created:
            target, source, pairs = copy
            self.copied_from[fold(target)] = source
            columns = self._columns(source)
            for new, value in pairs:
                old = value[0].value if len(value) == 1 and value[0].is_name else None
                if old is None or fold(old) not in columns:
                    expression = " ".join(statement[value[0].start : value[-1].end].split())
                    update = f"UPDATE {quoted(source)} SET {quoted(new)} = {expression};"
                    self.not_executed.append(
                        NotExecuted(self.migration, where, update, table=source, column=new)
                    )
                    log.debug("schema.statement_not_executed", migration=self.migration,
                              where=where, statement=update)  # fmt: skip
                elif fold(old) != fold(new):
                    self.renames.append(
                        Rename(self.migration, where, source, columns[fold(old)], new, column=True)
                    )
            return
        self.not_executed.append(NotExecuted(self.migration, where, snippet))
        log.debug("schema.statement_not_executed", migration=self.migration, where=where,
                 statement=snippet)  # fmt: skip

    def _alter(self, tokens: list[Token], where: str) -> None:
        """ALTER TABLE t RENAME TO n / RENAME [COLUMN] a TO b, in a history."""
        names = [t for t in tokens if t.is_name]
        at = next((i for i, t in enumerate(names) if t.is_word("rename")), None)
        if at is None or at < 3:
            return
        table = names[at - 1].value
        rest = names[at + 1 :]
        if rest and rest[0].is_word("to") and len(rest) > 1:
            new = rest[1].value
            if fold(table) in self.created:
                # Prisma's RedefineTables: new_X (just made, a copy of X) takes X's name. A
                # rename only when the copy came from a table of another name.
                source = self.copied_from.get(fold(table))
                if source is not None and fold(source) != fold(new):
                    self.renames.append(Rename(self.migration, where, source, source, new))
                return
            self.renames.append(Rename(self.migration, where, table, table, new))
            return
        if rest and rest[0].is_word("column"):
            rest = rest[1:]
        if len(rest) >= 3 and rest[1].is_word("to") and fold(table) not in self.created:
            self.renames.append(
                Rename(self.migration, where, table, rest[0].value, rest[2].value, column=True)
            )

    def _columns(self, table: str) -> dict[str, str]:
        rows = self.conn.execute("SELECT name FROM pragma_table_info(?)", (table,))
        return {fold(str(r[0])): str(r[0]) for r in rows}


def _refusal(first: str, tokens: list[Token], *, history: bool) -> tuple[str, str] | None:  # noqa: PLR0911 (a decision table)
    """(what, hint) when the statement may not be in this kind of schema, else None."""
    if first == "alter" and not any(t.is_word("drop", "rename") for t in tokens):
        return None  # ADD COLUMN is additive: allowed
    if first in _REFUSED_STATEMENTS and (not history or first in ("attach", "detach")):
        return _REFUSED_STATEMENTS[first]
    if first == "create" and _is_create_as(tokens):
        return (
            "CREATE TABLE ... AS SELECT statements are",
            "it would create the table empty (its rows are never copied): declare the "
            "table's columns with CREATE TABLE name (...) instead",
        )
    if history:
        return None
    if first in _DATA_STATEMENTS:
        return ("data statements (INSERT, UPDATE, DELETE, REPLACE, SELECT, WITH) are", _DATA_HINT)
    if _is_temporary(tokens):
        return (
            "CREATE TEMP statements are",
            "a temporary table, view or trigger never reaches the database: remove it",
        )
    return None


def _is_temporary(tokens: list[Token]) -> bool:
    return (
        len(tokens) > 1 and tokens[0].is_word("create") and tokens[1].is_word("temp", "temporary")
    )


def _table_name_end(tokens: list[Token]) -> int | None:
    """Index after the table name of CREATE [TEMP] TABLE [IF NOT EXISTS] [schema.]name."""
    i = 1
    if i < len(tokens) and tokens[i].is_word("temp", "temporary"):
        i += 1
    if i >= len(tokens) or not tokens[i].is_word("table"):
        return None
    i += 1
    if i + 2 < len(tokens) and tokens[i].is_word("if") and tokens[i + 1].is_word("not"):
        i += 3
    if i + 2 < len(tokens) and tokens[i + 1].text == ".":
        i += 2
    return i + 1 if i < len(tokens) else None


def _is_create_as(tokens: list[Token]) -> bool:
    end = _table_name_end(tokens)
    return end is not None and end < len(tokens) and tokens[end].is_word("as")


def _created_name(tokens: list[Token]) -> str | None:
    end = _table_name_end(tokens)
    return None if end is None else tokens[end - 1].value


def _rebuild_copy(tokens: list[Token]) -> tuple[str, str, list[tuple[str, list[Token]]]] | None:
    """``INSERT INTO t (c, ...) SELECT e, ... FROM s``: (t, s, [(c, e)]), each ``e`` without
    a trailing ``AS alias`` (Prisma's ``coalesce("c", 'x') AS "c"``)."""
    if len(tokens) < 4 or not tokens[0].is_word("insert") or not tokens[1].is_word("into"):
        return None
    target = tokens[2].value
    try:
        opening, closing = parenthesised(tokens, 3)
    except (StopIteration, ValueError):
        return None
    if opening != 3 or closing + 1 >= len(tokens) or not tokens[closing + 1].is_word("select"):
        return None
    rest = tokens[closing + 2 :]
    at = next((i for i, token in top_level(rest) if token.is_word("from")), None)
    if at is None or at + 1 >= len(rest):
        return None
    columns = [item for _, item in split_top("", tokens[opening + 1 : closing])]
    values = [item for _, item in split_top("", rest[:at])]
    pairs = [
        (column[0].value, _unaliased(value))
        for column, value in zip(columns, values, strict=False)
        if len(column) == 1
    ]
    return target, rest[at + 1].value, pairs


def _unaliased(value: list[Token]) -> list[Token]:
    if len(value) > 2 and value[-2].is_word("as") and value[-1].is_name:
        return value[:-2]
    return value
