"""Metrics: the textfile (parsed with prometheus_client's own parser) and /metrics scraped by
a real Prometheus server process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar import alerts, cli
from sidecar.metrics import METRICS, Metrics
from tests.unit.conftest import imports_of

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _no_channels_left() -> Iterator[None]:
    yield
    alerts.configure(database=None, environment="test")


def parse(path: Path) -> Samples:
    text = path.read_text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for (sample, pairs), found in samples.items():
        if sample == name and labels.items() <= dict(pairs).items():
            return found
    return None


@pytest.fixture
def mx_env(bk_db: Callable[..., Path], bk_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "SIDECAR_DATABASE": str(bk_db("wal")),
        "SIDECAR_BACKUP_DIR": str(bk_dir),
        "SIDECAR_LOG_FORMAT": "json",
        "SIDECAR_METRICS_FILE": str(tmp_path / "textfile" / "sidecar.prom"),
    }


def test_the_textfile_merges_runs_of_every_kind(
    capsys: pytest.CaptureFixture[str], mx_env: dict[str, str]
) -> None:
    path = Path(mx_env["SIDECAR_METRICS_FILE"])
    path.parent.mkdir()
    db = Path(mx_env["SIDECAR_DATABASE"])
    assert cli.main(["backup"], env=mx_env) == 0
    first = parse(path)
    backed_up = value(first, "sidecar_last_success_timestamp_seconds", kind="backup")
    assert backed_up is not None
    assert abs(backed_up - time.time()) < 60
    assert value(first, "sidecar_backups_kept", database=db.name) == 1
    assert value(first, "sidecar_backup_size_bytes")
    assert value(first, "sidecar_duration_seconds", step="copy") is not None
    assert value(first, "sidecar_duration_seconds", step="verify") is not None
    assert value(first, "sidecar_data_vanished") == 0
    newest = value(first, "sidecar_backup_newest_timestamp_seconds")
    age = value(first, "sidecar_backup_newest_age_seconds")
    assert newest is not None
    assert age is not None
    assert 0 <= age < 60

    # A drill, in another one-shot process, as the drill code announces it (alerts.event).
    alerts.configure(database=db, environment="production", metrics_file=path)
    alerts.event("drill.done", backup="x", seconds=4.5)
    drilled = parse(path)
    assert value(drilled, "sidecar_last_success_timestamp_seconds", kind="drill") is not None
    assert value(drilled, "sidecar_last_success_timestamp_seconds", kind="backup") == backed_up

    # Two failed backups: the counter adds up across processes, the other kinds' times stay.
    db.write_bytes(b"not a database" * 100)
    Path(f"{db}-wal").unlink(missing_ok=True)
    assert cli.main(["backup"], env=mx_env) == 3
    assert cli.main(["backup"], env=mx_env) == 3
    capsys.readouterr()
    last = parse(path)
    assert value(last, "sidecar_failures_total", kind="backup", exit_code="3") == 2
    assert value(last, "sidecar_last_exit_code", kind="backup") == 3
    assert value(last, "sidecar_last_failure_timestamp_seconds", kind="backup") is not None
    assert value(last, "sidecar_last_success_timestamp_seconds", kind="backup") == backed_up
    assert value(last, "sidecar_last_success_timestamp_seconds", kind="drill") is not None
    assert value(last, "sidecar_duration_seconds", step="drill") == 4.5
    # Written atomically: nothing but the file and its lock beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["sidecar.prom", "sidecar.prom.lock"]


def test_a_plan_sets_the_pending_changes_and_a_deploy_clears_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.containers import engine
    from tests.fakes import FakeApps
    from tests.unit.test_pipeline import env_for, make_db

    make_db(tmp_path / "data" / "portfolio.db")
    path = tmp_path / "sidecar.prom"
    env = env_for(tmp_path, SIDECAR_METRICS_FILE=str(path), SIDECAR_WAIT_TIMEOUT="5s")
    assert cli.main(["plan"], env=env) == 0
    pending = value(parse(path), "sidecar_schema_pending_changes")
    assert pending is not None
    assert pending > 0
    monkeypatch.setattr(engine, "connect", lambda required: FakeApps())
    assert cli.main(["deploy"], env={**env, "SIDECAR_APP": "app"}) == 0
    capsys.readouterr()
    after = parse(path)
    assert value(after, "sidecar_schema_pending_changes") == 0
    assert value(after, "sidecar_last_exit_code", kind="deploy") == 0
    assert value(after, "sidecar_deploy_app_unhealthy") == 0
    assert value(after, "sidecar_duration_seconds", step="write_blocked") is not None
    assert value(after, "sidecar_duration_seconds", step="deploy") is not None


def test_every_metric_is_declared_once_with_its_labels() -> None:
    metrics = Metrics("app.db", clock=lambda: 1000.0)
    metrics.success("backup", {"seconds": 1.0})
    metrics.failure("deploy", 4, app_unhealthy=True)
    names = {name for name, _ in metrics.samples()}
    assert "sidecar_failures_total" in names
    assert names <= {n + "_total" if METRICS[n][0] == "counter" else n for n in METRICS}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("the prometheus binary is missing: run ./scripts/setup (it installs it)")
    return found


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            result: list[dict[str, Any]] = json.load(answer)["data"]["result"]
            return result
    except OSError:
        return []


@pytest.mark.slow
def test_metrics_of_the_long_running_mode_are_scraped_by_a_real_prometheus(
    mx_env: dict[str, str], tmp_path: Path
) -> None:
    binary = _prometheus()
    sidecar_port, prom_port = _free_port(), _free_port()
    env = {**os.environ, **mx_env, "SIDECAR_METRICS_ADDR": f"127.0.0.1:{sidecar_port}"}
    del env["SIDECAR_METRICS_FILE"]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: sidecar\n    static_configs: [{{targets: ['127.0.0.1:{sidecar_port}']}}]\n"
    )
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "backup", "--schedule", "1h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    prometheus = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = _query(prom_port, 'sidecar_last_exit_code{kind="backup"}')
            if found:
                break
            time.sleep(0.5)
        assert found, "Prometheus never scraped the sidecar's /metrics"
        assert found[0]["metric"]["job"] == "sidecar"
        assert found[0]["metric"]["database"] == Path(mx_env["SIDECAR_DATABASE"]).name
        assert found[0]["value"][1] == "0"
        kept = _query(prom_port, "sidecar_backups_kept")
        assert kept
        assert kept[0]["value"][1] == "1"
        up = _query(prom_port, 'up{job="sidecar"}')
        assert up
        assert up[0]["value"][1] == "1"
    finally:
        for proc in (sidecar, prometheus):
            proc.send_signal(signal.SIGTERM)
        sidecar.communicate(timeout=30)
        prometheus.wait(timeout=30)
    assert sidecar.returncode == 0


def test_the_healthcheck_never_serves_nor_imports_the_metrics(
    mx_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The image's HEALTHCHECK runs in the long-running container, with its environment:
    it must neither take the /metrics port nor pay for prometheus_client."""
    assert cli.main(["backup"], env=mx_env) == 0
    port = _free_port()
    env = {**os.environ, **mx_env, "SIDECAR_SCHEDULE": "1h",
           "SIDECAR_METRICS_ADDR": f"127.0.0.1:{port}"}  # fmt: skip
    code, loaded, err = imports_of(
        ["health", "--backups-only"], env, ["prometheus_client", "apprise"]
    )
    assert code == 0, err
    assert loaded == [False, False]
    assert "metrics." not in err


def test_a_metrics_address_without_the_long_running_mode_is_exit_2(
    capsys: pytest.CaptureFixture[str], mx_env: dict[str, str], bk_dir: Path
) -> None:
    """A one-shot backup would serve /metrics for nobody: refused, as a drill schedule is."""
    env = {**mx_env, "SIDECAR_METRICS_ADDR": f"127.0.0.1:{_free_port()}"}
    assert cli.main(["backup"], env=env) == 2
    err = capsys.readouterr().err
    assert "error: SIDECAR_METRICS_ADDR set but SIDECAR_SCHEDULE is not" in err
    assert "hint: " in err
    assert not bk_dir.exists() or not list(bk_dir.iterdir())


def test_a_textfile_that_cannot_be_written_is_a_warning_not_a_failed_backup(
    capsys: pytest.CaptureFixture[str], mx_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**mx_env, "SIDECAR_METRICS_FILE": str(tmp_path / "no-such-dir" / "sidecar.prom")}
    assert cli.main(["backup", "--json"], env=env) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is True
    events = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "metrics.failed"]
    assert failed
    assert failed[0]["level"] == "warning"
