"""Series limits given as flags to the exporter process, with a real worker on a real Redis:
an excluded name, a name over the cap, no worker label (the limits in process, with a clock
the test controls: tests/unit/state/test_task_names.py).
"""

from __future__ import annotations

from collections.abc import Callable

from exporter.state.task_names import OTHER
from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, total, value
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer


def test_limits_from_the_command_line_with_a_real_worker(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(
        redis_url, "--task-exclude", "tests.fail", "--max-task-names", "1",
        "--no-task-worker-label",
    )  # fmt: skip
    worker = worker_factory(redis_url, "limits@test", queues=("celery",), pool="solo")
    worker.wait_ready()
    producer = producer_factory(redis_url, send_sent_event=True)
    for i in range(3):
        producer.send("tests.add", args=(i, i))  # admitted: the first name
    for _ in range(2):
        producer.send("tests.fail", args=("boom",))  # excluded
    producer.send("tests.retry_once", args=("k",))  # over the cap of 1

    def settled() -> Samples | None:
        s = exporter.scrape()
        done = (
            total(s, "celery_task_succeeded_total") == 4
            and total(s, "celery_task_failed_total") == 2
        )
        return s if done else None

    s = wait_for(settled, 60, interval=0.25, message=lambda: exporter.log())
    assert value(s, "celery_task_succeeded_total", name="tests.add", queue_name="celery") == 3
    assert value(s, "celery_task_succeeded_total", name=OTHER, queue_name="celery") == 1
    assert value(s, "celery_task_failed_total", name=OTHER, queue_name="celery",
                 exception="ValueError") == 2  # fmt: skip
    assert value(s, "celery_exporter_dropped_label_values_total", label="name",
                 reason="excluded") == 1  # fmt: skip
    assert value(s, "celery_exporter_dropped_label_values_total", label="name",
                 reason="over_limit") == 1  # fmt: skip
    assert all("hostname" not in dict(labels) for (n, labels) in s if n.startswith("celery_task_"))
