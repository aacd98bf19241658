"""The queue label of task events on a busy machine: exact, never ``(unknown)`` when it can
be known. Real Redis, real workers, a busy-loop process on each core during the test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from exporter.events.reorder import WORKER_QUEUES_WAIT_SECONDS, Reorder
from exporter.state.task_tracker import TaskTracker
from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, label_values, total, value
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer
from tests.unit.events.test_dispatch import Clock, feed, make_exporter, samples

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


def test_reorder_waits_for_a_new_workers_answer_and_no_longer() -> None:
    """The hold in events/reorder.py, on a clock of its own: a new worker's task events wait
    past the window while its queues are being asked, go as soon as they are known, and
    never wait past WORKER_QUEUES_WAIT_SECONDS; a worker that answered is not waited for."""
    tracker = TaskTracker(1000, 3600)
    awaiting = {"new@h"}
    reorder = Reorder(tracker, window=2.0, awaits_worker=lambda host: host in awaiting)
    received = {"type": "task-received", "uuid": "a", "hostname": "new@h"}
    assert reorder.hold("task-received", "a", received, 100.0, "new@h")
    # No task-sent producers seen and a worker that already answered: nothing to wait for.
    other = {"type": "task-received", "uuid": "b", "hostname": "old@h"}
    assert not reorder.hold("task-received", "b", other, 100.0, "old@h")
    started = {"type": "task-started", "uuid": "a", "hostname": "new@h"}
    assert reorder.hold("task-started", "a", started, 101.0, "new@h")  # joins its task
    assert reorder.overdue(103.0) == [] and len(reorder) == 1  # past the window: parked
    assert reorder.overdue(110.0) == []
    awaiting.clear()  # the worker answered
    assert reorder.overdue(110.5) == [received, started] and len(reorder) == 0
    # A worker that never answers holds nothing past the cap.
    awaiting.add("mute@h")
    mute = {"type": "task-received", "uuid": "c", "hostname": "mute@h"}
    assert reorder.hold("task-received", "c", mute, 200.0, "mute@h")
    assert reorder.overdue(200.0 + WORKER_QUEUES_WAIT_SECONDS - 0.5) == []
    assert reorder.overdue(200.0 + WORKER_QUEUES_WAIT_SECONDS) == [mute]


def test_late_task_sent_keeps_the_start_and_reserved_counts_follow() -> None:
    """A first delivery's task-sent arriving after its task-started (producers publish it
    after the message) must not erase the start: the task is running, not reserved; a
    task received and not started is reserved on its worker's only queue."""
    clock = Clock()
    exp = make_exporter(clock)
    exp.primary.worker_queues.set("w@h", ("jobs",))
    t = clock.now
    feed(exp, {"type": "worker-online", "hostname": "w@h", "freq": 2.0, "active": 1})
    clock.now += 0.5
    feed(
        exp,
        {"type": "task-received", "uuid": "a", "name": "app.t", "hostname": "w@h", "timestamp": t},
        {"type": "task-started", "uuid": "a", "hostname": "w@h", "timestamp": t},
        {"type": "task-received", "uuid": "b", "name": "app.t", "hostname": "w@h", "timestamp": t},
        {"type": "task-sent", "uuid": "a", "name": "app.t", "queue": "jobs", "timestamp": t},
    )
    clock.now += 1.0
    for _ in range(5):
        exp.tick()
    s = samples(exp)
    assert value(s, "celery_task_running", name="app.t") == 1
    assert value(s, "celery_queue_worker_reserved_tasks", queue_name="jobs") == 1
