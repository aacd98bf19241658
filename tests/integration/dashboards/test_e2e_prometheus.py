"""End to end: a real Prometheus scrapes the real exporter while real workers run; the
incidents are reproduced and each makes its shipped alert fire; every dashboard query
returns data.

The rules are the shipped file with every ``for:`` shortened to a few seconds (the only
change), evaluated every second.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.integration.dashboards.test_grafana_dashboards import (
    DASHBOARD_FILES,
    load,
    panel_targets,
    substitute,
)
from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.prometheus import PrometheusServer
from tests.support.publish import publish_raw_events
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

RULES = REPO_ROOT / "alerts" / "celery.rules.yml"
SCHEDULE = {"tick": {"task": "tests.add", "every": 60, "args": [0, 0]}}
# Panels that cannot have data on a Redis broker: RabbitMQ's own consumer count.
REDIS_EMPTY = {"celery_queue_broker_consumers"}


def fast_rules(directory: Path) -> Path:
    text = re.sub(r"(?m)^(\s+for:\s*)\d+[smh]\s*$", r"\g<1>3s", RULES.read_text())
    assert text != RULES.read_text()
    path = directory / "celery.rules.yml"
    path.write_text(text)
    return path


def test_incidents_fire_their_alerts_and_dashboards_show_data(
    tmp_path: Path,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    url = redis_server.url(0)
    app_env = {"CELERY_BROKER_URL": url, "TEST_BEAT_SCHEDULE": json.dumps(SCHEDULE)}
    exporter = exporter_factory(
        url,
        "--sample-interval", "1", "--inspect-interval", "2",
        "--worker-timeout-heartbeats", "3", "--reconnect-max-backoff", "1",
        "--app", "tests.support.celery_app:app",
        env=app_env,
    )  # fmt: skip
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        PrometheusServer.scrape_config([f"127.0.0.1:{exporter.port}"]),
        rule_files=[fast_rules(tmp_path)],
    )
    prometheus.start()
    release = tmp_path / "release"
    try:
        prometheus.wait_targets_up(60)
        producer = producer_factory(url, send_sent_event=True)

        # Incident 01: tasks queued, no worker at all.
        for i in range(5):
            producer.send("tests.add", args=(i, i))
        prometheus.wait_for_alert("CeleryBacklogNoWorkers", 60)

        # A worker comes and drains the queue; then tasks go to a queue nobody consumes
        # (incidents 03 and 04: routing mismatch).
        worker = worker_factory(
            url, "e2e@test", queues=("celery",), pool="prefork", concurrency=3,
            heartbeat_interval=1,
        )  # fmt: skip
        worker.wait_ready()
        exporter.wait_worker_queues("e2e@test")
        for i in range(7):
            producer.send("tests.add", args=(i, i), queue="ml_processing")
        prometheus.wait_for_alert("CeleryQueueNoConsumer", 60, queue_name="ml_processing")
        wait_for(
            lambda: not [a for a in prometheus.alerts()
                         if a["labels"]["alertname"] == "CeleryBacklogNoWorkers"],
            60, message="CeleryBacklogNoWorkers did not resolve once a worker ran",
        )  # fmt: skip

        # Incident 02: a worker (on a queue of its own) that keeps coming back.
        flappy = worker_factory(url, "flappy@test", queues=("flappy",), heartbeat_interval=1)
        flappy.wait_ready()
        for _ in range(4):
            flappy.stop()
            flappy.start()
            flappy.wait_ready()
        prometheus.wait_for_alert("CeleryWorkerFlapping", 60, hostname="flappy@test")

        # Traffic of every kind, for the dashboards: a long task, held tasks, garbage...
        producer.send("tests.wait_for_file", args=(str(release), 600))  # runs until released
        for i in range(3):
            producer.send("tests.add", args=(i, i), countdown=600)  # held: reserved
        publish_raw_events(url, [(b"not json", "application/json")])

        def traffic() -> None:
            # ...and a steady flow, since rate() needs a counter to grow while scraped.
            producer.send("tests.add", args=(1, 2))
            producer.send("tests.fail", args=("boom",))
            producer.send("tests.retry_once", args=(str(uuid.uuid4()),))
            producer.send("tests.reject")
            doomed = str(uuid.uuid4())
            producer.app.control.revoke(doomed, reply=True, timeout=5, limit=2)
            producer.send("tests.add", args=(0, 0), task_id=doomed)

        # Every dashboard query returns data.
        def empty_queries() -> list[str]:
            traffic()
            empty = []
            for filename in DASHBOARD_FILES:
                for where, _target, expr in panel_targets(load(filename)):
                    if not expr or any(m in expr for m in REDIS_EMPTY):
                        continue
                    if not prometheus.query(substitute(expr)):
                        empty.append(f"{filename} {where}: {expr}")
            return empty

        wait_for(
            lambda: not empty_queries(),
            120,
            interval=1.0,
            message=lambda: "queries without data:\n" + "\n".join(empty_queries()),
        )

        # Incident 01, later part: the broker becomes unreachable. One page: queue sampling
        # fails too (for longer than its for:), a consequence the rule suppresses.
        redis_server.stop()
        prometheus.wait_for_alert("CeleryBrokerUnreachable", 60)
        wait_for(
            lambda: prometheus.query_value(
                'max(max_over_time(celery_exporter_source_up{source="redis"}[10s])) == 0'
                " and min(count_over_time(celery_exporter_source_up[10s])) >= 8"
            )
            is not None,
            60, message="queue sampling did not keep failing for 10 s",
        )  # fmt: skip
        consequences = {"CeleryQueueSamplingFailing", "CeleryAllWorkersGone", "CeleryWorkerLost"}
        assert not [a for a in prometheus.alerts() if a["labels"]["alertname"] in consequences]
    finally:
        release.touch()
        prometheus.stop()
        redis_server.stop()
