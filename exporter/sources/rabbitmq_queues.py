"""Where RabbitMQ queue depth and consumers are read: a passive ``queue_declare`` per queue.

It returns the ready messages (not the unacknowledged ones) and the broker's consumer count,
in under a millisecond, and never creates or changes a queue (a non-passive declare with
other arguments would fail with 406, or create a queue that nobody uses). A queue that does
not exist closes the channel with 404: that queue reads as absent, the next one gets a
fresh channel.

The same holds for quorum queues (Celery 5.5+, ``task_default_queue_type = "quorum"``):
the declare's message count is their ready messages too, and its consumer count the
consumers. Celery 5.5+ on quorum queues also delays ETA/countdown tasks in the broker
(native delayed delivery): such a task waits in one of the 28 queues ``celery_delayed_0``
... ``celery_delayed_27`` (dead-lettered from level to level) and reaches its task queue
only when due. Those queues are sampled as one figure, the scheduled messages, when the
``celery_delayed_delivery`` exchange exists (checked again every minute while it does not);
they are never task queues of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.connection import Connection

from exporter.sources.base import BrokerSample, QueueSample, release_quietly

DELAYED_EXCHANGE = "celery_delayed_delivery"
DELAYED_QUEUES = tuple(f"celery_delayed_{level}" for level in range(28))
# While the exchange is absent, look for it again every this many samples.
DELAYED_RECHECK_SAMPLES = 12


def is_delayed_delivery_queue(name: str) -> bool:
    return name in DELAYED_QUEUES


class RabbitMQQueueSource:
    name = "rabbitmq"

    def __init__(self, app: Celery, timeout: float, connect: Callable[[], Connection]) -> None:
        """``connect``: a connection with socket timeouts (brokers/amqp.py gives it)."""
        self.app = app
        self.timeout = timeout
        self._connect = connect
        self._conn: Connection | None = None
        self._channel: Any = None
        self._samples_until_delayed_check = 0

    def _channel_for_sampling(self) -> Any:
        if self._conn is None:
            # Socket timeouts too: a half-open connection fails the sample instead of
            # hanging the sampler.
            self._conn = self._connect()
            self._conn.ensure_connection(max_retries=0)
        if self._channel is None:
            self._channel = self._conn.channel()
        return self._channel

    def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        try:
            channel.close()  # py-amqp may have revived it: do not leak one per sample
        except Exception:
            pass

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        release_quietly(conn)

    def sample(self, queues: list[str]) -> BrokerSample:
        sample = BrokerSample()
        try:
            # Connect even with no queue to sample: a sample says whether the broker answers.
            self._channel_for_sampling()
            for queue in queues:
                if is_delayed_delivery_queue(queue):
                    continue  # counted below, as scheduled messages
                found = self._declare(queue)
                ready, consumers = found if found is not None else (0, 0)
                sample.queues[queue] = QueueSample(ready=ready, broker_consumers=consumers)
            sample.delayed_total = self._delayed_total()
        except Exception:
            self.close()
            raise
        return sample

    def _declare(self, queue: str) -> tuple[int, int] | None:
        """(ready, consumers) of a queue, None when it does not exist."""
        channel = self._channel_for_sampling()
        assert self._conn is not None
        try:
            _name, ready, consumers = channel.queue_declare(queue=queue, passive=True)
        except self._conn.channel_errors:
            # 404 (absent: nothing waits there, nobody consumes) or 405 (another
            # connection's exclusive queue). The broker closed the channel; the next
            # queue gets a new one.
            self._drop_channel()
            return None
        return int(ready), int(consumers)

    def _delayed_total(self) -> int | None:
        """Messages waiting in native delayed delivery; None when it is not set up."""
        if self._samples_until_delayed_check > 0:
            self._samples_until_delayed_check -= 1
            return None
        channel = self._channel_for_sampling()
        assert self._conn is not None
        try:
            channel.exchange_declare(DELAYED_EXCHANGE, "topic", passive=True)
        except self._conn.channel_errors:
            self._drop_channel()
            self._samples_until_delayed_check = DELAYED_RECHECK_SAMPLES
            return None
        total = 0
        for queue in DELAYED_QUEUES:
            found = self._declare(queue)
            if found is not None:
                total += found[0]
        return total
