"""The value parsers of the settings table: text in, a typed value out, ValueError naming
what was expected. Pure and light: the offsite parsers import their code only when used."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


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


def count(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return lowered

    return parse


def text(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty")
    return stripped


def environment_name(value: str) -> str:
    stripped = value.strip()
    # The environment ends up in backup file names: keep it to a safe alphabet.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}", stripped):
        raise ValueError(f"expected letters, digits, '.' or '-' (no '_'), got {value!r}")
    return stripped


def path(value: str) -> Path:
    return Path(text(value))


def seconds(value: str) -> float:
    duration = parse_duration(value)
    if duration < 0:
        raise ValueError("must not be negative")
    return duration


def http_url(value: str) -> str:
    """An http(s) URL that urllib can reach: a host, a numeric port if any, no user name or
    password (urllib sends none: it would look them up as part of the host name). The value is
    never quoted in the error: a ping URL's path is its secret."""
    from urllib.parse import urlsplit  # noqa: PLC0415 - light, and only when one is set

    url = value.strip()
    if not re.match(r"https?://[^/\s]+", url) or any(c.isspace() for c in url):
        raise ValueError("expected an http:// or https:// URL")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "a user name or password in the URL is not supported (pings send no credentials)"
        )
    if not parts.hostname:
        raise ValueError("expected a host name after http:// or https://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port after the host must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the port after the host must be a number from 1 to 65535")
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


def address(value: str) -> str:
    parse_address(value)
    return value.strip()


def offsite_url(value: str) -> str:
    from sidecar.offsite.store import parse_url  # noqa: PLC0415 - keeps obstore out

    parse_url(value)
    return value.strip().rstrip("/")


def endpoint(value: str) -> str:
    raw = text(value).rstrip("/")
    if not raw.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return raw


def names(value: str) -> tuple[str, ...]:
    """A comma-separated list of names (blanks around them and empty items dropped)."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


def recipients(value: str) -> tuple[str, ...]:
    """age public keys (comma- or newline-separated), or the path of a file of them."""
    from sidecar.offsite.codec import parse_recipients  # noqa: PLC0415

    keys = value.strip()
    if not keys.startswith(("age1", "ssh-")):
        try:
            keys = Path(keys).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(
                f"neither age public keys nor a readable file of them: {exc.strerror}"
            ) from None
    return tuple(parse_recipients(keys))
