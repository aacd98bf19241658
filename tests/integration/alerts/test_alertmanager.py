"""alerts/alertmanager/alertmanager.yml with a real Alertmanager, a real Prometheus and the
real exporter: one notification for a broker outage, a resolved one after recovery, and the
inhibit rules (critical over warning on the same broker and queue; broker down over worker,
queue and beat alerts).

The shipped route and inhibit rules are used as they are; only the receivers' URLs (the
test's webhook) and the grouping delays (seconds, not minutes) change, as only ``for:``
changes in the rules (tests/integration/dashboards/test_e2e_prometheus.py's ``fast_rules``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.dashboards.test_e2e_prometheus import fast_rules
from tests.support.alertmanager import AlertmanagerServer, WebhookReceiver
from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.prometheus import PrometheusServer
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker

CONFIG = REPO_ROOT / "alerts" / "alertmanager" / "alertmanager.yml"


def test_config_is_valid() -> None:
    amtool = shutil.which("amtool")
    assert amtool is not None, "amtool is missing: run `make system-packages`"
    result = subprocess.run(
        [amtool, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def config_for(webhook_url: str) -> str:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook_url
    config["route"].update(group_wait="1s", group_interval="1s")
    return yaml.safe_dump(config)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[AlertmanagerServer]:
    server = AlertmanagerServer(tmp_path / "alertmanager", config_for(webhook.url))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def alert_names(notification: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (a["labels"]["alertname"], a["labels"].get("broker", "")) for a in notification["alerts"]
    )


def test_inhibit_rules(alertmanager: AlertmanagerServer, webhook: WebhookReceiver) -> None:
    def alert(alertname: str, severity: str, /, **labels: str) -> dict[str, Any]:
        return {"labels": {"alertname": alertname, "severity": severity, **labels}}

    alertmanager.post_alerts([
        # broker b is down: its worker, queue and beat alerts are consequences...
        alert("CeleryBrokerUnreachable", "critical", broker="b"),
        alert("CeleryWorkerLost", "warning", broker="b", hostname="w1@h"),
        alert("CeleryQueueBacklogHigh", "warning", broker="b", queue_name="q"),
        alert("CeleryPeriodicTaskMissed", "warning", broker="b", name="tick"),
        # ...and a warning without a queue of the same broker yields to the critical.
        alert("CeleryTaskStuck", "warning", broker="b", name="report"),
        # Broker c: the critical of queue q silences q's warning, not r's.
        alert("CeleryQueueNoConsumer", "critical", broker="c", queue_name="q"),
        alert("CeleryQueueNotDraining", "warning", broker="c", queue_name="q"),
        alert("CeleryQueueNotDraining", "warning", broker="c", queue_name="r"),
        # Another broker's worker is not b's consequence.
        alert("CeleryWorkerLost", "warning", broker="d", hostname="w1@h"),
    ])  # fmt: skip

    def key(labels: dict[str, str]) -> tuple[str, str, str]:
        return labels["alertname"], labels["broker"], labels.get("queue_name", "")

    expected = [
        ("CeleryBrokerUnreachable", "b", ""),
        ("CeleryQueueNoConsumer", "c", "q"),
        ("CeleryQueueNotDraining", "c", "r"),
        ("CeleryWorkerLost", "d", ""),
    ]

    def delivered() -> list[tuple[str, str, str]]:
        return sorted(key(a["labels"]) for n in webhook.notifications for a in n["alerts"])

    wait_for(lambda: len(delivered()) >= len(expected), 30,
             message=lambda: f"delivered: {delivered()}\n{alertmanager.log_tail()}")  # fmt: skip
    assert delivered() == expected
    assert all(n["status"] == "firing" for n in webhook.notifications)

    # The others are held back by an inhibit rule (not merely late).
    def inhibited() -> list[tuple[str, str, str]]:
        return sorted(key(a["labels"]) for a in alertmanager.alerts() if a["status"]["inhibitedBy"])

    expected_inhibited = [
        ("CeleryPeriodicTaskMissed", "b", ""),
        ("CeleryQueueBacklogHigh", "b", "q"),
        ("CeleryQueueNotDraining", "c", "q"),
        ("CeleryTaskStuck", "b", ""),
        ("CeleryWorkerLost", "b", ""),
    ]
    wait_for(lambda: inhibited() == expected_inhibited, 10, message=lambda: str(inhibited()))
    assert delivered() == expected


def test_a_broker_outage_notifies_once_then_resolves(
    tmp_path: Path,
    alertmanager: AlertmanagerServer,
    webhook: WebhookReceiver,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    url = redis_server.url(0)
    exporter = exporter_factory(
        url, "--worker-timeout-heartbeats", "3", "--reconnect-max-backoff", "1"
    )
    config = PrometheusServer.scrape_config([f"127.0.0.1:{exporter.port}"]) + (
        "alerting:\n  alertmanagers:\n    - static_configs:\n"
        f"        - targets: [{json.dumps(f'127.0.0.1:{alertmanager.port}')}]\n"
    )
    prometheus = PrometheusServer(
        tmp_path / "prometheus", config, rule_files=[fast_rules(tmp_path)]
    )
    prometheus.start()
    try:
        worker = worker_factory(url, "am@test", heartbeat_interval=1)
        worker.wait_ready()
        prometheus.wait_targets_up(60)
        wait_for(lambda: prometheus.query_value("celery_workers_online") == 1, 60)

        redis_server.stop()
        wait_for(lambda: webhook.notifications, 60,
                 message=lambda: f"no notification; alerts: {prometheus.alerts()}")  # fmt: skip
        # The worker looks gone for longer than the for: of the worker alerts...
        wait_for(
            lambda: prometheus.query_value(
                "max(max_over_time(celery_worker_up[10s])) == 0"
                " and min(count_over_time(celery_worker_up[10s])) >= 8"
            )
            is not None,
            60, message="the worker did not look gone for 10 s",
        )  # fmt: skip
        # ...and the one notification is the cause.
        notifications = webhook.notifications
        assert [(n["status"], alert_names(n)) for n in notifications] == [
            ("firing", [("CeleryBrokerUnreachable", "")])
        ]

        redis_server.start()
        wait_for(lambda: len(webhook.notifications) >= 2, 90,
                 message=lambda: f"no resolved notification: {webhook.notifications}")  # fmt: skip
        assert [(n["status"], alert_names(n)) for n in webhook.notifications] == [
            ("firing", [("CeleryBrokerUnreachable", "")]),
            ("resolved", [("CeleryBrokerUnreachable", "")]),
        ]
    finally:
        prometheus.stop()
        redis_server.stop()
