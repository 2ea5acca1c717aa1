from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.errors import ConfigError, ExitCode
from sidecar.settings import Settings, load_settings, parse_database, parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/app/data/portfolio.db", "/app/data/portfolio.db"),
        ("file:/app/data/portfolio.db", "/app/data/portfolio.db"),
        ("file:/app/data/portfolio.db?connection_limit=1", "/app/data/portfolio.db"),
        ("file:///app/data/portfolio.db", "/app/data/portfolio.db"),
        ("file://localhost/app/data/portfolio.db", "/app/data/portfolio.db"),
        ("file:./dev.db", "dev.db"),
        ("file:/data/my%20app.db", "/data/my app.db"),
    ],
)
def test_database_accepts_paths_and_prisma_file_urls(value: str, expected: str) -> None:
    assert parse_database(value) == Path(expected)


@pytest.mark.parametrize("value", ["postgres://db/x", "file://remote-host/x.db", "file:", "  "])
def test_database_rejects_what_is_not_a_local_sqlite_file(value: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message is checked through load_settings)
        parse_database(value)


def test_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.keep == 10
    assert settings.environment == "production"
    assert settings.backup_dir == Path("/backups")
    assert settings.database is None


def test_database_falls_back_to_prisma_and_nuxt_variables_when_file_urls() -> None:
    env = {"NUXT_DATABASE_URL": "file:/app/data/portfolio.db"}
    assert load_settings(env).database == Path("/app/data/portfolio.db")
    env = {"DATABASE_URL": "postgres://x/y", "NUXT_DATABASE_URL": "file:/a.db"}
    assert load_settings(env).database == Path("/a.db")
    env = {"SIDECAR_DATABASE": "/own.db", "DATABASE_URL": "file:/other.db"}
    assert load_settings(env).database == Path("/own.db")


def test_flags_win_over_environment() -> None:
    settings = load_settings({"SIDECAR_KEEP": "3"}, {"keep": "5", "strict": True})
    assert settings.keep == 5
    assert settings.strict is True
    assert load_settings({"SIDECAR_STRICT": "yes"}, {"strict": False}).strict is True


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "db"
    secret.write_text("file:/secret/path.db\n")
    assert load_settings({"SIDECAR_DATABASE_FILE": str(secret)}).database == Path("/secret/path.db")


def test_secret_file_missing_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SIDECAR_APP_FILE"):
        load_settings({"SIDECAR_APP_FILE": str(tmp_path / "nope")})


def test_both_value_and_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="both set"):
        load_settings({"SIDECAR_APP": "a", "SIDECAR_APP_FILE": str(tmp_path / "f")})


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"SIDECAR_KEEP": "ten"}, "SIDECAR_KEEP"),
        ({"SIDECAR_KEEP": "0"}, "SIDECAR_KEEP"),
        ({"SIDECAR_RESTART": "sometimes"}, "SIDECAR_RESTART"),
        ({"SIDECAR_QUIET_PERIOD": "soon"}, "SIDECAR_QUIET_PERIOD"),
        ({"SIDECAR_ENVIRONMENT": "prod_1"}, "SIDECAR_ENVIRONMENT"),
        ({"SIDECAR_ENVIRONMENT": "../x"}, "SIDECAR_ENVIRONMENT"),
        ({"SIDECAR_VERIFY": "maybe"}, "SIDECAR_VERIFY"),
        ({"SIDECAR_STRICT": "perhaps"}, "SIDECAR_STRICT"),
        ({"SIDECAR_DATABASE": "mysql://h/db"}, "SIDECAR_DATABASE"),
        ({"SIDECAR_MIN_FREE_MARGIN": "lots"}, "SIDECAR_MIN_FREE_MARGIN"),
    ],
)
def test_invalid_values_name_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert field in caught.value.message
    assert caught.value.hint
    assert caught.value.exit_code == ExitCode.USAGE


def test_durations_and_sizes() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5m") == 300
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400
    assert parse_size("64M") == 64 << 20
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("4096") == 4096


def test_require_helpers_give_hints() -> None:
    with pytest.raises(ConfigError, match="no database"):
        Settings().require_database()
    with pytest.raises(ConfigError, match="no desired schema"):
        Settings().require_schema()


def test_empty_variables_count_as_unset() -> None:
    # Compose passes `${SIDECAR_SCHEDULE:-}` through as an empty string when the user set
    # nothing: that must mean "unset", not "invalid".
    settings = load_settings({"SIDECAR_SCHEDULE": "", "SIDECAR_KEEP": "", "SIDECAR_APP": ""})
    assert settings.schedule is None
    assert settings.keep == Settings().keep
    assert settings.app is None


def test_environment_only_settings_hint_at_the_variable_alone() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"SIDECAR_MIN_FREE_MARGIN": "12X"})
    assert raised.value.message.startswith("SIDECAR_MIN_FREE_MARGIN: ")
    assert raised.value.hint == "fix SIDECAR_MIN_FREE_MARGIN"
    with pytest.raises(ConfigError) as raised:
        load_settings({"SIDECAR_KEEP": "many"})
    assert raised.value.hint == "fix SIDECAR_KEEP or --keep"
    assert parse_size("1.5G") == int(1.5 * 1024**3)
