"""The CLI contract: help for every subcommand, exit codes, JSON on stdout, logs on stderr."""

from __future__ import annotations

import json
import re

import pytest

from sidecar import cli
from sidecar.errors import ExitCode
from sidecar.settings import SETTINGS

SUBCOMMANDS = [
    "deploy", "backup", "restore", "plan", "migrate", "health", "list", "verify", "prune",
    "version",
]  # fmt: skip


def test_every_subcommand_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"    {name}" in out
    assert "exit codes:" in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_its_own_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: sidecar {name}" in out
    # A description beyond the usage line, and the options of the settings it reads.
    assert len(out.splitlines()) > 8
    # (was: `"--database" in out` for every subcommand; list, verify, version never read it)
    options = set(re.findall(r"--[a-z][a-z-]*", out.split("exit codes:")[0]))
    for setting in SETTINGS:
        if setting.option:
            assert (setting.option in options) == (name in setting.commands), setting.option


def test_subcommands_map_to_real_functions() -> None:
    assert set(cli.COMMANDS) == set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        assert callable(cli._resolve(name))


def test_version_json_on_stdout_logs_elsewhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version", "--json"], env={}) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["command"] == "version"
    assert document["ok"] is True
    assert document["exit_code"] == 0
    assert document["version"]


def test_bad_configuration_exits_2_with_one_line_error_and_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["list", "--json"], env={"SIDECAR_KEEP": "many", "SIDECAR_LOG_FORMAT": "json"})
    assert code == ExitCode.USAGE
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"]["message"].startswith("SIDECAR_KEEP (--keep)")
    lines = [line for line in captured.err.splitlines() if line.startswith(("error:", "hint:"))]
    assert lines[0].startswith("error: SIDECAR_KEEP (--keep): expected a whole number")
    assert lines[1].startswith("hint: ")
    event = json.loads(captured.err.splitlines()[0])
    assert event["event"] == "command.failed"
    assert event["exit_code"] == 2


def test_unexpected_exception_is_a_bug_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(settings: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "_resolve", lambda name: boom)
    assert cli.main(["version"], env={"SIDECAR_LOG_FORMAT": "json"}) == ExitCode.BUG
    err = capsys.readouterr().err
    assert "command.crashed" in err
    assert "Traceback" in err
    assert "error: unexpected ZeroDivisionError: boom" in err


def test_usage_error_exits_2_with_one_error_and_one_hint_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["frobnicate"], env={"SIDECAR_LOG_FORMAT": "json"}) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert len(err) == 2
    assert err[0].startswith("error: argument COMMAND: invalid choice: 'frobnicate'")
    assert err[1] == "hint: see `sidecar --help`"


def test_usage_error_with_json_prints_the_error_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["backup", "--verify", "sha1", "--json"], env={"SIDECAR_LOG_FORMAT": "json"})
    assert code == 2
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["error"]["hint"] == "see `sidecar backup --help`"


def test_every_setting_has_a_flag_unless_it_is_environment_only() -> None:
    """Messages and hints name `--flag` only for settings that really have one."""
    from sidecar.settings import ENV_NAMES, ENV_ONLY

    parser = cli.build_parser()
    flags: set[str] = set()
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for sub in choices.values():
                flags |= {dest for a in sub._actions for dest in [a.dest] if a.option_strings}
    assert set(ENV_NAMES) - ENV_ONLY <= flags
    assert not (ENV_ONLY & flags)


def test_the_healthcheck_command_never_imports_the_docker_sdk() -> None:
    """`health --backups-only` is the image's HEALTHCHECK: it must start fast."""
    import subprocess
    import sys

    probe = (
        "import sys; from sidecar import cli; cli._resolve('health'); cli._resolve('version'); "
        "print(sorted(m for m in ('docker', 'requests') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _flags_of(command: str) -> set[str]:
    parser = cli.build_parser()
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            return {o for a in choices[command]._actions for o in a.option_strings}
    raise AssertionError("no subcommands")


def test_backup_offers_only_the_options_a_backup_reads(capsys: pytest.CaptureFixture[str]) -> None:
    assert _flags_of("backup") == {
        "-h", "--help", "--json", "--full", "--no-prune", "--reason", "--log-format",
        "--log-level", "--database", "--backup-dir", "--environment", "--verify", "--compress",
        "--wait-timeout", "--schedule", "--keep", "--keep-daily", "--keep-weekly",
        "--keep-monthly", "--app",  # --app: for SIDECAR_BACKUP_STOP_APP
    }  # fmt: skip
    with pytest.raises(SystemExit):
        cli.main(["backup", "--help"])
    out = capsys.readouterr().out.split("exit codes:")[0]
    for unused in ("--schema", "--restart", "--health-queries", "--strict", "--allow-fresh"):
        assert unused not in out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("version", {"--log-format", "--log-level"}),
        ("list", {"--log-format", "--log-level", "--database", "--backup-dir", "--remote"}),
        ("verify", {"--log-format", "--log-level", "--database", "--backup-dir", "--verify",
                    "--full", "--remote", "--all", "--latest"}),
        ("plan", {"--log-format", "--log-level", "--database", "--backup-dir", "--schema",
                  "--wait-timeout", "--strict", "--renames", "--not-renamed", "--allow-fresh",
                  "--check"}),
        ("restore", {"--log-format", "--log-level", "--database", "--backup-dir",
                     "--environment", "--app", "--wait-timeout", "--verify", "--dry-run", "--force",
                     "--to", "--from-other-database", "--from"}),
    ],
)  # fmt: skip
def test_each_subcommand_accepts_the_flags_of_what_it_reads(
    command: str, expected: set[str]
) -> None:
    assert _flags_of(command) - {"-h", "--help", "--json"} == expected


def test_deploy_accepts_every_setting_flag() -> None:
    assert {s.option for s in SETTINGS if s.option} <= _flags_of("deploy")


def test_a_flag_the_command_does_not_read_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["backup", "--schema", "/s.sql"], env={"SIDECAR_LOG_FORMAT": "json"}) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert err == [
        "error: unrecognized arguments: --schema /s.sql",
        "hint: see `sidecar --help`",
    ]


def test_an_unknown_variable_is_heard_at_log_level_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"SIDECAR_KEEEP": "3", "SIDECAR_LOG_FORMAT": "json", "SIDECAR_LOG_LEVEL": "error"}
    assert cli.main(["version"], env=env) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["event"], e["level"], e["variable"]) for e in events] == [
        ("settings.unknown", "error", "SIDECAR_KEEEP")
    ]


def test_unknown_sidecar_variables_are_logged_as_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"SIDECAR_KEEEP": "3", "SIDECAR_STRCT_FILE": "/x", "SIDECAR_LOG_FORMAT": "json",
           "SIDECAR_KEEP": "4", "SIDECAR_IMAGE": "sidecar:local"}  # fmt: skip
    assert cli.main(["version"], env=env) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    unknown = [e for e in events if e["event"] == "settings.unknown"]
    assert [(e["level"], e["variable"], e["message"]) for e in unknown] == [
        ("warning", "SIDECAR_KEEEP", "SIDECAR_KEEEP: unknown setting; did you mean SIDECAR_KEEP?"),
        (
            "warning",
            "SIDECAR_STRCT_FILE",
            "SIDECAR_STRCT_FILE: unknown setting; did you mean SIDECAR_STRICT_FILE?",
        ),
    ]


def test_an_unknown_variable_is_a_warning_even_under_strict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"SIDECAR_KEEEP": "3", "SIDECAR_STRICT": "1", "SIDECAR_LOG_FORMAT": "json"}
    assert cli.main(["version", "--json"], env=env) == 0
    assert "did you mean SIDECAR_KEEP?" in capsys.readouterr().err


def test_kubernetes_and_compose_command_lines_parse() -> None:
    """The command lines the manifests and Compose run are accepted by their subcommand."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    lines: list[list[str]] = []
    for path in [root / "docker-compose.yml", *root.glob("deploy/**/*.yaml")]:
        for found in re.findall(r"(?:args|command): (\[[^\]]*\])", path.read_text()):
            argv = json.loads(found)
            lines.append(argv[1:] if argv[:1] == ["sidecar"] else argv)
    assert ["backup", "--reason", "scheduled"] in lines
    assert ["health", "--backups-only"] in lines
    for argv in lines:
        if argv and argv[0] in cli.COMMANDS:
            cli.build_parser().parse_args(argv)
