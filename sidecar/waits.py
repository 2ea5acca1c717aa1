"""No silent waits: a wait logs a progress event every few seconds (issue 11: an exclusive
app once cost 130 s in two silent 60 s waits)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sidecar.logs import get_logger

log = get_logger(__name__)

EVERY_S = 5.0  # seconds between two progress events of one wait


class WaitProgress:
    """``tick()`` from a wait's loop; it logs ``event`` (with ``waited_s``) once every
    ``every`` seconds, the first time ``every`` seconds after the wait began."""

    def __init__(
        self,
        event: str,
        *,
        every: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        **fields: Any,
    ) -> None:
        self.event = event
        self.every = every
        self.clock = clock
        self.fields = fields
        self.started = clock()
        self.last = self.started

    @property
    def waited(self) -> float:
        return self.clock() - self.started

    def tick(self, **fields: Any) -> None:
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            log.info(self.event, waited_s=round(now - self.started, 1), **self.fields, **fields)
