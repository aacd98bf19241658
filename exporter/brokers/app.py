"""The Celery app the exporter uses to talk to the broker.

It carries the same transport options as the workers' (``global_keyprefix``,
``fanout_prefix``, ``sep``...): with different ones the exporter would subscribe to
nothing. The app is never used to run or consume tasks. Its broker adds what it needs
(``Broker.app_transport_options``: Redis names the connection and never restores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Celery

if TYPE_CHECKING:
    from exporter.settings import Settings


def make_app(settings: Settings) -> Celery:
    transport_options = settings.broker.app_transport_options(dict(settings.transport_options))
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
