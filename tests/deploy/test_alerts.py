"""The alert rules (k8s/base/prometheusrule.yaml) tested as Prometheus users test them: its
``spec.groups`` written out as a plain rules file, ``promtool check rules`` on it, and
``promtool test rules`` on tests/deploy/alerts/telemax_test.yaml, which has for every alert a
case where it fires (labels and annotations as rendered) and one where it must not."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT, run, tool

RULES = ROOT / "k8s" / "base" / "prometheusrule.yaml"
UNIT_TESTS = ROOT / "tests" / "deploy" / "alerts" / "telemax_test.yaml"
RULES_FILE = "telemax.rules.yaml"  # what the unit tests' rule_files name, beside them


def rule_groups() -> list[dict[str, Any]]:
    resource = yaml.safe_load(RULES.read_text())
    assert resource["kind"] == "PrometheusRule"
    groups: list[dict[str, Any]] = resource["spec"]["groups"]
    return groups


def alert_names() -> set[str]:
    return {rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule}


def unit_tests() -> dict[str, Any]:
    tests: dict[str, Any] = yaml.safe_load(UNIT_TESTS.read_text())
    return tests


def write_rules(directory: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file (``groups:`` at the top)."""
    path = directory / RULES_FILE
    path.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return path


def promtool_test(directory: Path, tests: Path) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` on a unit test file placed beside the extracted rules."""
    write_rules(directory)
    return run(tool("promtool"), "test", "rules", tests.name, cwd=directory, timeout=90)


@pytest.mark.timeout(60)
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    done = run(tool("promtool"), "check", "rules", write_rules(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout, done.stdout


@pytest.mark.timeout(120)
def test_alert_unit_tests_pass(tmp_path: Path) -> None:
    assert unit_tests()["rule_files"] == [RULES_FILE]
    tests = Path(shutil.copy(UNIT_TESTS, tmp_path))
    done = promtool_test(tmp_path, tests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


@pytest.mark.timeout(30)
def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """A new alert without its unit tests fails here."""
    alerts = alert_names()
    assert alerts
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in unit_tests()["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing | quiet <= alerts, "unit tests of alerts the rules do not have"
    assert alerts - firing == set(), "alerts without a case where they fire"
    assert alerts - quiet == set(), "alerts without a case where they must not fire"


def first_firing_case(tests: dict[str, Any]) -> dict[str, Any]:
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                found: dict[str, Any] = case
                return found
    raise AssertionError("no firing case")


def wrong_label(case: dict[str, Any]) -> None:
    case["exp_alerts"][0]["exp_labels"]["severity"] = "page"


def wrong_annotation(case: dict[str, Any]) -> None:
    case["exp_alerts"][0]["exp_annotations"]["summary"] += "!"


def expected_quiet(case: dict[str, Any]) -> None:
    case["exp_alerts"] = []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mistake", [wrong_label, wrong_annotation, expected_quiet])
def test_a_wrong_expectation_fails(tmp_path: Path, mistake: Any) -> None:
    """promtool is no no-op: one wrong expectation in the unit tests makes them fail."""
    tests = copy.deepcopy(unit_tests())
    case = first_firing_case(tests)
    mistake(case)
    path = tmp_path / UNIT_TESTS.name
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = promtool_test(tmp_path, path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert f"alertname: {case['alertname']}, time: {case['eval_time']}" in output, output
