"""Offsite copies end to end through ``sidecar.cli.main``, against a real S3 server process
(moto_server on 127.0.0.1, tests/s3server.py): upload, encryption, restore, drills,
retention, failures, secrets."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from sidecar import cli
from sidecar.offsite.store import Remote, S3Store
from tests.s3server import S3Server, s3_server
from tests.unit.conftest import bk_build_db

SECRET = "s3cr3t-SIDECAR-TEST-0123456789abcdef"  # noqa: S105 - a test value to grep for
KEY_ID = "AKIDSIDECARTEST0001"


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        yield running


@pytest.fixture
def age_key(tmp_path: Path) -> tuple[Path, str]:
    """An age identity file made by Debian's age-keygen, and its public key."""
    identity = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return identity, public


def env_of(db: Path, backups: Path, offsite: str, url: str) -> dict[str, str]:
    return {
        "SIDECAR_DATABASE": str(db),
        "SIDECAR_BACKUP_DIR": str(backups),
        "SIDECAR_LOG_FORMAT": "json",
        "SIDECAR_OFFSITE": offsite,
        "AWS_ENDPOINT_URL": url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }


@pytest.fixture
def env(server: S3Server, tmp_path: Path) -> dict[str, str]:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    server.make_bucket(bucket)
    db = bk_build_db(tmp_path / "portfolio.db")
    return env_of(db, tmp_path / "backups", f"s3://{bucket}/prod/app", server.url)


@pytest.fixture
def age_env(env: dict[str, str], age_key: tuple[Path, str]) -> dict[str, str]:
    """``env`` with encryption on: the age-keygen key as recipient and identity."""
    identity, public = age_key
    return env | {"SIDECAR_AGE_RECIPIENTS": public, "SIDECAR_AGE_IDENTITY_FILE": str(identity)}


def run(
    capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    code = cli.main([*argv, "--json"], env=env)
    captured = capsys.readouterr()
    assert captured.out, captured.err  # every outcome, failures too, is a JSON document
    return code, json.loads(captured.out)


def store_of(env: dict[str, str]) -> S3Store:
    bucket, _, prefix = env["SIDECAR_OFFSITE"].removeprefix("s3://").partition("/")
    return S3Store(
        Remote(
            bucket,
            prefix,
            endpoint=env["AWS_ENDPOINT_URL"],
            access_key_id=KEY_ID,
            secret_access_key=SECRET,
        )
    )


def rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT * FROM transactions ORDER BY id").fetchall()
    finally:
        conn.close()


def test_backup_uploads_ciphertext_that_the_age_tool_decrypts_to_the_backup(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    age_key: tuple[Path, str],
    tmp_path: Path,
) -> None:
    identity, public = age_key
    env["SIDECAR_AGE_RECIPIENTS"] = public
    code, doc = run(capsys, ["backup"], env)
    assert code == 0, doc
    offsite = doc["offsite"]
    assert offsite["encrypted"] is True
    assert offsite["proof"] == "etag"
    assert offsite["key"].endswith(".db.zst.age")
    blob = b"".join(store_of(env).get(offsite["key"]))
    assert blob.startswith(b"age-encryption.org/v1")
    for plain in (b"SQLite format 3", b"transactions", b"u1@x", b"portfolios"):
        assert plain not in blob
    encrypted = tmp_path / "copy.age"
    encrypted.write_bytes(blob)
    decrypted = subprocess.run(
        ["age", "-d", "-i", str(identity), str(encrypted)], check=True, capture_output=True
    ).stdout
    database = zstandard.ZstdDecompressor().decompressobj().decompress(decrypted)
    local = Path(doc["backup"]["path"]).read_bytes()
    assert database == local
    assert hashlib.sha256(database).hexdigest() == doc["backup"]["manifest"]["sha256"]
    # Recorded as offsite only now that it is proved: the local manifest and the history.
    manifest = json.loads(Path(doc["backup"]["path"] + ".json").read_text())
    assert manifest["offsite"]["sha256"] == offsite["sha256"]
    history = (Path(env["SIDECAR_BACKUP_DIR"]) / "sidecar-history.jsonl").read_text()
    assert '"event": "offsite"' in history
    code, doc = run(capsys, ["list", "--remote"], env)
    assert code == 0
    assert [c["encrypted"] for c in doc["remote"]] == [True]
    assert doc["remote"][0]["problems"] == []


def test_restore_from_offsite_latest_brings_back_every_row(
    capsys: pytest.CaptureFixture[str], age_env: dict[str, str]
) -> None:
    env = age_env
    db = Path(env["SIDECAR_DATABASE"])
    before = rows(db)
    assert run(capsys, ["backup", "--compress", "zstd"], env)[0] == 0
    # The host loses the backups folder, and the app wipes the table.
    for entry in Path(env["SIDECAR_BACKUP_DIR"]).iterdir():
        if entry.is_file():
            entry.unlink()
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM transactions")
    conn.commit()
    conn.close()
    code, doc = run(capsys, ["restore", "--from", "offsite", "latest"], env)
    assert code == 0, doc
    assert rows(db) == before
    assert doc["safety_backup"] is not None  # the existing path: a safety backup first
    backups = Path(env["SIDECAR_BACKUP_DIR"])
    assert not [p.name for p in backups.iterdir() if p.name.startswith(".offsite")]


def test_restore_from_offsite_of_an_encrypted_copy_needs_the_identity(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    age_key: tuple[Path, str],
) -> None:
    env["SIDECAR_AGE_RECIPIENTS"] = age_key[1]
    assert run(capsys, ["backup"], env)[0] == 0
    code, doc = run(capsys, ["restore", "--from", "offsite", "latest"], env)
    assert code == 2
    assert "SIDECAR_AGE_IDENTITY_FILE" in doc["error"]["hint"]


def test_verify_remote_catches_a_flipped_byte_and_a_missing_manifest(
    capsys: pytest.CaptureFixture[str], age_env: dict[str, str]
) -> None:
    env = age_env
    first = run(capsys, ["backup"], env)[1]["offsite"]
    second = run(capsys, ["backup"], env)[1]["offsite"]
    code, doc = run(capsys, ["verify", "--remote", "--all"], env)
    assert code == 0, doc
    assert doc["bad"] == []
    store = store_of(env)
    blob = bytearray(b"".join(store.get(second["key"])))
    blob[len(blob) // 2] ^= 0x01  # same size: only a drill can tell
    store.put(second["key"], lambda: [bytes(blob)])
    code, doc = run(capsys, ["verify", "--remote"], env)
    assert code == 4
    assert doc["bad"] == [second["id"]]
    code, doc = run(capsys, ["list", "--remote"], env)
    assert doc["remote"][0]["drill"]["ok"] is False
    # health warns about the failed drill
    code, doc = run(capsys, ["health", "--backups-only"], env)
    drill = next(c for c in doc["checks"] if c["name"] == "offsite drill")
    assert drill["ok"] is False
    # The first copy's manifest goes missing: its data object is not a valid copy.
    store.delete(first["manifest_key"])
    code, doc = run(capsys, ["list", "--remote"], env)
    assert [c["id"] for c in doc["remote"]] == [second["id"]]
    assert doc["orphans"] == [first["key"]]
    code, doc = run(capsys, ["verify", "--remote", "--all"], env)
    assert code == 4
    assert set(doc["bad"]) == {second["id"], first["key"]}


def test_remote_retention_keeps_n_and_the_last_drilled_copy(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
) -> None:
    env["SIDECAR_OFFSITE_KEEP"] = "2"
    ids = [run(capsys, ["backup"], env)[1]["offsite"]["id"] for _ in range(3)]
    doc = run(capsys, ["list", "--remote"], env)[1]
    assert [c["id"] for c in doc["remote"]] == [ids[2], ids[1]]
    assert doc["orphans"] == []  # manifest and data both deleted
    # Drill the newest, then keep only one: the drilled copy stays beside the new one.
    env["SIDECAR_OFFSITE_KEEP"] = "1"
    assert run(capsys, ["verify", "--remote", "--latest"], env)[0] == 0
    new = run(capsys, ["backup"], env)[1]["offsite"]["id"]
    new2 = run(capsys, ["backup"], env)[1]["offsite"]["id"]
    doc = run(capsys, ["list", "--remote"], env)[1]
    assert [c["id"] for c in doc["remote"]] == [new2, ids[2]]
    assert new not in [c["id"] for c in doc["remote"]]
    # One copy by its ID (the local name, with or without .zst); the table for people.
    code, doc = run(capsys, ["verify", "--remote", ids[2] + ".zst"], env)
    assert code == 0
    assert [b["id"] for b in doc["backups"]] == [ids[2]]
    assert cli.main(["list", "--remote"], env=env) == 0
    table = capsys.readouterr().out
    assert "ENCRYPTED" in table
    assert ids[2] in table
    assert "ok " in table  # its drill


def test_unreachable_store_keeps_the_local_backup_and_exits_5(
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
) -> None:
    from tests.s3server import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    env["AWS_ENDPOINT_URL"] = endpoint
    code, doc = run(capsys, ["backup"], env)
    assert code == 5
    assert endpoint in doc["error"]["message"]
    assert "kept locally" in doc["error"]["message"]
    assert doc["error"]["hint"]
    code, doc = run(capsys, ["verify"], env)
    assert code == 0
    assert len(doc["backups"]) == 1
    code, doc = run(capsys, ["health", "--backups-only"], env)
    upload = next(c for c in doc["checks"] if c["name"] == "offsite upload")
    assert upload["ok"] is False


def test_the_store_killed_mid_upload_leaves_no_copy_and_the_local_backup_intact(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    with s3_server() as own:
        own.make_bucket("killed")
        # ~96 MiB of random rows: about a second of upload on an idle machine, so the store
        # dies mid-upload (a 32 MiB copy could be done before the kill).
        db = bk_build_db(tmp_path / "big.db", rows=6000, blob=16 << 10)
        env = env_of(db, tmp_path / "backups", "s3://killed/p", own.url)
        child = _sidecar(["backup"], env)
        _wait_for_event(child, "backup.created")
        time.sleep(0.2)
        own.kill()
        _, err = child.communicate(timeout=120)
        assert child.returncode == 5, err
        assert own.url in err
    assert run(capsys, ["verify"], env)[0] == 0
    doc = run(capsys, ["list"], env)[1]
    assert len(doc["backups"]) == 1
    manifest = json.loads(Path(doc["backups"][0]["path"] + ".json").read_text())
    assert "offsite" not in manifest


def test_a_sidecar_killed_mid_upload_leaves_no_listed_copy(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    server: S3Server,
) -> None:
    server.make_bucket("crashed")
    # ~96 MiB of random rows, and the kill as soon as the store shows the upload under way: a
    # fixed delay after backup.created let a small upload finish first on an idle machine.
    db = bk_build_db(tmp_path / "big.db", rows=6000, blob=16 << 10)
    env = env_of(db, tmp_path / "backups", "s3://crashed/p", server.url)
    child = _sidecar(["backup"], env)
    _wait_for_event(child, "backup.created")
    _wait_for_multipart_upload(server, "crashed")
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    code, doc = run(capsys, ["list", "--remote"], env)
    assert code == 0
    assert doc["remote"] == []  # nothing listed as a copy
    # Killed between the data object and its manifest, the data object is reported as an
    # orphan (never as a copy); killed earlier, the multipart upload was never completed.
    assert all(name.startswith("p/big_backup_") for name in doc["orphans"])
    code, doc = run(capsys, ["verify"], env)
    assert code == 0
    assert len(doc["backups"]) == 1


def _sidecar(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", *argv],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _s3_client(server: S3Server) -> Any:
    """A boto3 client of the test store (moto's dependency), to look behind sidecar's back."""
    import boto3  # type: ignore[import-untyped]  # moto's dependency

    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


def _wait_for_multipart_upload(server: S3Server, bucket: str, timeout: float = 60.0) -> None:
    """Until the store holds a multipart upload in progress in ``bucket``."""
    s3 = _s3_client(server)
    deadline = time.monotonic() + timeout
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert time.monotonic() < deadline, "no upload started"
        time.sleep(0.01)


def _wait_for_event(child: subprocess.Popen[str], event: str) -> None:
    assert child.stderr is not None
    for line in child.stderr:
        if f'"event": "{event}"' in line:
            return
    raise AssertionError(f"{event} never logged")


def test_wrong_credentials_give_one_clear_error_and_exit_5(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    import boto3  # moto's dependency: the IAM user, auth off

    with s3_server(INITIAL_NO_AUTH_ACTION_COUNT="4") as own:
        iam = boto3.client(
            "iam",
            endpoint_url=own.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",  # noqa: S106 - auth is still off
        )
        iam.create_user(UserName="sidecar")
        key = iam.create_access_key(UserName="sidecar")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="sidecar", PolicyName="s3", PolicyDocument=json.dumps(policy))
        own.make_bucket("authed")
        env = {
            "SIDECAR_DATABASE": str(bk_build_db(tmp_path / "p.db")),
            "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
            "SIDECAR_LOG_FORMAT": "json",
            "SIDECAR_OFFSITE": "s3://authed/p",
            "AWS_ENDPOINT_URL": own.url,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
        assert run(capsys, ["backup"], env)[0] == 0
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-" + key["SecretAccessKey"]
        code = cli.main(["backup"], env=env)
        captured = capsys.readouterr()
    assert code == 5
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "refused the credentials" in errors[0]
    assert "AWS_SECRET_ACCESS_KEY" in captured.err  # the hint names the setting
    assert "wrong-" not in captured.err


def test_credentials_never_appear_in_logs_json_or_manifests(
    capsys: pytest.CaptureFixture[str], age_env: dict[str, str], tmp_path: Path
) -> None:
    env = age_env
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    del env["AWS_SECRET_ACCESS_KEY"]
    env |= {
        "AWS_SECRET_ACCESS_KEY_FILE": str(secret_file),
        "SIDECAR_LOG_LEVEL": "debug",
    }
    seen = []
    for argv in (
        ["backup"],
        ["list", "--remote"],
        ["verify", "--remote", "--all"],
        ["health", "--backups-only"],
        ["restore", "--from", "offsite", "latest"],
    ):
        cli.main([*argv, "--json"], env=env)
        captured = capsys.readouterr()
        seen += [captured.out, captured.err]
    store = store_of(env)
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # a failure's message and hint too
    cli.main(["backup", "--json"], env=env)
    captured = capsys.readouterr()
    seen += [captured.out, captured.err]
    for meta in store.list(store.remote.prefix):
        if meta.key.endswith(".json"):
            seen.append(b"".join(store.get(meta.key)).decode())
    for path in Path(env["SIDECAR_BACKUP_DIR"]).rglob("*"):
        if path.is_file() and not path.name.endswith((".db", ".zst")):
            seen.append(path.read_text(errors="replace"))
    text = "\n".join(seen)
    assert SECRET not in text
    assert KEY_ID not in text
    assert "AGE-SECRET-KEY" not in text


def test_offsite_settings_without_offsite_are_an_error_never_ignored(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    age_key: tuple[Path, str],
) -> None:
    base = {
        "SIDECAR_DATABASE": str(bk_build_db(tmp_path / "p.db")),
        "SIDECAR_BACKUP_DIR": str(tmp_path / "b"),
        "SIDECAR_LOG_FORMAT": "json",
    }
    code, doc = run(capsys, ["backup"], base | {"SIDECAR_AGE_RECIPIENTS": age_key[1]})
    assert code == 2
    assert "SIDECAR_AGE_RECIPIENTS" in doc["error"]["message"]
    code, doc = run(
        capsys,
        ["backup"],
        base | {"SIDECAR_OFFSITE": "s3://b/p", "SIDECAR_AGE_RECIPIENTS": "age1nope"},
    )
    assert code == 2
    code, doc = run(capsys, ["backup"], base | {"SIDECAR_OFFSITE": "http://b/p"})
    assert code == 2
    assert "SIDECAR_OFFSITE" in doc["error"]["message"]
    code, doc = run(capsys, ["list", "--remote"], base)
    assert code == 2
    assert "SIDECAR_OFFSITE" in doc["error"]["message"]
    # A recipients file works as well as the keys themselves.
    keys = tmp_path / "recipients.txt"
    keys.write_text(f"# ops\n{age_key[1]}\n")
    from sidecar.environ import load_settings

    settings = load_settings({"SIDECAR_OFFSITE": "s3://b/p", "SIDECAR_AGE_RECIPIENTS": str(keys)})
    assert settings.age_recipients == (age_key[1],)
    assert SECRET not in repr(load_settings({"AWS_SECRET_ACCESS_KEY": SECRET}))


def test_deploy_uploads_after_the_commit_and_the_restart_and_a_failure_is_a_warning(
    server: S3Server, tmp_path: Path
) -> None:
    from sidecar.environ import load_settings
    from sidecar.pipeline.run import run_deploy
    from tests.fakes import FakeApps
    from tests.unit.test_pipeline import env_for, make_db

    server.make_bucket("deploys")
    offsite = {
        "SIDECAR_OFFSITE": "s3://deploys/app",
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "SIDECAR_COMPRESS": "zstd",
    }
    app = {"SIDECAR_APP": "app", "SIDECAR_WAIT_TIMEOUT": "5s"}
    settings = load_settings(env_for(tmp_path / "one", **app, **offsite))
    store = S3Store(
        Remote(
            "deploys", "app", endpoint=server.url, access_key_id=KEY_ID, secret_access_key=SECRET
        )
    )
    seen_at_restart: list[int] = []

    class Apps(FakeApps):
        def restart(self, app: Any, *, timeout: float) -> None:
            seen_at_restart.append(len(store.list("app")))
            super().restart(app, timeout=timeout)

    make_db(settings.require_database())
    report = run_deploy(settings, apps=Apps())
    assert report.changed
    assert report.restarted
    assert seen_at_restart == [0]  # nothing went out while the app waited
    assert report.offsite is not None
    assert report.offsite["id"] == str(report.backup).removesuffix(".zst")
    assert not [w for w in report.warnings if "offsite" in w]

    # An unreachable store: the change is committed and stays, the deploy warns.
    from tests.s3server import free_port

    down = offsite | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    settings = load_settings(env_for(tmp_path / "two", **app, **down))
    make_db(settings.require_database())
    report = run_deploy(settings, apps=FakeApps())
    assert report.changed
    assert report.restarted
    assert report.offsite is not None
    assert "kept locally" in report.offsite["error"]
    assert any("offsite copy failed" in w for w in report.warnings)
    again = run_deploy(settings, apps=FakeApps())
    assert not again.changed  # committed: nothing left to apply


def test_scheduled_drills_run_beside_the_scheduled_backups(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from sidecar.commands import offsite
    from sidecar.environ import load_settings
    from sidecar.signals import Stop

    assert run(capsys, ["backup"], env)[0] == 0
    settings = load_settings(env | {"SIDECAR_SCHEDULE": "1h", "SIDECAR_DRILL_SCHEDULE": "1s"})
    stop = Stop()
    with offsite.drills_scheduled(settings, stop):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            from sidecar.offsite import state

            if state.load(settings.backup_dir).get("last_drill"):
                break
            time.sleep(0.2)
    assert state.load(settings.backup_dir)["last_drill"]["ok"] is True
    code, _ = run(capsys, ["backup"], env | {"SIDECAR_DRILL_SCHEDULE": "1h"})
    assert code == 2  # a drill schedule without the long-running mode is never ignored


def test_restore_from_a_corrupted_offsite_copy_is_refused_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], age_env: dict[str, str]
) -> None:
    upload = run(capsys, ["backup"], age_env)[1]["offsite"]
    store = store_of(age_env)
    blob = bytearray(b"".join(store.get(upload["key"])))
    blob[-100] ^= 0x01  # inside the last age chunk: decryption fails
    store.put(upload["key"], lambda: [bytes(blob)])
    db = Path(age_env["SIDECAR_DATABASE"])
    before = db.read_bytes()
    code, doc = run(capsys, ["restore", "--from", "offsite", "latest"], age_env)
    assert code != 0
    assert doc["error"]["hint"]
    assert db.read_bytes() == before
    assert not [p for p in Path(age_env["SIDECAR_BACKUP_DIR"]).iterdir() if "restore" in p.name]


def test_an_upload_whose_source_fails_leaves_no_multipart_upload(server: S3Server) -> None:

    server.make_bucket("aborted")
    store = S3Store(
        Remote("aborted", "p", endpoint=server.url, access_key_id=KEY_ID, secret_access_key=SECRET),
        attempts=1,
    )

    def failing() -> Iterator[bytes]:
        for _ in range(20):  # past two 8 MiB parts
            yield os.urandom(1 << 20)
        raise OSError("the disk went away")

    with pytest.raises(Exception, match="disk went away"):
        store.put("p/x.db.zst", failing)
    s3 = _s3_client(server)
    assert not s3.list_multipart_uploads(Bucket="aborted").get("Uploads")
    assert store.list("p") == []


def test_parts_stay_at_the_s3_minimum_until_10000_would_not_hold_the_object() -> None:
    from sidecar.offsite.store import MAX_PARTS, MIN_PART, part_size

    assert part_size(0) == MIN_PART
    assert part_size(1 << 30) == MIN_PART
    for size in (60 << 30, 200 << 30):
        assert size * 1.1 / part_size(size) < MAX_PARTS
        assert part_size(size) % (1 << 20) == 0
