from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sidecar import environ, settings
from sidecar.environ import load_settings
from sidecar.errors import ConfigError, ExitCode
from sidecar.parsers import parse_database, parse_duration, parse_size
from sidecar.settings import Settings


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
    assert parse_database(value) == Path(expected).absolute()


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
        # Ping URLs urllib can never reach (its error would say "Name or service not known").
        ({"SIDECAR_PING_URL": "http://hc.example:notaport/x"}, "SIDECAR_PING_URL"),
        ({"SIDECAR_PING_URL": "https://hc.example:99999/x"}, "SIDECAR_PING_URL"),
        ({"SIDECAR_PING_URL": "https://alice:s3cret@hc.example/x"}, "SIDECAR_PING_URL"),
        ({"SIDECAR_PING_URL": "https://alice@hc.example/x"}, "SIDECAR_PING_URL"),
        ({"SIDECAR_PING_URL": "http://:80/x"}, "SIDECAR_PING_URL"),
        # /metrics is served only in the long-running mode: never accepted and ignored.
        ({"SIDECAR_METRICS_ADDR": "127.0.0.1:9473"}, "SIDECAR_METRICS_ADDR"),
    ],
)
def test_invalid_values_name_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert field in caught.value.message
    assert caught.value.hint
    assert caught.value.exit_code == ExitCode.USAGE
    assert "s3cret" not in caught.value.message


def test_ping_urls_urllib_can_reach_are_accepted() -> None:
    for url in ("https://hc-ping.com/5a1c-uuid", "http://127.0.0.1:8000/ping/x",
                "http://[::1]:8000/p", "https://hc.example/ping/key/slug"):  # fmt: skip
        assert load_settings({"SIDECAR_PING_URL": url}).ping_url == url


def test_the_metrics_address_with_a_schedule_is_accepted() -> None:
    env = {"SIDECAR_METRICS_ADDR": "127.0.0.1:9473"}
    assert load_settings({**env, "SIDECAR_SCHEDULE": "6h"}).metrics_addr == "127.0.0.1:9473"
    assert load_settings(env, {"schedule": "6h"}).metrics_addr == "127.0.0.1:9473"


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


ROOT = Path(__file__).resolve().parents[2]


def _readme_rows() -> dict[str, tuple[str, str]]:
    """variable -> (flag, default) from the README's configuration table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith(("`SIDECAR_", "`AWS_")):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def _documented_default(setting: settings.Setting) -> str:
    default = {f.name: f.default for f in dataclasses.fields(Settings)}[setting.name]
    if setting.shown_default is not None:
        return setting.shown_default
    if default is None:
        return "—"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def test_the_readme_configuration_table_is_the_settings_table() -> None:
    rows = _readme_rows()
    assert sorted(rows) == sorted(s.env for s in settings.SETTINGS)
    for setting in settings.SETTINGS:
        flag, default = rows[setting.env]
        assert flag == (f"`{setting.option}`" if setting.option else "—"), setting.env
        assert default == _documented_default(setting), setting.env


def test_documented_defaults_parse_to_the_real_defaults() -> None:
    """A default written as a value (`2s`, `26h`, `64M`) is the field's default, parsed."""
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    for setting in settings.SETTINGS:
        shown = _documented_default(setting)
        if shown.startswith("`") and shown.endswith("`") and shown.count("`") == 2:
            assert setting.parse(shown.strip("`")) == defaults[setting.name], setting.env


def test_the_table_derives_names_parsers_and_environment_only_settings() -> None:
    assert [f.name for f in dataclasses.fields(Settings)] == [s.name for s in settings.SETTINGS]
    assert settings.ENV_NAMES["backup_dir"] == "SIDECAR_BACKUP_DIR"
    assert settings.PARSERS["keep"]("3") == 3
    assert "min_free_margin" in settings.ENV_ONLY
    assert "keep" not in settings.ENV_ONLY
    for setting in settings.SETTINGS:
        assert setting.commands, setting.env
        assert setting.commands <= settings.ALL_COMMANDS, setting.env


def test_every_setting_reads_its_file_twin(tmp_path: Path) -> None:
    samples = {"database": "/x.db", "environment": "staging", "log_format": "json",
               "log_level": "debug", "restart": "never", "verify": "full", "compress": "zstd",
               "strict": "true", "allow_fresh": "true", "min_free_margin": "1M",
               "backup_stop_app": "true", "compact": "true",
               "notify": "json://127.0.0.1:1/hook", "notify_on": "always",
               "ping_url": "http://127.0.0.1:1/ping", "metrics_addr": "127.0.0.1:9473",
               "offsite": "s3://bucket/prefix", "aws_endpoint_url": "http://127.0.0.1:9000",
               "s3_path_style": "true", "age_recipients": _age_public_key(),
               "renames": "copy", "backup_io": "cached"}  # fmt: skip
    # Offsite settings mean nothing without SIDECAR_OFFSITE (an error), drills without a schedule.
    context = {name: {"SIDECAR_OFFSITE": "s3://b/p"} for name in environ.OFFSITE_ONLY}
    context["drill_schedule"] = {"SIDECAR_OFFSITE": "s3://b/p", "SIDECAR_SCHEDULE": "1h"}
    context["metrics_addr"] = {"SIDECAR_SCHEDULE": "1h"}
    for setting in settings.SETTINGS:
        value = samples.get(setting.name, "7")
        secret = tmp_path / setting.name
        secret.write_text(value + "\n")
        env = {f"{setting.env}_FILE": str(secret), **context.get(setting.name, {})}
        loaded = load_settings(env)
        assert getattr(loaded, setting.name) == setting.parse(value), setting.env


def test_unknown_variables_name_the_closest_setting() -> None:
    env = {
        "SIDECAR_KEEEP": "3",
        "SIDECAR_SCHEMAS_FILE": "/run/secrets/x",
        "SIDECAR_ZZZZZZZZZZZZ": "1",
        "SIDECAR_KEEP": "3",
        "SIDECAR_KEEP_FILE": "/x",
        "SIDECAR_IMAGE": "sidecar:local",
        "SIDECAR_METRICS_FILE": "/x.prom",  # a setting whose own name ends in _FILE
        "SIDECAR_METRICS_FILE_FILE": "/run/secrets/x",
        "PATH": "/bin",
    }
    assert environ.unknown_variables(env) == [
        "SIDECAR_KEEEP: unknown setting; did you mean SIDECAR_KEEP?",
        "SIDECAR_SCHEMAS_FILE: unknown setting; did you mean SIDECAR_SCHEMA_FILE?",
        "SIDECAR_ZZZZZZZZZZZZ: unknown setting",
    ]


def test_variables_the_project_sets_itself_are_never_reported() -> None:
    """Every SIDECAR_* name in the image, Compose, the manifests, scripts and the code is a
    setting (or one of the few that are not: image tags, the venv, test switches)."""
    names: set[str] = set()
    for pattern in ("Dockerfile", "docker-compose.yml", "deploy/**/*.y*ml", "scripts/*",
                    "sidecar/**/*.py", "tests/**/*.py", "bench/*.py", ".ci/*"):  # fmt: skip
        for path in ROOT.glob(pattern):
            if path.is_file():
                names |= set(re.findall(r"\bSIDECAR_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    # SIDECAR_ENV is a test constant's name; the rest are the typos these tests make on purpose.
    names -= {"SIDECAR_ENV", "SIDECAR_KEEEP", "SIDECAR_SCHEMAS_FILE", "SIDECAR_ZZZZZZZZZZZZ",
              "SIDECAR_STRCT_FILE"}  # fmt: skip
    assert environ.unknown_variables(dict.fromkeys(names, "x")) == []


def _age_public_key() -> str:
    import pyrage

    return str(pyrage.x25519.Identity.generate().to_public())
