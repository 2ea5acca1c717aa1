"""The backups folder: retention (pure, property-tested), prune, lookup by ID, history."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.backup import names, store
from sidecar.backup.retention import prune, retention
from sidecar.backup.store import BackupInfo, find_backup
from sidecar.errors import RefusedError

NOW = datetime(2026, 11, 23, 21, 0, 0, tzinfo=UTC)


def _info(i: int, when: datetime, verified: bool = True) -> BackupInfo:
    name = f"portfolio_backup_production_{when.strftime(names.TIMESTAMP)}_{i}.db"
    return BackupInfo(
        id=name,
        path=Path("/backups") / name,
        manifest={"id": name, "verified": True} if verified else {},
        created_at=when,
        seq=i,
    )


backup_sets = st.lists(
    st.tuples(st.integers(min_value=0, max_value=400 * 24), st.booleans()), max_size=40
).map(
    lambda items: [
        _info(i, NOW - timedelta(hours=hours), verified)
        for i, (hours, verified) in enumerate(items)
    ]
)
policies = st.fixed_dictionaries(
    {
        "keep": st.integers(min_value=0, max_value=12),
        "keep_daily": st.integers(min_value=0, max_value=10),
        "keep_weekly": st.integers(min_value=0, max_value=6),
        "keep_monthly": st.integers(min_value=0, max_value=6),
    }
)


@settings(max_examples=300, deadline=None)
@given(backup_sets, policies)
def test_retention_partitions_and_never_loses_the_newest_verified(
    backups: list[BackupInfo], policy: dict[str, int]
) -> None:
    keep, delete = retention(backups, now=NOW, **policy)
    assert sorted(b.id for b in keep + delete) == sorted(b.id for b in backups)
    assert not {b.id for b in keep} & {b.id for b in delete}
    # Files without a manifest may not be ours: never deleted.
    assert all(b.verified for b in delete)
    verified = sorted((b for b in backups if b.verified), key=lambda b: b.sort_key)
    if verified:
        assert verified[-1] in keep
    # The `keep` newest verified ones are all kept.
    newest = verified[::-1][: max(policy["keep"], 1)]
    assert all(b in keep for b in newest)
    # Nothing deleted is newer than something kept by the count rule alone... unless a
    # calendar rule kept an older one: deletions are always older than the keep-N window.
    if newest and delete:
        assert max(b.sort_key for b in delete) < min(b.sort_key for b in newest)


@settings(max_examples=300, deadline=None)
@given(backup_sets, policies)
def test_retention_is_idempotent(backups: list[BackupInfo], policy: dict[str, int]) -> None:
    keep, _ = retention(backups, now=NOW, **policy)
    again_keep, again_delete = retention(keep, now=NOW, **policy)
    assert again_delete == []
    assert again_keep == keep


@settings(max_examples=200, deadline=None)
@given(backup_sets, st.integers(min_value=1, max_value=10))
def test_keep_daily_keeps_one_per_recent_day(backups: list[BackupInfo], days: int) -> None:
    keep, _ = retention(backups, keep=1, keep_daily=days, now=NOW)
    verified_days = sorted({b.created_at.date() for b in backups if b.verified}, reverse=True)
    kept_days = {b.created_at.date() for b in keep if b.verified}
    assert set(verified_days[:days]) <= kept_days


def test_retention_keeps_the_ten_newest_by_default() -> None:
    backups = [_info(i, NOW - timedelta(hours=i)) for i in range(15)]
    keep, delete = retention(backups, keep=10, now=NOW)
    assert [b.seq for b in keep] == list(range(10))
    assert [b.seq for b in delete] == list(range(10, 15))


def test_retention_keeps_backups_dated_in_the_future() -> None:
    future = _info(1, NOW + timedelta(days=3))
    backups = [future, *(_info(i, NOW - timedelta(hours=i)) for i in range(2, 6))]
    keep, delete = retention(backups, keep=1, now=NOW)
    assert future in keep
    assert len(delete) == 4


def _write_backup(
    folder: Path, when: datetime, *, manifest: bool = True, stem: str = "portfolio"
) -> str:
    name = f"{stem}_backup_production_{when.strftime(names.TIMESTAMP)}.db"
    (folder / name).write_bytes(b"x" * 10)
    if manifest:
        facts = {"size": 10, "stored_sha256": hashlib.sha256(b"x" * 10).hexdigest()}
        (folder / f"{name}.json").write_text(json.dumps({"id": name, "verified": True, **facts}))
    return name


def test_prune_deletes_only_its_own_old_verified_backups(tmp_path: Path) -> None:
    names = [_write_backup(tmp_path, NOW - timedelta(days=d)) for d in range(5)]
    unverified = _write_backup(tmp_path, NOW - timedelta(days=9), manifest=False)
    other_db = _write_backup(tmp_path, NOW - timedelta(days=9), stem="other")
    (tmp_path / "notes.txt").write_text("mine")

    dry = prune(
        tmp_path,
        keep=2,
        database=Path("/data/portfolio.db"),
        environment="production",
        dry_run=True,
    )
    assert [b.id for b in dry.deleted] == names[2:]
    assert all((tmp_path / n).exists() for n in names)

    done = prune(
        tmp_path, keep=2, database=Path("/data/portfolio.db"), environment="production", now=NOW
    )
    assert [b.id for b in done.deleted] == names[2:]
    left = set(os.listdir(tmp_path))
    assert {*names[:2], unverified, other_db, "notes.txt"} <= left
    assert not {*names[2:], *(f"{n}.json" for n in names[2:])} & left


def test_prune_never_deletes_a_protected_backup(tmp_path: Path) -> None:
    old = _write_backup(tmp_path, NOW - timedelta(days=3))
    _write_backup(tmp_path, NOW)
    outcome = prune(tmp_path, keep=1, protect=(old,), now=NOW)
    assert outcome.deleted == []
    assert (tmp_path / old).exists()


def test_find_backup_accepts_listed_names_only(tmp_path: Path) -> None:
    name = _write_backup(tmp_path, NOW)
    assert find_backup(tmp_path, name).id == name
    assert find_backup(tmp_path, "latest", verified_only=True).id == name
    for bad in (f"../{name}", f"/etc/{name}", "..", f"sub/{name}"):
        with pytest.raises(RefusedError, match="path"):
            find_backup(tmp_path, bad)
    with pytest.raises(RefusedError, match="no backup named"):
        find_backup(tmp_path, "portfolio_backup_production_20200101T000000Z.db")


def test_symlinked_backups_are_never_listed_nor_restorable(tmp_path: Path) -> None:
    outside = tmp_path / "outside.db"
    outside.write_bytes(b"x")
    folder = tmp_path / "backups"
    folder.mkdir()
    link = "portfolio_backup_production_20261123T210000Z.db"
    (folder / link).symlink_to(outside)
    (folder / f"{link}.json").write_text(json.dumps({"id": link, "verified": True}))
    assert store.list_backups(folder) == []
    with pytest.raises(RefusedError, match="symlink"):
        find_backup(folder, link)


def test_missing_backups_are_manifests_without_their_file(tmp_path: Path) -> None:
    name = _write_backup(tmp_path, NOW)
    (tmp_path / name).unlink()
    assert store.missing_backups(tmp_path) == [name]
    assert store.list_backups(tmp_path) == []


def test_history_appends_json_lines(tmp_path: Path) -> None:
    store.append_history(tmp_path, {"event": "backup", "id": "a"})
    store.append_history(tmp_path, {"event": "prune", "deleted": []})
    lines = (tmp_path / names.HISTORY_NAME).read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["backup", "prune"]
    assert oct((tmp_path / names.HISTORY_NAME).stat().st_mode & 0o777) == "0o600"


def _with_counts(info: BackupInfo, counts: dict[str, int], **extra: object) -> BackupInfo:
    info.manifest.update(row_counts=counts, **extra)
    return info


def test_rows_vanished_finds_a_wiped_database_not_a_drained_queue() -> None:
    full = {"users": 10, "portfolios": 5, "transactions": 200, "jobs": 3, "empty": 0}
    before = _with_counts(_info(1, NOW - timedelta(hours=1)), full)
    # The volume was wiped; the app re-created its schema, seeded a user and wrote a little.
    reborn = {"users": 1, "portfolios": 1, "transactions": 19, "jobs": 0, "empty": 0}
    assert store.rows_vanished(before, reborn) == {
        "since": before.id,
        "rows_before": 218,
        "rows_now": 21,
        "tables": {  # those now under a tenth of their rows
            "transactions": {"before": 200, "now": 19},
            "jobs": {"before": 3, "now": 0},
        },
    }
    # Missing tables count as empty (a database re-created from an older schema).
    assert store.rows_vanished(before, {"users": 0}) is not None
    # A drained job queue, a purge of a fifth of the rows: data changes, not data loss.
    assert store.rows_vanished(before, {**full, "jobs": 0}) is None
    assert store.rows_vanished(before, {**full, "transactions": 160, "users": 0}) is None
    assert store.rows_vanished(before, {**reborn, "transactions": 22}) is None  # 10 %
    # A first backup of an empty database has nothing to lose.
    empty = _with_counts(_info(2, NOW - timedelta(hours=1)), dict.fromkeys(full, 0))
    assert store.rows_vanished(empty, dict.fromkeys(full, 0)) is None


def test_a_finding_is_carried_forward_until_the_data_is_back() -> None:
    finding = {"since": "the-good-one.db", "rows_before": 210, "rows_now": 0, "tables": {}}
    after = _with_counts(
        _info(2, NOW - timedelta(hours=1)), {"users": 0, "transactions": 0},
        rows_vanished=finding,
    )  # fmt: skip
    # Still (nearly) empty: the same finding, naming the same backup.
    assert store.rows_vanished(after, {"users": 1, "transactions": 5}) == {
        **finding,
        "rows_now": 6,
    }
    # Restored: nothing vanished any more.
    assert store.rows_vanished(after, {"users": 10, "transactions": 200}) is None


def test_retention_keeps_the_last_backup_before_the_data_vanished() -> None:
    good = _with_counts(_info(0, NOW - timedelta(hours=20)), {"users": 10})
    lost = {"since": good.id, "rows_before": 10, "rows_now": 0, "tables": {}}
    emptied = [
        _with_counts(_info(i, NOW - timedelta(hours=20 - i)), {"users": 0}, rows_vanished=lost)
        for i in range(1, 15)
    ]
    keep, delete = retention([good, *emptied], keep=3, now=NOW)
    assert good in keep  # 14 backups of the emptied database did not push it out
    assert [b.seq for b in delete] == list(range(1, 12))
    # Once the data is back and the backups naming it are gone, it is pruned like any other.
    restored = [
        _with_counts(_info(i, NOW - timedelta(minutes=i)), {"users": 10}) for i in (1, 2, 3)
    ]
    keep, delete = retention([good, *emptied, *restored], keep=3, now=NOW)
    assert good in delete
