"""The offsite audit's findings, against the real S3 server (moto_server on 127.0.0.1) and the
real webhook receiver (tests/receiver.py): uploads and drills are announced and measured (A),
copies are kept apart per database (B), a damaged newest copy is never passed over silently
(C), a wrong age identity is a configuration error (D), store errors say what happened (E)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar import alerts, cli
from sidecar.errors import UnavailableError
from sidecar.metrics import read_textfile
from sidecar.offsite.store import Remote, S3Store
from tests.receiver import Receiver, receiver
from tests.s3server import S3Server, free_port
from tests.unit import test_offsite as base
from tests.unit.conftest import bk_build_db
from tests.unit.test_offsite import KEY_ID, SECRET, env_of, rows, run, store_of

# The offsite tests' fixtures: the S3 server (one per module), a bucket's env, an age key.
server = base.server
env = base.env
age_key = base.age_key
age_env = base.age_env


@pytest.fixture(autouse=True)
def _no_channels_left() -> Iterator[None]:
    yield
    alerts.configure(database=None, environment="test")


def hook_url(hook: Receiver) -> str:
    return f"json://127.0.0.1:{hook.port}/hook"


def metric(path: Path, name: str, **labels: str) -> float | None:
    for (sample, pairs), value in read_textfile(path).items():
        if sample == name and labels.items() <= dict(pairs).items():
            return value
    return None


def notified(hook: Receiver, count: int) -> list[dict[str, Any]]:
    return [r.json() for r in hook.wait_for(count)]


def flip_a_byte(env: dict[str, str], key: str) -> None:
    store = store_of(env)
    blob = bytearray(b"".join(store.get(key)))
    blob[len(blob) // 2] ^= 0x01  # same size: only a drill can tell
    store.put(key, lambda: [bytes(blob)])


# A: announced and measured -------------------------------------------------------------


def test_a_failed_upload_during_a_deploy_that_exits_0_is_notified_and_measured(
    server: S3Server, tmp_path: Path
) -> None:
    from sidecar import notify
    from sidecar.environ import load_settings
    from sidecar.pipeline.run import run_deploy
    from tests.fakes import FakeApps
    from tests.unit.test_pipeline import env_for, make_db

    textfile = tmp_path / "sidecar.prom"
    down = {
        "SIDECAR_OFFSITE": "s3://deploys/app",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "SIDECAR_APP": "app",
        "SIDECAR_WAIT_TIMEOUT": "5s",
    }
    settings = load_settings(env_for(tmp_path, **down))
    make_db(settings.require_database())
    with receiver() as hook:
        alerts.configure(  # as the CLI does, with the default SIDECAR_NOTIFY_ON=failure
            database=settings.database,
            environment="production",
            notify_urls=hook_url(hook),
            notify_on=notify.parse_on("failure"),
            timeout=2.0,
            metrics_file=textfile,
        )
        report = run_deploy(settings, apps=FakeApps())
        assert report.changed  # the deploy worked: it exits 0
        assert report.offsite is not None
        assert "error" in report.offsite
        [message] = notified(hook, 1)
    assert message["type"] == "failure"
    assert message["title"].startswith(f"sidecar: offsite upload of {settings.database} failed")
    assert "(exit 5)" in message["title"]
    assert f"backup: {report.backup}" in message["message"].splitlines()
    assert "hint: " in message["message"]
    assert metric(textfile, "sidecar_last_exit_code", kind="offsite") == 5
    assert metric(textfile, "sidecar_failures_total", kind="offsite", exit_code="5") == 1
    assert metric(textfile, "sidecar_last_failure_timestamp_seconds", kind="offsite")


def test_uploads_and_drills_set_what_the_alert_rules_read_and_a_failed_drill_is_notified(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], tmp_path: Path
) -> None:
    textfile = tmp_path / "sidecar.prom"
    with receiver() as hook:
        env |= {"SIDECAR_NOTIFY": hook_url(hook), "SIDECAR_METRICS_FILE": str(textfile)}
        before = time.time()
        code, doc = run(capsys, ["backup"], env)
        assert code == 0, doc
        # SidecarOffsiteStale: time() - sidecar_last_success_timestamp_seconds{kind="offsite"}
        uploaded = metric(textfile, "sidecar_last_success_timestamp_seconds", kind="offsite")
        assert uploaded is not None
        assert uploaded >= int(before)
        assert metric(textfile, "sidecar_last_exit_code", kind="offsite") == 0
        assert metric(textfile, "sidecar_duration_seconds", step="offsite") is not None
        assert run(capsys, ["verify", "--remote"], env)[0] == 0
        # SidecarDrillFailed: sidecar_last_exit_code{kind="drill"} != 0
        assert metric(textfile, "sidecar_last_exit_code", kind="drill") == 0
        assert hook.requests == []  # successes are not sent by default
        flip_a_byte(env, doc["offsite"]["key"])
        code, _ = run(capsys, ["verify", "--remote"], env)
        assert code == 4
        [message] = notified(hook, 1)
    assert message["type"] == "failure"
    assert "restore drill of" in message["title"]
    assert "(exit 4)" in message["title"]
    assert f"backup: {doc['offsite']['id']}" in message["message"].splitlines()
    assert metric(textfile, "sidecar_last_exit_code", kind="drill") == 4
    assert metric(textfile, "sidecar_failures_total", kind="drill", exit_code="4") == 1
    # The success before it survives in the textfile.
    assert metric(textfile, "sidecar_last_success_timestamp_seconds", kind="drill")


def test_a_failed_upload_of_sidecar_backup_is_announced_as_such(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    with receiver() as hook:
        env["SIDECAR_NOTIFY"] = hook_url(hook)
        code, _ = run(capsys, ["backup"], env)
        assert code == 5
        titles = sorted(m["title"] for m in notified(hook, 2))
    assert any(t.startswith("sidecar: backup of") for t in titles)
    assert any(t.startswith("sidecar: offsite upload of") for t in titles)


def test_a_scheduled_drill_that_cannot_run_is_announced(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], tmp_path: Path
) -> None:
    from sidecar.commands import offsite
    from sidecar.environ import load_settings

    textfile = tmp_path / "sidecar.prom"
    with receiver() as hook:
        settings = load_settings(env | {"SIDECAR_METRICS_FILE": str(textfile)})
        alerts.configure(database=settings.database, environment="production",
                         notify_urls=hook_url(hook), notify_on=frozenset({"drill.failed"}),
                         timeout=2.0, metrics_file=textfile)  # fmt: skip
        with pytest.raises(Exception, match="no offsite copies"):
            offsite._drill_job(settings)  # nothing uploaded yet: the drill cannot pass
        [message] = notified(hook, 1)
    assert "restore drill of" in message["title"]
    assert metric(textfile, "sidecar_last_exit_code", kind="drill") == 3


# B: kept apart per database -------------------------------------------------------------


@pytest.fixture
def two(server: S3Server, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Two databases named app.db, in s1/data and s2/data, sharing one SIDECAR_OFFSITE."""
    bucket = f"b-{time.monotonic_ns()}"
    server.make_bucket(bucket)
    envs = []
    for name, count in (("s1", 200), ("s2", 50)):
        (tmp_path / name / "data").mkdir(parents=True)
        db = bk_build_db(tmp_path / name / "data" / "app.db", rows=count)
        envs.append(env_of(db, tmp_path / name / "backups", f"s3://{bucket}/prod", server.url))
    return envs[0], envs[1]


def test_copies_of_two_databases_sharing_a_prefix_are_kept_apart(
    capsys: pytest.CaptureFixture[str], two: tuple[dict[str, str], dict[str, str]]
) -> None:
    s1, s2 = two
    db1 = Path(s1["SIDECAR_DATABASE"])
    before = rows(db1)
    first = run(capsys, ["backup"], s1)[1]["offsite"]["id"]
    time.sleep(1.1)  # a new second: not the same backup name
    theirs = run(capsys, ["backup"], s2)[1]["offsite"]["id"]  # the newest copy in the bucket
    code, doc = run(capsys, ["list", "--remote"], s1)
    assert [c["id"] for c in doc["remote"]] == [first]
    assert doc["other_databases"] == 1
    code, doc = run(capsys, ["verify", "--remote"], s1)
    assert (code, [b["id"] for b in doc["backups"]]) == (0, [first])
    conn = sqlite3.connect(db1)
    conn.execute("DELETE FROM transactions")
    conn.commit()
    conn.close()
    code, doc = run(capsys, ["restore", "--from", "offsite", "latest"], s1)
    assert code == 0, doc
    assert doc["backup"]["id"] == first
    assert rows(db1) == before
    # s1's retention, keeping one copy, never deletes s2's only copy.
    s1["SIDECAR_OFFSITE_KEEP"] = "1"
    time.sleep(1.1)
    newest = run(capsys, ["backup"], s1)[1]["offsite"]["id"]
    ids = [c["id"] for c in run(capsys, ["list", "--remote"], s1)[1]["remote"]]
    assert ids == [newest, first]  # the new one, and the one a drill passed
    assert [c["id"] for c in run(capsys, ["list", "--remote"], s2)[1]["remote"]] == [theirs]
    # Another database's copy by its ID: found, and restored only on purpose.
    code, doc = run(capsys, ["restore", "--from", "offsite", theirs], s1)
    assert code == 3
    assert "--from-other-database" in doc["error"]["hint"]


def test_an_upload_never_overwrites_another_databases_copy_of_the_same_name(
    capsys: pytest.CaptureFixture[str], two: tuple[dict[str, str], dict[str, str]]
) -> None:
    s1, s2 = two
    theirs = run(capsys, ["backup"], s2)[1]["offsite"]
    # s1 takes a backup of the same name (the same second): copy its file under that name.
    local = run(capsys, ["backup"], {k: v for k, v in s1.items() if k != "SIDECAR_OFFSITE"
                                     and not k.startswith("AWS_")})[1]["backup"]["id"]  # fmt: skip
    folder = Path(s1["SIDECAR_BACKUP_DIR"])
    (folder / local).rename(folder / theirs["id"])
    manifest = json.loads((folder / f"{local}.json").read_text())
    (folder / f"{local}.json").unlink()
    (folder / f"{theirs['id']}.json").write_text(json.dumps({**manifest, "id": theirs["id"]}))
    from sidecar.backup import store
    from sidecar.commands import offsite
    from sidecar.environ import load_settings

    settings = load_settings(s1)
    info = store.find_backup(folder, theirs["id"])
    with pytest.raises(Exception, match="not overwritten") as caught:
        offsite.upload_backup(settings, info)
    assert "prefix" in getattr(caught.value, "hint", "")
    listed = run(capsys, ["list", "--remote"], s2)[1]["remote"]
    assert [c["id"] for c in listed] == [theirs["id"]]  # still s2's copy


# C: a damaged newest copy ---------------------------------------------------------------


def test_a_damaged_newest_copy_fails_the_drill_and_is_named_everywhere(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    older = run(capsys, ["backup"], env)[1]["offsite"]
    newest = run(capsys, ["backup"], env)[1]["offsite"]
    store = store_of(env)
    store.put(newest["key"], lambda: [b"truncated"])  # the listing shows the wrong size
    code, doc = run(capsys, ["verify", "--remote"], env)
    assert code == 4, doc
    assert doc["bad"] == [newest["id"]]
    assert newest["id"] in doc["error"]["message"]
    code, doc = run(capsys, ["health", "--backups-only"], env)
    copy = next(c for c in doc["checks"] if c["name"] == "offsite copy")
    assert copy["ok"] is False
    assert "DAMAGED" in copy["detail"]
    code, doc = run(capsys, ["restore", "--from", "offsite", "latest"], env)
    assert code == 0, doc
    assert doc["backup"]["id"] == older["id"]
    assert [s["id"] for s in doc["skipped"]] == [newest["id"]]
    assert cli.main(["restore", "--from", "offsite", "latest", "--dry-run"], env=env) == 0
    assert f"skipped {newest['id']}" in capsys.readouterr().out


def test_health_does_not_call_a_copy_ok_that_a_listing_found_missing(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    newest = run(capsys, ["backup"], env)[1]["offsite"]
    doc = run(capsys, ["health", "--backups-only"], env)[1]
    assert next(c for c in doc["checks"] if c["name"] == "offsite copy")["ok"] is True
    store_of(env).delete(newest["key"])
    run(capsys, ["list", "--remote"], env)
    doc = run(capsys, ["health", "--backups-only"], env)[1]
    copy = next(c for c in doc["checks"] if c["name"] == "offsite copy")
    assert copy["ok"] is False
    assert "missing" in copy["detail"]


# D: a wrong identity --------------------------------------------------------------------


def test_a_wrong_age_identity_is_a_configuration_error_not_a_failed_drill(
    capsys: pytest.CaptureFixture[str], age_env: dict[str, str], tmp_path: Path
) -> None:
    upload = run(capsys, ["backup"], age_env)[1]["offsite"]
    other = tmp_path / "other.key"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    wrong = age_env | {"SIDECAR_AGE_IDENTITY_FILE": str(other)}
    code, doc = run(capsys, ["verify", "--remote"], wrong)
    assert code == 2, doc
    assert "SIDECAR_AGE_IDENTITY_FILE" in doc["error"]["message"]
    assert "identity" in doc["error"]["hint"]
    assert "delete" not in doc["error"]["hint"]
    listed = run(capsys, ["list", "--remote"], wrong)[1]["remote"]
    assert listed[0]["drill"] is None  # not recorded as a failed drill
    code, doc = run(capsys, ["restore", "--from", "offsite", "latest"], wrong)
    assert code == 2
    # The right identity: the copy was never in doubt.
    code, doc = run(capsys, ["verify", "--remote"], age_env)
    assert (code, doc["bad"]) == (0, [])
    assert upload["id"] in [b["id"] for b in doc["backups"]]


# E: store errors ------------------------------------------------------------------------


def test_store_errors_count_attempts_name_a_missing_bucket_and_redact_the_endpoint(
    server: S3Server,
) -> None:
    port = server.url.rsplit(":", 1)[1]
    secret_url = f"http://user:{SECRET}@127.0.0.1:{port}"
    missing = S3Store(Remote("no-such-bucket", "p", endpoint=secret_url,
                             access_key_id=KEY_ID, secret_access_key=SECRET))  # fmt: skip
    with pytest.raises(UnavailableError) as caught:
        missing.list("p/")
    message, hint = caught.value.message, caught.value.hint or ""
    assert "no-such-bucket" in message
    assert "does not exist" in message
    assert "attempts" not in message  # not retried: nothing transient about it
    assert "local backup" not in hint
    assert SECRET not in message + hint + repr(missing.remote)
    assert "***@127.0.0.1" in message
    down = S3Store(Remote("b", "p", endpoint=f"http://user:{SECRET}@127.0.0.1:{free_port()}",
                          access_key_id=KEY_ID, secret_access_key=SECRET), attempts=2)  # fmt: skip
    with pytest.raises(UnavailableError) as caught:
        list(down.get("p/x"))
    assert "after 2 attempts" in caught.value.message
    assert SECRET not in caught.value.message
    assert "sidecar list --remote" in (caught.value.hint or "")


def test_a_secret_in_the_endpoint_never_reaches_the_log_or_the_error(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    env["AWS_ENDPOINT_URL"] = f"http://user:{SECRET}@127.0.0.1:{free_port()}"
    code = cli.main(["backup", "--json"], env=env)
    captured = capsys.readouterr()
    assert code == 5
    assert SECRET not in captured.out + captured.err
    assert "***@127.0.0.1" in json.loads(captured.out)["error"]["message"]
