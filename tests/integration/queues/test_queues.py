"""Queue depth, reserved messages, age and consumers, as the broker and the workers show
them: real Redis and RabbitMQ, real workers, compared with what the broker holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, label_values, value
from tests.support.servers import RabbitMQServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

FAST = ("--sample-interval", "0.5")
SEP = "\x06\x16"


def sampled(
    exporter: ExporterProcess, predicate: Callable[[Samples], bool], timeout: float = 30
) -> Samples:
    def check() -> Samples | None:
        s = exporter.scrape()
        return s if predicate(s) else None

    return wait_for(
        check,
        timeout,
        interval=0.2,
        message=lambda: f"condition not met; log:\n{exporter.log()[-2000:]}",
    )


def redis_lists(url: str) -> dict[bytes, list[bytes]]:
    """Every list and hash in the database, read independently of the exporter."""
    client = redis.Redis.from_url(url)
    try:
        content: dict[bytes, Any] = {}
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"list":
                content[key] = client.lrange(key, 0, -1)
            elif kind == b"hash":
                content[key] = client.hgetall(key)
        return content
    finally:
        client.close()


def test_redis_depth_sums_priority_lists_and_reads_nothing_away(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    producer = producer_factory(redis_url, send_sent_event=False)
    counts = {0: 5, 5: 4, 9: 3}  # priority -> tasks; steps 0/3/6/9 put 5 into list "3"
    for priority, n in counts.items():
        for i in range(n):
            producer.send("tests.add", args=(i, i), queue="prio", priority=priority)
    client = redis.Redis.from_url(redis_url)
    independent = {
        "0": client.llen("prio"),
        "3": client.llen(f"prio{SEP}3"),
        "6": client.llen(f"prio{SEP}6"),
        "9": client.llen(f"prio{SEP}9"),
    }
    client.close()
    assert independent == {"0": 5, "3": 4, "6": 0, "9": 3}
    before = redis_lists(redis_url)

    exporter = exporter_factory(redis_url, *FAST, "--queues", "prio,empty")
    s = sampled(exporter, lambda s: value(s, "celery_queue_messages", queue_name="prio") == 12)
    for priority, n in independent.items():
        assert (
            value(s, "celery_queue_messages_by_priority", queue_name="prio", priority=priority) == n
        )
    # A named queue with no key at all is 0, not an error or a missing series.
    assert value(s, "celery_queue_messages", queue_name="empty") == 0
    assert value(s, "celery_queue_reserved_messages", queue_name="prio") == 0
    assert value(s, "celery_queue_worker_consumers", queue_name="prio") == 0
    assert value(s, "celery_exporter_source_up", source="redis") == 1
    assert (
        value(s, "celery_exporter_source_last_success_timestamp_seconds", source="redis") or 0
    ) > 0
    # Let it sample a few more times, then compare every list and hash byte for byte.
    first = value(s, "celery_exporter_source_last_success_timestamp_seconds", source="redis")
    sampled(
        exporter,
        lambda s: (
            (value(s, "celery_exporter_source_last_success_timestamp_seconds", source="redis") or 0)
            >= (first or 0) + 1.0
        ),
    )
    assert redis_lists(redis_url) == before


def test_redis_prefix_and_custom_priority_steps(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    options = {"global_keyprefix": "prod:", "priority_steps": [0, 5], "sep": ":"}
    producer = producer_factory(redis_url, send_sent_event=False, broker_transport_options=options)
    for priority in (0, 0, 7, 7, 7):
        producer.send("tests.add", args=(1, 1), queue="jobs", priority=priority)
    client = redis.Redis.from_url(redis_url)
    assert (client.llen("prod:jobs"), client.llen("prod:jobs:5")) == (2, 3)
    client.close()
    exporter = exporter_factory(
        redis_url, *FAST,
        "--broker-transport-option", "global_keyprefix=prod:",
        "--broker-transport-option", "priority_steps=[0, 5]",
        "--broker-transport-option", "sep=:",
    )  # fmt: skip
    # "jobs" is discovered from kombu's bindings (the producer declared it), not named.
    s = sampled(exporter, lambda s: value(s, "celery_queue_messages", queue_name="jobs") == 5)
    assert value(s, "celery_queue_messages_by_priority", queue_name="jobs", priority="0") == 2
    assert value(s, "celery_queue_messages_by_priority", queue_name="jobs", priority="5") == 3


def test_routing_mismatch_shows_messages_and_no_consumer(
    broker_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(broker_url, *FAST)
    worker = worker_factory(broker_url, "celeryonly@test", queues=("celery",))
    worker.wait_ready()
    exporter.wait_worker_queues("celeryonly@test")
    producer = producer_factory(broker_url, send_sent_event=True)
    for i in range(7):
        producer.send("tests.add", args=(i, i), queue="ml_processing")
    s = sampled(
        exporter, lambda s: value(s, "celery_queue_messages", queue_name="ml_processing") == 7
    )
    assert value(s, "celery_queue_worker_consumers", queue_name="ml_processing") == 0
    assert value(s, "celery_queue_worker_consumers", queue_name="celery") == 1
    assert value(s, "celery_queue_messages", queue_name="celery") == 0
    # Celery's event and remote-control queues (the exporter's own included) are not tasks'.
    assert label_values(s, "celery_queue_messages", "queue_name") == {"celery", "ml_processing"}
    if broker_url.startswith("amqp"):
        assert value(s, "celery_queue_broker_consumers", queue_name="ml_processing") == 0
        assert value(s, "celery_queue_broker_consumers", queue_name="celery") == 1
    # The worker goes away: the queue it consumed now has no live consumer either.
    worker.stop()
    sampled(exporter, lambda s: value(s, "celery_queue_worker_consumers", queue_name="celery") == 0)


def test_reserved_messages_held_by_a_worker(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(redis_url, *FAST)
    worker = worker_factory(redis_url, "holder@test")
    worker.wait_ready()
    producer = producer_factory(redis_url, send_sent_event=True)
    # Countdown tasks are fetched at once and held by the worker, unacknowledged.
    for i in range(4):
        producer.send("tests.add", args=(i, i), countdown=600)
    s = sampled(
        exporter, lambda s: value(s, "celery_queue_reserved_messages", queue_name="celery") == 4
    )
    assert value(s, "celery_queue_messages", queue_name="celery") == 0
    assert value(s, "celery_broker_reserved_messages") == 4
    client = redis.Redis.from_url(redis_url)
    assert client.hlen("unacked") == 4
    client.close()


def test_oldest_message_age_grows_from_task_sent(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(redis_url, *FAST)
    producer = producer_factory(redis_url, send_sent_event=True)
    sent_from = time.time()
    for i in range(3):
        producer.send("tests.add", args=(i, i), queue="stuck")
    s = sampled(
        exporter,
        lambda s: (
            (value(s, "celery_queue_oldest_message_age_seconds", queue_name="stuck") or 0) >= 2.0
        ),
    )
    age = value(s, "celery_queue_oldest_message_age_seconds", queue_name="stuck")
    assert age is not None and age <= time.time() - sent_from + 0.1
    assert value(s, "celery_queue_messages", queue_name="stuck") == 3


def test_rabbitmq_missing_queue_does_not_break_the_next(
    rabbitmq_server: RabbitMQServer,
    rabbitmq_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    producer = producer_factory(rabbitmq_url, send_sent_event=False)
    for i in range(3):
        producer.send("tests.add", args=(i, i), queue="real")
    vhost = rabbitmq_url.rsplit("/", 1)[1]

    def broker_view() -> str:
        listed = rabbitmq_server.rabbitmqctl(
            "list_queues", "-p", vhost, "--no-table-headers", "--quiet",
            "name", "messages_ready", "messages_unacknowledged",
        )  # fmt: skip
        # The exporter's own (exclusive, auto-deleted) event queue is not a task queue.
        lines = [ln for ln in listed.stdout.splitlines() if not ln.startswith("celeryev.")]
        return "\n".join(sorted(lines))

    before = broker_view()
    assert "real\t3\t0" in before
    exporter = exporter_factory(rabbitmq_url, *FAST, "--queues", "aaa_missing,real,zzz_missing")
    s = sampled(exporter, lambda s: value(s, "celery_queue_messages", queue_name="real") == 3)
    assert value(s, "celery_queue_messages", queue_name="aaa_missing") == 0
    assert value(s, "celery_queue_messages", queue_name="zzz_missing") == 0
    assert value(s, "celery_queue_broker_consumers", queue_name="real") == 0
    assert value(s, "celery_exporter_source_up", source="rabbitmq") == 1
    # Sampling declared nothing and took nothing: the broker lists exactly the same queues.
    assert broker_view() == before


def test_reserved_messages_of_running_acks_late_tasks(
    redis_url: str,
    tmp_path: Path,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(redis_url, *FAST)
    worker = worker_factory(redis_url, "late@test", pool="prefork", concurrency=2)
    worker.wait_ready()
    producer = producer_factory(redis_url, send_sent_event=True)
    release = tmp_path / "release"
    for _ in range(2):
        producer.send("tests.wait_for_file_acks_late", args=(str(release), 60))
    # Running acks_late tasks stay in the unacked hash until they finish.
    s = sampled(
        exporter, lambda s: value(s, "celery_queue_reserved_messages", queue_name="celery") == 2
    )
    assert value(s, "celery_queue_messages", queue_name="celery") == 0
    release.touch()
    sampled(
        exporter, lambda s: value(s, "celery_queue_reserved_messages", queue_name="celery") == 0
    )
