"""Reading the settings from the process environment: ``*_FILE`` secrets, the DATABASE_URL
fallback, unknown ``SIDECAR_*`` names, and the offsite cross-checks. Flags win over the
environment, the environment over the table's defaults; errors name the bad setting."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError
from sidecar.settings import ENV_NAMES, PARSERS, Settings, fix_hint, label

# Prisma/Nuxt apps already carry their database location; accept it when it is a file: URL.
DATABASE_FALLBACKS = ("DATABASE_URL", "NUXT_DATABASE_URL")

# SIDECAR_* variables that are not settings but are legitimately in the environment: the
# image tags ./scripts/setup and Compose read, the venv path, and test-only switches.
NOT_SETTINGS = frozenset(
    {"SIDECAR_IMAGE", "SIDECAR_BASE_IMAGE", "SIDECAR_VENV", "SIDECAR_FAULT_SEED",
     "SIDECAR_FAULT_KILLS", "SIDECAR_TEST_NO_KUSTOMIZE",
     "SIDECAR_METRICS_PORT"}  # the host port deploy/monitoring/compose.metrics.yml publishes
)  # fmt: skip


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """One message per ``SIDECAR_*`` variable (or ``*_FILE``) that names no setting, with the
    closest known name: ``SIDECAR_KEEEP: unknown setting; did you mean SIDECAR_KEEP?``."""
    known = set(ENV_NAMES.values())
    messages = []
    for name in sorted(env):
        base = name.removesuffix("_FILE")
        # A setting may itself end in _FILE (SIDECAR_METRICS_FILE): its own name is known.
        if not name.startswith("SIDECAR_") or {name, base} & known or name in NOT_SETTINGS:
            continue
        import difflib  # noqa: PLC0415 (only on a typo: keeps startup light)

        suffix = name[len(base) :]
        close = difflib.get_close_matches(base, sorted(known), n=1)
        guess = f"; did you mean {close[0]}{suffix}?" if close else ""
        messages.append(f"{name}: unknown setting{guess}")
    return messages


def read_env(env: Mapping[str, str], name: str) -> str | None:
    """``name`` from the environment, or the contents of the file named by ``name_FILE``; an
    empty variable is unset (Compose's ``${X:-}`` passes one through when nothing was set)."""
    direct = env.get(name) or None
    file_name = env.get(f"{name}_FILE") or None
    if direct is not None and file_name is not None:
        raise ConfigError(
            f"{name} and {name}_FILE are both set", hint=f"set only one of {name}, {name}_FILE"
        )
    if file_name is None:
        return direct
    try:
        return Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            f"{name}_FILE: cannot read {file_name}: {exc.strerror}",
            hint="mount the secret file and check its permissions",
        ) from exc


def load_settings(
    env: Mapping[str, str], flags: Mapping[str, str | bool | None] | None = None
) -> Settings:
    """Build the settings: defaults < environment (or ``*_FILE``) < flags. Validates each field."""
    values: dict[str, Any] = {}
    flags = flags or {}
    for field in dataclasses.fields(Settings):
        name = field.name
        flag = flags.get(name)
        raw: str | None
        if isinstance(flag, bool):
            # Boolean flags (--strict) are switches: present means on, absent defers to env.
            if flag:
                values[name] = True
                continue
            raw = read_env(env, ENV_NAMES[name])
        elif flag is not None:
            raw = flag
        else:
            raw = read_env(env, ENV_NAMES[name])
        if raw is None and name == "database":
            raw = _database_fallback(env)
        if raw is None:
            continue
        try:
            values[name] = PARSERS[name](raw)
        except ValueError as exc:
            raise ConfigError(f"{label(name)}: {exc}", hint=fix_hint(name)) from None
    _check_long_running(values)
    _check_offsite(values)
    return Settings(**values)


def _check_long_running(values: Mapping[str, Any]) -> None:
    """/metrics is served only by the long-running mode: SIDECAR_METRICS_ADDR without
    SIDECAR_SCHEDULE (or --schedule) would be accepted and ignored. As SIDECAR_DRILL_SCHEDULE."""
    if values.get("metrics_addr") and not values.get("schedule"):
        raise ConfigError(
            "SIDECAR_METRICS_ADDR set but SIDECAR_SCHEDULE is not: /metrics is served only in "
            "the long-running mode",
            hint="set SIDECAR_SCHEDULE too, or, for one-shot runs, SIDECAR_METRICS_FILE (a "
            "node_exporter textfile) instead of SIDECAR_METRICS_ADDR",
        )


# Offsite settings that mean nothing without SIDECAR_OFFSITE. Set without it, the SIDECAR_*
# ones are an error (encryption "accepted and ignored" must never happen); the AWS_* ones are
# shared with other tools (a platform may inject AWS_REGION), so they only log a warning.
OFFSITE_ONLY = (
    "s3_path_style", "age_recipients", "age_identity_file", "offsite_keep",
    "offsite_keep_daily", "offsite_keep_weekly", "offsite_keep_monthly", "drill_schedule",
    "max_offsite_age",
)  # fmt: skip
AWS_SHARED = ("aws_endpoint_url", "aws_region", "aws_access_key_id", "aws_secret_access_key")


def _check_offsite(values: Mapping[str, Any]) -> None:
    """Offsite settings that would be ignored: an error (SIDECAR_*) or a warning (AWS_*)."""
    if values.get("drill_schedule") and not values.get("schedule"):
        raise ConfigError(
            "SIDECAR_DRILL_SCHEDULE set but SIDECAR_SCHEDULE is not: drills run only in the "
            "long-running mode",
            hint="set SIDECAR_SCHEDULE too, or run `sidecar verify --remote` from a CronJob",
        )
    if values.get("offsite") is not None:
        return
    stray = [ENV_NAMES[name] for name in OFFSITE_ONLY if name in values]
    if stray:
        raise ConfigError(
            f"{', '.join(stray)} set but SIDECAR_OFFSITE is not: offsite copies are off",
            hint="set SIDECAR_OFFSITE=s3://bucket/prefix, or unset " + ", ".join(stray),
        )
    shared = [ENV_NAMES[name] for name in AWS_SHARED if name in values]
    if shared:
        from sidecar.logs import get_logger  # noqa: PLC0415

        get_logger(__name__).warning(
            "settings.ignored",
            names=shared,
            reason="SIDECAR_OFFSITE is not set",
            hint="set SIDECAR_OFFSITE=s3://bucket/prefix to make offsite copies",
        )


def _database_fallback(env: Mapping[str, str]) -> str | None:
    for name in DATABASE_FALLBACKS:
        value = read_env(env, name)
        if value and value.strip().startswith("file:"):
            return value
    return None
