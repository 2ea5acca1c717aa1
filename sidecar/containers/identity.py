"""Which container is the sidecar's own: candidate ids from /proc and the hostname, each
to be checked against the engine by the caller."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
_SHORT_ID = re.compile(r"^[0-9a-f]{12,64}$")
# Docker (and Podman) bind-mount these per-container files from the container's own folder.
_MOUNTINFO_ID = re.compile(r"/containers/(?:overlay-containers/)?([0-9a-f]{64})/")
_SELF_MOUNTS = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def candidates() -> list[str]:
    """:func:`own_container_ids` from this process's hostname and /proc files."""
    return own_container_ids(
        hostname=socket.gethostname(),
        env_hostname=os.environ.get("HOSTNAME"),
        mountinfo=_read("/proc/self/mountinfo"),
        cgroup=_read("/proc/self/cgroup"),
    )


def own_container_ids(
    *, hostname: str | None, env_hostname: str | None, mountinfo: str, cgroup: str
) -> list[str]:
    """Ids (full or short) that may be our own container's, most reliable first: mountinfo,
    cgroup, hostname. See docs/design.md, 'The sidecar's own container'."""
    found: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in _SELF_MOUNTS:
            match = _MOUNTINFO_ID.search(fields[3])
            if match:
                found.append(match.group(1))
    found += _CONTAINER_ID.findall(cgroup)
    found += [h for h in (env_hostname, hostname) if h and _SHORT_ID.match(h)]
    return list(dict.fromkeys(found))


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
