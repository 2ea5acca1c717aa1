"""SIDECAR_SCHEMA=<service>:<path>: the desired schema read from the app's container, as a tar
stream from the Docker archive endpoint. The streams here are crafted by hand (tarfile), the
hostile ones included; the pipeline runs for real on SQLite files behind the Docker fake."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.errors import ConfigError, ExitCode
from sidecar.pipeline.run import run_deploy
from sidecar.schema import source
from tests.fakes import FakeApps
from tests.unit.test_pipeline import ROOT, digest, make_db, settings_for

MIGRATIONS = ROOT / "deploy/demo-app/prisma/migrations"


def tar_of(
    entries: Sequence[tarfile.TarInfo | tuple[str, bytes]], chunk: int = 1000
) -> list[bytes]:
    """A tar stream, in chunks, as docker-py yields it: (name, data) pairs are files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return [raw[i : i + chunk] for i in range(0, len(raw), chunk)]


def folder_tar(folder: Path) -> list[bytes]:
    """What the archive endpoint sends for ``folder``: entries named from its base name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, arcname=folder.name)
    return [buffer.getvalue()]


def member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_parse_tells_container_paths_from_local_ones() -> None:
    parsed = source.parse("app:/app/prisma/migrations")
    assert parsed is not None
    assert (parsed.container, str(parsed.path)) == ("app", "/app/prisma/migrations")
    assert str(parsed) == "app:/app/prisma/migrations"
    assert source.parse("/schema") is None
    assert source.parse("./app:/x") is None  # the way to name such a local path
    assert source.parse("schema/v2") is None


@pytest.mark.parametrize("spec", ["app:/", "app:/app/../etc", "app:/app/./x"])
def test_a_container_path_must_be_clean(spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        source.parse(spec)
    assert caught.value.exit_code == ExitCode.USAGE


def test_the_migrations_folder_from_the_container_is_the_desired_schema(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SIDECAR_SCHEMA="app:/app/prisma/migrations")
    make_db(settings.require_database())
    apps = FakeApps(archives={"/app/prisma/migrations": folder_tar(MIGRATIONS)})
    report = run_deploy(settings, apps=apps)
    assert report.changed
    assert "get_archive:demo-app-1:/app/prisma/migrations" in apps.calls
    assert apps.calls.count("find:app:None") == 1  # SIDECAR_APP's container, looked up once
    # The end state of the app's migrations is deploy/schema/v2: nothing left to plan.
    local = settings_for(tmp_path)
    assert run_deploy(local, apps=FakeApps()).plan["operations"] == []


def test_a_single_file_works_too(tmp_path: Path) -> None:
    schema_sql = (ROOT / "deploy/schema/v2/schema.sql").read_bytes()
    apps = FakeApps(archives={"/app/schema.sql": tar_of([("schema.sql", schema_sql)])})
    desired = source.load_desired(Path("app:/app/schema.sql"), apps)
    assert "Watchlist" in {table.name for table in desired.tables}


Entry = tarfile.TarInfo | tuple[str, bytes]
HOSTILE: dict[str, list[Entry]] = {
    "traversal": [("migrations/../../etc/cron.d/x", b"boom")],
    "absolute": [("/etc/passwd", b"root::0:0")],
    "outside the folder": [("other/schema.sql", b"CREATE TABLE t (a);")],
    "symlink": [member("migrations", tarfile.DIRTYPE),
                member("migrations/schema.sql", tarfile.SYMTYPE, "/etc/shadow")],
    "hard link": [member("migrations", tarfile.DIRTYPE),
                  member("migrations/schema.sql", tarfile.LNKTYPE, "/etc/shadow")],
    "device": [member("migrations", tarfile.DIRTYPE),
               member("migrations/null", tarfile.CHRTYPE)],
    "fifo": [member("migrations", tarfile.DIRTYPE), member("migrations/p", tarfile.FIFOTYPE)],
    "twice": [("migrations/a.sql", b"CREATE TABLE a (x);"),
              ("migrations/a.sql", b"CREATE TABLE b (x);")],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_write_nothing(tmp_path: Path, case: str) -> None:
    dest = tmp_path / "extract"
    dest.mkdir()
    with pytest.raises(ConfigError) as caught:
        source.extract(tar_of(HOSTILE[case]), dest, "migrations")
    assert caught.value.exit_code == ExitCode.USAGE
    assert "archive is refused" in caught.value.message
    assert not list(tmp_path.parent.glob("etc")), "something escaped the folder"
    for path in dest.rglob("*"):
        assert path.resolve().is_relative_to(dest.resolve())
        assert not path.is_symlink()


def test_an_archive_over_the_size_cap_is_refused_as_it_streams(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(source, "MAX_BYTES", 64 * 1024)
    served: list[int] = []

    def endless() -> object:
        head = tar_of([("migrations/big.sql", b"-- x\n" * 1_000_000)], chunk=16 * 1024)
        for index, chunk in enumerate(head):
            served.append(index)
            yield chunk

    with pytest.raises(ConfigError, match="more than 65536 bytes"):
        source.extract(endless(), tmp_path, "migrations")  # type: ignore[arg-type]
    assert len(served) < 10  # stopped reading at the cap, not after the whole stream


@pytest.mark.parametrize(
    "stream", [[b""], [b"this is not a tar stream" * 40]], ids=["empty", "garbage"]
)
def test_empty_or_garbage_streams_are_refused(tmp_path: Path, stream: list[bytes]) -> None:
    with pytest.raises(ConfigError, match="archive is refused"):
        source.extract(stream, tmp_path, "migrations")


def test_a_path_missing_in_the_container_is_exit_2_and_changes_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SIDECAR_SCHEMA="app:/app/prisma/nope")
    db = make_db(settings.require_database())
    before = digest(db)
    with pytest.raises(ConfigError) as caught:
        run_deploy(settings, apps=FakeApps())
    assert "/app/prisma/nope does not exist in container demo-app-1" in caught.value.message
    assert digest(db) == before
    assert not settings.backup_dir.exists()


def test_errors_in_the_fetched_schema_name_the_container_path(tmp_path: Path) -> None:
    bad = [("migrations/0001_init/migration.sql", b"CREATE TABLE broken (;\n")]
    apps = FakeApps(archives={"/app/prisma/migrations": tar_of(bad)})
    with pytest.raises(ConfigError) as caught:
        source.load_desired(Path("app:/app/prisma/migrations"), apps)
    assert "app:/app/prisma/migrations/0001_init/migration.sql" in caught.value.message
    assert "sidecar-schema-" not in caught.value.message


def test_through_the_cli_without_docker_it_is_exit_5_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    db = make_db(tmp_path / "data" / "portfolio.db")
    before = digest(db)
    code = cli.main(
        ["plan", "--json", "--database", str(db), "--schema", "app:/app/prisma/migrations"]
    )
    assert code == ExitCode.UNAVAILABLE
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert "Docker" in document["error"]["message"]
    assert digest(db) == before
