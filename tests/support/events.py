"""A raw consumer of Celery's event stream: no EventReceiver, no timestamp rewriting.

It binds its own queue to the ``celeryev`` exchange (``celery.events.event.get_exchange``, which
is fanout on Redis and topic on RabbitMQ) with routing key ``#``, and decodes each message body
with ``json`` itself. It records every message as a :class:`RawMessage` (routing key plus the
decoded body, a dict or, for ``task.multi`` batches, a list) and flattens bodies into
``events``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from celery.events.event import get_exchange
from kombu import Connection, Consumer, Exchange, Message, Queue
from kombu import Producer as KombuProducer

from tests.support.waiting import wait_for

Event = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class RawMessage:
    routing_key: str
    body: Any  # dict for one event, list of dicts for a batch ("task.multi")
    received_at: float  # time.time() when drained


class RawEventConsumer:
    """Consume Celery events from ``broker_url`` in this thread, by explicit ``poll()`` calls.

    Use as a context manager; ``start()`` returns only after a probe event published through
    the same exchange has come back, so nothing a worker sends afterwards can be missed
    (Redis pub/sub drops what is published before the subscription is in place).
    """

    PROBE_ROUTING_KEY = "test.probe"

    def __init__(self, broker_url: str, exchange_name: str = "celeryev") -> None:
        self.broker_url = broker_url
        self.exchange_name = exchange_name
        self.messages: list[RawMessage] = []
        self.events: list[Event] = []
        self._conn: Connection | None = None
        self._consumer: Consumer | None = None
        self._exchange: Exchange | None = None
        self._probe_id = uuid.uuid4().hex

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        conn = Connection(self.broker_url, connect_timeout=5)
        conn.connect()
        self._conn = conn
        exchange = get_exchange(conn, name=self.exchange_name)
        self._exchange = exchange
        queue = Queue(
            f"test-events-{uuid.uuid4().hex[:12]}",
            exchange=exchange,
            routing_key="#",
            auto_delete=True,
            exclusive=True,
            durable=False,
        )
        consumer = Consumer(
            conn.default_channel,
            queues=[queue],
            callbacks=[self._on_message],
            accept=["json"],
            no_ack=True,
        )
        consumer.consume()
        self._consumer = consumer
        self._await_probe(timeout)

    def _await_probe(self, timeout: float) -> None:
        assert self._conn is not None and self._exchange is not None
        probe_conn = self._conn.clone()
        producer = KombuProducer(probe_conn.default_channel)
        try:

            def probe_seen() -> bool:
                producer.publish(
                    {"type": "test-probe", "probe": self._probe_id, "timestamp": time.time()},
                    exchange=self._exchange,
                    routing_key=self.PROBE_ROUTING_KEY,
                    serializer="json",
                    declare=[self._exchange],
                )
                self.poll(0.2, return_early=True)
                return any(e.get("probe") == self._probe_id for e in self.events)

            wait_for(probe_seen, timeout, interval=0.0, message="the probe event never came back")
        finally:
            probe_conn.release()
        self.clear()

    def close(self) -> None:
        if self._consumer is not None:
            # Best effort: the connection may be dead already (broker outage tests).
            with contextlib.suppress(Exception):
                self._consumer.cancel()
            self._consumer = None
        if self._conn is not None:
            self._conn.release()
            self._conn = None

    def __enter__(self) -> RawEventConsumer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- consuming -----------------------------------------------------------------------------

    def _on_message(self, body: Any, message: Message) -> None:
        # Decode ourselves from the raw body: no kombu/celery post-processing of fields.
        raw = message.body
        decoded = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        routing_key = str(message.delivery_info.get("routing_key", ""))
        self.messages.append(RawMessage(routing_key, decoded, time.time()))
        if isinstance(decoded, list):
            self.events.extend(decoded)
        else:
            self.events.append(decoded)

    def poll(self, duration: float, return_early: bool = False) -> int:
        """Drain events for about ``duration`` seconds; return how many events arrived.

        With ``return_early``, return as soon as a drain call delivered something.
        """
        assert self._conn is not None, "start() first"
        before = len(self.events)
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):  # socket.timeout is TimeoutError
                self._conn.drain_events(timeout=min(remaining, 0.25))
            if return_early and len(self.events) > before:
                break
        return len(self.events) - before

    def drain_until(
        self,
        condition: Callable[[], T | None],
        timeout: float,
        message: str = "condition on the received events was not met",
    ) -> T:
        """Drain events until ``condition()`` is truthy (checked first); return its value."""

        def check() -> T | None:
            value = condition()
            if not value:
                self.poll(0.1, return_early=True)
                value = condition()
            return value

        return wait_for(
            check,
            timeout,
            interval=0.0,
            message=lambda: f"{message}; received (type@hostname: count): {self.summary()}",
        )

    def wait_for_event(
        self,
        predicate: Callable[[Event], bool],
        timeout: float,
        message: str = "no matching event",
    ) -> Event:
        """Drain until an event (already received or new) matches ``predicate``; return it."""

        def find() -> Event | None:
            return next((e for e in self.events if predicate(e)), None)

        found: Event = self.drain_until(find, timeout, message)
        return found

    def of_type(self, event_type: str, **fields: Any) -> list[Event]:
        """Received events of ``event_type`` whose fields equal ``fields``."""
        return [
            e
            for e in self.events
            if e.get("type") == event_type and all(e.get(k) == v for k, v in fields.items())
        ]

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.events:
            key = f"{event.get('type')}@{event.get('hostname')}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def clear(self) -> None:
        self.messages.clear()
        self.events.clear()
