"""Celery 5.5+ on RabbitMQ with quorum queues and native delayed delivery: real RabbitMQ,
a real worker and producer configured as Celery's documentation says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.diagnose.test_diagnose import diagnose
from tests.integration.queues.test_queues import FAST, sampled
from tests.support.exporter import ExporterProcess
from tests.support.metrics import label_values, total, value
from tests.support.servers import RabbitMQServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

pytestmark = pytest.mark.rabbitmq

# Celery's documented setup for quorum queues: native delayed delivery needs a topic
# exchange, and publisher confirms are recommended; queues created on the fly (``backlog``)
# are quorum queues too with Celery 5.6's task_create_missing_queue_type.
QUORUM_CONF = {
    "task_default_queue_type": "quorum",
    "task_default_exchange_type": "topic",
    "task_create_missing_queue_type": "quorum",
}
TRANSPORT = {"confirm_publish": True}


def broker_queues(server: RabbitMQServer, url: str) -> dict[str, tuple[str, int, int, int]]:
    """name -> (type, ready, unacked, consumers) as rabbitmqctl lists them."""
    vhost = url.rsplit("/", 1)[1]
    listed = server.rabbitmqctl(
        "list_queues", "-p", vhost, "--no-table-headers", "--quiet",
        "name", "type", "messages_ready", "messages_unacknowledged", "consumers",
    )  # fmt: skip
    out: dict[str, tuple[str, int, int, int]] = {}
    for line in listed.stdout.splitlines():
        name, kind, ready, unacked, consumers = line.split("\t")
        out[name] = (kind, int(ready), int(unacked), int(consumers))
    return out


def delayed(listed: dict[str, tuple[str, int, int, int]]) -> int:
    return sum(v[1] for k, v in listed.items() if k.startswith("celery_delayed_"))


def test_quorum_queues_and_scheduled_tasks(
    rabbitmq_server: RabbitMQServer,
    rabbitmq_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    """A worker on the quorum queue ``celery``; countdown tasks wait in the broker's
    delayed-delivery queues (not the task queue, not the worker); a quorum queue nobody
    consumes holds its backlog. The exporter (default flags) shows each as RabbitMQ does."""
    conf = dict(QUORUM_CONF, broker_transport_options=TRANSPORT)
    worker = worker_factory(
        rabbitmq_url, "quorum@test", extra_env={"TEST_CELERY_CONF": json.dumps(conf)}
    )
    worker.wait_ready(timeout=60)
    exporter = exporter_factory(rabbitmq_url, *FAST, "--queues", "backlog")
    # The delayed tasks' task-sent names no queue: their destination routing key is taken
    # as the queue once a worker says it consumes a queue of that name.
    exporter.wait_worker_queues("quorum@test", "celery")
    producer = producer_factory(
        rabbitmq_url, send_sent_event=True, broker_transport_options=TRANSPORT
    )
    producer.app.conf.update(QUORUM_CONF)
    for i in range(5):
        producer.send("tests.add", args=(i, i), countdown=600)
    for i in range(3):
        producer.send("tests.add", args=(i, i), queue="backlog")
    soon = producer.send("tests.add", args=(1, 2), countdown=2)

    # rabbitmqctl's counts of quorum queues lag by a few seconds: poll them.
    def broker_shows_them() -> dict[str, tuple[str, int, int, int]] | None:
        listed = broker_queues(rabbitmq_server, rabbitmq_url)
        backlog = listed.get("backlog", ("", 0, 0, 0))
        return listed if delayed(listed) >= 5 and backlog[1] == 3 else None

    listed = wait_for(broker_shows_them, 30, interval=0.5)
    assert listed["celery"][0] == listed["backlog"][0] == "quorum", listed

    s = sampled(
        exporter,
        lambda s: (
            value(s, "celery_broker_delayed_messages") == 5
            and total(s, "celery_task_succeeded_total", queue_name="celery") == 1
            and value(s, "celery_queue_messages", queue_name="backlog") == 3
        ),
        timeout=60,
    )
    assert value(s, "celery_queue_messages", queue_name="celery") == 0
    assert value(s, "celery_queue_broker_consumers", queue_name="celery") == 1
    assert value(s, "celery_queue_worker_consumers", queue_name="celery") == 1
    assert value(s, "celery_queue_broker_consumers", queue_name="backlog") == 0
    # The delayed-delivery queues are not task queues of their own.
    assert not any(
        q.startswith("celery_delayed_")
        for q in label_values(s, "celery_queue_messages", "queue_name")
    )
    # Every task counter has its queue, the scheduled ones' task-sent included.
    assert value(s, "celery_task_sent_total", name="tests.add", queue_name="celery") == 6
    assert value(s, "celery_task_sent_total", name="tests.add", queue_name="backlog") == 3
    for metric in ("sent", "received", "started", "succeeded"):
        assert "(unknown)" not in label_values(s, f"celery_task_{metric}_total", "queue_name")
    assert soon
    # The broker agrees (its counts lag by a few seconds, hence the polling).
    wait_for(
        lambda: (
            (listed := broker_queues(rabbitmq_server, rabbitmq_url))
            and delayed(listed) == 5
            and listed["celery"][1:] == (0, 0, 1)
            and listed["backlog"][1:] == (3, 0, 0)
        ),
        30,
        interval=0.5,
    )
    # diagnose shows the scheduled tasks apart from the queues' backlog.
    report = diagnose(rabbitmq_url, "--listen", "1")
    assert "  scheduled for later (native delayed delivery): 5\n" in report.stdout, report.stdout


def test_quorum_queue_ready_unacked_and_running(
    rabbitmq_server: RabbitMQServer,
    rabbitmq_url: str,
    tmp_path: Path,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    """A prefork worker (-c 1, prefetch 1) on a quorum queue, three tasks that block: one
    runs (acknowledged when it started), one is prefetched (unacknowledged), one is ready.
    RabbitMQ tells the ready one over AMQP; the unacknowledged one comes from the task
    events (received, not started), and agrees with rabbitmqctl."""
    conf = dict(QUORUM_CONF, broker_transport_options=TRANSPORT)
    worker = worker_factory(
        rabbitmq_url,
        "quorumblock@test",
        pool="prefork",
        concurrency=1,
        extra_env={"TEST_CELERY_CONF": json.dumps(conf)},
    )
    worker.wait_ready(timeout=60)
    exporter = exporter_factory(rabbitmq_url, *FAST)
    exporter.wait_worker_queues("quorumblock@test", "celery")
    producer = producer_factory(
        rabbitmq_url, send_sent_event=True, broker_transport_options=TRANSPORT
    )
    producer.app.conf.update(QUORUM_CONF)
    release = tmp_path / "release"
    for _ in range(3):
        producer.send("tests.wait_for_file", args=(str(release), 60))
    s = sampled(
        exporter,
        lambda s: (
            value(s, "celery_queue_messages", queue_name="celery") == 1
            and value(s, "celery_queue_worker_reserved_tasks", queue_name="celery") == 1
            and value(s, "celery_task_running", name="tests.wait_for_file") == 1
        ),
        timeout=60,
    )
    assert value(s, "celery_queue_broker_consumers", queue_name="celery") == 1
    wait_for(
        lambda: broker_queues(rabbitmq_server, rabbitmq_url)["celery"] == ("quorum", 1, 1, 1),
        30,
        interval=0.5,
    )
    release.touch()
    # Refreshed every 5 s: the series goes once nothing is reserved any more.
    s = sampled(
        exporter,
        lambda s: (
            total(s, "celery_task_succeeded_total", queue_name="celery") == 3
            and value(s, "celery_queue_worker_reserved_tasks", queue_name="celery") is None
        ),
        timeout=60,
    )
    assert value(s, "celery_queue_messages", queue_name="celery") == 0
