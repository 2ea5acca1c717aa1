"""One frozen settings object, loaded from the environment plus flag overrides, validated here.

Every field has an environment variable (``SIDECAR_*``) and most have a flag twin. Any value
may instead come from a file named by ``<VAR>_FILE`` (secrets in Docker/Kubernetes). Flags win
over the environment, the environment over defaults. Errors name the bad field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

from sidecar.errors import ConfigError

RestartPolicy = Literal["on-change", "always", "never"]
VerifyLevel = Literal["checksum", "quick", "full"]
Compression = Literal["none", "zstd"]
LogFormat = Literal["json", "console"]

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Everything a command may need. Built only by :func:`load_settings`."""

    database: Path | None = None
    backup_dir: Path = Path("/backups")
    keep: int = 10
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    environment: str = "production"
    schema: Path | None = None
    app: str | None = None
    app_label: str | None = None
    log_format: LogFormat | None = None
    log_level: str = "info"
    quiet_period: float = 2.0
    wait_timeout: float = 60.0
    lease_wait: float = 60.0
    stop_timeout: float = 30.0
    healthy_timeout: float = 120.0
    restart: RestartPolicy = "on-change"
    schedule: str | None = None
    health_queries: Path | None = None
    verify: VerifyLevel = "quick"
    compress: Compression = "none"
    backup_group: int | None = None
    max_backup_age: float = 26 * 3600.0
    min_free_margin: int = 64 * 1024 * 1024
    strict: bool = False
    allow_fresh: bool = False
    backup_stop_app: bool = False

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


# field name -> environment variable. Flags use the field name with dashes: --backup-dir.
ENV_NAMES: dict[str, str] = {
    "database": "SIDECAR_DATABASE",
    "backup_dir": "SIDECAR_BACKUP_DIR",
    "keep": "SIDECAR_KEEP",
    "keep_daily": "SIDECAR_KEEP_DAILY",
    "keep_weekly": "SIDECAR_KEEP_WEEKLY",
    "keep_monthly": "SIDECAR_KEEP_MONTHLY",
    "environment": "SIDECAR_ENVIRONMENT",
    "schema": "SIDECAR_SCHEMA",
    "app": "SIDECAR_APP",
    "app_label": "SIDECAR_APP_LABEL",
    "log_format": "SIDECAR_LOG_FORMAT",
    "log_level": "SIDECAR_LOG_LEVEL",
    "quiet_period": "SIDECAR_QUIET_PERIOD",
    "wait_timeout": "SIDECAR_WAIT_TIMEOUT",
    "lease_wait": "SIDECAR_LEASE_WAIT",
    "stop_timeout": "SIDECAR_STOP_TIMEOUT",
    "healthy_timeout": "SIDECAR_HEALTHY_TIMEOUT",
    "restart": "SIDECAR_RESTART",
    "schedule": "SIDECAR_SCHEDULE",
    "health_queries": "SIDECAR_HEALTH_QUERIES",
    "verify": "SIDECAR_VERIFY",
    "compress": "SIDECAR_COMPRESS",
    "backup_group": "SIDECAR_BACKUP_GROUP",
    "max_backup_age": "SIDECAR_MAX_BACKUP_AGE",
    "min_free_margin": "SIDECAR_MIN_FREE_MARGIN",
    "strict": "SIDECAR_STRICT",
    "allow_fresh": "SIDECAR_ALLOW_FRESH",
    "backup_stop_app": "SIDECAR_BACKUP_STOP_APP",
}

# Settings with no flag twin: set them by environment variable (or ``*_FILE``) only.
ENV_ONLY: frozenset[str] = frozenset(
    {
        "app_label",
        "lease_wait",
        "stop_timeout",
        "healthy_timeout",
        "backup_group",
        "max_backup_age",
        "min_free_margin",
        "backup_stop_app",
    }
)

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
        return Path(rest)
    if "://" in raw:
        raise ValueError(f"only SQLite files are supported (a path or a file: URL), got {value!r}")
    return Path(raw)


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


PARSERS: dict[str, Callable[[str], Any]] = {
    "database": parse_database,
    "backup_dir": _path,
    "keep": _count(1),
    "keep_daily": _count(0),
    "keep_weekly": _count(0),
    "keep_monthly": _count(0),
    "environment": _environment,
    "schema": _path,
    "app": _text,
    "app_label": _text,
    "log_format": _choice("json", "console"),
    "log_level": _choice("debug", "info", "warning", "error"),
    "quiet_period": _seconds,
    "wait_timeout": _seconds,
    "lease_wait": _seconds,
    "stop_timeout": _seconds,
    "healthy_timeout": _seconds,
    "restart": _choice("on-change", "always", "never"),
    "schedule": _text,
    "health_queries": _path,
    "verify": _choice("checksum", "quick", "full"),
    "compress": _choice("none", "zstd"),
    "backup_group": _count(0),
    "max_backup_age": _seconds,
    "min_free_margin": parse_size,
    "strict": parse_bool,
    "allow_fresh": parse_bool,
    "backup_stop_app": parse_bool,
}


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
    return Settings(**values)


def _database_fallback(env: Mapping[str, str]) -> str | None:
    for name in DATABASE_FALLBACKS:
        value = read_env(env, name)
        if value and value.strip().startswith("file:"):
            return value
    return None
