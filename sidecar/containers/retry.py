"""Bounded retries of Docker API calls: which failures are transient, why a connection failed,
and the warning logged before each retry."""

from __future__ import annotations

from collections.abc import Callable

import docker.errors
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity import wait_exponential as wait_exp

from sidecar.containers.describe import short
from sidecar.logs import get_logger

log = get_logger(__name__)

API_HINT = (
    "check that the Docker engine is up (docker info) and reachable through the socket; "
    "a socket proxy must allow containers list/inspect/start/stop/restart"
)


def retrying(
    what: str,
    *,
    transient: Callable[[BaseException], bool],
    attempts: int,
    multiplier: float,
    max_wait: float,
) -> Retrying:
    """A tenacity Retrying: ``attempts`` tries of ``what`` with exponential waits, retrying only
    ``transient`` failures and logging each retry; the last failure is raised as it is."""
    return Retrying(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exp(multiplier=multiplier, max=max_wait),
        reraise=True,
        before_sleep=_log_retry(what),
    )


def transient(exc: BaseException) -> bool:
    if isinstance(exc, docker.errors.APIError):
        return bool(exc.is_server_error())
    # requests' ConnectionError and Timeout are OSErrors (RequestException derives IOError).
    return isinstance(exc, OSError)


def transient_connect(exc: BaseException) -> bool:
    return connect_reason(exc) == "unreachable"


def connect_reason(exc: BaseException) -> str:
    """Why the engine could not be reached: "permission", "missing" or "unreachable"."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, PermissionError) for e in chain) or "Permission denied" in text:
        return "permission"
    if any(isinstance(e, FileNotFoundError) for e in chain) or "No such file" in text:
        return "missing"
    return "unreachable"


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("docker.retrying", call=what, attempt=state.attempt_number,
                    error=short(error) if error else None)  # fmt: skip

    return before_sleep
