"""The ``sidecar`` program: its start and its exit, around :func:`sidecar.cli.main`.

Tests call ``cli.main`` in-process; only the program itself warms its imports' files and
freezes the garbage collector before exiting. In the release layout every 0.1 s of a
deploy's start-up or exit can be downtime: see docs/design.md, "Releases under Compose: the
sidecar before the app".
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from typing import NoReturn

# What a deploy imports, by package: its compiled files are read ahead (warm_files).
SITE_PACKAGES = (
    "sidecar", "docker", "requests", "urllib3", "charset_normalizer", "idna", "certifi",
    "structlog", "tenacity",
)  # fmt: skip
STDLIB_PACKAGES = (
    "__pycache__", "asyncio", "concurrent", "email", "http", "importlib", "json", "logging",
    "sqlite3", "urllib",
)  # fmt: skip


def run() -> NoReturn:
    """Run one command and exit with its code."""
    if sys.argv[1:2] == ["deploy"]:
        threading.Thread(target=warm_files, args=(_roots(),), daemon=True).start()
    from sidecar.cli import main  # noqa: PLC0415 - after the read-ahead has started

    code = main()
    # The interpreter's final collections over ~500 modules cost ~0.1 s of exit; nothing
    # else of it changes (atexit handlers run, streams are flushed, threads are joined).
    gc.freeze()
    sys.exit(code)


def warm_files(roots: list[str]) -> int:
    """Read every compiled module under ``roots``; how many were read. In a new container
    each first open is a cold lookup through the image's layers: read ahead on a thread
    (no import, no lock), the main thread's imports find them cached."""
    read = 0
    for root in roots:
        for folder, _, names in os.walk(root):
            if os.path.basename(folder) != "__pycache__":
                continue
            for name in names:
                try:
                    with open(os.path.join(folder, name), "rb") as handle:
                        handle.read()
                except OSError:
                    continue  # a hint only: the import reads it anyway
                read += 1
    return read


def _roots() -> list[str]:
    site = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stdlib = os.path.dirname(os.__file__)
    return [os.path.join(site, name) for name in SITE_PACKAGES] + [
        os.path.join(stdlib, name) for name in STDLIB_PACKAGES
    ]
