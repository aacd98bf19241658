"""Publish arbitrary bodies on the broker's Celery event exchange, as a hostile sender would."""

from __future__ import annotations

from celery.events.event import get_exchange
from kombu import Connection
from kombu import Producer as KombuProducer


def publish_raw_events(
    broker_url: str,
    bodies: list[tuple[bytes, str]],
    routing_key: str = "task.multi",
) -> None:
    """Publish each (body, content_type) as one message to the ``celeryev`` exchange."""
    with Connection(broker_url) as conn:
        exchange = get_exchange(conn)
        producer = KombuProducer(conn.channel(), exchange=exchange)
        for body, content_type in bodies:
            producer.publish(
                body,
                routing_key=routing_key,
                content_type=content_type,
                content_encoding="utf-8",
                declare=[exchange],
            )
