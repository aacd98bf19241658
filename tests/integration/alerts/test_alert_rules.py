"""The shipped rules: valid for Prometheus, unit-tested alert by alert, documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RULE_FILES = sorted((ROOT / "alerts").glob("*.yml"))
RULE_TESTS = sorted((ROOT / "tests" / "alerts").glob("*.test.yml"))
# The published docs/runbook.md (the mixin's default _config.runbookURLBase).
REPO_URL = "https://github.com/celery-metrics-exporter/celery-metrics-exporter"
RUNBOOK_URL = f"{REPO_URL}/blob/main/docs/runbook.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run `make test` (installs Debian's prometheus)")
    return path


def alerts() -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [rule for rule in group["rules"] if "alert" in rule]
    return found


def test_rule_files_are_valid() -> None:
    assert RULE_FILES, "no rule files in alerts/"
    result = subprocess.run(
        [promtool(), "check", "rules", *map(str, RULE_FILES)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True, text=True, timeout=120, cwd=ROOT / "tests" / "alerts",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_documented_and_complete() -> None:
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = set(re.findall(r"^## (\w+)", runbook, flags=re.M))
    names = [str(rule["alert"]) for rule in alerts()]
    assert len(names) == len(set(names))
    for rule in alerts():
        name = str(rule["alert"])
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels.get("severity") in {"critical", "warning", "info"}, name
        assert annotations.get("summary") and annotations.get("description"), name
        assert annotations.get("runbook_url") == f"{RUNBOOK_URL}#{name.lower()}", name
        assert name in anchors, f"{name} has no '## {name}' section in docs/runbook.md"
        assert name in tested, f"{name} has no promtool test that expects it to fire"


def github_anchors(markdown: str) -> set[str]:
    """The fragment GitHub gives each heading: lower case, punctuation dropped, spaces as -."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(anchor)
    return anchors


def test_every_runbook_url_opens_an_existing_section() -> None:
    urls = [str(rule["annotations"]["runbook_url"]) for rule in alerts()]  # type: ignore[index]
    assert urls
    for url in urls:
        assert url.startswith(f"{REPO_URL}/blob/main/"), url
        path, _, fragment = url.removeprefix(f"{REPO_URL}/blob/main/").partition("#")
        target = ROOT / path
        assert target.is_file(), url
        assert fragment in github_anchors(target.read_text()), url
