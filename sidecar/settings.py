"""The one table of settings (:class:`Settings`) and what derives from it: names, parsers,
flags, the commands that read each. Reading them: :mod:`sidecar.environ`. See docs/design.md,
'Settings'."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sidecar import notify as notifications
from sidecar import parsers
from sidecar.errors import ConfigError

if TYPE_CHECKING:
    from sidecar.backup.retention import Retention

RestartPolicy = Literal["on-change", "always", "never"]
VerifyLevel = Literal["checksum", "quick", "full"]
Compression = Literal["none", "zstd"]
BackupIO = Literal["direct", "cached"]
LogFormat = Literal["json", "console"]
PathStyle = Literal["auto", "true", "false"]
RenamePolicy = Literal["refuse", "copy"]


def label(field: str) -> str:
    """How a field is named in messages: ``SIDECAR_KEEP (--keep)``, or just the variable."""
    if field in ENV_ONLY:
        return ENV_NAMES[field]
    return f"{ENV_NAMES[field]} ({flag(field)})"


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def fix_hint(field: str) -> str:
    if field in ENV_ONLY:
        return f"fix {ENV_NAMES[field]}"
    return f"fix {ENV_NAMES[field]} or {flag(field)}"


# Which subcommands read a setting (the flag is offered only there; the environment is global).
ALL_COMMANDS = frozenset(
    {
        "deploy",
        "backup",
        "restore",
        "plan",
        "migrate",
        "health",
        "list",
        "verify",
        "prune",
        "version",
    }
)
_SCHEMA = frozenset({"deploy", "plan", "migrate"})  # the schema pipeline (plan: its preview)
_RETENTION = frozenset({"deploy", "backup", "migrate", "prune"})  # prune_by_policy
_NEW_BACKUP = frozenset({"deploy", "backup", "migrate"})  # create_backup
_HISTORY = _NEW_BACKUP | {"restore", "prune"}  # writes backups or history (group, environment)
_ALERTS = frozenset({"deploy", "backup", "plan"})  # observed by sidecar.alerts
_NOTIFY = _ALERTS | {"migrate", "restore"}  # and announced (run by hand: no pings, no metrics)
_OFFSITE = frozenset({"deploy", "backup", "restore", "health", "list", "verify", "plan"})


@dataclass(frozen=True)
class Setting:
    """One row of the settings table (see :class:`Settings`): everything about one setting."""

    name: str  # the Settings field; its variable is SIDECAR_<NAME>, its flag --<name>
    parse: Callable[[str], Any]
    commands: frozenset[str]  # the subcommands that read it, and so offer its flag
    help: str
    flag: bool = True  # False: environment (or *_FILE) only
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    shown_default: str | None = None  # the README's default column, when not the field's
    variable: str | None = None  # the variable, when not SIDECAR_<NAME> (AWS_* for S3 tools)

    @property
    def env(self) -> str:
        return self.variable or "SIDECAR_" + self.name.upper()

    @property
    def option(self) -> str | None:
        return flag(self.name) if self.flag else None

    @property
    def is_switch(self) -> bool:
        return self.parse is parsers.parse_bool


def _row(
    parse: Callable[[str], Any] | None = None,
    *,
    commands: frozenset[str],
    help: str,
    flag: bool = True,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    shown: str | None = None,
    env: str | None = None,
) -> dict[str, Any]:
    """A Settings field's metadata: the rest of its row. ``parse`` defaults to ``choices``'."""
    row = {
        "variable": env,
        "parse": parse or parsers.choice(*(choices or ())),
        "commands": commands,
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "choices": choices,
        "shown_default": shown,
    }
    return {"row": row}


def _offsite_row(parse: Callable[[str], Any] | None = None, **row: Any) -> dict[str, Any]:
    """An offsite setting's row: environment-only, read by the commands that touch copies."""
    return _row(parse, flag=False, commands=_OFFSITE, **row)


# long: one row a setting (the one settings table); each row is a field and its metadata
@dataclass(frozen=True)
class Settings:
    """THE settings table: one field a setting, its metadata the rest of its row (a README row
    too: a test keeps them in step). Built only by :func:`sidecar.environ.load_settings`."""

    database: Path | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.parse_database,
            metavar="PATH|URL",
            help="SQLite file or file: URL",
            # list and verify: only that database's backups (a backups folder may be shared)
            commands=_SCHEMA | _HISTORY | {"health", "list", "verify"},
            shown="`DATABASE_URL`, then `NUXT_DATABASE_URL` when `file:` URLs",
        ),
    )
    backup_dir: Path = dataclasses.field(
        default=Path("/backups"),
        metadata=_row(
            parsers.path,
            metavar="DIR",
            help="backups folder",
            commands=ALL_COMMANDS - {"version"},
        ),
    )
    keep: int = dataclasses.field(
        default=10,
        metadata=_row(
            parsers.count(1),
            metavar="N",
            help="keep the N most recent verified backups",
            commands=_RETENTION,
        ),
    )
    keep_daily: int = dataclasses.field(
        default=0,
        metadata=_row(
            parsers.count(0),
            metavar="N",
            help="also keep the newest backup of each of the last N days",
            commands=_RETENTION,
        ),
    )
    keep_weekly: int = dataclasses.field(
        default=0,
        metadata=_row(
            parsers.count(0),
            metavar="N",
            help="... of each of the last N weeks",
            commands=_RETENTION,
        ),
    )
    keep_monthly: int = dataclasses.field(
        default=0,
        metadata=_row(
            parsers.count(0),
            metavar="N",
            help="... of each of the last N months",
            commands=_RETENTION,
        ),
    )
    environment: str = dataclasses.field(
        default="production",
        metadata=_row(
            parsers.environment_name,
            metavar="NAME",
            help="used in backup names",
            commands=_HISTORY,
        ),
    )
    schema: Path | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.path,
            metavar="PATH",
            help="desired schema: .sql file or folder, or SERVICE:/PATH in the app's container",
            commands=_SCHEMA | {"health"},
        ),
    )
    app: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.text,
            metavar="NAME",
            help="the app's Compose service or container",
            commands=frozenset({"deploy", "restore", "backup"}),
        ),
    )
    app_label: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.text,
            flag=False,
            help="or find the app by a label, key=value",
            commands=frozenset({"deploy", "restore", "backup"}),
        ),
    )
    log_format: LogFormat | None = dataclasses.field(
        default=None,
        metadata=_row(
            choices=("json", "console"),
            help="log format (stderr)",
            commands=ALL_COMMANDS,
            shown="console on a TTY, else `json`",
        ),
    )
    log_level: str = dataclasses.field(
        default="info",
        metadata=_row(
            choices=("debug", "info", "warning", "error"),
            help="log level",
            commands=ALL_COMMANDS,
        ),
    )
    quiet_period: float = dataclasses.field(
        default=2.0,
        metadata=_row(
            parsers.seconds,
            metavar="DURATION",
            help="how long the files must stay unchanged",
            commands=frozenset({"deploy", "migrate"}),
            shown="`2s`",
        ),
    )
    wait_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_row(
            parsers.seconds,
            metavar="DURATION",
            help="longest wait for a lull and the write lock",
            commands=_SCHEMA | {"backup", "health", "restore"},
            shown="`60s`",
        ),
    )
    lease_wait: float = dataclasses.field(
        default=60.0,
        metadata=_row(
            parsers.seconds,
            flag=False,
            help="how long to wait for another sidecar's lease",
            commands=frozenset({"deploy", "migrate", "restore", "backup"}),
            shown="`60s`",
        ),
    )
    stop_timeout: float = dataclasses.field(
        default=30.0,
        metadata=_row(
            parsers.seconds,
            flag=False,
            help="graceful stop timeout of the app",
            commands=frozenset({"deploy", "restore", "backup"}),
            shown="`30s`",
        ),
    )
    healthy_timeout: float = dataclasses.field(
        default=120.0,
        metadata=_row(
            parsers.seconds,
            flag=False,
            help="how long the restarted app may take to be healthy",
            commands=frozenset({"deploy"}),
            shown="`120s`",
        ),
    )
    restart: RestartPolicy = dataclasses.field(
        default="on-change",
        metadata=_row(
            choices=("on-change", "always", "never"),
            help="restart policy",
            commands=frozenset({"deploy"}),
        ),
    )
    schedule: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.text,
            metavar="CRON|DURATION",
            help="then stay up, backing up on this schedule",
            commands=frozenset({"deploy", "backup"}),
        ),
    )
    health_queries: Path | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.path,
            metavar="FILE",
            help=".sql file; each query must return a truthy value",
            commands=frozenset({"deploy", "migrate", "health"}),
        ),
    )
    verify: VerifyLevel = dataclasses.field(
        default="quick",
        metadata=_row(
            choices=("checksum", "quick", "full"),
            help="backup verification (restore: of its safety backup)",
            commands=_NEW_BACKUP | {"health", "verify", "restore"},
        ),
    )
    compress: Compression = dataclasses.field(
        default="none",
        metadata=_row(choices=("none", "zstd"), help="compress backups", commands=_NEW_BACKUP),
    )
    backup_io: BackupIO = dataclasses.field(
        default="direct",
        metadata=_row(
            choices=("direct", "cached"),
            flag=False,
            help="backups written and read back with direct I/O, or through the page cache",
            commands=_NEW_BACKUP | {"restore"},
        ),
    )
    backup_group: int | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.count(0), flag=False, help="gid that may read backups", commands=_HISTORY
        ),
    )
    max_backup_age: float = dataclasses.field(
        default=26 * 3600.0,
        metadata=_row(
            parsers.seconds,
            flag=False,
            help="health fails past this backup age",
            commands=frozenset({"deploy", "health"}),
            shown="`26h`",
        ),
    )
    min_free_margin: int = dataclasses.field(
        default=64 * 1024 * 1024,
        metadata=_row(
            parsers.parse_size,
            flag=False,
            help="free space required beyond the database",
            commands=_NEW_BACKUP | {"restore"},
            shown="`64M`",
        ),
    )
    strict: bool = dataclasses.field(
        default=False,
        metadata=_row(
            parsers.parse_bool, help="destructive drift fails (exit 3)", commands=_SCHEMA
        ),
    )
    renames: RenamePolicy = dataclasses.field(
        default="refuse",
        metadata=_row(
            choices=("refuse", "copy"),
            help="a column rename in a migration: refuse it, or copy the old values into the "
            "new column (the app stopped for the change)",
            commands=_SCHEMA,
        ),
    )
    not_renamed: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_row(
            parsers.names,
            commands=_SCHEMA,
            metavar="NAMES",
            shown="none",
            help="new tables or columns (`table`, `table.column`, comma-separated) that are "
            "no rename of a dropped one of the same shape",
        ),
    )
    allow_fresh: bool = dataclasses.field(
        default=False,
        metadata=_row(
            parsers.parse_bool,
            commands=_SCHEMA,
            help="create an empty database even though backups of a missing one exist",
        ),
    )
    compact: bool = dataclasses.field(
        default=False,
        metadata=_row(
            parsers.parse_bool,
            flag=False,
            commands=frozenset({"deploy", "migrate"}),
            help="after a change that rebuilt a table, VACUUM to give its old pages back",
        ),
    )
    backup_stop_app: bool = dataclasses.field(
        default=False,
        metadata=_row(
            parsers.parse_bool,
            flag=False,
            commands=frozenset({"backup"}),
            help="a backup may stop SIDECAR_APP briefly (an app in exclusive locking mode)",
        ),
    )
    notify: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            notifications.check_urls,
            flag=False,
            help="apprise URLs for notifications",
            commands=_NOTIFY,
        ),
    )
    notify_on: frozenset[str] = dataclasses.field(
        default=notifications.parse_on("failure"),
        metadata=_row(
            notifications.parse_on,
            flag=False,
            help="failure, always, or a list of events",
            commands=_NOTIFY,
            shown="`failure`",
        ),
    )
    notify_timeout: float = dataclasses.field(
        default=5.0,
        metadata=_row(
            parsers.seconds,
            flag=False,
            help="the bound of each notification and ping",
            commands=_NOTIFY,
            shown="`5s`",
        ),
    )
    ping_url: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.http_url, flag=False, help="dead-man pings (healthchecks.io)", commands=_ALERTS
        ),
    )
    metrics_addr: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.address,
            flag=False,
            help="serve /metrics here in the long-running mode",
            commands=frozenset({"deploy", "backup"}),
        ),
    )
    metrics_file: Path | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.path,
            flag=False,
            help="node_exporter textfile for the metrics",
            commands=_ALERTS,
        ),
    )
    # Offsite copies (sidecar/offsite; README "Offsite copies"). The AWS_* names are the ones
    # every S3 tool reads. Secrets never show in a repr; every value may come from *_FILE.
    offsite: str | None = dataclasses.field(
        default=None,
        metadata=_offsite_row(
            parsers.offsite_url,
            shown="off",
            help="`s3://bucket/prefix`: every verified backup also goes there",
        ),
    )
    aws_endpoint_url: str | None = dataclasses.field(
        default=None,
        metadata=_offsite_row(
            parsers.endpoint,
            env="AWS_ENDPOINT_URL",
            shown="AWS S3",
            help="an S3-compatible store (MinIO, B2, R2, Garage)",
        ),
    )
    aws_region: str | None = dataclasses.field(
        default=None,
        metadata=_offsite_row(
            parsers.text,
            env="AWS_REGION",
            shown="unset: `us-east-1`",
            help="the store's region",
        ),
    )
    aws_access_key_id: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata=_offsite_row(
            parsers.text,
            env="AWS_ACCESS_KEY_ID",
            help="the store's access key (a secret: use `_FILE`)",
        ),
    )
    aws_secret_access_key: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata=_offsite_row(
            parsers.text,
            env="AWS_SECRET_ACCESS_KEY",
            help="the store's secret key (a secret: use `_FILE`)",
        ),
    )
    s3_path_style: PathStyle = dataclasses.field(
        default="auto",
        metadata=_offsite_row(
            choices=("auto", "true", "false"),
            help="path-style URLs (`auto`: when AWS_ENDPOINT_URL is set)",
        ),
    )
    age_recipients: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_offsite_row(
            parsers.recipients,
            shown="none (NOT encrypted)",
            help="age public keys, or a file of them: every object is encrypted",
        ),
    )
    age_identity_file: Path | None = dataclasses.field(
        default=None,
        metadata=_offsite_row(
            parsers.path,
            help="the age identity file for restores and drills",
        ),
    )
    offsite_keep: int = dataclasses.field(
        default=10,
        metadata=_row(
            parsers.count(1),
            flag=False,
            commands=_OFFSITE,
            help="keep the N most recent offsite copies",
        ),
    )
    offsite_keep_daily: int = dataclasses.field(
        default=0,
        metadata=_offsite_row(
            parsers.count(0),
            help="also keep the newest copy of each of N days",
        ),
    )
    offsite_keep_weekly: int = dataclasses.field(
        default=0,
        metadata=_offsite_row(
            parsers.count(0),
            help="also keep the newest copy of each of N ISO weeks",
        ),
    )
    offsite_keep_monthly: int = dataclasses.field(
        default=0,
        metadata=_offsite_row(
            parsers.count(0),
            help="also keep the newest copy of each of N months",
        ),
    )
    drill_schedule: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            parsers.text,
            flag=False,
            commands=frozenset({"deploy", "backup"}),
            help="restore drills of the newest copy, in the long-running mode",
        ),
    )
    max_offsite_age: float = dataclasses.field(
        default=26 * 3600.0,
        metadata=_offsite_row(
            parsers.seconds,
            shown="`26h`",
            help="`health` warns past this age of the newest offsite copy",
        ),
    )

    def require_database(self) -> Path:
        if self.database is None:
            raise ConfigError(
                "no database configured",
                hint="set SIDECAR_DATABASE (or --database) to a path or a file: URL",
            )
        return self.database

    def retention_policy(self) -> Retention:
        """SIDECAR_KEEP and SIDECAR_KEEP_DAILY/WEEKLY/MONTHLY as the library's value."""
        from sidecar.backup.retention import Retention  # noqa: PLC0415 - off the start-up path

        return Retention(self.keep, self.keep_daily, self.keep_weekly, self.keep_monthly)

    def require_schema(self) -> Path:
        if self.schema is None:
            raise ConfigError(
                "no desired schema configured",
                hint="set SIDECAR_SCHEMA (or --schema) to a .sql file or a folder of them",
            )
        return self.schema


# The table, and what the rest of the code looks up in it.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name=f.name, **f.metadata["row"]) for f in dataclasses.fields(Settings)
)
ENV_NAMES: dict[str, str] = {s.name: s.env for s in SETTINGS}
ENV_ONLY: frozenset[str] = frozenset(s.name for s in SETTINGS if not s.flag)
PARSERS: dict[str, Callable[[str], Any]] = {s.name: s.parse for s in SETTINGS}


def for_command(command: str) -> list[Setting]:
    """The settings ``command`` reads (and whose flags it accepts)."""
    return [s for s in SETTINGS if command in s.commands]
