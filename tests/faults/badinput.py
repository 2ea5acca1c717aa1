"""The bad-input cases as data: how to break a file or the environment, which command to run,
and what the user must then see. Used by ``tests/unit/test_bad_input.py`` (one test per case)
and by ``tests/faults/safety_table.py`` (the results table in ``docs/safety.md``).

Every case runs the real CLI on real files in a fresh folder (a :class:`World`: a portfolio
database, a backups folder holding one verified backup, and an "outside" folder standing for
the rest of the host). A case passes when:

- the exit code is the documented one;
- stderr carries exactly one ``error: ...`` line followed by one ``hint: ...`` line, the error
  names the file or the variable, and every other stderr line is a structured (JSON) log event;
  a failure that is a *finding* of a check (``verify``, ``health``) is a result on stdout,
  and one ``error:``/``hint:`` pair on stderr as well;
- nothing is lost: every file that existed before (database, side files, backups, the
  outside folder) is byte-for-byte unchanged, and no partial file is left in the backups folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sidecar import cli
from sidecar.backup.create import create_backup
from sidecar.backup.names import (
    BACKUP_NAME,
    HISTORY_NAME,
    LOCK_NAME,
    PARTIAL_NAME,
    VERIFICATION_NAME,
)
from sidecar.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "deploy" / "schema"
SETPRIV = shutil.which("setpriv")
# Root ignores file modes. Dropping these capabilities from the bounding set before exec gives
# a root process the same permission checks as any other user (owner/group/other bits).
DROP_DAC = ["--bounding-set=-dac_override,-dac_read_search,-fowner"]
OUTSIDE_DB = "outside.db"
# The World's database schema, which a desired schema must contain to be purely additive.
BASE_SCHEMA = """\
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
CREATE TABLE transactions (id INTEGER PRIMARY KEY, user_id INTEGER, amount REAL, note BLOB);
CREATE INDEX transactions_user ON transactions(user_id);
"""


# --------------------------------------------------------------------------- the world


def build_db(path: Path, *, rows: int = 200) -> Path:
    """A small portfolio-like database in WAL mode; ``transactions`` spans several pages."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=wal")
        conn.executescript(BASE_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO users(email) VALUES (?)", [(f"u{i}@x",) for i in range(10)])
        conn.executemany(
            "INSERT INTO transactions(user_id, amount, note) VALUES (?, ?, randomblob(512))",
            [(i % 10 + 1, i * 1.5) for i in range(rows)],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path


@dataclass
class World:
    """One fresh installation: data folder, backups folder with one verified backup, and an
    outside folder (the host) that no command may ever touch. ``template``: copy that world's
    files instead of building new ones (the same bytes, much faster)."""

    root: Path
    template: World | None = None
    data: Path = field(init=False)
    db: Path = field(init=False)
    backups: Path = field(init=False)
    outside: Path = field(init=False)
    backup_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        self.backups = self.root / "backups"
        self.outside = self.root / "outside"
        self.db = self.data / "portfolio.db"
        if self.template is not None:
            shutil.copytree(self.template.root, self.root, symlinks=True)
            self.backup_id = self.template.backup_id
            # The copied backup is of this world's database: its manifest says so, as if
            # it had been taken here (a backup belongs to the database its manifest names).
            manifest = self.backups / f"{self.backup_id}.json"
            record = json.loads(manifest.read_text())
            record["source"] = str(self.db)
            manifest.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            self.template = None
            return
        for folder in (self.data, self.outside):
            folder.mkdir(parents=True)
        build_db(self.db)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            info = create_backup(self.db, self.backups, environment="production", reason="manual")
        self.backup_id = info.id
        build_db(self.outside / OUTSIDE_DB, rows=3)

    @property
    def backup(self) -> Path:
        return self.backups / self.backup_id

    def env(self) -> dict[str, str]:
        return {
            "SIDECAR_DATABASE": f"file:{self.db}",
            "SIDECAR_BACKUP_DIR": str(self.backups),
            "SIDECAR_LOG_FORMAT": "json",
            "SIDECAR_MIN_FREE_MARGIN": "1M",
        }

    def watched(self) -> list[Path]:
        return [self.data, self.backups, self.outside]

    def fill(self, text: str) -> str:
        return text.format(db=self.db, backups=self.backups, backup=self.backup,
                           outside=self.outside, id=self.backup_id)  # fmt: skip


# --------------------------------------------------------------------------- breaking files


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def root_page(path: Path, table: str) -> tuple[int, int]:
    """Where ``table``'s root page starts in the database file ``path``, and the page size."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        root = int(conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,))
                   .fetchone()[0])  # fmt: skip
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    return (root - 1) * page_size, page_size


def corrupt_btree(path: Path, table: str = "transactions") -> None:
    """Flip the cell-pointer array of a leaf page of ``table``: the header and page 1 stay
    intact, so the file opens and only a b-tree check (quick_check) can tell."""
    data = bytearray(path.read_bytes())
    offset, page_size = root_page(path, table)
    if data[offset] == 0x05:  # interior table page: descend to its right-most child (a leaf)
        child = struct.unpack(">I", data[offset + 8 : offset + 12])[0]
        offset = (child - 1) * page_size
    assert data[offset] == 0x0D, f"page at {offset} is not a table leaf"
    cells = struct.unpack(">H", data[offset + 3 : offset + 5])[0]
    # Cell offsets are < page size, so xor 0xFF makes every one of them out of range.
    for i in range(offset + 8, offset + 8 + 2 * max(cells, 1)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def misreport_fragmentation(path: Path, table: str) -> None:
    """Damage ``table``'s root page (a leaf) where no read notices: its header's count of
    fragmented free bytes. Every row still reads back; only quick_check of that b-tree tells."""
    offset, _ = root_page(path, table)
    with path.open("r+b") as handle:
        handle.seek(offset)
        header = handle.read(8)
        assert header[0] == 0x0D, f"the root page of {table} is not a table leaf"
        handle.seek(offset + 7)
        handle.write(bytes([header[7] ^ 0x09]))


def orphan_wal(world: World) -> None:
    """A ``-wal`` full of committed frames, and no database beside it."""
    conn = sqlite3.connect(world.db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO users(email) VALUES ('only-in-the-wal@x')")
    wal = Path(f"{world.db}-wal")
    kept = wal.read_bytes()
    conn.close()
    world.db.unlink()
    Path(f"{world.db}-shm").unlink(missing_ok=True)
    wal.write_bytes(kept)


def symlinked_backup(world: World, *, drop_real: bool = False) -> str:
    """A symlink with a backup's name (and a forged, "verified" manifest) pointing at a
    database outside the backups folder. Returns its name."""
    if drop_real:
        world.backup.unlink()
        Path(f"{world.backup}.json").unlink()
    name = "portfolio_backup_production_20200101T000000Z.db"
    target = world.outside / OUTSIDE_DB
    (world.backups / name).symlink_to(target)
    manifest = json.loads(Path(f"{world.backup}.json").read_text()) if not drop_real else {}
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    manifest |= {"id": name, "verified": True, "size": target.stat().st_size,
                 "sha256": digest, "stored_sha256": digest, "compression": "none"}  # fmt: skip
    (world.backups / f"{name}.json").write_text(json.dumps(manifest))
    return name


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Run:
    argv: list[str]
    env: Mapping[str, str | None] = field(default_factory=dict)  # None: unset the variable


Prepare = Callable[[World], Run]


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(prefix)]

    @property
    def message(self) -> str:
        """The one-line message a user sees: the error line, else the first stdout line, else
        the last stderr line that is not a JSON log event."""
        errors = self.lines("error: ")
        if errors:
            return errors[0]
        first = next((line for line in self.stdout.splitlines() if line.strip()), "")
        other = [line for line in self.stderr.splitlines() if not line.startswith("{")]
        return first or (other[-1] if other else "")

    @property
    def hint(self) -> str:
        hints = self.lines("hint: ")
        return hints[0] if hints else ""


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    prepare: Prepare
    code: int
    needles: tuple[str, ...] = ()  # in the error line (stdout for findings); {db} etc. filled in
    finding: bool = False  # a failed check: a result on stdout (verify, health), and an error line
    new_backup: bool = False  # success that legitimately adds a backup
    relocates: bool = False  # the old bytes may move, but must still exist somewhere
    migrates: bool = False  # a successful deploy: the database changes, its rows may not
    drop_dac: bool = False  # run in a real process with ordinary permission checks
    needs_root: bool = False  # chown to another user
    requires: str | None = None  # a module that must exist (features still being built)
    bug: str | None = None  # a known bug: the test is xfail(strict) with this reason
    check: Callable[[World, Outcome], list[str]] | None = None  # more problems

    @property
    def id(self) -> str:
        return f"{self.group}: {self.name}"

    def skip_reason(self) -> str | None:
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"{self.requires} is not in this build yet"
        if self.needs_root and os.geteuid() != 0:
            return "needs root to give the file another owner"
        if self.drop_dac and os.geteuid() == 0 and SETPRIV is None:
            return "root ignores file modes and setpriv (util-linux) is missing to drop that"
        return None


def _run(argv: list[str], env: Mapping[str, str | None] = {}) -> Prepare:
    return lambda world: Run(argv, env)


def _then(
    action: Callable[[World], object],
    argv: list[str],
    env: Mapping[str, str | None] = {},
) -> Prepare:
    def prepare(world: World) -> Run:
        action(world)
        return Run(argv, env)

    return prepare


def _empty(world: World) -> None:
    world.db.write_bytes(b"")


def _text(world: World) -> None:
    world.db.write_text("DATABASE_URL=postgres://not-sqlite\n")


def _mode(mode: int, owner: int | None = None) -> Callable[[World], None]:
    def apply(world: World) -> None:
        if owner is not None:
            os.chown(world.db, owner, owner)
        world.db.chmod(mode)

    return apply


_KILLED_WRITER = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=2")  # spill: the database file changes before any COMMIT
conn.execute("BEGIN")
conn.execute("UPDATE transactions SET note = randomblob(3000)")
os.kill(os.getpid(), 9)
"""


def hot_journal(world: World) -> None:
    """A rollback-journal database whose writer was SIGKILLed mid-transaction: a hot
    ``-journal`` that the next writer rolls back. The database itself is healthy."""
    conn = sqlite3.connect(world.db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=delete")
    conn.close()
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(world.db)], check=False)
    assert Path(f"{world.db}-journal").stat().st_size > 0, "no hot journal was left"


def _readonly_data(world: World) -> None:
    """The database's folder not writable: SQLite cannot create a WAL database's -shm."""
    world.data.chmod(0o555)


def _not_restore(outcome: Outcome) -> list[str]:
    """A healthy database must never be called damaged, nor a backup be put over it."""
    said = f"{outcome.message} {outcome.hint}"
    return (
        [f"calls it damaged or says restore: {said!r}"]
        if (" is damaged" in said or "restore latest" in said or "quick_check" in said)
        else []
    )


def _readonly_backups(world: World) -> None:
    world.backups.chmod(0o555)


def _backups_is_a_file(world: World) -> None:
    (world.outside / "not-a-folder").write_text("x")


def _db_is_a_folder(world: World) -> None:
    world.db.unlink()
    world.db.mkdir()


def _corrupt_backup(world: World) -> None:
    corrupt_btree(world.backup)


def _truncate_backup(world: World) -> None:
    truncate(world.backup)


def _garble_manifest(world: World) -> None:
    Path(f"{world.backup}.json").write_text("{not json")


def _symlink_restore(world: World) -> Run:
    return Run(["restore", symlinked_backup(world)])


def _symlink_verify(world: World) -> Run:
    return Run(["verify", symlinked_backup(world)])


def _symlink_list(world: World) -> Run:
    symlinked_backup(world)
    return Run(["list"])


def _symlink_only(world: World) -> Run:
    symlinked_backup(world, drop_real=True)
    return Run(["restore", "latest"])


def _lists_only_the_real_backup(world: World, outcome: Outcome) -> list[str]:
    rows = outcome.stdout.splitlines()[1:]
    if len(rows) == 1 and rows[0].startswith(world.backup_id):
        return []
    return [f"list shows {rows}, not only {world.backup_id}"]


def _restored_content(world: World, outcome: Outcome) -> list[str]:
    """After a restore over a damaged database, the database is the backup's content."""
    if outcome.code != 0:
        return []
    conn = sqlite3.connect(f"file:{world.db}?mode=ro", uri=True)
    try:
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    finally:
        conn.close()
    return [] if users == 10 else [f"restored database has {users} users, expected 10"]


_ABS_BACKUP = Run(["restore", "{backup}"])
_BACKUP = ["backup", "--no-prune"]
_RESTORE = ["restore", "latest"]


def _config(var: str, value: str, bug: str | None = None, argv: list[str] = _BACKUP) -> Case:
    return Case("configuration", f"{var}={value!r}", _run(argv, {var: value}), ExitCode.USAGE,
                (var,), bug=bug)  # fmt: skip


_DEPLOY_ENV = {"SIDECAR_QUIET_PERIOD": "100ms", "SIDECAR_WAIT_TIMEOUT": "5s"}
_WATCHLIST = "CREATE TABLE watchlist (id INTEGER PRIMARY KEY, symbol TEXT);\n"


def _schema(body: str | bytes, argv: list[str], damage: Callable[[World], object] | None = None
            ) -> Prepare:  # fmt: skip
    """Write ``body`` as the desired schema (outside the data and backups folders)."""

    def prepare(world: World) -> Run:
        path = world.outside / "schema.sql"
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body)
        if damage is not None:
            damage(world)
        return Run(argv, {"SIDECAR_SCHEMA": str(path), **_DEPLOY_ENV})

    return prepare


def row_digest(path: Path) -> str:
    """sha256 over every row of the World's two tables, in id order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        digest = hashlib.sha256()
        for table in ("users", "transactions"):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def _rows_intact(world: World, outcome: Outcome) -> list[str]:
    """Every row the database had (as in the World's first backup) is there, unchanged."""
    del outcome
    if row_digest(world.db) != row_digest(world.backup):
        return ["the database's rows differ from the backup taken before the command"]
    return []


def _catalogue(world: World) -> tuple[int, str]:
    conn = sqlite3.connect(f"file:{world.db}?mode=ro", uri=True)
    try:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
        return int(tables[0]), str(mode[0])
    finally:
        conn.close()


def _expect_tables(count: int) -> Callable[[World, Outcome], list[str]]:
    def check(world: World, outcome: Outcome) -> list[str]:
        problems = _rows_intact(world, outcome)
        tables, mode = _catalogue(world)
        if tables != count:
            problems.append(f"{tables} tables after the deploy, expected {count}")
        if mode != "wal":
            problems.append(f"journal mode is now {mode}: a schema PRAGMA reached the database")
        return problems

    return check


def _new_app_writes(insert: str) -> Callable[[World, Outcome], list[str]]:
    """Every old column of every old row is unchanged, and the new app's first write (on a
    copy, foreign keys on) succeeds: issue 17's promise."""

    def check(world: World, outcome: Outcome) -> list[str]:
        del outcome
        problems = []
        for table, columns in (("users", "id, email"), ("transactions", "*")):
            sql = f"SELECT {columns} FROM {table} ORDER BY id"
            now, then = (_rows(path, sql) for path in (world.db, world.backup))
            if now != then:
                problems.append(f"{table}: old rows or values changed")
        copy = world.root / "new-app-writes.db"
        shutil.copyfile(world.db, copy)
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(insert)
        except sqlite3.Error as exc:
            problems.append(f"the new app's write fails: {exc}")
        finally:
            conn.close()
            copy.unlink()
        return problems

    return check


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# Issue 17: Prisma's `handle String? @unique`, and the same field with one default for all rows.
_HANDLE = (
    "ALTER TABLE users ADD COLUMN handle TEXT;\n"
    'CREATE UNIQUE INDEX "users_handle_key" ON users(handle);\n'
)
_HANDLE_DEFAULT = _HANDLE.replace("handle TEXT;", "handle TEXT NOT NULL DEFAULT 'x';")
_NO_EMAIL = BASE_SCHEMA.replace("email TEXT NOT NULL UNIQUE", "name TEXT")
_CHECKED = BASE_SCHEMA.replace(
    "note BLOB", "note BLOB, kind TEXT DEFAULT 'x' CHECK (kind IN ('buy', 'sell'))"
)

_THOUSAND = BASE_SCHEMA + "".join(
    f"CREATE TABLE t{i:04d} (id INTEGER PRIMARY KEY, v TEXT);\n" for i in range(1000)
)
_PRAGMAS = "PRAGMA journal_mode=DELETE;\nPRAGMA no_such_pragma=1;\nPRAGMA foreign_keys=OFF;\n"

CASES: list[Case] = [
    # --- the database file ------------------------------------------------------------------
    Case(
        "database file",
        "missing / backup",
        _then(lambda w: w.db.unlink(), _BACKUP),
        ExitCode.USAGE,
        ("{db}", "does not exist"),
    ),
    Case(
        "database file",
        "empty (0 bytes) / backup",
        _then(_empty, _BACKUP),
        ExitCode.REFUSED,
        ("{db}", "empty"),
    ),
    Case(
        "database file",
        "truncated (half a database) / backup",
        _then(lambda w: truncate(w.db), _BACKUP),
        ExitCode.REFUSED,
        ("{db}",),
    ),
    Case(
        "database file",
        "not SQLite (text) / backup",
        _then(_text, _BACKUP),
        ExitCode.REFUSED,
        ("{db}", "not a SQLite database"),
    ),
    Case(
        "database file",
        "corrupted b-tree page / backup",
        _then(lambda w: corrupt_btree(w.db), _BACKUP),
        ExitCode.HEALTH,
        ("{db}", "verification"),
    ),
    Case(
        "database file",
        "-wal without its database / backup",
        _then(orphan_wal, _BACKUP),
        ExitCode.REFUSED,
        ("{db}", "-wal"),
    ),
    Case(
        "database file",
        "unreadable (mode 000) / backup",
        _then(_mode(0o000), _BACKUP),
        ExitCode.USAGE,
        ("{db}", "not readable"),
        drop_dac=True,
    ),
    Case(
        "database file",
        "wrong owner (another uid, 0600) / backup",
        _then(_mode(0o600, owner=12345), _BACKUP),
        ExitCode.USAGE,
        ("{db}", "not readable"),
        drop_dac=True,
        needs_root=True,
    ),
    Case(
        "database file",
        "read-only database (0444) / backup works",
        _then(_mode(0o444), _BACKUP),
        ExitCode.OK,
        new_backup=True,
        drop_dac=True,
    ),
    Case(
        "database file",
        "a folder, not a file / backup",
        _then(_db_is_a_folder, _BACKUP),
        ExitCode.USAGE,
        ("{db}",),
    ),
    Case(
        "backups folder",
        "read-only (0555) / backup",
        _then(_readonly_backups, _BACKUP),
        ExitCode.USAGE,
        ("{backups}", "not writable"),
        drop_dac=True,
    ),
    Case(
        "backups folder",
        "a file, not a folder / backup",
        _then(_backups_is_a_file, _BACKUP, {"SIDECAR_BACKUP_DIR": "{outside}/not-a-folder"}),
        ExitCode.USAGE,
        ("{outside}/not-a-folder",),
    ),
    Case(
        "backups folder",
        "a file, not a folder / list",
        _then(_backups_is_a_file, ["list"], {"SIDECAR_BACKUP_DIR": "{outside}/not-a-folder"}),
        ExitCode.USAGE,
        ("{outside}/not-a-folder",),
    ),
    Case(
        "backups folder",
        "a file, not a folder / verify",
        _then(_backups_is_a_file, ["verify"], {"SIDECAR_BACKUP_DIR": "{outside}/not-a-folder"}),
        ExitCode.USAGE,
        ("{outside}/not-a-folder",),
    ),
    Case(
        "backup file",
        "corrupted b-tree page / verify",
        _then(_corrupt_backup, ["verify"]),
        ExitCode.HEALTH,
        ("BAD  {id}", "corrupt"),
        finding=True,
    ),
    Case(
        "backup file",
        "truncated / verify",
        _then(_truncate_backup, ["verify"]),
        ExitCode.HEALTH,
        ("BAD  {id}", "size"),
        finding=True,
    ),
    Case(
        "backup file",
        "manifest not JSON / verify",
        _then(_garble_manifest, ["verify"]),
        ExitCode.HEALTH,
        ("BAD  {id}", "no manifest"),
        finding=True,
    ),
    Case(
        "backup file",
        "corrupted b-tree page / restore",
        _then(_corrupt_backup, ["restore", "{id}"]),
        ExitCode.REFUSED,
        ("{id}", "failed verification"),
    ),
    Case(
        "database file",
        "truncated / restore latest",
        _then(lambda w: truncate(w.db), _RESTORE),
        ExitCode.OK,
        relocates=True,
        check=_restored_content,
    ),
    Case(
        "database file",
        "not SQLite / restore latest",
        _then(_text, _RESTORE),
        ExitCode.OK,
        relocates=True,
        check=_restored_content,
    ),
    Case(
        "database file",
        "-wal without its database / restore latest",
        _then(orphan_wal, _RESTORE),
        ExitCode.OK,
        relocates=True,
    ),
    # --- restore names ----------------------------------------------------------------------
    Case(
        "restore name",
        "traversal ../../etc/passwd",
        _run(["restore", "../../etc/passwd"]),
        ExitCode.REFUSED,
        ("../../etc/passwd", "only backup names"),
    ),
    Case(
        "restore name",
        "absolute /etc/passwd",
        _run(["restore", "/etc/passwd"]),
        ExitCode.REFUSED,
        ("/etc/passwd", "only backup names"),
    ),
    Case(
        "restore name",
        "absolute path of a real backup",
        lambda w: _ABS_BACKUP,
        ExitCode.REFUSED,
        ("{backup}", "only backup names"),
    ),
    Case(
        "restore name",
        "windows-style ..\\..\\etc\\passwd",
        _run(["restore", "..\\..\\etc\\passwd"]),
        ExitCode.REFUSED,
        ("no backup named",),
    ),
    Case(
        "restore name",
        "symlink in the backups folder / restore",
        _symlink_restore,
        ExitCode.REFUSED,
        ("symlink",),
    ),
    Case(
        "restore name",
        "symlink in the backups folder / verify",
        _symlink_verify,
        ExitCode.REFUSED,
        ("symlink",),
    ),
    Case(
        "restore name",
        "symlink in the backups folder / list ignores it",
        _symlink_list,
        ExitCode.OK,
        check=_lists_only_the_real_backup,
    ),
    Case(
        "restore name",
        "only a symlink / restore latest",
        _symlink_only,
        ExitCode.REFUSED,
        ("no verified backups",),
    ),
    Case(
        "restore name",
        "300-character name",
        _run(["restore", "x" * 300 + ".db"]),
        ExitCode.REFUSED,
        ("xxxx",),
    ),
    Case(
        "restore name",
        "NUL byte in the name",
        _run(["restore", "a\x00b.db"]),
        ExitCode.REFUSED,
        ("a\\x00b.db",),
    ),
    # --- configuration ----------------------------------------------------------------------
    _config("SIDECAR_QUIET_PERIOD", "soon"),
    _config("SIDECAR_WAIT_TIMEOUT", "-5s"),
    _config("SIDECAR_WAIT_TIMEOUT", "5 minutes"),
    _config("SIDECAR_LEASE_WAIT", "1w"),
    _config("SIDECAR_HEALTHY_TIMEOUT", "forever"),
    _config("SIDECAR_MAX_BACKUP_AGE", "1w"),
    _config("SIDECAR_MIN_FREE_MARGIN", "12X"),
    _config("SIDECAR_MIN_FREE_MARGIN", "1.5X"),
    _config("SIDECAR_KEEP", "0"),
    _config("SIDECAR_KEEP", "ten"),
    _config("SIDECAR_KEEP_DAILY", "-1"),
    _config("SIDECAR_BACKUP_GROUP", "staff"),
    _config("SIDECAR_VERIFY", "sha1"),
    _config("SIDECAR_COMPRESS", "gzip"),
    _config("SIDECAR_RESTART", "sometimes"),
    _config("SIDECAR_LOG_LEVEL", "loud"),
    _config("SIDECAR_STRICT", "maybe"),
    _config("SIDECAR_ENVIRONMENT", "prod_1"),
    _config("SIDECAR_ENVIRONMENT", "../x"),
    _config("SIDECAR_SCHEDULE", "every tuesday"),
    _config("SIDECAR_DATABASE", "postgres://u@db/app"),
    _config("SIDECAR_DATABASE", "file://fileserver/portfolio.db"),
    _config("SIDECAR_DATABASE", "file:"),
    Case(
        "configuration",
        "SIDECAR_DATABASE and SIDECAR_DATABASE_FILE both set",
        _run(_BACKUP, {"SIDECAR_DATABASE_FILE": "{outside}/secret"}),
        ExitCode.USAGE,
        ("SIDECAR_DATABASE", "SIDECAR_DATABASE_FILE"),
    ),
    Case(
        "configuration",
        "SIDECAR_DATABASE_FILE names a missing file",
        _run(_BACKUP, {"SIDECAR_DATABASE": None, "SIDECAR_DATABASE_FILE": "{outside}/nope"}),
        ExitCode.USAGE,
        ("SIDECAR_DATABASE_FILE", "{outside}/nope"),
    ),
    Case(
        "configuration",
        "no database at all",
        _run(_BACKUP, {"SIDECAR_DATABASE": None, "DATABASE_URL": "postgres://u@db/app"}),
        ExitCode.USAGE,
        ("no database",),
    ),
    Case(
        "configuration",
        "flag --keep ten / prune",
        _run(["prune", "--keep", "ten"]),
        ExitCode.USAGE,
        ("SIDECAR_KEEP", "--keep"),
    ),
    Case(
        "configuration",
        "flag --verify sha1 / backup",
        _run(["backup", "--verify", "sha1"]),
        ExitCode.USAGE,
        ("--verify", "sha1"),
    ),
    # --- the desired schema -----------------------------------------------------------------
    Case(
        "schema",
        "syntax error / plan",
        _schema(
            BASE_SCHEMA + "CREATE TABLE watchlist (id INTEGER PRIMARY KEY,, symbol TEXT);\n",
            ["plan"],
        ),
        ExitCode.USAGE,
        ("{outside}/schema.sql:4", "syntax error", "CREATE TABLE watchlist"),
    ),
    Case(
        "schema",
        "syntax error / deploy",
        _schema(
            BASE_SCHEMA + "CREATE TABLE watchlist (id INTEGER PRIMARY KEY,, symbol TEXT);\n",
            ["deploy"],
        ),
        ExitCode.USAGE,
        ("{outside}/schema.sql:4", "CREATE TABLE watchlist"),
    ),
    Case(
        "schema",
        "DROP TABLE / plan",
        _schema(BASE_SCHEMA + "DROP TABLE users;\n", ["plan"]),
        ExitCode.USAGE,
        ("{outside}/schema.sql:4", "DROP TABLE users"),
    ),
    Case(
        "schema",
        "DROP TABLE / deploy",
        _schema(BASE_SCHEMA + "DROP TABLE users;\n", ["deploy"]),
        ExitCode.USAGE,
        ("{outside}/schema.sql:4", "DROP TABLE users"),
    ),
    Case(
        "schema",
        "ALTER TABLE ... DROP COLUMN / deploy",
        _schema(BASE_SCHEMA + "ALTER TABLE users DROP COLUMN email;\n", ["deploy"]),
        ExitCode.USAGE,
        ("{outside}/schema.sql:4", "DROP COLUMN email"),
    ),
    Case(
        "schema",
        "ATTACH another file / plan",
        _schema("ATTACH DATABASE '{outside}/outside.db' AS x;\n" + BASE_SCHEMA, ["plan"]),
        ExitCode.USAGE,
        ("{outside}/schema.sql:1", "ATTACH"),
    ),
    Case(
        "schema",
        "1,000 new tables / plan",
        _schema(_THOUSAND, ["plan"]),
        ExitCode.OK,
        ('create table "t0999"',),
    ),
    Case(
        "schema",
        "1,000 new tables / deploy works",
        _schema(_THOUSAND, ["deploy"]),
        ExitCode.OK,
        ("applied the schema changes",),
        new_backup=True,
        migrates=True,
        check=_expect_tables(1002),
    ),
    Case(
        "schema",
        "unknown and live-changing PRAGMAs / deploy",
        _schema(_PRAGMAS + BASE_SCHEMA + _WATCHLIST, ["deploy"]),
        ExitCode.OK,
        ("applied the schema changes",),
        new_backup=True,
        migrates=True,
        check=_expect_tables(3),
    ),
    Case(
        "schema",
        "INSERT in a declarative schema is refused, never dropped silently / deploy",
        _schema(
            BASE_SCHEMA + "INSERT INTO users(email) VALUES ('planted@x');\n" + _WATCHLIST,
            ["deploy"],
        ),
        ExitCode.USAGE,
        ("{outside}/schema.sql:4", "data statements", "INSERT INTO users(email)"),
    ),
    Case(
        "schema",
        "CREATE TABLE ... AS SELECT (an empty table) is refused / plan",
        _schema(BASE_SCHEMA + "CREATE TABLE copy AS SELECT * FROM users;\n", ["plan"]),
        ExitCode.USAGE,
        ("{outside}/schema.sql:4", "CREATE TABLE ... AS SELECT", "CREATE TABLE copy AS"),
    ),
    Case(
        "schema",
        "non-UTF-8 bytes / plan",
        _schema(BASE_SCHEMA.encode() + b"-- caf\xe9 cr\xe8me\n", ["plan"]),
        ExitCode.USAGE,
        ("{outside}/schema.sql", "UTF-8"),
    ),
    Case(
        "schema",
        "non-UTF-8 bytes / deploy",
        _schema(BASE_SCHEMA.encode() + b"-- caf\xe9 cr\xe8me\n", ["deploy"]),
        ExitCode.USAGE,
        ("{outside}/schema.sql", "UTF-8"),
    ),
    Case(
        "schema",
        "missing schema file / deploy",
        lambda w: Run(["deploy"], {"SIDECAR_SCHEMA": "{outside}/nope.sql", **_DEPLOY_ENV}),
        ExitCode.USAGE,
        ("{outside}/nope.sql",),
    ),
    Case(
        "schema",
        "empty schema / deploy: drift reported, nothing dropped",
        _schema("", ["deploy"]),
        ExitCode.OK,
        ("drift item(s) reported, not executed",),
    ),
    Case(
        "schema",
        "empty schema / deploy --strict",
        _schema("", ["deploy", "--strict"]),
        ExitCode.REFUSED,
        ("drift",),
    ),
    Case(
        "schema",
        "NOT NULL column without default / deploy",
        _schema(BASE_SCHEMA.replace("UNIQUE);", "UNIQUE, phone TEXT NOT NULL);"), ["deploy"]),
        ExitCode.REFUSED,
        ("phone", "NOT NULL"),
    ),
    # --- issue 17: the new app can write; issue 11 item 6: plan promises what deploy does ----
    Case(
        "schema",
        "a new optional unique field, as Prisma writes it / deploy works",
        _schema(BASE_SCHEMA + _HANDLE, ["deploy"]),
        ExitCode.OK,
        ("applied the schema changes",),
        new_backup=True,
        migrates=True,
        check=_new_app_writes("INSERT INTO users (email, handle) VALUES ('new@x', 'new')"),
    ),
    Case(
        "schema",
        "a new unique field with one default for every row / plan",
        _schema(BASE_SCHEMA + _HANDLE_DEFAULT, ["plan"]),
        ExitCode.REFUSED,
        ("users_handle_key", "'x' (10 rows)", '"handle"'),
        finding=True,
    ),
    Case(
        "schema",
        "a required column dropped from the schema / deploy: relaxed, the new app can write",
        _schema(_NO_EMAIL, ["deploy"]),
        ExitCode.OK,
        ("1 column(s) relaxed so the new app can write",),
        new_backup=True,
        migrates=True,
        check=_new_app_writes("INSERT INTO users (name) VALUES ('new')"),
    ),
    Case(
        "schema",
        "a kept UNIQUE the schema no longer has / deploy --strict",
        _schema(BASE_SCHEMA.replace("NOT NULL UNIQUE", "NOT NULL"), ["deploy", "--strict"]),
        ExitCode.REFUSED,
        ("rejects rows the new app may write", "UNIQUE (email)"),
    ),
    Case(
        "schema",
        "a new CHECK the existing rows fail / plan (was: exit 0, then deploy 3)",
        _schema(_CHECKED, ["plan"]),
        ExitCode.REFUSED,
        ("CHECK", "fails for 200 existing row(s)"),
        finding=True,
    ),
    Case(
        "schema",
        "a new CHECK the existing rows fail / deploy",
        _schema(_CHECKED, ["deploy"]),
        ExitCode.REFUSED,
        ("CHECK", "fails for 200 existing row(s)"),
    ),
    Case(
        "schema",
        "a new reference whose default has no parent / plan (was: exit 0, then deploy 4)",
        _schema(
            BASE_SCHEMA.replace(
                "note BLOB", "note BLOB, owner INTEGER DEFAULT 99 REFERENCES users"
            ),
            ["plan"],
        ),
        ExitCode.REFUSED,
        ("REFERENCES", "would point at no row"),
        finding=True,
    ),
    # --- a bad database behind health, plan and deploy -------------------------------------
    Case(
        "database file",
        "missing / health",
        _then(lambda w: w.db.unlink(), ["health"]),
        ExitCode.USAGE,
        ("{db}", "does not exist"),
    ),
    Case(
        "database file",
        "empty / health",
        _then(_empty, ["health"]),
        ExitCode.REFUSED,
        ("{db}", "empty"),
    ),
    Case(
        "database file",
        "not SQLite / health",
        _then(_text, ["health"]),
        ExitCode.REFUSED,
        ("{db}", "not a SQLite database"),
    ),
    Case(
        "database file",
        "corrupted b-tree page / health",
        _then(lambda w: corrupt_btree(w.db), ["health"]),
        ExitCode.HEALTH,
        ("FAIL  quick_check", "UNHEALTHY"),
        finding=True,
    ),
    Case(
        "database file",
        "truncated / health",
        _then(lambda w: truncate(w.db), ["health"]),
        ExitCode.HEALTH,
        ("{db}", "damaged"),
    ),
    Case(
        "database file",
        "-wal without its database / health",
        _then(orphan_wal, ["health"]),
        ExitCode.REFUSED,
        ("{db}", "-wal"),
    ),
    Case(
        "database file",
        "unreadable (mode 000) / health",
        _then(_mode(0o000), ["health"]),
        ExitCode.USAGE,
        ("{db}", "not readable"),
        drop_dac=True,
    ),
    Case(
        "database file",
        "corrupted b-tree page / deploy",
        _schema(BASE_SCHEMA + _WATCHLIST, ["deploy"], lambda w: corrupt_btree(w.db)),
        ExitCode.REFUSED,
        ("{db}", "quick_check"),
    ),
    Case(
        "database file",
        "truncated / deploy",
        _schema(BASE_SCHEMA + _WATCHLIST, ["deploy"], lambda w: truncate(w.db)),
        ExitCode.REFUSED,
        ("{db}",),
    ),
    Case(
        "database file",
        "truncated / plan",
        _schema(BASE_SCHEMA + _WATCHLIST, ["plan"], lambda w: truncate(w.db)),
        ExitCode.REFUSED,
        ("{db}",),
    ),
    Case(
        "database file",
        "not SQLite / deploy",
        _schema(BASE_SCHEMA + _WATCHLIST, ["deploy"], _text),
        ExitCode.REFUSED,
        ("{db}", "not a SQLite database"),
    ),
    Case(
        "database file",
        "empty / deploy",
        _schema(BASE_SCHEMA + _WATCHLIST, ["deploy"], _empty),
        ExitCode.REFUSED,
        ("{db}", "empty"),
    ),
    Case(
        "database file",
        "missing while backups of it exist (volume not mounted) / deploy",
        _schema(BASE_SCHEMA + _WATCHLIST, ["deploy"], lambda w: w.db.unlink()),
        ExitCode.REFUSED,
        ("{db}", "verified backup(s) of it exist", "refusing to create an empty one"),
        check=lambda w, o: [f"{w.db} was created"] if w.db.exists() else [],
    ),
    Case(
        "database file",
        "-wal without its database / deploy",
        _schema(BASE_SCHEMA + _WATCHLIST, ["deploy"], orphan_wal),
        ExitCode.REFUSED,
        ("{db}", "-wal"),
    ),
    Case(
        "database file",
        "hot rollback journal (killed writer) / plan: not damaged",
        _schema(BASE_SCHEMA + _WATCHLIST, ["plan"], hot_journal),
        ExitCode.UNAVAILABLE,
        ("{db}", "hot rollback journal"),
        check=lambda w, o: _not_restore(o),
    ),
    *[
        Case(
            "database file",
            f"WAL database, folder not writable / {command}: not damaged",
            _schema(BASE_SCHEMA + _WATCHLIST, [command], _readonly_data),
            ExitCode.USAGE,
            ("{db}", "not writable"),
            drop_dac=True,
            check=lambda w, o: _not_restore(o),
        )
        for command in ("plan", "health", "deploy")
    ],
    Case(
        "database file",
        "unreadable (mode 000) / deploy",
        _schema(BASE_SCHEMA + _WATCHLIST, ["deploy"], _mode(0o000)),
        ExitCode.USAGE,
        ("{db}", "not readable"),
        drop_dac=True,
    ),
]


# --------------------------------------------------------------------------- running


def run_cli(argv: list[str], env: Mapping[str, str], *, drop_dac: bool = False) -> Outcome:
    """The real CLI: in this process, or (``drop_dac``) in a real process whose file access is
    checked like any non-root user's."""
    if drop_dac:
        prefix = [SETPRIV or "setpriv", *DROP_DAC] if os.geteuid() == 0 else []
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "sidecar", *argv],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        return Outcome(proc.returncode, proc.stdout, proc.stderr)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv, env=env)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return Outcome(code, out.getvalue(), err.getvalue())


def run_case(case: Case, world: World) -> tuple[Outcome, dict[str, str], list[str]]:
    """Prepare the world, snapshot it, run the command: (outcome, snapshot before, argv)."""
    plan = case.prepare(world)
    (world.outside / "secret").write_text(str(world.db))
    env: dict[str, str] = world.env()
    for key, value in plan.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = world.fill(value)
    argv = [world.fill(arg) for arg in plan.argv]
    before = files_state(world.watched())
    return run_cli(argv, env, drop_dac=case.drop_dac), before, argv


def restore_permissions(world: World) -> None:
    """Undo chmods so that pytest can delete the folder."""
    for path in (world.backups, world.db):
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.chmod(0o700)
            elif path.exists():
                path.chmod(0o600)


# --------------------------------------------------------------------------- checks


def files_state(roots: Iterable[Path]) -> dict[str, str]:
    """sha256 of every regular file under ``roots`` (symlinks by their target; the history
    file by its text, which may only grow)."""
    state: dict[str, str] = {}

    def add(path: Path) -> None:
        if path.is_symlink():
            state[str(path)] = f"symlink->{os.readlink(path)}"
        elif path.is_file():
            if path.name == HISTORY_NAME:
                state[str(path)] = "text:" + path.read_text()
            else:
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()

    for root in roots:
        if root.is_dir() and not root.is_symlink():
            for folder, dirs, files in os.walk(root):
                for name in sorted(dirs + files):
                    add(Path(folder) / name)
        else:
            add(root)
    return state


def contract_problems(case: Case, world: World, outcome: Outcome) -> list[str]:
    """Exit code and the shape of what the user sees."""
    problems: list[str] = []
    if outcome.code != case.code:
        problems.append(f"exit {outcome.code}, expected {int(case.code)}")
    if "Traceback" in outcome.stderr:
        problems.append("a traceback on stderr")
    needles = [world.fill(n) for n in case.needles]
    if case.code == ExitCode.OK:
        problems += _result_problems(outcome, needles)
    elif case.finding:
        # The findings are the result on stdout; the failure is one error and hint line too.
        missing = [n for n in needles if n not in outcome.stdout]
        if missing:
            problems.append(f"stdout does not mention {missing}: {outcome.stdout[:300]!r}")
        problems += _error_problems(outcome, [])
    else:
        problems += _error_problems(outcome, needles)
    if case.check is not None:
        problems += case.check(world, outcome)
    return problems


def _result_problems(outcome: Outcome, needles: list[str]) -> list[str]:
    """A result (success, or a check's findings): on stdout, no error line."""
    problems = [f"unexpected {line!r}" for line in outcome.lines("error: ")]
    missing = [n for n in needles if n not in outcome.stdout]
    if missing:
        problems.append(f"stdout does not mention {missing}: {outcome.stdout[:300]!r}")
    return problems


def _error_problems(outcome: Outcome, needles: list[str]) -> list[str]:
    """One error line naming ``needles``, the hint right after it, JSON events otherwise."""
    problems: list[str] = []
    errors, hints = outcome.lines("error: "), outcome.lines("hint: ")
    lines = outcome.stderr.splitlines()
    if len(errors) != 1 or len(hints) != 1:
        problems.append(f"{len(errors)} error lines and {len(hints)} hint lines")
    elif lines.index(hints[0]) != lines.index(errors[0]) + 1:
        problems.append("the hint does not follow the error")
    for line in lines:
        if line.startswith(("error: ", "hint: ")):
            continue
        try:
            json.loads(line)
        except ValueError:
            problems.append(f"stderr line is neither error, hint nor a JSON event: {line!r}")
            break
    error, hint = (errors or [""])[0], (hints or [""])[0]
    missing = [n for n in needles if n not in error]
    if missing:
        problems.append(f"the error does not name {missing}: {error!r}")
    if any(ord(c) < 32 for c in error + hint):
        problems.append("a control character in the error or hint line")
    if hints and len(hint) < len("hint: ") + 10:
        problems.append(f"the hint says nothing: {hint!r}")
    unknown = sorted(set(re.findall(r"--[a-z][a-z-]+", f"{error} {hint}")) - known_flags())
    if unknown:
        problems.append(f"names flags the CLI does not accept: {unknown}")
    return problems


def lost_problems(case: Case, world: World, before: dict[str, str]) -> list[str]:
    """Nothing lost: every file as it was (or, for ``relocates``, its bytes kept somewhere);
    no partial left; nothing new in the backups folder but what the command may add."""
    after = files_state(world.watched())
    problems: list[str] = []
    kept = set(after.values())
    for path, digest in before.items():
        now = after.get(path)
        if digest.startswith("text:"):
            if now is None or not now.startswith(digest):
                problems.append(f"{path}: history rewritten")
        elif case.migrates and Path(path).parent == world.data:
            continue  # judged by rows_intact(), which compares every row with the backup
        elif now != digest and not (case.relocates and digest in kept):
            problems.append(f"{path}: {'changed' if now else 'gone'}")
    for path in sorted(set(after) - set(before)):
        name = Path(path).name
        if Path(path).parent != world.backups:
            continue
        if PARTIAL_NAME.match(name) or ".partial" in name:
            problems.append(f"partial file left: {name}")
        elif not _may_add(case, name):
            problems.append(f"new file in the backups folder: {name}")
    return problems


def _may_add(case: Case, name: str) -> bool:
    if name == LOCK_NAME or case.relocates or (name == HISTORY_NAME and case.code == 0):
        return True
    if VERIFICATION_NAME.match(name):
        return True  # the result of a verification, recorded beside the manifest
    ours = BACKUP_NAME.match(name.removesuffix(".json")) or name == HISTORY_NAME
    return case.new_backup and bool(ours)


def known_flags() -> set[str]:
    parser = cli.build_parser()
    flags: set[str] = set()
    for action in parser._actions:  # argparse keeps subparsers as an action
        flags.update(action.option_strings)
        for sub in getattr(action, "choices", None) or {}:
            choices = action.choices
            if isinstance(choices, dict):
                for sub_action in choices[sub]._actions:
                    flags.update(sub_action.option_strings)
    return flags
