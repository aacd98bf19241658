"""Where RabbitMQ queue depth and consumers are read: a passive ``queue_declare`` per queue.

It returns the ready messages (not the unacknowledged ones) and the broker's consumer count,
in under a millisecond, and never creates or changes a queue (a non-passive declare with
other arguments would fail with 406, or create a queue that nobody uses). A queue that does
not exist closes the channel with 404: that queue reads as absent, the next one gets a
fresh channel.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.connection import Connection

from exporter.broker import bounded_connection
from exporter.sources.base import BrokerSample, QueueSample


class RabbitMQQueueSource:
    name = "rabbitmq"

    def __init__(self, app: Celery, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self._conn: Connection | None = None
        self._channel: Any = None

    def _channel_for_sampling(self) -> Any:
        if self._conn is None:
            # Socket timeouts too: a half-open connection fails the sample instead of
            # hanging the sampler.
            self._conn = bounded_connection(self.app, self.timeout)
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
        if conn is not None:
            try:
                conn.release()
            except Exception:
                pass

    def sample(self, queues: list[str]) -> BrokerSample:
        sample = BrokerSample()
        try:
            # Connect even with no queue to sample: a sample says whether the broker answers.
            self._channel_for_sampling()
            for queue in queues:
                channel = self._channel_for_sampling()
                assert self._conn is not None
                try:
                    _name, ready, consumers = channel.queue_declare(queue=queue, passive=True)
                except self._conn.channel_errors:
                    # 404 (absent: nothing waits there, nobody consumes) or 405 (another
                    # connection's exclusive queue). The broker closed the channel; the next
                    # queue gets a new one.
                    self._drop_channel()
                    ready, consumers = 0, 0
                sample.queues[queue] = QueueSample(
                    ready=int(ready), broker_consumers=int(consumers)
                )
        except Exception:
            self.close()
            raise
        return sample
