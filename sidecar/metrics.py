"""Prometheus metrics: what the runs did, served on /metrics or written as a textfile.

Long-running mode serves them (SIDECAR_METRICS_ADDR); one-shot runs write the node_exporter
textfile format (SIDECAR_METRICS_FILE). A one-shot run knows only its own kind, so writing
merges: under a lock, the file's samples are read back, this run's gauges replace theirs,
its counter increments are added to theirs, and the result replaces the file atomically
(a temp file renamed over it). The last success of a drill survives the next backup's run.
Names and labels: the METRICS table below, mirrored in the README; every sample carries
``database`` (the file name), so several sidecars can share one textfile directory.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from sidecar import __version__
from sidecar.logs import get_logger
from sidecar.parsers import parse_address

log = get_logger(__name__)

KINDS = ("backup", "deploy", "offsite", "drill")

# name -> (type, labels beyond `database`, help). Counters are named without `_total`.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sidecar_info": ("gauge", ("version",), "always 1; the sidecar version"),
    "sidecar_last_success_timestamp_seconds": (
        "gauge", ("kind",), "when a run of this kind last succeeded (unix time)"),
    "sidecar_last_failure_timestamp_seconds": (
        "gauge", ("kind",), "when a run of this kind last failed (unix time)"),
    "sidecar_last_exit_code": ("gauge", ("kind",), "exit code of the last run of this kind"),
    "sidecar_failures": ("counter", ("kind", "exit_code"), "failed runs by kind and exit code"),
    "sidecar_duration_seconds": (
        "gauge", ("step",), "how long the last run's step took: copy, verify, read_lock, "
        "backup, write_blocked, lock_wait, deploy, offsite, drill"),
    "sidecar_backup_size_bytes": ("gauge", (), "size of the last backup as stored"),
    "sidecar_backup_database_size_bytes": ("gauge", (), "size of the database last backed up"),
    "sidecar_backups_kept": ("gauge", (), "verified backups in the backups folder"),
    "sidecar_backup_newest_timestamp_seconds": (
        "gauge", (), "when the newest verified backup was taken (unix time)"),
    "sidecar_backup_newest_age_seconds": (
        "gauge", (), "age of the newest verified backup when scraped (or written)"),
    "sidecar_data_vanished": (
        "gauge", (), "1 when the newest backup found most rows gone (see rows_vanished)"),
    "sidecar_schema_pending_changes": ("gauge", (), "schema operations waiting to be applied"),
    "sidecar_schema_drift_items": ("gauge", (), "drift items reported, never executed"),
    "sidecar_deploy_app_unhealthy": (
        "gauge", (), "1 when the last deploy left the app not healthy after its restart"),
}  # fmt: skip

Key = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels


def _key(name: str, labels: Mapping[str, str]) -> Key:
    return name, tuple(sorted(labels.items()))


def _sample_name(name: str) -> str:
    return name + "_total" if METRICS[name][0] == "counter" else name


class Metrics:
    """The samples of this process, for one database. Plain values in, exposition out."""

    def __init__(self, database: str, *, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self._clock = clock
        self._gauges: dict[Key, float] = {}
        self._counts: dict[Key, float] = {}  # since the process started (served)
        self._unwritten: dict[Key, float] = {}  # not yet added to the textfile
        self.set("sidecar_info", 1, version=__version__)

    # -- recording -------------------------------------------------------------------------

    def set(self, name: str, value: float, **labels: str) -> None:
        self._gauges[_key(name, {"database": self.database, **labels})] = float(value)

    def inc(self, name: str, **labels: str) -> None:
        key = _key(_sample_name(name), {"database": self.database, **labels})
        self._counts[key] = self._counts.get(key, 0.0) + 1
        self._unwritten[key] = self._unwritten.get(key, 0.0) + 1

    def success(self, kind: str, document: Mapping[str, Any]) -> None:
        """A run of ``kind`` succeeded; ``document`` is its result's ``to_dict()``."""
        self.set("sidecar_last_success_timestamp_seconds", self._clock(), kind=kind)
        self.set("sidecar_last_exit_code", 0, kind=kind)
        self.record(kind, document)

    def failure(self, kind: str, exit_code: int, *, app_unhealthy: bool = False) -> None:
        self.set("sidecar_last_failure_timestamp_seconds", self._clock(), kind=kind)
        self.set("sidecar_last_exit_code", exit_code, kind=kind)
        self.inc("sidecar_failures", kind=kind, exit_code=str(exit_code))
        if kind == "deploy":
            self.set("sidecar_deploy_app_unhealthy", int(app_unhealthy))

    def backups(self, *, kept: int, newest: datetime | None, vanished: bool) -> None:
        """What the backups folder holds now."""
        self.set("sidecar_backups_kept", kept)
        if newest is not None:
            self.set("sidecar_backup_newest_timestamp_seconds", newest.timestamp())
        self.set("sidecar_data_vanished", int(vanished))

    def record(self, kind: str, doc: Mapping[str, Any]) -> None:
        """The figures of a result's ``to_dict()``: durations, sizes, schema changes."""
        if isinstance(doc.get("seconds"), int | float):
            self.set("sidecar_duration_seconds", doc["seconds"], step=kind)
        if kind == "backup":
            manifest = doc.get("backup", {}).get("manifest", {})
            durations = manifest.get("durations", {})
            for step in ("copy", "verify", "read_lock"):
                if isinstance(durations.get(f"{step}_s"), int | float):
                    self.set("sidecar_duration_seconds", durations[f"{step}_s"], step=step)
            self.set("sidecar_backup_size_bytes", manifest.get("size", 0))
            self.set("sidecar_backup_database_size_bytes", manifest.get("db_size", 0))
        elif kind == "deploy":
            for field, step in (("write_blocked_s", "write_blocked"), ("lock_wait_s", "lock_wait")):
                if isinstance(doc.get(field), int | float):
                    self.set("sidecar_duration_seconds", doc[field], step=step)
            self.set("sidecar_deploy_app_unhealthy", 0)
            self.set("sidecar_schema_pending_changes", 0)  # applied, or nothing to do
            self.set("sidecar_schema_drift_items", len(doc.get("drift") or []))
        elif kind == "plan":
            self.set("sidecar_schema_pending_changes", len(doc.get("operations") or []))
            self.set("sidecar_schema_drift_items", len(doc.get("drift") or []))

    # -- exposition ------------------------------------------------------------------------

    def samples(self) -> dict[Key, float]:
        """Everything this process knows, plus the age of the newest backup as of now."""
        merged = {**self._gauges, **self._counts}
        return self._with_age(merged)

    def _with_age(self, samples: dict[Key, float]) -> dict[Key, float]:
        out = dict(samples)
        for (name, labels), value in samples.items():
            if name == "sidecar_backup_newest_timestamp_seconds":
                age = max(0.0, self._clock() - value)
                out[("sidecar_backup_newest_age_seconds", labels)] = round(age, 3)
        return out

    def registry(self, samples: Callable[[], dict[Key, float]] | None = None) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(samples or self.samples))
        return registry

    def serve(self, addr: str) -> None:
        """Serve /metrics on ``addr`` (``host:port``) in a daemon thread. A failure to bind is a
        warning: monitoring never stops the backups."""
        host, port = parse_address(addr)
        try:
            start_http_server(port, addr=host, registry=self.registry())
        except OSError as exc:
            log.warning(
                "metrics.serve_failed",
                addr=addr,
                error=exc.strerror or str(exc),
                hint="fix SIDECAR_METRICS_ADDR; backups go on without /metrics",
            )
            return
        log.info("metrics.serving", addr=f"{host}:{port}", path="/metrics")

    def write_textfile(self, path: Path) -> None:
        """Merge into the node_exporter textfile ``path`` and replace it atomically."""
        with _locked(path):
            merged = read_textfile(path)
            merged.update(self._gauges)
            for key, delta in self._unwritten.items():
                merged[key] = merged.get(key, 0.0) + delta
            text = generate_latest(self.registry(lambda: self._with_age(merged)))
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, text)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self._unwritten.clear()


def read_textfile(path: Path) -> dict[Key, float]:
    """Our samples from an earlier textfile (anything else in it is dropped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    known = {_sample_name(name): name for name in METRICS}
    found: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = known.get(sample.name)
            if name is None or set(sample.labels) != {"database", *METRICS[name][1]}:
                continue
            found[_key(sample.name, sample.labels)] = float(sample.value)
    return found


class _Collector:
    def __init__(self, samples: Callable[[], dict[Key, float]]) -> None:
        self._samples = samples

    def collect(self) -> Iterator[Metric]:
        samples = self._samples()
        for name, (kind, extra, text) in METRICS.items():
            labels = ["database", *extra]
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, text, labels=labels)
            else:
                family = GaugeMetricFamily(name, text, labels=labels)
            wanted = _sample_name(name)
            for (sample, pairs), value in sorted(samples.items()):
                if sample == wanted:
                    values = dict(pairs)
                    family.add_metric([values.get(label, "") for label in labels], value)
            if family.samples:
                yield family


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time: two one-shot runs finishing together must not lose a sample."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
