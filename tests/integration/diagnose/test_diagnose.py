"""`celery-metrics-exporter diagnose` on each incident, with real brokers and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.exporter import REPO_ROOT
from tests.support.ports import free_port
from tests.support.workers import CeleryWorker, Producer


def diagnose(
    url: str,
    *args: str,
    traffic: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run diagnose; with ``traffic``, call it repeatedly while diagnose listens."""
    argv = [sys.executable, "-m", "exporter", "diagnose", "--broker-url", url, *args]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    if traffic is None:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT
        )
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )
    while True:
        traffic()
        try:
            out, err = proc.communicate(timeout=0.3)  # paces the traffic; returns at exit
            break
        except subprocess.TimeoutExpired:
            continue
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_healthy_cluster_exit_0(
    broker_url: str,
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    worker = worker_factory(broker_url, "fine@test", heartbeat_interval=1)
    worker.wait_ready()
    producer = producer_factory(broker_url, send_sent_event=True)
    result = diagnose(
        broker_url, "--listen", "4", traffic=lambda: producer.send("tests.add", args=(1, 1))
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Broker    reachable" in result.stdout
    assert "fine@test" in result.stdout and "task events on" in result.stdout
    assert "none: healthy" in result.stdout
    assert "Result: 0 critical, 0 warning(s) (exit 0)" in result.stdout


def test_no_worker_and_tasks_waiting(
    redis_url: str, producer_factory: Callable[..., Producer]
) -> None:
    producer = producer_factory(redis_url, send_sent_event=False)
    for i in range(25):
        producer.send("tests.add", args=(i, i))
    result = diagnose(redis_url, "--listen", "2")
    assert result.returncode == 2, result.stdout
    assert "CRITICAL  no worker alive and 25 tasks waiting" in result.stdout


def test_routing_mismatch_names_the_queue_and_what_workers_consume(
    broker_url: str,
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    worker = worker_factory(broker_url, "w1@test", queues=("celery",), heartbeat_interval=1)
    worker.wait_ready()
    producer = producer_factory(broker_url, send_sent_event=False)
    for i in range(9):
        producer.send("tests.add", args=(i, i), queue="ml_processing")
    result = diagnose(broker_url, "--listen", "3", "--queues", "ml_processing")
    assert result.returncode == 2, result.stdout
    assert (
        "CRITICAL  queue `ml_processing` holds 9 messages and no worker consumes it"
        in result.stdout
    )
    assert "workers consume `celery`" in result.stdout
    assert "check task routes / worker -Q" in result.stdout
    # Sent without task-sent events: the age of the oldest message is "-", and said why.
    assert (
        "  - = not known. oldest: the next message's task-sent event was not seen (producers "
        "need task_send_sent_event = True)"
    ) in result.stdout


def test_worker_without_task_events_is_a_warning(
    redis_url: str,
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    worker = worker_factory(redis_url, "quiet@test", events=False, heartbeat_interval=1)
    worker.wait_ready()
    producer = producer_factory(redis_url, send_sent_event=False)
    result = diagnose(
        redis_url, "--listen", "8", traffic=lambda: producer.send("tests.add", args=(1, 1))
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "WARNING   worker `quiet@test` sends no task events" in result.stdout
    assert "start it with -E" in result.stdout


def test_priority_backlog_shows_the_hidden_messages_as_json(
    redis_url: str, producer_factory: Callable[..., Producer]
) -> None:
    producer = producer_factory(redis_url, send_sent_event=False)
    for priority, n in ((0, 5), (5, 4), (9, 3)):
        for i in range(n):
            producer.send("tests.add", args=(i, i), queue="prio", priority=priority)
    result = diagnose(redis_url, "--listen", "1", "--backlog-threshold", "10", "--format", "json")
    report = json.loads(result.stdout)
    assert result.returncode == report["exit_code"] == 2
    (queue,) = [q for q in report["observation"]["queues"] if q["name"] == "prio"]
    assert queue["ready"] == 12
    assert queue["by_priority"] == {"0": 5, "3": 4, "6": 0, "9": 3}
    summaries = {f["severity"]: [] for f in report["findings"]}
    for f in report["findings"]:
        summaries[f["severity"]].append(f["summary"])
    assert summaries["critical"] == ["no worker alive and 12 tasks waiting"]
    assert "queue `prio` has 7 of its 12 messages in priority sub-queues" in summaries["warning"]


def test_broker_down_is_explained(tmp_path: Path) -> None:
    result = diagnose(f"redis://:s3cret@127.0.0.1:{free_port()}/0", "--listen", "1")
    assert result.returncode == 2
    assert "Broker    UNREACHABLE (refused)" in result.stdout
    assert "nothing listens at that address (connection refused)" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr
