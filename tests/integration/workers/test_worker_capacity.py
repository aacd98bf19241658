"""Worker capacity from stats replies, and long-running tasks, with a real prefork worker."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, value
from tests.support.prometheus import assert_promtool_clean
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

HOST = "busy@test"


def test_pool_memory_and_running_tasks(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(
        redis_url, "--inspect-interval", "1", "--worker-timeout-heartbeats", "3"
    )
    worker = worker_factory(redis_url, HOST, pool="prefork", concurrency=3, heartbeat_interval=1)
    worker.wait_ready()
    exporter.wait_worker_queues(HOST)
    producer = producer_factory(redis_url, send_sent_event=True)
    sent_at = time.time()
    for _ in range(2):
        producer.send("tests.sleep", args=(120,))

    def state() -> Samples | None:
        s = exporter.scrape()
        ready = (
            value(s, "celery_task_running", name="tests.sleep") == 2
            and value(s, "celery_worker_busy_processes", hostname=HOST) == 2
        )
        return s if ready else None

    s = wait_for(state, 30, interval=0.25)
    assert value(s, "celery_worker_pool_processes", hostname=HOST) == 3
    assert value(s, "celery_worker_prefetch_limit", hostname=HOST) == 3
    assert_promtool_clean(exporter.get("/metrics")[1])
    rss = value(s, "celery_worker_max_rss_bytes", hostname=HOST)
    assert rss is not None and 10 * 2**20 < rss < 2 * 2**30
    started = value(s, "celery_task_oldest_running_start_timestamp_seconds", name="tests.sleep")
    assert started is not None and sent_at - 1 <= started <= time.time()

    # Killed mid-task: the tasks are no longer running anywhere once the worker is down.
    worker.kill()
    s = wait_for(
        lambda: (lambda s: s if value(s, "celery_worker_up", hostname=HOST) == 0 else None)(
            exporter.scrape()
        ),
        30,
    )
    wait_for(
        lambda: value(exporter.scrape(), "celery_task_running", name="tests.sleep") is None, 15
    )
    assert value(exporter.scrape(), "celery_worker_busy_processes", hostname=HOST) == 0
