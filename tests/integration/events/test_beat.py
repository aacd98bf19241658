"""Periodic tasks with a real `celery beat`: the schedule, the learned rhythm, two beats."""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.dashboards.test_e2e_prometheus import fast_rules
from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.metrics import value
from tests.support.processes import ManagedProcess
from tests.support.prometheus import PrometheusServer
from tests.support.waiting import wait_for
from tests.support.workers import Producer

SCHEDULE = {"tick": {"task": "tests.add", "every": 1, "args": [1, 1]}}


def start_beat(
    broker_url: str, workdir: Path, name: str, schedule: dict[str, Any] = SCHEDULE
) -> ManagedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        CELERY_BROKER_URL=broker_url,
        TEST_SEND_SENT_EVENT="1",  # beat's own config: its tasks announce themselves
        TEST_BEAT_SCHEDULE=json.dumps(schedule),
        PYTHONPATH=str(REPO_ROOT),
    )
    beat = ManagedProcess(
        [sys.executable, "-m", "celery", "-A", "tests.support.celery_app", "beat",
         "-s", str(workdir / f"{name}-schedule"), "--pidfile", str(workdir / f"{name}.pid"),
         "-l", "info"],
        workdir / f"{name}.log", env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    beat.start()
    return beat


def test_beat_schedule_rhythm_and_a_second_beat(
    redis_url: str, tmp_path: Path, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    app_env = {"CELERY_BROKER_URL": redis_url, "TEST_BEAT_SCHEDULE": json.dumps(SCHEDULE)}
    exporter = exporter_factory(redis_url, "--app", "tests.support.celery_app:app", env=app_env)
    s = exporter.scrape()
    assert value(s, "celery_beat_schedule_interval_seconds", entry="tick", name="tests.add") == 1

    first = start_beat(redis_url, tmp_path, "beat-1")
    second = None
    try:
        # Learned from traffic: one sender, an interval of about a second.
        def rhythm() -> bool:
            s = exporter.scrape()
            interval = value(s, "celery_task_arrival_interval_seconds", name="tests.add")
            return (
                value(s, "celery_task_senders", name="tests.add") == 1
                and interval is not None
                and 0.8 <= interval <= 1.2
                and (value(s, "celery_task_sent_total", name="tests.add", queue_name="celery") or 0)
                >= 4
            )

        wait_for(rhythm, 30, interval=0.25, message=lambda: first.log_tail())

        second = start_beat(redis_url, tmp_path, "beat-2")
        # Two beats: two senders, and arrivals twice as often as scheduled.
        wait_for(
            lambda: value(exporter.scrape(), "celery_task_senders", name="tests.add") == 2,
            30, interval=0.25, message=lambda: second.log_tail() if second else "",
        )  # fmt: skip
        wait_for(
            lambda: (value(exporter.scrape(), "celery_task_arrival_interval_seconds",
                           name="tests.add") or 1.0) < 0.75,
            60, interval=0.25,
        )  # fmt: skip
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_killed_beat_pages_and_irregular_traffic_that_stops_does_not(
    redis_url: str,
    tmp_path: Path,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    """CeleryPeriodicTaskMissed (the shipped rule, for: shortened) with a real beat killed
    by SIGKILL: it fires within a minute of the first missed run. Its twin: one producer's
    Poisson traffic that stops, as a web app's at night, never fires."""
    every = 1.0
    schedule = {"tick": {"task": "tests.add", "every": every, "args": [1, 1]}}
    exporter = exporter_factory(redis_url)  # default flags: no --app, the rhythm is learned
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        PrometheusServer.scrape_config([f"127.0.0.1:{exporter.port}"]),
        rule_files=[fast_rules(tmp_path)],
    )
    prometheus.start()
    producer = producer_factory(redis_url, send_sent_event=True)
    stop_traffic = threading.Event()

    def poisson() -> None:  # one sender, about one task a second
        rng = random.Random(14)
        while not stop_traffic.wait(rng.expovariate(1.0)):
            producer.send("tests.sleep", args=(0,))

    traffic = threading.Thread(target=poisson, daemon=True)
    beat = start_beat(redis_url, tmp_path, "beat", schedule)
    try:
        prometheus.wait_targets_up(60)
        traffic.start()
        # Beat's rhythm is learned as regular once 10 intervals are seen (about 11 s).
        wait_for(
            lambda: prometheus.query_value('celery_task_arrival_regular{name="tests.add"}') == 1,
            90, interval=0.5, message=lambda: beat.log_tail(),
        )  # fmt: skip
        stop_traffic.set()
        traffic.join(10)
        beat.kill()
        last = value(exporter.scrape(), "celery_task_last_arrival_timestamp_seconds",
                     name="tests.add")  # fmt: skip
        assert last is not None
        first_missed = last + every

        def missed(task: str) -> list[dict[str, Any]]:
            return [
                a for a in prometheus.alerts()
                if a["labels"]["alertname"] == "CeleryPeriodicTaskMissed"
                and a["labels"].get("name") == task
            ]  # fmt: skip

        wait_for(
            lambda: [a for a in missed("tests.add") if a["state"] == "firing"],
            max(1.0, first_missed + 60 - time.time()), interval=0.2,
            message=lambda: f"no page a minute after the missed run: {prometheus.alerts()}",
        )  # fmt: skip
        # The Poisson name from one sender has been quiet for more than three of its
        # intervals plus for: (what used to page), yet is not periodic.
        s = exporter.scrape()
        assert value(s, "celery_task_senders", name="tests.sleep") == 1
        assert value(s, "celery_task_arrival_regular", name="tests.sleep") == 0
        wait_for(
            lambda: prometheus.query_value(
                'time() - celery_task_last_arrival_timestamp_seconds{name="tests.sleep"}'
                ' > 3 * celery_task_arrival_interval_seconds{name="tests.sleep"} + 5'
            )
            is not None,
            60, interval=0.5,
        )  # fmt: skip
        assert missed("tests.sleep") == []
    finally:
        stop_traffic.set()
        beat.stop()
        prometheus.stop()
