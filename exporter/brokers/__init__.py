"""The brokers the exporter reads, one module each: ask them, never the URL's scheme.

``for_url(url)`` gives the ``Broker`` (brokers/base.py) of a URL: its capabilities (task
events, remote control, queue sampling, what a queue sample holds) and its parts (event
reader, queue source, socket timeouts, transport option checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from exporter.brokers.amqp import AMQP
from exporter.brokers.base import Broker
from exporter.brokers.redis import REDIS
from exporter.brokers.sqs import SQS

if TYPE_CHECKING:
    from celery import Celery
    from kombu.connection import Connection

BROKERS: tuple[Broker, ...] = (REDIS, AMQP, SQS)
SCHEMES: tuple[str, ...] = tuple(scheme for broker in BROKERS for scheme in broker.schemes)
_BY_SCHEME = {scheme: broker for broker in BROKERS for scheme in broker.schemes}

__all__ = ["BROKERS", "SCHEMES", "Broker", "bounded_connection", "for_url", "scheme_of"]


def scheme_of(url: str) -> str:
    """The scheme of a URL (of its first part, for a ``;``-joined failover list)."""
    return urlsplit(url.split(";", 1)[0].strip()).scheme.lower()


def for_url(url: str) -> Broker:
    """The broker of ``url``; ``ValueError`` naming the supported schemes otherwise."""
    scheme = scheme_of(url)
    broker = _BY_SCHEME.get(scheme)
    if broker is None:
        shown = scheme or "(none)"
        raise ValueError(f"unsupported scheme {shown!r}; use one of {', '.join(SCHEMES)}")
    return broker


def bounded_connection(app: Celery, timeout: float, for_write: bool = False) -> Connection:
    """A connection to the app's broker whose socket operations time out (Broker.connect)."""
    return for_url(str(app.conf.broker_url)).connect(app, timeout, for_write)
