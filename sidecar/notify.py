"""Notifications through apprise: the events, the message a person reads, the delivery.

One message per event: a title that says what happened in one line (command, database,
outcome), then the error and its hint, the backup taken, the exact restore command where
one applies, and the host it came from. Delivery is bounded in time
(:func:`sidecar.deadline.within`); a failed delivery is a warning event, never an outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sidecar import deadline
from sidecar.errors import ConfigError
from sidecar.logs import get_logger

log = get_logger(__name__)

# Every event a notification (or SIDECAR_NOTIFY_ON) can name, and what it means. The
# `*.done` ones are successes; every other one is a failure (SIDECAR_NOTIFY_ON=failure).
EVENTS: dict[str, str] = {
    "deploy.done": "a deploy finished (changed or nothing to do)",
    "deploy.refused": "a deploy was refused by a safety rule (exit 3); nothing changed",
    "deploy.failed": "a deploy failed (the error says whether the change was committed)",
    "deploy.unhealthy": "the app did not become healthy after the restart",
    "backup.done": "a verified backup was taken",
    "backup.failed": "a backup failed",
    "backup.rows_vanished": "most of the data vanished since the previous backup",
    "backups.stale": "the newest verified backup is older than SIDECAR_MAX_BACKUP_AGE",
    "offsite.done": "a backup was uploaded offsite",
    "offsite.failed": "an offsite upload failed",
    "drill.done": "a restore drill passed",
    "drill.failed": "a restore drill failed",
    "migrate.done": "a migrate finished (changed or nothing to do)",
    "migrate.refused": "a migrate was refused by a safety rule (exit 3); nothing changed",
    "migrate.failed": "a migrate failed (the error says whether the change was committed)",
    "restore.done": "a backup was restored",
    "restore.failed": "a restore failed or was refused",
}

_OUTCOME: dict[str, str] = {
    "deploy.done": "deploy of {db} done",
    "deploy.refused": "deploy of {db} refused",
    "deploy.failed": "deploy of {db} failed",
    "deploy.unhealthy": "deploy of {db}: the app is not healthy after the restart",
    "backup.done": "backup of {db} done",
    "backup.failed": "backup of {db} failed",
    "backup.rows_vanished": "data vanished from {db}",
    "backups.stale": "backups of {db} are stale",
    "offsite.done": "offsite upload of {db} done",
    "offsite.failed": "offsite upload of {db} failed",
    "drill.done": "restore drill of {db} passed",
    "drill.failed": "restore drill of {db} failed",
    "migrate.done": "migrate of {db} done",
    "migrate.refused": "migrate of {db} refused",
    "migrate.failed": "migrate of {db} failed",
    "restore.done": "restore of {db} done",
    "restore.failed": "restore of {db} failed",
}


def is_failure(name: str) -> bool:
    return not name.endswith(".done")


@dataclass(frozen=True)
class Event:
    """Something a person may want to hear about. ``restore`` is the exact command to run."""

    name: str
    database: str | None = None
    error: str | None = None
    hint: str | None = None
    exit_code: int | None = None
    backup: str | None = None
    restore: str | None = None
    host: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def failed(self) -> bool:
        return is_failure(self.name)

    def headline(self) -> str:
        """What happened, in one line: command, database, outcome."""
        text = _OUTCOME.get(self.name, self.name).format(db=self.database or "the database")
        return text + (f" (exit {self.exit_code})" if self.exit_code else "")

    def title(self) -> str:
        return f"sidecar: {self.headline()}" + (f" on {self.host}" if self.host else "")

    def body(self) -> str:
        lines = [self.headline()]
        lines += [f"error: {self.error}"] if self.error else []
        lines += [f"hint: {self.hint}"] if self.hint else []
        lines += [f"backup: {self.backup}"] if self.backup else []
        lines += [f"restore: {self.restore}"] if self.restore else []
        lines += [f"{key}: {value}" for key, value in self.details.items()]
        lines += [f"host: {self.host}"] if self.host else []
        lines.append(f"at: {self.at.isoformat(timespec='seconds')}")
        return "\n".join(lines)


def parse_on(value: str) -> frozenset[str]:
    """SIDECAR_NOTIFY_ON: ``failure``, ``always`` or a comma-separated list of event names."""
    names = {part.strip().lower() for part in value.replace(" ", ",").split(",") if part.strip()}
    if names == {"always"}:
        return frozenset(EVENTS)
    if names == {"failure"} or not names:
        return frozenset(name for name in EVENTS if is_failure(name))
    unknown = sorted(names - set(EVENTS))
    if unknown:
        raise ValueError(
            f"unknown event {unknown[0]!r}: use failure, always, or some of {', '.join(EVENTS)}"
        )
    return frozenset(names)


class Notifier:
    """Sends wanted events to the apprise URLs, each delivery bounded by ``timeout``.

    apprise is imported (about a second) only when a wanted event is sent: the HEALTHCHECK
    and quiet runs never pay for it.
    """

    def __init__(self, urls: str, *, on: Iterable[str], timeout: float = 5.0) -> None:
        self.urls = urls
        self.on = frozenset(on)
        self.timeout = timeout
        self._apprise: Any = None

    def wants(self, event: Event) -> bool:
        return event.name in self.on

    def _client(self) -> Any:
        if self._apprise is None:
            usable, unusable = read_urls(self.urls)
            for problem in unusable:  # the commands that notify refused these at start
                log.warning("notify.bad_url", error=problem.message, hint=problem.hint)
            if not usable:
                raise ConfigError(
                    "SIDECAR_NOTIFY: apprise understands none of the URLs given",
                    hint=_URL_HINT,
                )
            import apprise  # noqa: PLC0415 - loaded by read_urls

            client = apprise.Apprise()
            for service in usable:  # one bad URL never silences the good ones
                client.add(service)
            self._apprise = client
        return self._apprise

    def send(self, event: Event) -> bool:
        """Deliver ``event`` if it is wanted; True when the services took it in time."""
        if not self.wants(event):
            return False
        title, body = event.title(), event.body()
        # Importing apprise and reading the URLs is local work: done before the bound starts,
        # which is there for the services.
        client = self._client()
        import apprise  # noqa: PLC0415

        kind = apprise.NotifyType.FAILURE if event.failed else apprise.NotifyType.SUCCESS

        def deliver() -> bool:
            return bool(client.notify(body=body, title=title, notify_type=kind))

        sent = deadline.within(self.timeout, deliver, what="notify")
        if sent:
            log.info("notify.sent", notify_event=event.name)
        else:
            log.warning(
                "notify.not_sent",
                notify_event=event.name,
                hint="check SIDECAR_NOTIFY and the service; the command's outcome stands",
            )
        return sent


def check_urls(value: str) -> str:
    """SIDECAR_NOTIFY's parser: one or more ``scheme://...`` URLs, by spaces or commas. Light
    (every command, the HEALTHCHECK too, reads it): apprise judges each URL in
    :func:`check_services`, which the commands that notify call as they start."""
    urls = value.strip()
    # Commas may also sit inside a URL (mailto://...?to=a@x,b@y): check each word's start.
    if not urls or any("://" not in word.split(",")[0] for word in urls.split()):
        raise ValueError("expected apprise URLs like ntfy://topic or json://host/path")
    return urls


_URL_HINT = (
    "fix or remove that URL in SIDECAR_NOTIFY: apprise URLs such as ntfy://topic, "
    "mailtos://... or json://host/path (https://github.com/caronc/apprise/wiki), separated "
    "by spaces or commas"
)


def redacted(url: str) -> str:
    """How a URL is named in messages: its scheme alone. The rest may be a secret (a token,
    a password, a private ntfy topic), and apprise's own messages quote it whole."""
    scheme, sep, _ = url.strip().partition("://")
    return f"{scheme}://..." if sep else "..."


def _apprise() -> Any:
    """apprise, imported (about a second in the image) with its logging silenced: it logs a
    bad URL whole, secrets included, and sidecar reports every failure itself."""
    import apprise  # noqa: PLC0415 - see the docstring

    logging.getLogger("apprise").addHandler(logging.NullHandler())
    logging.getLogger("apprise").propagate = False
    return apprise


def read_urls(urls: str) -> tuple[list[Any], list[ConfigError]]:
    """apprise's reading of SIDECAR_NOTIFY, URL by URL: the services it can send to, and one
    error (exit 2, the URL redacted) for each URL it cannot use."""
    apprise = _apprise()
    try:
        from apprise.utils.parse import parse_urls  # noqa: PLC0415 - apprise >= 1.9
    except ImportError:  # the older home of the same function (pyproject allows >= 1.7)
        from apprise.utils import parse_urls  # type: ignore[attr-defined,no-redef]  # noqa: PLC0415

    found: list[str] = parse_urls(urls)  # type: ignore[no-untyped-call]
    usable: list[Any] = []
    unusable: list[ConfigError] = []
    for number, url in enumerate(found, 1):
        service = apprise.Apprise.instantiate(url)
        if service:
            usable.append(service)
            continue
        where = f"URL {number} of {len(found)} ({redacted(url)})"
        scheme = url.partition("://")[0].lower()
        if _known_scheme(scheme) is False:
            import difflib  # noqa: PLC0415

            close = difflib.get_close_matches(scheme, _schemes(), n=1)
            guess = f"; did you mean {close[0]}://?" if close else ""
            problem = f"no apprise service is called {scheme}://{guess}"
        else:
            problem = f"apprise cannot use it as a {scheme}:// URL (a part missing or wrong)"
        unusable.append(ConfigError(f"SIDECAR_NOTIFY: {where}: {problem}", hint=_URL_HINT))
    return usable, unusable


def check_services(urls: str) -> None:
    """Refuse (exit 2) SIDECAR_NOTIFY when apprise cannot use one of its URLs: a typo would
    otherwise be found only when a failure needs sending, and that failure would be lost."""
    _usable, unusable = read_urls(urls)
    if unusable:
        raise unusable[0]


def _schemes() -> list[str]:
    try:
        from apprise.apprise import N_MGR  # noqa: PLC0415

        return sorted(str(scheme) for scheme in N_MGR.schemas())  # type: ignore[no-untyped-call]
    except (ImportError, AttributeError):  # another apprise: no suggestion, same refusal
        return []


def _known_scheme(scheme: str) -> bool | None:
    schemes = _schemes()
    return (scheme in schemes) if schemes else None
