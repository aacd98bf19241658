"""The Celery app the exporter uses to talk to the broker.

It carries the same transport options as the workers' (``global_keyprefix``,
``fanout_prefix``, ``sep``...): with different ones the exporter would subscribe to
nothing. The app is never used to run or consume tasks.
"""

from __future__ import annotations

from celery import Celery

from exporter.settings import Settings

CLIENT_NAME = "celery-metrics-exporter"


def make_app(settings: Settings) -> Celery:
    transport_options = dict(settings.transport_options)
    if settings.is_redis:
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
