"""RabbitMQ (AMQP 0-9-1: ``amqp://``, ``amqps://``, ``pyamqp://``) as a broker.

Events: an exclusive queue bound to the event exchange, drained by kombu. Queues: passive
declares (sources/rabbitmq_queues.py): ready messages and consumers, delayed delivery.
Remote control: kombu's pidbox over a fanout exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from exporter.brokers.base import Broker, Check, boolean, mapping, number
from exporter.sources.rabbitmq_queues import RabbitMQQueueSource

if TYPE_CHECKING:
    from celery import Celery

    from exporter.settings import Settings
    from exporter.sources.base import QueueSource

# py-amqp's connection
OPTION_CHECKS: Mapping[str, Check] = {
    "confirm_publish": boolean,
    "connect_timeout": number,
    "read_timeout": number,
    "write_timeout": number,
    "client_properties": mapping,
}


class AmqpBroker(Broker):
    name = "rabbitmq"
    schemes = ("amqp", "amqps", "pyamqp")
    queue_sample_holds = frozenset({"ready", "broker_consumers"})
    option_checks = OPTION_CHECKS

    def socket_timeouts(self, timeout: float) -> dict[str, float]:
        # py-amqp: drain_events(timeout) overrides these while it waits for messages.
        return {"read_timeout": timeout, "write_timeout": timeout}

    def queue_source(
        self,
        app: Celery,
        settings: Settings,
        worker_options: Callable[[], dict[str, dict[str, Any]]],
    ) -> QueueSource:
        timeout = settings.sample_timeout
        return RabbitMQQueueSource(app, timeout, lambda: self.connect(app, timeout))


AMQP = AmqpBroker()
