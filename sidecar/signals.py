"""SIGTERM/SIGINT as a stop request that the current step checks, so it can finish first.

Why not ``threading.Event``: ``Event.set()`` takes the event's lock, and a Python signal
handler runs on the main thread between two bytecodes, possibly while that same thread holds
the lock inside ``Event.wait()`` (re-acquiring it after a timeout). The handler then waits for
a lock its own thread holds, forever: the process ignores SIGTERM until Docker kills it. CI
caught exactly that in our test writer. The same holds for logging from a handler (structlog's
print logger locks its file). So the handler here only assigns a field and writes one byte to
a socket pair (no Python lock on the way); a watcher thread logs the signal, and waits sleep
in ``select`` on the socket, so a set wakes them at once.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading
from collections.abc import Iterator

from sidecar.logs import get_logger

log = get_logger(__name__)


class Aborted(Exception):
    """A stop request ended a wait, or came between two steps: nothing more is started."""


class Stop:
    """A stop request: ``set`` is safe in a signal handler; ``wait`` wakes as soon as it is."""

    def __init__(self) -> None:
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        self.reason: str | None = None
        self._closed = False

    def set(self, reason: str = "requested") -> None:
        if self.reason is None:
            self.reason = reason
        self._wake()

    def is_set(self) -> bool:
        return self.reason is not None

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False after ``timeout`` seconds (or at once, once closed)."""
        if not self.is_set() and not self._closed:
            # The byte is never read, so every waiter, now or later, sees the socket ready.
            select.select([self._wake_read], [], [], None if timeout is None else max(0.0, timeout))
        return self.is_set()

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` that a set wakes early (for tenacity's ``sleep=``)."""
        self.wait(seconds)

    def close(self) -> None:
        """Wake every waiter for good (a set Stop stays set); the sockets close with the object."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # the buffer is full (already awake) or closed
            self._wake_write.send(b"\0")


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[Stop]:
    """A Stop set by SIGTERM/SIGINT while the block runs; the previous handlers come back
    after it. Off the main thread (where Python cannot take signals) it is a plain Stop."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        stop.set(signal.Signals(signum).name)

    def announce() -> None:
        if stop.wait():
            log.info("signal.received", signal=stop.reason,
                     hint="finishing the current step, then exiting")  # fmt: skip

    watcher = threading.Thread(target=announce, name="sidecar-signals", daemon=True)
    watcher.start()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        stop.close()
        watcher.join(timeout=5)
