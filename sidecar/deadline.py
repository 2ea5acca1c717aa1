"""Run a call with a hard time bound: in a daemon thread, abandoned at the deadline.

For side channels (notifications, pings) that must never hold up or change a command's
outcome: whatever the receiver does (hang, refuse, answer 500), the caller waits at most
``seconds`` and gets True only when the call returned True in time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sidecar.logs import get_logger

log = get_logger(__name__)


def within(seconds: float, call: Callable[[], bool], *, what: str) -> bool:
    """``call()`` in a daemon thread; False (and a warning event) when it raised, said False,
    or did not return within ``seconds``. Never raises."""
    outcome: list[bool] = []
    failure: list[str] = []

    def target() -> None:
        try:
            outcome.append(bool(call()))
        except Exception as exc:  # noqa: BLE001 - a side channel: any failure is a warning
            failure.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=target, name=f"sidecar-{what}", daemon=True)
    worker.start()
    worker.join(max(0.0, seconds))
    if worker.is_alive():
        log.warning(
            f"{what}.timeout",
            seconds=seconds,
            hint="the receiver did not answer in time; the command's outcome stands",
        )
        return False
    if failure:
        log.warning(
            f"{what}.failed",
            error=failure[0],
            hint="the receiver failed; the command's outcome stands",
        )
        return False
    return bool(outcome and outcome[0])
