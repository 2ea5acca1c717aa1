"""structlog setup: events with fields on stderr; JSON off a TTY, console on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LEVELS = ("debug", "info", "warning", "error")


def configure(fmt: str | None = None, level: str = "info") -> None:
    """Configure structlog once per process. ``fmt`` is "json", "console" or None (auto)."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        # Resolve stderr at call time so pytest's capsys and redirections see the logs.
        logger_factory=structlog.PrintLoggerFactory(file=_StderrProxy()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


class _StderrProxy:
    """A file-like that always writes to the current ``sys.stderr`` (only write/flush are
    used by structlog's PrintLogger, hence the narrow type)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def get_logger(name: str = "sidecar") -> Any:
    return structlog.get_logger(name)
