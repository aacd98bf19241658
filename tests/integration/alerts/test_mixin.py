"""The monitoring mixin (mixin/) is the single source of the shipped rules and dashboards.

The committed alerts/*.yml and grafana/dashboards/*.json are its rendering with the default
_config; a rendering with another _config (a job selector on every selector, other thresholds)
is valid for promtool and its alerts fire, for the right job only, on a real Prometheus.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.integration.alerts.test_alert_rules import promtool
from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.mixin import RENDER_PY
from tests.support.mixin import mixin_render as render
from tests.support.prometheus import PrometheusServer
from tests.support.waiting import wait_for
from tests.support.workers import Producer

PROD = 'job="celery-prod"'
# Another job selector, a lower backlog threshold, and every `for:` at 1s (end to end).
CUSTOM = (
    "{ jobSelector: 'job=\"celery-prod\"', queueBacklogHighMessages: 3,"
    "  runbookURLBase: 'https://wiki.example.com/celery',"
    "  alertFor: std.mapWithKey(function(k, v) '1s', super.alertFor) }"
)
# A celery_* metric name in an expression, and what follows it.
METRIC = re.compile(r'(?<![\w"])(celery_\w+)(\{[^}]*\})?')


def test_rendered_files_are_the_committed_ones() -> None:
    rendered = render.render()
    assert {p for p in rendered if p.startswith("alerts/")} == {
        str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "alerts").glob("*.yml")
    }
    drifted = [p for p, text in rendered.items() if (REPO_ROOT / p).read_text() != text]
    assert not drifted, f"run `make mixin`: {drifted} differ from the mixin's rendering"


def rendered_rules(tmp_path: Path, config: str) -> Path:
    subprocess.run(
        [sys.executable, str(RENDER_PY), "--config", config,
         "--out", str(tmp_path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return tmp_path / "alerts" / "celery.rules.yml"


def test_custom_config_selects_every_series_and_passes_promtool(tmp_path: Path) -> None:
    rules = rendered_rules(tmp_path, CUSTOM)
    groups = yaml.safe_load(rules.read_text())["groups"]
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    selectors = [m for expr in exprs for m in METRIC.finditer(expr)]
    assert len(selectors) > 40
    for match in selectors:
        assert match.group(2) and PROD in match.group(2), match.group(0)
    named = [e for e in exprs if "__name__=~" in e]
    assert named and all(f'_total", {PROD}}}' in e for e in named)
    backlog = next(
        r for g in groups for r in g["rules"] if r.get("alert") == "CeleryQueueBacklogHigh"
    )
    assert backlog["expr"].startswith(
        f"max without (instance, pod) (celery_queue_messages{{{PROD}}}) > 3\n"
    )
    assert backlog["for"] == "1s"
    assert (
        backlog["annotations"]["runbook_url"]
        == "https://wiki.example.com/celery#celeryqueuebackloghigh"
    )
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The dashboards' queries and variables select the job too.
    queries = [
        q
        for path in sorted((tmp_path / "grafana" / "dashboards").glob("*.json"))
        for q in re.findall(r'"(?:expr|definition)": "((?:[^"\\]|\\.)*)"', path.read_text())
    ]
    assert len(queries) > 100
    for query in queries:
        for match in METRIC.finditer(json.loads(f'"{query}"')):
            assert match.group(2) and PROD in match.group(2), (query, match.group(0))


@pytest.mark.parametrize(
    "config",
    [
        "{replicaLabels: []}",  # one exporter per cluster, no replica labels to drop
        "{clusterLabels: ['namespace', 'job', 'instance'], replicaLabels: ['pod']}",
    ],
)
def test_documented_label_layouts_render_rules_promtool_accepts(
    tmp_path: Path, config: str
) -> None:
    """docs/scaling.md offers these layouts: every rule file they render must parse."""
    rendered_rules(tmp_path, config)
    files = sorted((tmp_path / "alerts").glob("*.yml"))
    assert len(files) >= 3
    result = subprocess.run(
        [promtool(), "check", "rules", *map(str, files)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def firing(prometheus: PrometheusServer, rule_file: Path, alert: str) -> str:
    for group in prometheus.rules():
        if Path(group["file"]).resolve() == rule_file.resolve():
            for rule in group["rules"]:
                if rule.get("name") == alert:
                    # "unknown" health: not evaluated yet, so its state would prove nothing.
                    assert rule["health"] == "ok", rule
                    return str(rule["state"])
    raise AssertionError(f"{alert} not loaded from {rule_file}")


def test_custom_config_alerts_fire_end_to_end_for_its_job_only(
    tmp_path: Path,
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    prod_rules = rendered_rules(tmp_path / "prod", CUSTOM)
    # The twin: the same thresholds for a job Prometheus does not scrape stay silent.
    other_rules = rendered_rules(tmp_path / "other", CUSTOM.replace("celery-prod", "celery-other"))
    exporter = exporter_factory(redis_url, "--sample-interval", "1")
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        PrometheusServer.scrape_config([f"127.0.0.1:{exporter.port}"], job="celery-prod"),
        rule_files=[prod_rules, other_rules],
    )
    with prometheus:
        prometheus.wait_targets_up(60)
        producer = producer_factory(redis_url)
        for i in range(5):  # 5 > 3 (the custom threshold), far below the default 100
            producer.send("tests.add", args=(i, i))
        prometheus.wait_for_alert("CeleryQueueBacklogHigh", 60, queue_name="celery")
        prometheus.wait_for_alert("CeleryBacklogNoWorkers", 60)
        wait_for(
            lambda: firing(prometheus, prod_rules, "CeleryQueueBacklogHigh") == "firing", 30,
            message="the celery-prod rendering's alert is not the one firing",
        )  # fmt: skip
        for alert in ("CeleryQueueBacklogHigh", "CeleryBacklogNoWorkers"):
            assert firing(prometheus, other_rules, alert) == "inactive"


def test_readme_vendoring_example_renders(tmp_path: Path) -> None:
    """The README's jsonnet, with the mixin where `jb install` puts it (vendor/<repo path>)."""
    readme = (REPO_ROOT / "README.md").read_text()
    (example,) = re.findall(r"```jsonnet\n(.*?)```", readme, flags=re.S)
    assert (
        "jb install github.com/celery-metrics-exporter/celery-metrics-exporter/mixin@main" in readme
    )
    vendored = (
        tmp_path / "vendor" / "github.com" / "celery-metrics-exporter" / "celery-metrics-exporter"
    )
    vendored.mkdir(parents=True)
    (vendored / "mixin").symlink_to(REPO_ROOT / "mixin")
    (tmp_path / "celery.jsonnet").write_text(example)
    # Only the rules file is manifested: jsonnet's std.manifestJsonEx takes seconds per
    # dashboard, and the dashboards are the mixin's own (tested above).
    snippet = "local out = import 'celery.jsonnet';"
    snippet += "{ names: std.objectFields(out), rules: out['celery.rules.yml'] }"
    files = json.loads(
        render._jsonnet.evaluate_snippet(
            "example", snippet, jpathdir=[str(tmp_path), str(tmp_path / "vendor")]
        )
    )
    dashboards = sorted(p.name for p in (REPO_ROOT / "grafana" / "dashboards").glob("*.json"))
    assert files["names"] == [*dashboards, "celery.rules.yml"]
    rules = yaml.safe_load(files["rules"])
    alerts = {r.get("alert"): r for g in rules["groups"] for r in g["rules"]}
    backlog = alerts["CeleryQueueBacklogHigh"]
    assert backlog["expr"].startswith(
        'max without (instance, pod) (celery_queue_messages{job="celery-prod"}) > 500'
    )
    assert backlog["for"] == "15m"
