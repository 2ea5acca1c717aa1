"""How the backup commands show sizes and ages to a person (``render``; JSON keeps raw values)."""

from __future__ import annotations

from datetime import datetime


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def age(created: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - created).total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
