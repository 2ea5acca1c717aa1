"""Short texts about containers for messages and logs: their state, an error, a log line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def will_restart(attrs: dict[str, Any]) -> bool:
    """Whether Docker's restart policy brings an exited container back by itself."""
    policy = (attrs.get("HostConfig", {}).get("RestartPolicy") or {}).get("Name") or "no"
    if policy in ("always", "unless-stopped"):
        return True
    return policy == "on-failure" and attrs.get("State", {}).get("ExitCode") != 0


def describe(state: dict[str, Any], last_log: str) -> str:
    health = state.get("Health")
    if not health:
        return f"status {state.get('Status', '?')}; last log line: {last_log}"
    checks: Iterable[dict[str, Any]] = health.get("Log") or []
    last = list(checks)[-1:] or [{}]
    output = str(last[0].get("Output") or "").strip().splitlines()
    detail = clip(output[-1]) if output else f"exit {last[0].get('ExitCode', '?')}, no output"
    return f"health {health.get('Status', '?')}; last check: {detail}"


def clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(exc: BaseException) -> str:
    return clip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
