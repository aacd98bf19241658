"""Exact task counts with real workers, on Redis and on RabbitMQ.

Every counter and histogram count must equal what the workers really did, per task name
and per queue: tasks that succeed, fail (two exception classes), retry, get revoked and
rejected; a non-default queue reached with and without task-sent events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, value
from tests.support.prometheus import assert_promtool_clean
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

A, B = "wa@test", "wb@test"
ML = "ml_processing"


def counters(samples: Samples, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(labels)): v for (name, labels), v in samples.items() if name == metric}


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_exact_counts_per_name_and_queue(
    broker_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(broker_url)
    # A: prefork (batched task.multi events), default queue. B: solo, only ml_processing.
    worker_a = worker_factory(broker_url, A, queues=("celery",), pool="prefork", concurrency=2)
    worker_b = worker_factory(broker_url, B, queues=(ML,), pool="solo")
    worker_a.wait_ready()
    worker_b.wait_ready()
    # The exporter asks each new worker which queues it consumes (needed for the tasks
    # sent without task-sent events below).
    exporter.wait_worker_queues(A, "celery")
    exporter.wait_worker_queues(B, ML)

    announced = producer_factory(broker_url, send_sent_event=True)
    silent = producer_factory(broker_url, send_sent_event=False)
    for i in range(5):
        announced.send("tests.add", args=(i, i))
    for _ in range(3):
        announced.send("tests.fail", args=("boom",))
    for i in range(2):
        announced.send("tests.retry_once", args=(f"k{i}",))
    announced.send("tests.custom_error")
    announced.send("tests.reject")
    for i in range(4):
        announced.send("tests.add", args=(i, 1), queue=ML)
    for i in range(3):
        silent.send("tests.add", args=(i, 2), queue=ML)
    for i in range(2):
        silent.send("tests.add", args=(i, 3))
    # Revoked before delivery: both workers confirm the revoke before the task is sent.
    doomed = str(uuid.uuid4())
    replies = announced.app.control.revoke(doomed, reply=True, timeout=5, limit=2)
    assert len(replies) == 2
    announced.send("tests.add", args=(0, 0), task_id=doomed)

    def settled() -> Samples | None:
        s = exporter.scrape()
        done = (
            value(
                s, "celery_task_succeeded_total", name="tests.add", hostname=A, queue_name="celery"
            )
            == 7
            and value(s, "celery_task_succeeded_total", name="tests.add", hostname=B, queue_name=ML)
            == 7
            and value(
                s,
                "celery_task_succeeded_total",
                name="tests.retry_once",
                hostname=A,
                queue_name="celery",
            )
            == 2
            and value(
                s,
                "celery_task_rejected_total",
                name="tests.reject",
                hostname=A,
                queue_name="celery",
            )
            == 1
            and value(
                s, "celery_task_revoked_total", name="tests.add", hostname=A, queue_name="celery"
            )
            == 1
            and sum(counters(s, "celery_task_failed_total").values()) == 5
        )
        return s if done else None

    def progress() -> str:
        s = exporter.scrape()
        return "\n".join(
            f"{n}{dict(ls)} = {v}"
            for (n, ls), v in sorted(s.items(), key=str)
            if n.startswith("celery_task_") and n.endswith("_total")
        )

    s = wait_for(settled, 60, interval=0.25, message=progress)
    # Every family a busy cluster produces passes Prometheus' own lint.
    assert_promtool_clean(exporter.get("/metrics")[1])

    celery_q = {"queue_name": "celery"}
    assert counters(s, "celery_task_sent_total") == {
        key(name="tests.add", **celery_q): 6,
        key(name="tests.fail", **celery_q): 3,
        key(name="tests.retry_once", **celery_q): 2,
        key(name="tests.custom_error", **celery_q): 1,
        key(name="tests.reject", **celery_q): 1,
        key(name="tests.add", queue_name=ML): 4,
    }
    assert counters(s, "celery_task_received_total") == {
        # the revoked task is discarded before the worker announces task-received
        key(name="tests.add", hostname=A, **celery_q): 7,
        key(name="tests.fail", hostname=A, **celery_q): 3,
        key(name="tests.retry_once", hostname=A, **celery_q): 4,  # each retry is redelivered
        key(name="tests.custom_error", hostname=A, **celery_q): 1,
        key(name="tests.reject", hostname=A, **celery_q): 1,
        key(name="tests.add", hostname=B, queue_name=ML): 7,
    }
    assert counters(s, "celery_task_started_total") == {
        key(name="tests.add", hostname=A, **celery_q): 7,
        key(name="tests.fail", hostname=A, **celery_q): 3,
        key(name="tests.retry_once", hostname=A, **celery_q): 4,
        key(name="tests.custom_error", hostname=A, **celery_q): 1,
        key(name="tests.reject", hostname=A, **celery_q): 1,
        key(name="tests.add", hostname=B, queue_name=ML): 7,
    }
    assert counters(s, "celery_task_succeeded_total") == {
        key(name="tests.add", hostname=A, **celery_q): 7,
        key(name="tests.retry_once", hostname=A, **celery_q): 2,
        key(name="tests.add", hostname=B, queue_name=ML): 7,
    }
    assert counters(s, "celery_task_failed_total") == {
        key(name="tests.fail", hostname=A, exception="ValueError", **celery_q): 3,
        key(name="tests.custom_error", hostname=A, exception="CustomTaskError", **celery_q): 1,
        # Celery 5.7 reports Reject(requeue=False) as task-failed, then task-rejected.
        key(name="tests.reject", hostname=A, exception="Reject", **celery_q): 1,
    }
    assert counters(s, "celery_task_retried_total") == {
        key(name="tests.retry_once", hostname=A, **celery_q): 2,
    }
    assert counters(s, "celery_task_rejected_total") == {
        key(name="tests.reject", hostname=A, **celery_q): 1,
    }
    assert counters(s, "celery_task_revoked_total") == {
        key(name="tests.add", hostname=A, **celery_q): 1,
    }
    runtime = counters(s, "celery_task_runtime_seconds_count")
    assert runtime == {
        key(name="tests.add", state="succeeded", **celery_q): 7,
        key(name="tests.retry_once", state="succeeded", **celery_q): 2,
        key(name="tests.add", state="succeeded", queue_name=ML): 7,
        key(name="tests.fail", state="failed", **celery_q): 3,
        key(name="tests.custom_error", state="failed", **celery_q): 1,
        key(name="tests.reject", state="failed", **celery_q): 1,
    }
    assert counters(s, "celery_task_queue_wait_seconds_count") == {
        key(name="tests.add", **celery_q): 7,
        key(name="tests.fail", **celery_q): 3,
        key(name="tests.retry_once", **celery_q): 4,
        key(name="tests.custom_error", **celery_q): 1,
        key(name="tests.reject", **celery_q): 1,
        key(name="tests.add", queue_name=ML): 7,
    }
    assert not [k for k in s if "(unknown)" in dict(k[1]).values()]
    assert value(s, "celery_exporter_tracked_tasks") == 0
    assert value(s, "celery_worker_up", hostname=A) == 1
    assert value(s, "celery_worker_up", hostname=B) == 1
    assert value(s, "celery_worker_task_events_enabled", hostname=A) == 1
    assert value(s, "celery_workers_online") == 2
    assert value(s, "celery_exporter_broker_up") == 1
    assert sum(counters(s, "celery_exporter_events_skipped_total").values()) == 0
