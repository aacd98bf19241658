"""The queue label of task events on a busy machine: exact, never ``(unknown)`` when it can
be known. Real Redis, real workers, a busy-loop process on each core during the test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, label_values, total, value
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

ROUNDS = 3
PER_QUEUE_BEFORE = 20  # queued before the worker starts: received the moment it is online
PER_QUEUE_AFTER = 10


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """One busy-loop process per core, for the whole test (CPU contention)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("sent_events", [False, True], ids=["no-task-sent", "task-sent"])
def test_new_workers_tasks_get_their_queue_under_cpu_contention(
    sent_events: bool,
    busy_cores: None,
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    """3 rounds; in each, two new workers (one solo, one prefork, each consuming one queue
    of its own) start with 20 tasks already waiting in their queue, so they receive them
    the moment they are online, and get 10 more once up: 60 tasks a round, 180 in all,
    every one received, started and succeeded, with a busy-loop process on each core.

    Without ``task-sent`` (producers' default) a task's queue can only come from its
    worker's ``active_queues`` answer, which the exporter asks as soon as the worker is
    online and waits for (before, those first tasks counted under ``(unknown)``). With
    ``task-sent`` (issue 15's setting), a late ``task-sent`` no longer matters either.
    Every counter must carry the right queue, exporter started with default flags."""
    exporter = exporter_factory(redis_url)
    producer = producer_factory(redis_url, send_sent_event=sent_events)
    expected: dict[str, int] = {}

    def send(queue: str, n: int) -> None:
        for i in range(n):
            producer.send("tests.add", args=(i, i), queue=queue)
        expected[queue] = expected.get(queue, 0) + n

    s: Samples = {}
    for r in range(ROUNDS):
        queues = (f"alpha{r}", f"beta{r}")
        for queue in queues:
            send(queue, PER_QUEUE_BEFORE)
        workers = [
            worker_factory(redis_url, f"solo{r}@test", queues=(queues[0],)),
            worker_factory(
                redis_url, f"prefork{r}@test", queues=(queues[1],), pool="prefork", concurrency=2
            ),
        ]
        for worker in workers:
            worker.wait_ready(timeout=60)
        for queue in queues:
            send(queue, PER_QUEUE_AFTER)

        def counted() -> Samples | None:
            s = exporter.scrape()
            done = all(
                total(s, f"celery_task_{kind}_total", queue_name=q) >= n
                for q, n in expected.items()
                for kind in ("received", "succeeded")
            )
            return s if done else None

        s = wait_for(counted, 60, interval=0.5, message=lambda: f"log:\n{exporter.log()[-3000:]}")
        for worker in workers:
            worker.stop()

    for kind in ("received", "started", "succeeded"):
        metric = f"celery_task_{kind}_total"
        assert label_values(s, metric, "queue_name") == set(expected), kind
        for queue, n in expected.items():
            assert total(s, metric, queue_name=queue) == n, (kind, queue)
    sent = value(s, "celery_task_sent_total", name="tests.add", queue_name="alpha0")
    assert sent == (30 if sent_events else None)
