"""The manifest written beside each backup: what was copied, how it was verified, how long it took.

Its fields only ever grow: old backups' manifests must keep loading (``BackupInfo.manifest``
is the dict as read). :func:`manifest_bytes` is the one serialisation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class CopierStats:
    """How the copier child copied the database (the manifest's ``copier``)."""

    method: str  # copy_file_range or read-write
    writeback: str  # sync_file_range or fdatasync
    repaired_chunks: int
    peak_rss_kib: int | None


@dataclass(frozen=True)
class Durations:
    """Seconds spent, rounded to milliseconds (the manifest's ``durations``)."""

    read_lock_s: float
    copy_s: float
    verify_s: float
    total_s: float


@dataclass(frozen=True)
class Manifest:
    """A new backup's manifest, as :func:`sidecar.backup.create.create_backup` writes it."""

    id: str
    source: str  # absolute: see names.is_source
    environment: str
    reason: str
    created_at: str
    verify_level: str
    # quick_check ran on the bytes as they were copied (proved identical to the file),
    # beside the copy, rather than on the file afterwards.
    checked_during_copy: bool
    compression: str
    size: int  # the file as stored (compressed or not)
    stored_sha256: str
    db_size: int  # the database it holds
    sha256: str
    page_size: int
    page_count: int
    journal_mode: str
    wal_frames_folded: int
    wal_copied: bool
    copier: CopierStats
    sqlite_version: str
    schema_hash: str
    row_counts: dict[str, int]
    tool_version: str
    durations: Durations
    rows_vanished: dict[str, Any] | None = None  # written only when found
    format: int = MANIFEST_FORMAT
    verified: bool = True  # only ever written after verification passed

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        if self.rows_vanished is None:
            del document["rows_vanished"]
        return document


def manifest_bytes(document: Mapping[str, Any]) -> bytes:
    """The manifest file's content: indented, keys sorted, one trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
