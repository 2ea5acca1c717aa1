"""Pings and notifications through the real CLI, to a real HTTP receiver on 127.0.0.1.

The receiver (tests/receiver.py) stands in for a webhook (apprise's ``json://``) and for a
healthchecks.io-style ping service. What a person reads is checked field by field; a
receiver that hangs or answers 500 may delay a command by the bound, and change nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar import alerts, cli
from sidecar.backup import store
from sidecar.errors import ExitCode
from tests.receiver import Receiver, receiver
from tests.unit.conftest import clock_ahead, imports_of


@pytest.fixture(autouse=True)
def _no_channels_left() -> Any:
    yield
    alerts.configure(database=None, environment="test")


@pytest.fixture
def al_env(bk_db: Callable[..., Path], bk_dir: Path) -> dict[str, str]:
    db = bk_db("wal")
    return {
        "SIDECAR_DATABASE": str(db),
        "SIDECAR_BACKUP_DIR": str(bk_dir),
        "SIDECAR_LOG_FORMAT": "json",
        "SIDECAR_NOTIFY_TIMEOUT": "2s",
    }


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]) -> Any:
    code = cli.main([*argv, "--json"], env=env)
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    return code, json.loads(captured.out), events


def _break(db: Path) -> None:
    """A file that is no SQLite database any more: the next backup fails (exit 3)."""
    db.write_bytes(b"this is not a database" * 100)
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)


def hook_url(hook: Receiver) -> str:
    """apprise's JSON webhook to the receiver: a POST of {title, message, type} to /hook."""
    return f"json://127.0.0.1:{hook.port}/hook"


def notifying(env: dict[str, str], hook: Receiver, **more: str) -> dict[str, str]:
    return {**env, "SIDECAR_NOTIFY": hook_url(hook), **more}


def test_a_backup_pings_start_then_success(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    with receiver() as hc:
        env = {**al_env, "SIDECAR_PING_URL": hc.url("/ping/abc")}
        code, _doc, _ = _run(capsys, ["backup"], env)
        assert code == 0
        assert [(r.method, r.path) for r in hc.requests] == [
            ("POST", "/ping/abc/start"),
            ("POST", "/ping/abc"),
        ]


def test_a_ping_url_with_a_query_keeps_it_after_start_and_fail(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    """healthchecks.io's ``.../<uuid>?create=1``: /start goes on the path, not the query."""
    with receiver() as hc:
        env = {**al_env, "SIDECAR_PING_URL": hc.url("/ping/abc?create=1")}
        code, _doc, _ = _run(capsys, ["backup"], env)
        assert code == 0
        assert [(r.method, r.path) for r in hc.requests] == [
            ("POST", "/ping/abc/start?create=1"),
            ("POST", "/ping/abc?create=1"),
        ]


def test_a_failed_backup_pings_fail_with_the_error_and_exit_code(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    _break(Path(al_env["SIDECAR_DATABASE"]))
    with receiver() as hc:
        env = {**al_env, "SIDECAR_PING_URL": hc.url("/ping/abc/")}
        code, doc, _ = _run(capsys, ["backup"], env)
        assert code == ExitCode.REFUSED
        assert hc.paths() == ["/ping/abc/start", "/ping/abc/fail"]
        body = hc.requests[1].body.decode()
        assert body.startswith(f"exit_code={int(ExitCode.REFUSED)}\n")
        assert doc["error"]["message"] in body
        assert f"hint: {doc['error']['hint']}" in body


def test_a_failure_notification_arrives_with_what_a_person_needs(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    db = Path(al_env["SIDECAR_DATABASE"])
    _break(db)
    with receiver() as hook:
        env = notifying(al_env, hook)
        code, doc, events = _run(capsys, ["backup"], env)
        assert code == ExitCode.REFUSED
        [request] = hook.wait_for(1)
        assert request.path == "/hook"
        message = request.json()
        assert message["type"] == "failure"
        # One line: command, database, outcome (and exit code), and where it came from.
        assert message["title"].startswith(f"sidecar: backup of {db} failed (exit 3) on ")
        assert "(environment production)" in message["title"]
        body = message["message"].splitlines()
        assert message["title"].startswith(f"sidecar: {body[0]} on ")
        assert f"error: {doc['error']['message']}" in body
        assert f"hint: {doc['error']['hint']}" in body
        assert any(line.startswith("host: ") for line in body)
    assert {"event": "notify.sent", "notify_event": "backup.failed"}.items() <= next(
        e for e in events if e["event"] == "notify.sent"
    ).items()


def test_by_default_only_failures_are_sent_and_always_sends_the_backup_taken(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    with receiver() as hook:
        env = notifying(al_env, hook)
        assert _run(capsys, ["backup"], env)[0] == 0
        assert hook.requests == []
        code, doc, _ = _run(capsys, ["backup"], {**env, "SIDECAR_NOTIFY_ON": "always"})
        assert code == 0
        [request] = hook.wait_for(1)
        message = request.json()
        assert message["type"] == "success"
        assert "backup of" in message["title"]
        assert "done" in message["title"]
        assert f"backup: {doc['backup']['id']}" in message["message"].splitlines()


def test_notify_on_a_list_of_events_and_unknown_names_are_a_config_error(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    with receiver() as hook:
        env = notifying(al_env, hook, SIDECAR_NOTIFY_ON="backup.done, deploy.failed")
        assert _run(capsys, ["backup"], env)[0] == 0
        assert len(hook.wait_for(1)) == 1
        code, doc, _ = _run(capsys, ["backup"], {**env, "SIDECAR_NOTIFY_ON": "backup.oops"})
        assert code == ExitCode.USAGE
        assert "SIDECAR_NOTIFY_ON" in doc["error"]["message"]
        code, doc, _ = _run(capsys, ["backup"], {**env, "SIDECAR_NOTIFY": "127.0.0.1/hook"})
        assert code == ExitCode.USAGE
        assert "SIDECAR_NOTIFY" in doc["error"]["message"]


@pytest.mark.parametrize(
    "argv", [["backup"], ["deploy"], ["plan"], ["migrate"], ["restore", "latest"]]
)
def test_a_notify_url_apprise_cannot_use_is_exit_2_before_any_work(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str], bk_dir: Path, argv: list[str]
) -> None:
    """A typo in one SIDECAR_NOTIFY URL would silence every notification, found only when a
    failure needed sending: every command that notifies refuses it at start, naming the URL
    without its secrets."""
    with receiver() as hook:
        env = notifying(al_env, hook)
        env["SIDECAR_NOTIFY"] += " jsno://alice:s3cret@127.0.0.1/t0ken"
        code = cli.main([*argv, "--json"], env=env)
        captured = capsys.readouterr()
        assert code == ExitCode.USAGE
        error = json.loads(captured.out)["error"]
        assert error["message"] == (
            "SIDECAR_NOTIFY: URL 2 of 2 (jsno://...): no apprise service is called jsno://; "
            "did you mean json://?"
        )
        assert "SIDECAR_NOTIFY" in error["hint"]
        assert "s3cret" not in captured.out + captured.err
        assert "t0ken" not in captured.out + captured.err
        assert f"error: {error['message']}" in captured.err.splitlines()
        assert hook.requests == []
    assert store.list_backups(bk_dir) == []


def test_a_notify_url_of_a_known_service_missing_a_part_is_exit_2(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    code, doc, _ = _run(capsys, ["backup"], {**al_env, "SIDECAR_NOTIFY": "slack://T0KEN/x"})
    assert code == ExitCode.USAGE
    assert doc["error"]["message"].startswith("SIDECAR_NOTIFY: URL 1 of 1 (slack://...): ")
    assert "T0KEN" not in json.dumps(doc)


def test_one_bad_notify_url_never_silences_the_good_ones(
    al_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the start-up check (alerts configured directly), the good URL still hears."""
    with receiver() as hook:
        alerts.configure(
            database=Path(al_env["SIDECAR_DATABASE"]),
            environment="test",
            notify_urls=f"{hook_url(hook)} jsno://x",
            notify_on=frozenset({"offsite.failed"}),
        )
        alerts.event("offsite.failed", error="bucket gone", exit_code=5)
        [request] = hook.wait_for(1)
        assert "offsite upload of" in request.json()["title"]
    assert "notify.bad_url" in capsys.readouterr().err


def test_commands_that_never_notify_never_import_apprise(
    al_env: dict[str, str], bk_dir: Path
) -> None:
    """The HEALTHCHECK (health) and list, verify, prune do not read SIDECAR_NOTIFY: they
    never pay for apprise, whatever it holds (the long-running backup refused it at start)."""
    import os

    env = {**os.environ, **al_env, "SIDECAR_NOTIFY": "jsno://x"}
    code, loaded, err = imports_of(["list"], env, ["apprise"])
    assert code == 0, err
    assert loaded == [False]


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_a_receiver_that_hangs_or_fails_costs_at_most_the_bound_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str], bk_dir: Path, mode: str
) -> None:
    started = time.monotonic()
    plain_code, plain_doc, _ = _run(capsys, ["backup", "--no-prune"], al_env)
    plain = time.monotonic() - started
    with receiver(mode) as bad:
        env = {
            **al_env,
            "SIDECAR_NOTIFY_TIMEOUT": "1s",
            "SIDECAR_PING_URL": bad.url("/ping/x"),
            "SIDECAR_NOTIFY": hook_url(bad),
            "SIDECAR_NOTIFY_ON": "always",
        }
        started = time.monotonic()
        code, doc, events = _run(capsys, ["backup", "--no-prune"], env)
        took = time.monotonic() - started
    assert code == plain_code == 0
    assert doc.keys() == plain_doc.keys()
    assert doc["ok"] is True
    assert len(store.list_backups(bk_dir)) == 2
    # Three bounded side calls (start ping, success ping, notification) of 1 s each.
    assert took < plain + 3 * 1.0 + 2.0, (took, plain)
    warnings = {e["event"] for e in events if e.get("level") == "warning"}
    assert {"ping.failed", "notify.not_sent"} & warnings or "ping.timeout" in warnings
    if mode == "fail":
        # Bounded retries: each ping tried twice, never more.
        pings = [p for p in bad.paths() if p.startswith("/ping/")]
        assert pings.count("/ping/x/start") == 2
        assert pings.count("/ping/x") == 2


def test_data_that_vanished_is_announced_with_the_restore_command(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    with receiver() as hook:
        env = notifying(al_env, hook)
        code, first, _ = _run(capsys, ["backup"], env)
        assert code == 0
        conn = sqlite3.connect(al_env["SIDECAR_DATABASE"])
        conn.execute("DELETE FROM transactions")
        conn.commit()
        conn.close()
        code, _, _ = _run(capsys, ["backup"], env)
        assert code == 0
        [request] = hook.wait_for(1)
        message = request.json()
        assert message["type"] == "failure"
        assert message["title"].startswith("sidecar: data vanished from ")
        lines = message["message"].splitlines()
        assert f"restore: sidecar restore {first['backup']['id']}" in lines


def test_a_failed_backup_past_the_max_age_also_says_backups_are_stale(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    with receiver() as hook:
        env = notifying(al_env, hook, SIDECAR_MAX_BACKUP_AGE="1s")
        code, first, _ = _run(capsys, ["backup"], env)
        assert code == 0
        time.sleep(1.2)
        _break(Path(al_env["SIDECAR_DATABASE"]))
        assert _run(capsys, ["backup"], env)[0] == ExitCode.REFUSED
        titles = [r.json()["title"] for r in hook.wait_for(2)]
        assert len(titles) == 2
        assert "backup of" in titles[0]
        assert "failed" in titles[0]
        assert "backups of" in titles[1]
        assert "are stale" in titles[1]
        stale = hook.requests[1].json()["message"]
        assert f"backup: {first['backup']['id']}" in stale.splitlines()


def test_stale_backups_and_their_metrics_are_this_databases_in_a_shared_folder(
    capsys: pytest.CaptureFixture[str],
    al_env: dict[str, str],
    bk_db: Callable[..., Path],
    bk_dir: Path,
    tmp_path: Path,
) -> None:
    """Two databases, one backups folder (a layout the README supports): b's fresh backup
    neither hides that a's are stale nor stands in a's metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    other = {**al_env, "SIDECAR_DATABASE": str(bk_db("wal", name="other.db"))}
    textfile = tmp_path / "sidecar.prom"
    with receiver() as hook:
        env = notifying(al_env, hook, SIDECAR_MAX_BACKUP_AGE="2s",
                        SIDECAR_METRICS_FILE=str(textfile))  # fmt: skip
        code, first, _ = _run(capsys, ["backup"], env)
        assert code == 0
        time.sleep(2.2)
        assert _run(capsys, ["backup"], other)[0] == 0
        assert len(store.list_backups(bk_dir)) == 2
        _break(Path(al_env["SIDECAR_DATABASE"]))
        assert _run(capsys, ["backup"], env)[0] == ExitCode.REFUSED
        titles = [r.json()["title"] for r in hook.wait_for(2)]
        assert any("are stale" in title for title in titles), titles
        stale = next(r.json() for r in hook.requests if "are stale" in r.json()["title"])
        assert f"backup: {first['backup']['id']}" in stale["message"].splitlines()
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(textfile.read_text())
        for s in family.samples
        if s.labels.get("database") == Path(al_env["SIDECAR_DATABASE"]).name
    }
    assert samples["sidecar_backups_kept"] == 1
    mine = store.find_backup(bk_dir, first["backup"]["id"])
    assert samples["sidecar_backup_newest_timestamp_seconds"] == mine.taken_at.timestamp()


def test_a_failed_backup_after_one_dated_in_the_future_says_check_the_clock(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newest backup taken with the clock a day ahead is no fresh backup: when backups
    then fail, the people responsible hear that, and why its age says nothing."""
    from sidecar.backup import create

    with receiver() as hook:
        env = notifying(al_env, hook)
        with monkeypatch.context() as patched:
            patched.setattr(create, "datetime", clock_ahead(1))
            assert _run(capsys, ["backup"], env)[0] == 0
        _break(Path(al_env["SIDECAR_DATABASE"]))
        assert _run(capsys, ["backup"], env)[0] == ExitCode.REFUSED
        stale = [r.json() for r in hook.wait_for(2) if "are stale" in r.json()["title"]]
        assert len(stale) == 1
        assert "in the future: check the host's clock" in stale[0]["message"]


def test_an_event_from_anywhere_is_one_line(al_env: dict[str, str]) -> None:
    """The hook other parts (offsite uploads, drills) call: ``alerts.event(name, ...)``."""
    with receiver() as hook:
        alerts.configure(
            database=Path(al_env["SIDECAR_DATABASE"]),
            environment="staging",
            notify_urls=hook_url(hook),
            notify_on=frozenset({"offsite.failed"}),
        )
        alerts.event("offsite.done", backup="b1")
        alerts.event(
            "offsite.failed", error="bucket gone", hint="check it", exit_code=5, backup="b1"
        )
        [request] = hook.wait_for(1)
        message = request.json()
        assert "offsite upload of" in message["title"]
        assert "failed (exit 5)" in message["title"]
        assert "error: bucket gone" in message["message"]
        assert "backup: b1" in message["message"]
        assert "(environment staging)" in message["message"]


# ---- deploy: done, refused, app not healthy after the restart ------------------------------


@pytest.fixture
def al_deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """A deploy of the v2 schema over a v1 database through the CLI, the Docker seam faked."""
    from sidecar.containers import engine
    from tests.fakes import FakeApps
    from tests.unit.test_pipeline import env_for, make_db

    make_db(tmp_path / "data" / "portfolio.db")

    def run(capsys: pytest.CaptureFixture[str], *, healthy: bool = True, **env: str) -> Any:
        apps = FakeApps(healthy=healthy)
        monkeypatch.setattr(engine, "connect", lambda required: apps)
        full = env_for(
            tmp_path,
            SIDECAR_APP="app",
            SIDECAR_WAIT_TIMEOUT="5s",
            SIDECAR_NOTIFY_TIMEOUT="2s",
            **env,
        )
        return _run(capsys, ["deploy"], full)

    return run


def test_a_deploy_pings_and_says_done_with_its_backup(
    capsys: pytest.CaptureFixture[str], al_deploy: Callable[..., Any]
) -> None:
    with receiver() as hook, receiver() as hc:
        code, doc, _ = al_deploy(
            capsys,
            SIDECAR_NOTIFY=hook_url(hook),
            SIDECAR_NOTIFY_ON="always",
            SIDECAR_PING_URL=hc.url("/d"),
        )
        assert code == 0
        assert hc.paths() == ["/d/start", "/d"]
        [request] = hook.wait_for(1)
        message = request.json()
        assert "deploy of" in message["title"]
        assert " done on " in message["title"]
        assert f"backup: {doc['backup']}" in message["message"].splitlines()


def test_a_refused_deploy_is_announced_as_refused(
    capsys: pytest.CaptureFixture[str], al_deploy: Callable[..., Any], tmp_path: Path
) -> None:
    from tests.unit.test_pipeline import V1

    schema = tmp_path / "schema.sql"
    schema.write_text(
        V1 + 'CREATE UNIQUE INDEX "Transaction_portfolio_once" ON "Transaction"("portfolioId");\n'
    )
    with receiver() as hook, receiver() as hc:
        code, _doc, _ = al_deploy(
            capsys,
            SIDECAR_SCHEMA=str(schema),
            SIDECAR_NOTIFY=hook_url(hook),
            SIDECAR_PING_URL=hc.url("/d"),
        )
        assert code == ExitCode.REFUSED
        assert hc.paths() == ["/d/start", "/d/fail"]
        [request] = hook.wait_for(1)
        message = request.json()
        assert "deploy of" in message["title"]
        assert "refused (exit 3)" in message["title"]
        assert "Transaction_portfolio_once" in message["message"]


def test_an_app_not_healthy_after_the_restart_names_the_restore_command(
    capsys: pytest.CaptureFixture[str], al_deploy: Callable[..., Any], tmp_path: Path
) -> None:
    with receiver() as hook:
        code, _doc, _ = al_deploy(capsys, healthy=False, SIDECAR_NOTIFY=hook_url(hook))
        assert code == ExitCode.HEALTH
        backup = store.list_backups(tmp_path / "backups")[0].id
        [request] = hook.wait_for(1)
        message = request.json()
        assert "the app is not healthy after the restart (exit 4)" in message["title"]
        lines = message["message"].splitlines()
        assert f"backup: {backup}" in lines
        assert f"restore: sidecar restore {backup}" in lines


def test_a_deploy_stopped_by_sigterm_before_any_change_reports_nothing_done(
    tmp_path: Path,
) -> None:
    """A real process waiting for a busy app's lock, then SIGTERM: exit 0, nothing changed,
    and so no success ping and no "deploy done" (the /start ping already went)."""
    from tests.unit.test_pipeline import env_for, make_db, sigterm_while_waiting_for_the_lock

    db = make_db(tmp_path / "data" / "portfolio.db")
    with receiver() as hook, receiver() as hc:
        env = notifying(env_for(tmp_path, SIDECAR_WAIT_TIMEOUT="60s"), hook,
                        SIDECAR_NOTIFY_ON="always", SIDECAR_PING_URL=hc.url("/d"))  # fmt: skip
        code, out, err, _ = sigterm_while_waiting_for_the_lock(db, env)
        assert code == 0, err
        assert "aborted" in out
        assert hc.paths() == ["/d/start"]
        assert hook.requests == []


# ---- restore and migrate: run by hand, a notification and nothing else ---------------------


def test_a_refused_restore_is_announced_and_pings_nothing(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str], bk_dir: Path
) -> None:
    code, made, _ = _run(capsys, ["backup"], al_env)
    assert code == 0
    path = bk_dir / made["backup"]["id"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with receiver() as hook, receiver() as hc:
        env = notifying(al_env, hook, SIDECAR_PING_URL=hc.url("/p"))
        code, doc, _ = _run(capsys, ["restore", made["backup"]["id"]], env)
        assert code == ExitCode.REFUSED
        [request] = hook.wait_for(1)
        message = request.json()
        db = al_env["SIDECAR_DATABASE"]
        assert message["title"].startswith(f"sidecar: restore of {db} failed (exit 3) on ")
        assert message["type"] == "failure"
        assert f"error: {doc['error']['message']}" in message["message"].splitlines()
        assert f"hint: {doc['error']['hint']}" in message["message"].splitlines()
        # The dead-man ping times scheduled backups and deploys, not a restore.
        assert hc.paths() == []


def test_a_restore_is_announced_done_with_its_backup_and_a_dry_run_is_not(
    capsys: pytest.CaptureFixture[str], al_env: dict[str, str]
) -> None:
    code, made, _ = _run(capsys, ["backup"], al_env)
    assert code == 0
    with receiver() as hook, receiver() as hc:
        env = notifying(al_env, hook, SIDECAR_NOTIFY_ON="always", SIDECAR_PING_URL=hc.url("/p"))
        code, _doc, _ = _run(capsys, ["restore", "latest", "--dry-run"], env)
        assert code == 0
        code, _doc, _ = _run(capsys, ["restore", "latest"], env)
        assert code == 0
        [request] = hook.wait_for(1)
        time.sleep(0.2)  # nothing else arrives: the dry run said nothing
        assert len(hook.requests) == 1
        message = request.json()
        assert " restore of " in message["title"]
        assert " done on " in message["title"]
        assert f"backup: {made['backup']['id']}" in message["message"].splitlines()
        assert hc.paths() == []


def test_a_migrate_is_announced_refused_or_done_without_pings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.unit.test_pipeline import V1, env_for, make_db

    make_db(tmp_path / "data" / "portfolio.db")
    bad = tmp_path / "bad.sql"
    bad.write_text(
        V1 + 'CREATE UNIQUE INDEX "Transaction_portfolio_once" ON "Transaction"("portfolioId");\n'
    )
    with receiver() as hook, receiver() as hc:
        more = {"SIDECAR_NOTIFY": hook_url(hook), "SIDECAR_PING_URL": hc.url("/p")}
        env = env_for(tmp_path, SIDECAR_SCHEMA=str(bad), SIDECAR_NOTIFY_TIMEOUT="2s", **more)
        code, _doc, _ = _run(capsys, ["migrate"], env)
        assert code == ExitCode.REFUSED
        [refused] = hook.wait_for(1)
        assert "migrate of" in refused.json()["title"]
        assert "refused (exit 3)" in refused.json()["title"]
        assert "Transaction_portfolio_once" in refused.json()["message"]

        env = env_for(tmp_path, SIDECAR_NOTIFY_ON="always", SIDECAR_NOTIFY_TIMEOUT="2s", **more)
        code, doc, _ = _run(capsys, ["migrate"], env)
        assert code == 0
        done = hook.wait_for(2)[1].json()
        assert "migrate of" in done["title"]
        assert " done on " in done["title"]
        assert f"backup: {doc['backup']}" in done["message"].splitlines()
        assert hc.paths() == []
