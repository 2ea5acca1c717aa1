"""The ``sidecar`` program: its start and its exit, around :func:`sidecar.cli.main`.

Tests call ``cli.main`` in-process; only the program itself maps the image's code cache
before importing anything else and freezes the garbage collector before exiting. In the
release layout every 0.1 s of a deploy's start-up or exit can be downtime: see
docs/design.md, "Releases under Compose: the sidecar before the app".
"""

from __future__ import annotations

import gc
import sys

from sidecar import codecache

TYPE_CHECKING = False  # typing itself is imported after the code cache is in place
if TYPE_CHECKING:
    from typing import NoReturn


def run() -> NoReturn:
    """Run one command and exit with its code."""
    # Start-up is ~450 imports and no garbage: the cyclic collector's passes over the growing
    # heap cost 10-15 % of it. It is on again once the command's module is imported.
    gc.disable()
    codecache.install()  # the image's; without one, imports read the file system as usual
    from sidecar.cli import main  # noqa: PLC0415 - after the code cache is in place

    code = main(imported=gc.enable)
    # The interpreter's final collections over ~500 modules cost ~0.1 s of exit; nothing
    # else of it changes (atexit handlers run, streams are flushed, threads are joined).
    gc.freeze()
    sys.exit(code)
