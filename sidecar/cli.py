"""argv -> settings -> one command -> rendered result -> exit code. No logic lives here."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sidecar import __version__, alerts, logs, notify
from sidecar.environ import load_settings, unknown_variables
from sidecar.errors import ExitCode, SidecarError
from sidecar.report import Result
from sidecar.settings import ENV_NAMES, SETTINGS, Settings, for_command

EXIT_CODES_HELP = """exit codes:
  0  done, or nothing to do
  1  unexpected error (a bug: please report it)
  2  usage or configuration error; subcommand not available
  3  refused by a safety rule (drift under --strict, impossible change, lease held)
  4  health check failed; changes rolled back
  5  dependency unavailable after retries (database locked, Docker API, disk, offsite store)
  6  plan --check: changes pending
"""


def _add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of the settings ``command`` reads (from the table in sidecar.settings)."""
    group = parser.add_argument_group("settings (each also set by its SIDECAR_* variable)")
    for setting in for_command(command):
        if setting.option is None:
            continue
        if setting.is_switch:
            group.add_argument(setting.option, action="store_true", help=setting.help)
        else:
            group.add_argument(
                setting.option,
                metavar=setting.metavar,
                choices=setting.choices,
                help=setting.help,
            )
    # SUPPRESS: `sidecar --json list` and `sidecar list --json` both work.
    group.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON"
    )


class UsageError(SidecarError):
    """A command line argparse rejected: exit 2 with the same error/hint contract as the rest."""

    exit_code = ExitCode.USAGE


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises :class:`UsageError` instead of printing a usage
    block and exiting: every failure is one ``error:`` line and one ``hint:`` line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sidecar",
        description="Production-safe deployments for apps that keep their data in SQLite: "
        "verified backups, additive-only schema updates, health checks, app restarts.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, row in COMMANDS.items():
        command = sub.add_parser(
            name,
            help=row.summary,
            description=row.description,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_settings(command, name)
        row.options(command)
    return parser


def _deploy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="preflight and plan only; change nothing")


def _backup_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="same as --verify full (integrity_check)")
    p.add_argument("--no-prune", dest="no_prune", action="store_true", help="keep all backups")
    p.add_argument("--reason", choices=("manual", "scheduled"), default="manual")


def _restore_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup_id", metavar="ID", help="a backup name from `sidecar list`, or latest")
    p.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    p.add_argument(
        "--force",
        action="store_true",
        help="restore although a process has the database open without a lock (an idle "
        "rollback-journal connection); never over a connection holding a lock",
    )
    p.add_argument("--to", dest="to", metavar="PATH", help="restore into PATH for inspection")
    p.add_argument(
        "--from",
        dest="source",
        choices=("local", "offsite"),
        default="local",
        help="offsite: download the copy from SIDECAR_OFFSITE and check it first",
    )
    p.add_argument(
        "--from-other-database",
        dest="from_other_database",
        action="store_true",
        help="restore a backup whose manifest names another database file (ID only)",
    )


def _plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="exit 6 when changes are pending")


def _migrate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="plan only; change nothing")


def _health_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="integrity_check instead of quick_check")
    p.add_argument(
        "--backups-only",
        dest="backups_only",
        action="store_true",
        help="only check that the last verified backup is younger than SIDECAR_MAX_BACKUP_AGE "
        "(the image's HEALTHCHECK; never opens the database)",
    )


def _list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", action="store_true", help="list the offsite copies instead")


def _verify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup_id", metavar="ID", nargs="?", help="a backup name, or latest")
    p.add_argument("--full", action="store_true", help="integrity_check instead of quick_check")
    p.add_argument(
        "--remote",
        action="store_true",
        help="restore drills of the offsite copies, into a scratch file (exit 4 "
        "names a bad copy); the newest by default",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--all", dest="every", action="store_true", help="every backup or copy")
    scope.add_argument("--latest", action="store_true", help="the newest backup or copy")


def _prune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="show what would go; delete nothing")


def _no_options(p: argparse.ArgumentParser) -> None:
    del p


@dataclass(frozen=True)
class Subcommand:
    """One row of the subcommands table: what runs it, its help, its own options."""

    run: str  # "module:function" under sidecar.commands, imported only when it runs, so that
    # `sidecar version`, `--help` and the HEALTHCHECK stay fast and free of the heavier modules
    summary: str
    description: str
    options: Callable[[argparse.ArgumentParser], None]  # besides the settings' flags


# In the order of `sidecar --help`.
COMMANDS: dict[str, Subcommand] = {
    "deploy": Subcommand(
        "deploy:deploy",
        "wait for quiet, back up, apply additive schema changes, check health, restart the app",
        "The whole deploy pipeline: preflight, lease, quiesce, verified backup, additive "
        "migration and health checks in one transaction (rolled back on any failure), commit, "
        "restart the app through Docker when something changed, prune old backups.",
        _deploy_options,
    ),
    "backup": Subcommand(
        "backup:backup",
        "take a verified, consistent backup now (safe while the app writes)",
        "Copy the database consistently while the app keeps running, verify the copy, write a "
        "manifest beside it, then prune old backups by the retention policy.",
        _backup_options,
    ),
    "restore": Subcommand(
        "restore:restore",
        "replace the database with a listed backup (after a safety backup)",
        "Verify the backup, take a safety backup of the current database, then replace it "
        "atomically. Refuses while the app holds the database unless it can stop the app.",
        _restore_options,
    ),
    "plan": Subcommand(
        "schema:plan",
        "show what would change in the schema (read-only)",
        "Compare the database with the desired schema. Shows what will be applied, the drift "
        "that will never be applied, and what is refused and why. Never writes. Exits 3 when "
        "a deploy would be refused, 6 with --check when changes are pending, else 0.",
        _plan_options,
    ),
    "migrate": Subcommand(
        "schema:migrate",
        "apply the additive schema changes now (after a verified backup)",
        "The deploy pipeline without touching any container: lease, quiesce, verified backup, "
        "then the additive plan in one transaction with verification inside it. Creates the "
        "database from the schema when it does not exist yet.",
        _migrate_options,
    ),
    "health": Subcommand(
        "health:health",
        "check the database, schema, backups and your health queries",
        "Run quick_check (or integrity_check), foreign_key_check, the desired-schema presence "
        "check, the last backup's age and the user's health queries. Exit 4 on failure.",
        _health_options,
    ),
    "list": Subcommand(
        "listing:list_backups",
        "list the backups with their verified status, age, size and reason",
        "List the backups in the backups folder, newest first.",
        _list_options,
    ),
    "verify": Subcommand(
        "verify:verify",
        "verify one backup, or all of them",
        "Check each backup's checksum against its manifest and run quick_check (integrity_check "
        "with --full). Exits non-zero and names every corrupt or missing backup.",
        _verify_options,
    ),
    "prune": Subcommand(
        "prune:prune",
        "delete old backups by the retention policy",
        "Keep the SIDECAR_KEEP most recent verified backups (plus optional daily, weekly and "
        "monthly ones). Never deletes the newest verified backup nor files it did not create.",
        _prune_options,
    ),
    "version": Subcommand(
        "info:version",
        "print the version",
        "Print the sidecar, Python and SQLite versions.",
        _no_options,
    ),
}


def _resolve(name: str) -> Callable[..., Result]:
    module_name, function_name = COMMANDS[name].run.split(":")
    module = importlib.import_module(f"sidecar.commands.{module_name}")
    function: Callable[..., Result] = getattr(module, function_name)
    return function


def _split(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate settings flags (they have a SIDECAR_* twin) from command options."""
    flags: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key in ("command", "json"):
            continue
        if key in ENV_NAMES:
            flags[key] = value
        else:
            options[key] = value
    if options.pop("full", False):
        flags["verify"] = "full"
    return flags, options


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    imported: Callable[[], None] | None = None,
) -> int:
    """Run one command; return its exit code. ``env`` defaults to ``os.environ``;
    ``imported`` is called once the command's module is imported, before it runs."""
    environ = os.environ if env is None else env
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _usage_failed(exc, environ, sys.argv[1:] if argv is None else list(argv))
    flags, options = _split(args)
    as_json: bool = args.json
    # Logging must work even when the settings are invalid, so read its two fields first.
    logs.configure(
        flags.get("log_format") or environ.get("SIDECAR_LOG_FORMAT") or None,
        flags.get("log_level") or environ.get("SIDECAR_LOG_LEVEL") or "info",
    )
    log = logs.get_logger("sidecar.cli")
    level = str(flags.get("log_level") or environ.get("SIDECAR_LOG_LEVEL") or "").strip()
    # A warning, not an error (even under --strict, which is about schema drift); at
    # SIDECAR_LOG_LEVEL=error logged as one, since it is never to go unheard.
    say = log.error if level.lower() == "error" else log.warning
    for message in unknown_variables(environ):
        say("settings.unknown", variable=message.partition(":")[0], message=message)
    started = time.monotonic()
    try:
        settings: Settings = load_settings(environ, flags)
        # Now from the validated settings (case, spaces, *_FILE), as every other setting.
        logs.configure(settings.log_format, settings.log_level)
        _configure_alerts(settings, args.command)
        command = _resolve(args.command)
        if imported is not None:
            imported()  # the command's module and what it imports at the top are loaded
        result = command(settings, **options)
    except SidecarError as exc:
        code = int(exc.exit_code)
        log.error(  # noqa: TRY400 (an expected failure: one line, no traceback)
            "command.failed",
            command=args.command,
            error=exc.message,
            hint=exc.hint,
            exit_code=code,
            seconds=round(time.monotonic() - started, 3),
        )
        _print_error(exc)
        if as_json:
            _emit_json(_error_document(args.command, exc))
        return code
    except KeyboardInterrupt:
        log.warning("command.interrupted", command=args.command)
        return 130
    except Exception as exc:  # a bug: keep the traceback, exit 1
        log.exception("command.crashed", command=args.command, error=repr(exc))
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        hint = "this is a bug in sidecar; please report it with the log above"
        print(f"hint: {hint}", file=sys.stderr)
        return int(ExitCode.BUG)
    return _report(args.command, result, as_json=as_json)


def _usage_failed(exc: UsageError, environ: Mapping[str, str], argv: list[str]) -> int:
    """A command line argparse rejected: one log event, the error lines, JSON if asked."""
    logs.configure(environ.get("SIDECAR_LOG_FORMAT") or None, "info")
    logs.get_logger("sidecar.cli").error(
        "command.failed", error=exc.message, hint=exc.hint, exit_code=int(exc.exit_code)
    )
    _print_error(exc)
    if "--json" in argv:
        _emit_json(_error_document(None, exc))
    return int(exc.exit_code)


def _report(command: str, result: Result, *, as_json: bool) -> int:
    """Print the result (JSON or text) and, for a result that failed, its error line."""
    code = int(result.exit_code)
    # A health or verify run that found problems is a result, and an error line as well.
    failure: SidecarError | None = getattr(result, "failure", None) if code else None
    if as_json:
        document = {"command": command, "ok": code == 0, "exit_code": code}
        if failure is not None:
            document |= {"error": _error_document(command, failure)["error"]}
        _emit_json({**document, **result.to_dict()})
    else:
        _print_result(result.render())
    if failure is not None:
        logs.get_logger("sidecar.cli").error("command.failed", command=command,
            error=failure.message, hint=failure.hint, exit_code=code)  # fmt: skip
        _print_error(failure)
    return code


def _print_result(text: str) -> None:
    if not text:
        return
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `sidecar plan | head`: the reader is gone, not a bug
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


_NOTIFIES = next(s.commands for s in SETTINGS if s.name == "notify")


def _configure_alerts(settings: Settings, command: str) -> None:
    """Pings, notifications and metrics (sidecar.alerts): plain values from the settings. A
    command that notifies first has apprise read every SIDECAR_NOTIFY URL: one it cannot use
    is exit 2 now, not a lost notification later (the others never pay for apprise)."""
    if settings.notify and command in _NOTIFIES:
        notify.check_services(settings.notify)
    alerts.configure(
        database=settings.database,
        environment=settings.environment,
        notify_urls=settings.notify,
        notify_on=settings.notify_on,
        timeout=settings.notify_timeout,
        ping_url=settings.ping_url,
        metrics_addr=settings.metrics_addr,
        metrics_file=settings.metrics_file,
        backup_dir=settings.backup_dir,
        max_backup_age=settings.max_backup_age,
    )


def _error_document(command: str | None, exc: SidecarError) -> dict[str, Any]:
    return {
        "command": command,
        "ok": False,
        "exit_code": int(exc.exit_code),
        "error": {"message": exc.message, "hint": exc.hint, "type": type(exc).__name__},
    }


def _print_error(exc: SidecarError) -> None:
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)


def _emit_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, indent=2, default=str))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
