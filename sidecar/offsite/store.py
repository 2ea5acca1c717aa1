"""The object-store seam: a small Protocol, and its S3 implementation on obstore.

obstore (Rust's object_store) was chosen by measurement over boto3: 16 MB installed against
37 MB, 38 MiB peak RSS during a multipart upload against 142 MiB (docs/design.md, "Offsite
copies (sidecar/offsite)"). Every call is retried a bounded number of times (tenacity) for
transient errors; refused credentials are not retried. Errors name the endpoint and bucket,
never a secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from tenacity import (
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from tenacity import (
    Retrying as _Retrying,
)

from sidecar.errors import UnavailableError
from sidecar.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")

MIN_PART = 5 << 20  # S3's smallest part; memory in flight is about part size * (CONCURRENCY + 1)
MAX_PARTS = 10_000  # S3's limit on parts per upload
CONCURRENCY = 2
ATTEMPTS = 3  # tenacity attempts per call; obstore retries each request twice more inside


@dataclass(frozen=True)
class Remote:
    """Where offsite copies go: ``s3://bucket/prefix`` plus the endpoint and credentials.

    ``repr`` never shows the secret key (it is ``field(repr=False)``)."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = field(default=None, repr=False)  # may hold user:password@
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    path_style: bool | None = None  # None: path-style when an endpoint is given

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def where(self) -> str:
        """The store as named in messages: the URL and the endpoint, never a credential."""
        return f"{self.url} at {self.shown_endpoint or 'AWS S3'}"

    @property
    def shown_endpoint(self) -> str | None:
        """The endpoint for logs and messages: a ``user:password@`` in it redacted."""
        return redact(self.endpoint) if self.endpoint else None

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


_STATUS_403 = re.compile(r"(?<![\w:./-])403(?![\w:./-])")


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text)


def parse_url(value: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix). Raises ValueError."""
    raw = value.strip()
    if not raw.startswith("s3://"):
        raise ValueError(f"expected s3://bucket/prefix, got {value!r}")
    bucket, _, prefix = raw[len("s3://") :].partition("/")
    if not bucket or "?" in raw or "#" in raw:
        raise ValueError(f"expected s3://bucket/prefix, got {value!r}")
    return bucket, prefix.strip("/")


def part_size(expected: int) -> int:
    """The multipart part size for an object of about ``expected`` bytes: S3's 5 MiB
    minimum (memory stays small), larger only when 10,000 parts would not hold it."""
    needed = -(-expected * 11 // 10 // (MAX_PARTS - 500))  # 10% headroom, spare parts
    return max(MIN_PART, ((needed + (1 << 20) - 1) >> 20) << 20)


@dataclass(frozen=True)
class ObjectMeta:
    key: str
    size: int
    etag: str | None = None
    last_modified: datetime | None = None


class ObjectStore(Protocol):
    """What offsite copies need from a store. Keys are full keys (prefix included)."""

    remote: Remote

    def put(self, key: str, chunks: Callable[[], Iterable[bytes]], *, part: int = MIN_PART) -> None:
        """Upload the bytes ``chunks()`` yields, in parts of ``part`` bytes (multipart;
        ``chunks`` is called again on a retry)."""

    def head(self, key: str) -> ObjectMeta | None: ...

    def get(self, key: str) -> Iterator[bytes]: ...

    def list(self, prefix: str) -> list[ObjectMeta]: ...

    def delete(self, key: str) -> None: ...


class S3Store:
    """:class:`ObjectStore` on obstore's S3 client."""

    def __init__(self, remote: Remote, *, attempts: int = ATTEMPTS) -> None:
        from obstore.store import S3Store as _S3  # noqa: PLC0415 - only offsite pays for it

        self.remote = remote
        self._attempts = attempts
        config: dict[str, Any] = {}
        if remote.access_key_id:
            config["access_key_id"] = remote.access_key_id
        if remote.secret_access_key:
            config["secret_access_key"] = remote.secret_access_key
        if remote.endpoint:
            config["endpoint"] = remote.endpoint
        path_style = remote.path_style if remote.path_style is not None else bool(remote.endpoint)
        config["virtual_hosted_style_request"] = not path_style
        self._store = _S3(
            remote.bucket,
            region=remote.region or "us-east-1",
            client_options={
                "allow_http": bool(remote.endpoint and remote.endpoint.startswith("http://")),
                "connect_timeout": timedelta(seconds=10),
                "timeout": timedelta(minutes=10),
            },
            retry_config={
                "max_retries": 2,
                "retry_timeout": timedelta(seconds=60),
                "backoff": {"init_backoff": timedelta(milliseconds=200)},
            },
            **config,
        )

    def put(self, key: str, chunks: Callable[[], Iterable[bytes]], *, part: int = MIN_PART) -> None:
        import obstore  # noqa: PLC0415

        self._call(
            "upload",
            key,
            lambda: obstore.put(
                self._store,
                key,
                chunks(),
                use_multipart=True,
                chunk_size=part,
                max_concurrency=CONCURRENCY,
            ),
        )

    def head(self, key: str) -> ObjectMeta | None:
        import obstore  # noqa: PLC0415
        from obstore.exceptions import NotFoundError  # noqa: PLC0415

        def run() -> ObjectMeta | None:
            try:
                return _meta(obstore.head(self._store, key))
            except NotFoundError:
                return None
            except FileNotFoundError:
                return None

        return self._call("head", key, run)

    def get(self, key: str) -> Iterator[bytes]:
        import obstore  # noqa: PLC0415

        result = self._call("download", key, lambda: obstore.get(self._store, key))
        try:
            for chunk in result.stream(min_chunk_size=1 << 20):
                yield bytes(chunk)
        except Exception as exc:
            if not _is_store_error(exc):
                raise
            raise self._unavailable("download", key, exc) from None

    def list(self, prefix: str) -> list[ObjectMeta]:
        import obstore  # noqa: PLC0415

        def run() -> list[ObjectMeta]:
            found: list[ObjectMeta] = []
            for batch in obstore.list(self._store, prefix or None):
                found += [_meta(m) for m in batch]
            return found

        return self._call("list", prefix or "/", run)

    def delete(self, key: str) -> None:
        import obstore  # noqa: PLC0415

        self._call("delete", key, lambda: obstore.delete(self._store, key))

    def _call(self, what: str, key: str, run: Callable[[], T]) -> T:
        attempts = [0]

        def counted() -> T:
            attempts[0] += 1
            return run()

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "offsite.retry",
                op=what,
                key=key,
                attempt=state.attempt_number,
                endpoint=self.remote.shown_endpoint,
                error=_short(exc),
            )

        retrying = _Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.5, max=4),
            retry=retry_if_exception(_transient),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(counted)
        except UnavailableError:
            raise
        except Exception as exc:
            if _is_store_error(exc):
                raise self._unavailable(what, key, exc, attempts=attempts[0]) from None
            raise

    def _unavailable(
        self, what: str, key: str, exc: BaseException, *, attempts: int = 1
    ) -> UnavailableError:
        if _denied(exc):
            return UnavailableError(
                f"offsite store {self.remote.where} refused the credentials ({what} {key})",
                hint="check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or their _FILE "
                "variants), the bucket name and the key's permissions on it",
            )
        if _no_bucket(exc):
            return UnavailableError(
                f"offsite store {self.remote.where}: bucket {self.remote.bucket!r} does not "
                f"exist ({what} {key})",
                hint=f"create the bucket {self.remote.bucket!r}, or fix the bucket in "
                "SIDECAR_OFFSITE (s3://bucket/prefix) or AWS_ENDPOINT_URL",
            )
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        then = {
            "download": "; then retry (sidecar list --remote shows the copies)",
            "list": "; then retry",
        }.get(what, "")
        return UnavailableError(
            f"offsite store {self.remote.where} unavailable: {what} {key} failed{tried}: "
            f"{_short(exc)}",
            hint=f"check AWS_ENDPOINT_URL, the network and the bucket{then}",
        )


def _meta(raw: Any) -> ObjectMeta:
    modified = raw.get("last_modified")
    if isinstance(modified, datetime) and modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    etag = raw.get("e_tag")
    return ObjectMeta(
        key=str(raw["path"]),
        size=int(raw["size"]),
        etag=str(etag).strip('"') if etag else None,
        last_modified=modified,
    )


def _is_store_error(exc: BaseException) -> bool:
    from obstore.exceptions import BaseError  # noqa: PLC0415

    return isinstance(exc, BaseError | OSError | TimeoutError)


def _denied(exc: BaseException | None) -> bool:
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError  # noqa: PLC0415

    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return True
    text = str(exc)
    words = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
    # A status 403, never a port or an address that holds the digits (127.0.0.1:45031).
    return any(word in text for word in words) or bool(_STATUS_403.search(text))


def _no_bucket(exc: BaseException | None) -> bool:
    return "NoSuchBucket" in str(exc)


def _transient(exc: BaseException) -> bool:
    return (
        _is_store_error(exc)
        and not _denied(exc)
        and not _no_bucket(exc)
        and not isinstance(exc, FileNotFoundError)
    )


def _short(exc: BaseException | None) -> str:
    """The first line of an error, bounded: obstore's messages carry whole response bodies."""
    text = redact(str(exc)).strip() if exc is not None else ""
    text = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {text[:300]}" if exc is not None else ""
