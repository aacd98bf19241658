"""Periodic tasks with a real `celery beat`: the schedule, the learned rhythm, two beats."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.metrics import value
from tests.support.processes import ManagedProcess
from tests.support.waiting import wait_for

SCHEDULE = {"tick": {"task": "tests.add", "every": 1, "args": [1, 1]}}


def start_beat(broker_url: str, workdir: Path, name: str) -> ManagedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        CELERY_BROKER_URL=broker_url,
        TEST_SEND_SENT_EVENT="1",  # beat's own config: its tasks announce themselves
        TEST_BEAT_SCHEDULE=json.dumps(SCHEDULE),
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
