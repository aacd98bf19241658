"""The Celery app the exporter uses to talk to the broker.

It carries the same transport options as the workers' (``global_keyprefix``,
``fanout_prefix``, ``sep``...): with different ones the exporter would subscribe to
nothing. The app is never used to run or consume tasks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu.connection import Connection
from kombu.transport import redis as kombu_redis

from exporter.settings import Settings

CLIENT_NAME = "celery-metrics-exporter"


def _never_restore(self: Any, start: int = 0, num: int = 10, interval: int = 10) -> None:
    """The exporter never re-queues a task message (see ``never_restore_unacked``)."""
    return None


def never_restore_unacked() -> None:
    """Switch off kombu's ``restore_visible`` in this process.

    A kombu Redis channel that waits for messages on a (non-fanout) queue also re-queues
    every unacknowledged message older than its ``visibility_timeout`` (a write: the
    message is moved from the ``unacked`` hash back to its queue). In the exporter that
    channel is the reply queue of each inspect request, so the exporter would re-queue
    tasks workers still hold, and, when the workers' ``visibility_timeout`` is longer than
    the exporter's (long ETA tasks), have them run twice. Restoring is the workers' job;
    the exporter's process never consumes a task, so it never restores one.
    """
    kombu_redis.QoS.restore_visible = _never_restore  # type: ignore[method-assign]


def make_app(settings: Settings) -> Celery:
    transport_options = dict(settings.transport_options)
    if settings.is_redis:
        never_restore_unacked()
        # Shows who we are in Redis' CLIENT LIST (operators hunting a subscriber).
        transport_options.setdefault("client_name", CLIENT_NAME)
    app = Celery("celery-metrics-exporter", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport_options,
        broker_use_ssl=dict(settings.ssl_options) or None,
        broker_connection_retry_on_startup=False,
        event_exchange=settings.event_exchange,
        # No result backend: the exporter reads, it never stores.
        result_backend=None,
        worker_hijack_root_logger=False,
    )
    return app


def bounded_connection(app: Celery, timeout: float, for_write: bool = False) -> Connection:
    """A connection whose every blocking socket operation gives up after ``timeout``
    seconds (unless the transport options set their own): a hung broker must not hang the
    thread that talks to it."""
    options = dict(app.conf.broker_transport_options or {})
    scheme = urlsplit(str(app.conf.broker_url).split(";", 1)[0]).scheme.lower()
    if scheme in ("redis", "rediss", "sentinel"):
        options.setdefault("socket_timeout", timeout)
        options.setdefault("socket_connect_timeout", timeout)
    else:
        # py-amqp: drain_events(timeout) overrides these while it waits for messages.
        options.setdefault("read_timeout", timeout)
        options.setdefault("write_timeout", timeout)
    method = app.connection_for_write if for_write else app.connection_for_read
    conn: Connection = method(connect_timeout=timeout, transport_options=options)
    return conn
