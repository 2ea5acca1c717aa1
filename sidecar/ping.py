"""Dead-man pings in the healthchecks.io convention.

``<url>/start`` when a run starts, ``<url>`` when it succeeded, ``<url>/fail`` with the error
as the body when it failed. The exit code goes into the body (``exit_code=5``), not into the
path: ``<url>/<code>`` is a healthchecks.io extension that the services imitating its
protocol (self-hosted clones, Uptime Kuma-style push URLs behind a proxy) do not all
implement, while ``/start`` and ``/fail`` are universal. A missed success ping is what the
service alerts on, so a sidecar that died, hangs or was never scheduled is caught too.

Every ping is bounded (:func:`sidecar.deadline.within`): a slow or failing service costs at
most the bound and a warning event, never the command's outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sidecar import deadline
from sidecar.logs import get_logger

log = get_logger(__name__)

ATTEMPTS = 2  # one retry, inside the same bound


@dataclass(frozen=True)
class Pinger:
    url: str
    timeout: float = 5.0

    def start(self) -> bool:
        return self._send("start", None)

    def success(self, body: str = "") -> bool:
        return self._send("", body)

    def fail(self, exit_code: int, error: str) -> bool:
        return self._send("fail", f"exit_code={exit_code}\n{error}")

    def _send(self, suffix: str, body: str | None) -> bool:
        url = with_suffix(self.url, suffix)
        data = body.encode("utf-8") if body is not None else None
        ends = time.monotonic() + self.timeout

        def attempt() -> bool:
            error = ""
            for _ in range(ATTEMPTS):
                left = ends - time.monotonic()
                if left <= 0.05:
                    break
                try:
                    import urllib.request  # noqa: PLC0415 - only when a ping is sent

                    request = urllib.request.Request(url, data=data, method="POST")  # noqa: S310
                    request.add_header("User-Agent", "sidecar")
                    with urllib.request.urlopen(request, timeout=left) as answer:  # noqa: S310
                        log.info("ping.sent", kind=suffix or "success", status=answer.status)
                        return True
                except (OSError, ValueError) as exc:  # URLError is an OSError
                    error = str(getattr(exc, "reason", None) or exc)
            log.warning(
                "ping.failed",
                kind=suffix or "success",
                error=error or "no time left",
                hint="check SIDECAR_PING_URL; the command's outcome stands",
            )
            return False

        return deadline.within(self.timeout, attempt, what="ping")


def with_suffix(url: str, suffix: str) -> str:
    """``url`` with ``/<suffix>`` at the end of its path, before any query or fragment
    (healthchecks.io's ``.../<uuid>?create=1`` pings ``.../<uuid>/start?create=1``)."""
    from urllib.parse import urlsplit, urlunsplit  # noqa: PLC0415 - only when pinging

    parts = urlsplit(url)
    path = parts.path.rstrip("/") + (f"/{suffix}" if suffix else "")
    return urlunsplit(parts._replace(path=path))
