"""One frozen settings object, loaded from the environment plus flag overrides, validated here.

:class:`Settings` is the one table of settings: each field carries its row (parser, flag, help,
the subcommands that read it); the names, parsers, flags and README check derive from it.

Every field has an environment variable (``SIDECAR_*``) and most have a flag twin. Any value
may instead come from a file named by ``<VAR>_FILE`` (secrets in Docker/Kubernetes). Flags win
over the environment, the environment over defaults. Errors name the bad field.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from sidecar import notify as notifications
from sidecar.errors import ConfigError

RestartPolicy = Literal["on-change", "always", "never"]
VerifyLevel = Literal["checksum", "quick", "full"]
Compression = Literal["none", "zstd"]
LogFormat = Literal["json", "console"]
PathStyle = Literal["auto", "true", "false"]
RenamePolicy = Literal["refuse", "copy"]


# Prisma/Nuxt apps already carry their database location; accept it when it is a file: URL.
DATABASE_FALLBACKS = ("DATABASE_URL", "NUXT_DATABASE_URL")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


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


def parse_database(value: str) -> Path:
    """A plain path or a Prisma-style ``file:`` URL (``file:/app/data/x.db?connection_limit=1``)."""
    raw = value.strip()
    if not raw:
        raise ValueError("empty")
    if raw.startswith("file:"):
        rest = raw[len("file:") :].split("?", 1)[0]
        if rest.startswith("//"):
            # file:///abs/path (RFC 8089) or file://localhost/abs/path
            rest = rest[2:]
            if not rest.startswith("/"):
                host, _, path = rest.partition("/")
                if host not in ("", "localhost"):
                    raise ValueError(f"remote file URLs are not supported: {value!r}")
                rest = "/" + path
        rest = unquote(rest)
        if not rest:
            raise ValueError(f"no path in {value!r}")
        raw = rest
    elif "://" in raw:
        raise ValueError(f"only SQLite files are supported (a path or a file: URL), got {value!r}")
    # Absolute from here on (against the current folder, symlinks kept): a backup's manifest
    # names its source this way, so a later run from another folder never takes another
    # database's backups for this one's.
    return Path(os.path.abspath(raw))


def parse_duration(value: str) -> float:
    """Seconds from ``90``, ``90s``, ``500ms``, ``5m``, ``2h`` or ``1d``."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"expected a duration like 30s, 5m, 2h or 1d, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: str) -> int:
    """Bytes from ``1048576``, ``64M``, ``64MiB``, ``1.5G``."""
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"expected a size like 64M or 1.5G, got {value!r}")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _count(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return lowered

    return parse


def _text(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty")
    return stripped


def _environment(value: str) -> str:
    stripped = value.strip()
    # The environment ends up in backup file names: keep it to a safe alphabet.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}", stripped):
        raise ValueError(f"expected letters, digits, '.' or '-' (no '_'), got {value!r}")
    return stripped


def _path(value: str) -> Path:
    return Path(_text(value))


def _seconds(value: str) -> float:
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _http_url(value: str) -> str:
    url = value.strip()
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError("expected an http:// or https:// URL")
    return url


def parse_address(value: str) -> tuple[str, int]:
    """``0.0.0.0:9473``, ``127.0.0.1:9473``, ``[::]:9473``, ``:9473`` or ``9473``."""
    host, _, port = value.strip().rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - the documented default: all interfaces
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"expected host:port like 0.0.0.0:9473, got {value!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"port must be 1-65535, got {number}")
    return host, number


def _address(value: str) -> str:
    parse_address(value)
    return value.strip()


def _offsite_url(value: str) -> str:
    from sidecar.offsite.store import parse_url  # noqa: PLC0415 - keeps obstore out

    parse_url(value)
    return value.strip().rstrip("/")


def _endpoint(value: str) -> str:
    raw = _text(value).rstrip("/")
    if not raw.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return raw


def _recipients(value: str) -> tuple[str, ...]:
    """age public keys (comma- or newline-separated), or the path of a file of them."""
    from sidecar.offsite.codec import parse_recipients  # noqa: PLC0415

    text = value.strip()
    if not text.startswith(("age1", "ssh-")):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(
                f"neither age public keys nor a readable file of them: {exc.strerror}"
            ) from None
    return tuple(parse_recipients(text))


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
        return self.parse is parse_bool


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
        "parse": parse or _choice(*(choices or ())),
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


@dataclass(frozen=True)
class Settings:
    """Everything a command may need. Built only by :func:`load_settings`.

    THE settings table: one field a setting, its metadata the rest of its row. Adding a
    setting is adding one field here (and its README row: a test keeps them in step).
    """

    database: Path | None = dataclasses.field(
        default=None,
        metadata=_row(
            parse_database,
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
            _path,
            metavar="DIR",
            help="backups folder",
            commands=ALL_COMMANDS - {"version"},
        ),
    )
    keep: int = dataclasses.field(
        default=10,
        metadata=_row(
            _count(1),
            metavar="N",
            help="keep the N most recent verified backups",
            commands=_RETENTION,
        ),
    )
    keep_daily: int = dataclasses.field(
        default=0,
        metadata=_row(
            _count(0),
            metavar="N",
            help="also keep the newest backup of each of the last N days",
            commands=_RETENTION,
        ),
    )
    keep_weekly: int = dataclasses.field(
        default=0,
        metadata=_row(
            _count(0), metavar="N", help="... of each of the last N weeks", commands=_RETENTION
        ),
    )
    keep_monthly: int = dataclasses.field(
        default=0,
        metadata=_row(
            _count(0), metavar="N", help="... of each of the last N months", commands=_RETENTION
        ),
    )
    environment: str = dataclasses.field(
        default="production",
        metadata=_row(
            _environment,
            metavar="NAME",
            help="used in backup names",
            commands=_HISTORY,
        ),
    )
    schema: Path | None = dataclasses.field(
        default=None,
        metadata=_row(
            _path,
            metavar="PATH",
            help="desired schema: .sql file or folder, or SERVICE:/PATH in the app's container",
            commands=_SCHEMA | {"health"},
        ),
    )
    app: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            _text,
            metavar="NAME",
            help="the app's Compose service or container",
            commands=frozenset({"deploy", "restore", "backup"}),
        ),
    )
    app_label: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            _text,
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
            _seconds,
            metavar="DURATION",
            help="how long the files must stay unchanged",
            commands=frozenset({"deploy", "migrate"}),
            shown="`2s`",
        ),
    )
    wait_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_row(
            _seconds,
            metavar="DURATION",
            help="longest wait for a lull and the write lock",
            commands=_SCHEMA | {"backup", "health", "restore"},
            shown="`60s`",
        ),
    )
    lease_wait: float = dataclasses.field(
        default=60.0,
        metadata=_row(
            _seconds,
            flag=False,
            help="how long to wait for another sidecar's lease",
            commands=frozenset({"deploy", "migrate", "restore", "backup"}),
            shown="`60s`",
        ),
    )
    stop_timeout: float = dataclasses.field(
        default=30.0,
        metadata=_row(
            _seconds,
            flag=False,
            help="graceful stop timeout of the app",
            commands=frozenset({"deploy", "restore", "backup"}),
            shown="`30s`",
        ),
    )
    healthy_timeout: float = dataclasses.field(
        default=120.0,
        metadata=_row(
            _seconds,
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
            _text,
            metavar="CRON|DURATION",
            help="then stay up, backing up on this schedule",
            commands=frozenset({"deploy", "backup"}),
        ),
    )
    health_queries: Path | None = dataclasses.field(
        default=None,
        metadata=_row(
            _path,
            metavar="FILE",
            help=".sql file; each query must return a truthy value",
            commands=frozenset({"deploy", "migrate", "health"}),
        ),
    )
    verify: VerifyLevel = dataclasses.field(
        default="quick",
        metadata=_row(
            choices=("checksum", "quick", "full"),
            help="backup verification",
            commands=_NEW_BACKUP | {"health", "verify"},
        ),
    )
    compress: Compression = dataclasses.field(
        default="none",
        metadata=_row(choices=("none", "zstd"), help="compress backups", commands=_NEW_BACKUP),
    )
    backup_group: int | None = dataclasses.field(
        default=None,
        metadata=_row(_count(0), flag=False, help="gid that may read backups", commands=_HISTORY),
    )
    max_backup_age: float = dataclasses.field(
        default=26 * 3600.0,
        metadata=_row(
            _seconds,
            flag=False,
            help="health fails past this backup age",
            commands=frozenset({"deploy", "health"}),
            shown="`26h`",
        ),
    )
    min_free_margin: int = dataclasses.field(
        default=64 * 1024 * 1024,
        metadata=_row(
            parse_size,
            flag=False,
            help="free space required beyond the database",
            commands=_NEW_BACKUP,
            shown="`64M`",
        ),
    )
    strict: bool = dataclasses.field(
        default=False,
        metadata=_row(parse_bool, help="destructive drift fails (exit 3)", commands=_SCHEMA),
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
    allow_fresh: bool = dataclasses.field(
        default=False,
        metadata=_row(
            parse_bool,
            commands=_SCHEMA,
            help="create an empty database even though backups of a missing one exist",
        ),
    )
    compact: bool = dataclasses.field(
        default=False,
        metadata=_row(
            parse_bool,
            flag=False,
            commands=frozenset({"deploy", "migrate"}),
            help="after a change that rebuilt a table, VACUUM to give its old pages back",
        ),
    )
    backup_stop_app: bool = dataclasses.field(
        default=False,
        metadata=_row(
            parse_bool,
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
            commands=_ALERTS,
        ),
    )
    notify_on: frozenset[str] = dataclasses.field(
        default=notifications.parse_on("failure"),
        metadata=_row(
            notifications.parse_on,
            flag=False,
            help="failure, always, or a list of events",
            commands=_ALERTS,
            shown="`failure`",
        ),
    )
    notify_timeout: float = dataclasses.field(
        default=5.0,
        metadata=_row(
            _seconds,
            flag=False,
            help="the bound of each notification and ping",
            commands=_ALERTS,
            shown="`5s`",
        ),
    )
    ping_url: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            _http_url, flag=False, help="dead-man pings (healthchecks.io)", commands=_ALERTS
        ),
    )
    metrics_addr: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            _address,
            flag=False,
            help="serve /metrics here in the long-running mode",
            commands=frozenset({"deploy", "backup"}),
        ),
    )
    metrics_file: Path | None = dataclasses.field(
        default=None,
        metadata=_row(
            _path, flag=False, help="node_exporter textfile for the metrics", commands=_ALERTS
        ),
    )
    # Offsite copies (sidecar/offsite; README "Offsite copies"). The AWS_* names are the ones
    # every S3 tool reads. Secrets never show in a repr; every value may come from *_FILE.
    offsite: str | None = dataclasses.field(
        default=None,
        metadata=_offsite_row(
            _offsite_url,
            shown="off",
            help="`s3://bucket/prefix`: every verified backup also goes there",
        ),
    )
    aws_endpoint_url: str | None = dataclasses.field(
        default=None,
        metadata=_offsite_row(
            _endpoint,
            env="AWS_ENDPOINT_URL",
            shown="AWS S3",
            help="an S3-compatible store (MinIO, B2, R2, Garage)",
        ),
    )
    aws_region: str | None = dataclasses.field(
        default=None,
        metadata=_offsite_row(
            _text,
            env="AWS_REGION",
            shown="unset: `us-east-1`",
            help="the store's region",
        ),
    )
    aws_access_key_id: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata=_offsite_row(
            _text,
            env="AWS_ACCESS_KEY_ID",
            help="the store's access key (a secret: use `_FILE`)",
        ),
    )
    aws_secret_access_key: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata=_offsite_row(
            _text,
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
            _recipients,
            shown="none (NOT encrypted)",
            help="age public keys, or a file of them: every object is encrypted",
        ),
    )
    age_identity_file: Path | None = dataclasses.field(
        default=None,
        metadata=_offsite_row(
            _path,
            help="the age identity file for restores and drills",
        ),
    )
    offsite_keep: int = dataclasses.field(
        default=10,
        metadata=_row(
            _count(1), flag=False, commands=_OFFSITE, help="keep the N most recent offsite copies"
        ),
    )
    offsite_keep_daily: int = dataclasses.field(
        default=0,
        metadata=_offsite_row(
            _count(0),
            help="also keep the newest copy of each of N days",
        ),
    )
    offsite_keep_weekly: int = dataclasses.field(
        default=0,
        metadata=_offsite_row(
            _count(0),
            help="also keep the newest copy of each of N ISO weeks",
        ),
    )
    offsite_keep_monthly: int = dataclasses.field(
        default=0,
        metadata=_offsite_row(
            _count(0),
            help="also keep the newest copy of each of N months",
        ),
    )
    drill_schedule: str | None = dataclasses.field(
        default=None,
        metadata=_row(
            _text,
            flag=False,
            commands=frozenset({"deploy", "backup"}),
            help="restore drills of the newest copy, in the long-running mode",
        ),
    )
    max_offsite_age: float = dataclasses.field(
        default=26 * 3600.0,
        metadata=_offsite_row(
            _seconds,
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

# SIDECAR_* variables that are not settings but are legitimately in the environment: the
# image tags ./scripts/setup and Compose read, the venv path, and test-only switches.
NOT_SETTINGS = frozenset(
    {"SIDECAR_IMAGE", "SIDECAR_BASE_IMAGE", "SIDECAR_VENV", "SIDECAR_FAULT_SEED",
     "SIDECAR_FAULT_KILLS", "SIDECAR_TEST_NO_KUSTOMIZE",
     "SIDECAR_METRICS_PORT"}  # the host port deploy/monitoring/compose.metrics.yml publishes
)  # fmt: skip


def for_command(command: str) -> list[Setting]:
    """The settings ``command`` reads (and whose flags it accepts)."""
    return [s for s in SETTINGS if command in s.commands]


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """One message per ``SIDECAR_*`` variable (or ``*_FILE``) that names no setting, with the
    closest known name: ``SIDECAR_KEEEP: unknown setting; did you mean SIDECAR_KEEP?``."""
    known = set(ENV_NAMES.values())
    messages = []
    for name in sorted(env):
        base = name.removesuffix("_FILE")
        # A setting may itself end in _FILE (SIDECAR_METRICS_FILE): its own name is known.
        # A setting may itself end in _FILE (SIDECAR_AGE_IDENTITY_FILE): the name first.
        if not name.startswith("SIDECAR_") or {name, base} & known or name in NOT_SETTINGS:
            continue
        import difflib  # noqa: PLC0415 (only on a typo: keeps startup light)

        suffix = name[len(base) :]
        close = difflib.get_close_matches(base, sorted(known), n=1)
        guess = f"; did you mean {close[0]}{suffix}?" if close else ""
        messages.append(f"{name}: unknown setting{guess}")
    return messages


def read_env(env: Mapping[str, str], name: str) -> str | None:
    """``name`` from the environment, or the contents of the file named by ``name_FILE``.

    An empty variable counts as unset: Compose's ``${X:-}`` idiom passes one through when
    the user set nothing, and "unset" is what the user meant.
    """
    direct = env.get(name) or None
    file_name = env.get(f"{name}_FILE") or None
    if direct is not None and file_name is not None:
        raise ConfigError(
            f"{name} and {name}_FILE are both set", hint=f"set only one of {name}, {name}_FILE"
        )
    if file_name is None:
        return direct
    try:
        return Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            f"{name}_FILE: cannot read {file_name}: {exc.strerror}",
            hint="mount the secret file and check its permissions",
        ) from exc


def load_settings(
    env: Mapping[str, str], flags: Mapping[str, str | bool | None] | None = None
) -> Settings:
    """Build the settings: defaults < environment (or ``*_FILE``) < flags. Validates each field."""
    values: dict[str, Any] = {}
    flags = flags or {}
    for field in dataclasses.fields(Settings):
        name = field.name
        flag = flags.get(name)
        raw: str | None
        if isinstance(flag, bool):
            # Boolean flags (--strict) are switches: present means on, absent defers to env.
            if flag:
                values[name] = True
                continue
            raw = read_env(env, ENV_NAMES[name])
        elif flag is not None:
            raw = flag
        else:
            raw = read_env(env, ENV_NAMES[name])
        if raw is None and name == "database":
            raw = _database_fallback(env)
        if raw is None:
            continue
        try:
            values[name] = PARSERS[name](raw)
        except ValueError as exc:
            raise ConfigError(f"{label(name)}: {exc}", hint=fix_hint(name)) from None
    _check_offsite(values)
    return Settings(**values)


# Offsite settings that mean nothing without SIDECAR_OFFSITE. Set without it, the SIDECAR_*
# ones are an error (encryption "accepted and ignored" must never happen); the AWS_* ones are
# shared with other tools (a platform may inject AWS_REGION), so they only log a warning.
OFFSITE_ONLY = (
    "s3_path_style", "age_recipients", "age_identity_file", "offsite_keep",
    "offsite_keep_daily", "offsite_keep_weekly", "offsite_keep_monthly", "drill_schedule",
    "max_offsite_age",
)  # fmt: skip
AWS_SHARED = ("aws_endpoint_url", "aws_region", "aws_access_key_id", "aws_secret_access_key")


def _check_offsite(values: Mapping[str, Any]) -> None:
    """Offsite settings that would be ignored: an error (SIDECAR_*) or a warning (AWS_*)."""
    if values.get("drill_schedule") and not values.get("schedule"):
        raise ConfigError(
            "SIDECAR_DRILL_SCHEDULE set but SIDECAR_SCHEDULE is not: drills run only in the "
            "long-running mode",
            hint="set SIDECAR_SCHEDULE too, or run `sidecar verify --remote` from a CronJob",
        )
    if values.get("offsite") is not None:
        return
    stray = [ENV_NAMES[name] for name in OFFSITE_ONLY if name in values]
    if stray:
        raise ConfigError(
            f"{', '.join(stray)} set but SIDECAR_OFFSITE is not: offsite copies are off",
            hint="set SIDECAR_OFFSITE=s3://bucket/prefix, or unset " + ", ".join(stray),
        )
    shared = [ENV_NAMES[name] for name in AWS_SHARED if name in values]
    if shared:
        from sidecar.logs import get_logger  # noqa: PLC0415

        get_logger(__name__).warning(
            "settings.ignored",
            names=shared,
            reason="SIDECAR_OFFSITE is not set",
            hint="set SIDECAR_OFFSITE=s3://bucket/prefix to make offsite copies",
        )


def _database_fallback(env: Mapping[str, str]) -> str | None:
    for name in DATABASE_FALLBACKS:
        value = read_env(env, name)
        if value and value.strip().startswith("file:"):
            return value
    return None
