"""deploy/monitoring/: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`: each alert firing and not), and the rules and the dashboard only
use metrics the sidecar exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sidecar.metrics import METRICS

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
EXPORTED = {
    name + "_total" if kind == "counter" else name for name, (kind, _, _) in METRICS.items()
}


def _promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run ./scripts/setup (it installs Debian's prometheus)")
    done = subprocess.run(
        [binary, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_rules_pass_promtool_check() -> None:
    assert "SUCCESS: 7 rules found" in _promtool("check", "rules", "alerts.yml")


def test_every_alert_has_a_promtool_unit_test_and_they_pass() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "alerts.test.yml")
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert alerts == tested
    assert {
        "SidecarBackupTooOld", "SidecarLastDeployFailed", "SidecarAppUnhealthyAfterDeploy",
        "SidecarOffsiteStale", "SidecarDrillFailed", "SidecarDataVanished",
    } <= alerts  # fmt: skip


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bsidecar_[a-z_]+\b", expr))


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in _metric_names(rule["expr"])
    }
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= _metric_names(target["expr"])
    assert used
    assert used <= EXPORTED, used - EXPORTED
