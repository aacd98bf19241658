"""Worker liveness with real workers: kill, restart loops, workers without -E."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.exporter import ExporterProcess
from tests.support.metrics import value
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer


def test_sigkilled_worker_goes_down_once_heartbeats_are_overdue(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
) -> None:
    exporter = exporter_factory(redis_url, "--worker-timeout-heartbeats", "3")
    victim = worker_factory(redis_url, "victim@test", heartbeat_interval=1)
    survivor = worker_factory(redis_url, "survivor@test", heartbeat_interval=1)
    victim.wait_ready()
    survivor.wait_ready()
    wait_for(lambda: value(exporter.scrape(), "celery_workers_online") == 2, 30)
    s = exporter.scrape()
    assert value(s, "celery_worker_heartbeat_interval_seconds", hostname="victim@test") == 1.0

    victim.kill()  # SIGKILL: no worker-offline event
    s = wait_for(
        lambda: (
            lambda s: s if value(s, "celery_worker_up", hostname="victim@test") == 0 else None
        )(exporter.scrape()),
        30,
        message="killed worker still up",
    )
    # Overdue after 3 intervals of 1 s: judged on the exporter's clock.
    last = value(s, "celery_worker_last_heartbeat_timestamp_seconds", hostname="victim@test")
    assert last is not None and last > 0
    assert value(s, "celery_worker_offline_total", hostname="victim@test") == 0
    assert value(s, "celery_worker_active_tasks", hostname="victim@test") == 0
    assert value(s, "celery_worker_up", hostname="survivor@test") == 1
    assert value(s, "celery_workers_online") == 1


def test_restart_loop_counts_every_start(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
) -> None:
    exporter = exporter_factory(redis_url)
    worker = worker_factory(redis_url, "flappy@test")
    worker.wait_ready()
    wait_for(
        lambda: value(exporter.scrape(), "celery_worker_online_total", hostname="flappy@test") == 1,
        30,
    )
    for restart in range(1, 6):
        worker.stop()
        wait_for(
            lambda: value(exporter.scrape(), "celery_worker_up", hostname="flappy@test") == 0,
            30,
        )
        worker.start()
        worker.wait_ready()
        wait_for(
            lambda n=restart: (
                value(exporter.scrape(), "celery_worker_online_total", hostname="flappy@test")
                == 1 + n
            ),
            30,
        )
    s = exporter.scrape()
    assert value(s, "celery_worker_online_total", hostname="flappy@test") == 6
    assert value(s, "celery_worker_offline_total", hostname="flappy@test") == 5
    assert value(s, "celery_worker_up", hostname="flappy@test") == 1


def test_worker_without_task_events_is_reported_and_can_be_switched_on(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(redis_url)
    worker = worker_factory(redis_url, "quiet@test", events=False)
    worker.wait_ready()
    exporter.wait_worker_queues("quiet@test")
    producer = producer_factory(redis_url, send_sent_event=False)
    for i in range(3):
        producer.send("tests.add", args=(i, i))
    # Heartbeats show the tasks processed; no task event arrives: after the grace period
    # the exporter says the worker runs without -E, and logs a hint.
    wait_for(
        lambda: (
            value(exporter.scrape(), "celery_worker_task_events_enabled", hostname="quiet@test")
            == 0
        ),
        45,
        interval=0.5,
    )
    assert "quiet@test processes tasks but sends no task events" in exporter.log()
    s = exporter.scrape()
    assert value(s, "celery_worker_processed_tasks_total", hostname="quiet@test") == 3
    assert not [k for k in s if k[0] == "celery_task_succeeded_total"]

    # A second exporter that broadcasts enable_events turns them on.
    helper = exporter_factory(redis_url, "--enable-events-interval", "1")
    wait_for(
        lambda: (
            (value(helper.scrape(), "celery_exporter_enable_events_broadcasts_total") or 0) >= 1
        ),
        30,
    )
    producer.send("tests.add", args=(5, 5))
    wait_for(
        lambda: (
            value(
                exporter.scrape(),
                "celery_task_succeeded_total",
                name="tests.add",
                hostname="quiet@test",
                queue_name="celery",
            )
            == 1
        ),
        30,
    )
    wait_for(
        lambda: (
            value(exporter.scrape(), "celery_worker_task_events_enabled", hostname="quiet@test")
            == 1
        ),
        10,
    )
