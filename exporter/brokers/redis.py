"""Redis as a broker (``redis://``, ``rediss://`` with TLS, ``sentinel://``).

Events: kombu's pub/sub subscription, read by events/redis_stream.py (faster than kombu's
own reader). Queues: lists read with LLEN/LINDEX/HLEN (sources/redis_queues.py). Remote
control: kombu's pidbox over pub/sub.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kombu.transport import redis as kombu_redis

from exporter.brokers.base import (
    Broker,
    Check,
    boolean,
    integer,
    mapping,
    number,
    string,
    string_or_boolean,
)
from exporter.events.redis_stream import RedisEventStream
from exporter.events.stages import OnMessage, OnSkip
from exporter.sources.redis_queues import RedisQueueSource

if TYPE_CHECKING:
    from celery import Celery

    from exporter.settings import Settings
    from exporter.sources.base import QueueSource

# Shows who we are in Redis' CLIENT LIST (operators hunting a subscriber).
CLIENT_NAME = "celery-metrics-exporter"


def _priority_steps(value: Any) -> str | None:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 255 for s in value)
        and value == sorted(set(value))
    ):
        return None
    return "must be a JSON list of increasing whole numbers, such as [0,3,6,9]"


def _queue_order(value: Any) -> str | None:
    choices = ("round_robin", "priority", "sorted")
    return None if value in choices else f"must be one of {', '.join(choices)}"


# kombu's Redis (and Sentinel) channel
OPTION_CHECKS: Mapping[str, Check] = {
    "sep": string,
    "global_keyprefix": string,
    "unacked_key": string,
    "unacked_index_key": string,
    "unacked_mutex_key": string,
    "client_name": string,
    "master_name": string,
    "body_encoding": string,
    "deadletter_queue": string,
    "fanout_prefix": string_or_boolean,
    "fanout_patterns": boolean,
    "ack_emulation": boolean,
    "socket_keepalive": boolean,
    "retry_on_timeout": boolean,
    "sentinel_fanout_compat": boolean,
    "priority_steps": _priority_steps,
    "queue_order_strategy": _queue_order,
    "visibility_timeout": number,
    "socket_timeout": number,
    "socket_connect_timeout": number,
    "health_check_interval": number,
    "reauth_check_interval": number,
    "unacked_mutex_expire": number,
    "unacked_restore_interval": number,
    "unacked_restore_throttle": number,
    "max_connections": integer,
    "unacked_restore_limit": integer,
    "min_other_sentinels": integer,
    "sentinel_kwargs": mapping,
    "socket_keepalive_options": mapping,
}


def _never_restore(self: Any, start: int = 0, num: int = 10, interval: int = 10) -> None:
    """The exporter never re-queues a task message (see ``never_restore_unacked``)."""
    return None


def _drop_unclaimed(self: Any, raw_message: Any) -> None:
    """The exporter drops a message no consumer of its own waits for (see
    ``never_restore_unacked``)."""
    return None


def never_restore_unacked() -> None:
    """Switch off, in this process, the two ways kombu's Redis transport writes a message
    back: ``restore_visible``, and the re-queueing of a message nobody consumes.

    A kombu Redis channel that waits for messages on a (non-fanout) queue also re-queues
    every unacknowledged message older than its ``visibility_timeout`` (a write: the
    message is moved from the ``unacked`` hash back to its queue). In the exporter that
    channel is the reply queue of each inspect request, so the exporter would re-queue
    tasks workers still hold, and, when the workers' ``visibility_timeout`` is longer than
    the exporter's (long ETA tasks), have them run twice. Restoring is the workers' job;
    the exporter's process never consumes a task, so it never restores one.

    A worker's reply that comes after its inspect request ended (its consumer cancelled,
    the reply queue about to be deleted) can still be taken by the channel's ``BRPOP``:
    kombu then records it as unacknowledged and pushes it back onto the reply queue (five
    writes; seen by the read-only check of the test suite). Nobody reads that queue again:
    the exporter drops it instead.
    """
    kombu_redis.QoS.restore_visible = _never_restore  # type: ignore[method-assign]
    kombu_redis.Transport._reject_inbound_message = _drop_unclaimed  # type: ignore[method-assign]


class RedisBroker(Broker):
    name = "redis"
    schemes = ("redis", "rediss", "sentinel")
    queue_sample_holds = frozenset(
        {"ready", "by_priority", "reserved", "oldest_message_id", "priority_mismatch"}
    )
    option_checks = OPTION_CHECKS

    def app_transport_options(self, options: dict[str, Any]) -> dict[str, Any]:
        never_restore_unacked()
        options = dict(options)
        options.setdefault("client_name", CLIENT_NAME)
        return options

    def socket_timeouts(self, timeout: float) -> dict[str, float]:
        return {"socket_timeout": timeout, "socket_connect_timeout": timeout}

    def queue_source(
        self,
        app: Celery,
        settings: Settings,
        worker_options: Callable[[], dict[str, dict[str, Any]]],
    ) -> QueueSource:
        return RedisQueueSource(
            app,
            settings.transport_options,
            settings.sample_timeout,
            worker_options=worker_options,
        )

    def event_reader(
        self, channel: object, on_body: OnMessage, on_skip: OnSkip
    ) -> RedisEventStream | None:
        # kombu's Redis channel (a pub/sub subscription kombu opened): we read its replies.
        return RedisEventStream(channel, on_body, on_skip)  # type: ignore[arg-type]


REDIS = RedisBroker()
