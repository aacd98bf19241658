"""One queue source per broker kind: adding a broker means adding one module here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from exporter.settings import Settings
from exporter.sources.base import QueueSource
from exporter.sources.rabbitmq_queues import RabbitMQQueueSource
from exporter.sources.redis_queues import RedisQueueSource


def make_queue_source(
    app: Celery,
    settings: Settings,
    worker_options: Callable[[], dict[str, dict[str, Any]]] = dict,
) -> QueueSource:
    if settings.is_redis:
        return RedisQueueSource(
            app,
            settings.transport_options,
            settings.sample_timeout_seconds,
            worker_options=worker_options,
        )
    return RabbitMQQueueSource(app, settings.sample_timeout_seconds)
