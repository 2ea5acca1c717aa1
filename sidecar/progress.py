"""Progress of long work (backups, compression, restores, uploads, drills): one helper.

On a TTY (stderr), a bar with percent, throughput and ETA, drawn once the work has run about
a second (short work draws nothing); off a TTY, a ``<what>.progress`` log event every few
seconds with the same figures. Feed it bytes done (and the total when it is known)::

    with Progress("upload", backup.id, total=size) as progress:
        for chunk in chunks:
            send(chunk)
            progress.add(len(chunk))

``progress(done, total)`` (the copier's ``on_progress``) and ``progress.to(done)`` (the
``pump`` callback) set the count instead of adding to it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

DELAY = 1.0  # seconds before a bar appears
EVERY = 3.0  # seconds between progress events off a TTY
WIDTH = 25


class Progress:
    def __init__(
        self,
        what: str,
        name: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.name = name
        self.total = total
        self.done = 0
        self._stream = stream
        self._tty = tty
        self._clock = clock
        self.started = clock()
        self._last_event = self.started
        self._drawn = False

    # -- feeding ---------------------------------------------------------------------------

    def __call__(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.to(done)

    def to(self, done: int) -> None:
        self.done = done
        self._tick()

    def add(self, n: int) -> None:
        self.to(self.done + n)

    # -- figures ---------------------------------------------------------------------------

    def figures(self) -> dict[str, float | None]:
        elapsed = max(self._clock() - self.started, 1e-6)
        rate = self.done / elapsed
        percent = eta = None
        if self.total:
            percent = min(100.0, 100.0 * self.done / self.total)
            eta = max(0.0, (self.total - self.done) / rate) if rate > 0 else None
        return {"percent": percent, "mb_s": rate / 1e6, "eta_s": eta, "elapsed_s": elapsed}

    def line(self) -> str:
        f = self.figures()
        head = f"{self.what} {self.name}"
        if f["percent"] is None:
            return f"{head} {self.done / 1e6:8.1f} MB {f['mb_s']:7.1f} MB/s"
        bar = "#" * int(f["percent"] * WIDTH // 100)
        eta = f" ETA {_clock_text(f['eta_s'])}" if f["eta_s"] is not None else ""
        return f"{head} [{bar:<{WIDTH}}] {f['percent']:5.1f}% {f['mb_s']:7.1f} MB/s{eta}"

    # -- output ----------------------------------------------------------------------------

    def _out(self) -> TextIO:
        return self._stream or sys.stderr

    def _on_tty(self) -> bool:
        return self._out().isatty() if self._tty is None else self._tty

    def _tick(self) -> None:
        now = self._clock()
        if self._on_tty():
            if now - self.started >= DELAY:
                self._out().write("\r" + self.line())
                self._out().flush()
                self._drawn = True
        elif now - self._last_event >= EVERY:
            self._last_event = now
            from sidecar.logs import get_logger  # noqa: PLC0415 - the copier child has no logs

            f = self.figures()
            get_logger("sidecar.progress").info(
                f"{self.what}.progress",
                name=self.name,
                done_bytes=self.done,
                total_bytes=self.total,
                percent=None if f["percent"] is None else round(f["percent"], 1),
                mb_s=round(f["mb_s"] or 0.0, 1),
                eta_s=None if f["eta_s"] is None else round(f["eta_s"], 1),
            )

    def finish(self) -> None:
        if self._drawn:
            self._out().write("\r" + self.line() + "\n")
            self._out().flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.finish()


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
