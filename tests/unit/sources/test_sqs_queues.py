"""SQS queue sampling (exporter/sources/sqs_queues.py): which queues are task queues; against
moto's server: tests/integration/brokers/test_sqs.py.
"""

from __future__ import annotations

from celery import Celery

from exporter.sources.sqs_queues import is_task_queue


def test_events_and_remote_control_queues_are_not_task_queues() -> None:
    app = Celery(broker="sqs://", set_as_current=False)
    channel_names = [
        "celeryev.0b7c3f8e-1d2a-4c5b-9e6f-7a8b9c0d1e2f",
        "worker1@host.celery.pidbox",
        "reply.celery.pidbox",
    ]
    with app.connection_for_read() as conn:
        translate = conn.transport.Channel.entity_name  # kombu's SQS spelling
        spelt = [translate(None, name) for name in channel_names]
    assert spelt == [
        "celeryev-0b7c3f8e-1d2a-4c5b-9e6f-7a8b9c0d1e2f",
        "worker1_host-celery-pidbox",
        "reply-celery-pidbox",
    ]
    assert not any(is_task_queue(name) for name in spelt)
    assert all(is_task_queue(name) for name in ("celery", "video-encode", "celery-dlq"))
