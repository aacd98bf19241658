"""What a broker is to the exporter: what it can do, and the parts it provides.

Each broker kind is one module of this package (redis.py, amqp.py, sqs.py) holding one ``Broker``;
the rest of the exporter asks that object (``exporter.brokers.for_url``), never the URL's
scheme. Adding a broker is adding a module here (and its queue source in ``sources/``) and
naming it in ``__init__.py``: docs/architecture.md, "How to add a broker".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery
    from kombu.connection import Connection

    from exporter.events.stages import EventReader, OnMessage, OnSkip
    from exporter.settings import Settings
    from exporter.sources.base import QueueSource

# A transport option's type check: None when fine, else what is wrong.
Check = Callable[[Any], str | None]


class Broker(ABC):
    """One broker kind. The capabilities are class attributes, the parts methods."""

    #: The kind's name: the ``source`` label of queue sampling, and log lines.
    name: str
    #: URL schemes of this kind (the first part of a ``;``-joined failover list decides).
    schemes: tuple[str, ...]
    #: Celery task and worker events reach the exporter (the task and worker metrics).
    task_events: bool = True
    #: Remote control works (inspect ``active_queues``/``stats``/``conf``, ``enable_events``).
    remote_control: bool = True
    #: Queue depth can be sampled, and what a sample holds (``QueueSample`` fields set).
    queue_sampling: bool = True
    queue_sample_holds: frozenset[str] = frozenset()
    #: The transport options this kind's kombu transport reads, with their type checks.
    option_checks: Mapping[str, Check] = {}

    def app_transport_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The transport options of the exporter's Celery app (given: the user's)."""
        return options

    @abstractmethod
    def socket_timeouts(self, timeout: float) -> dict[str, Any]:
        """Transport options that bound every blocking socket operation to ``timeout``."""

    @abstractmethod
    def queue_source(
        self,
        app: Celery,
        settings: Settings,
        worker_options: Callable[[], dict[str, dict[str, Any]]],
    ) -> QueueSource:
        """What samples this broker's queues (on the sampler's clock, never in a scrape)."""

    def event_reader(
        self, channel: object, on_body: OnMessage, on_skip: OnSkip
    ) -> EventReader | None:
        """A reader of the event subscription faster than kombu's, or None: kombu's
        ``drain_events`` delivers the events (events/consumer.py)."""
        return None

    def connect(self, app: Celery, timeout: float, for_write: bool = False) -> Connection:
        """A connection whose every blocking socket operation gives up after ``timeout``
        seconds (unless the transport options set their own): a hung broker must not hang
        the thread that talks to it."""
        options = dict(app.conf.broker_transport_options or {})
        for key, value in self.socket_timeouts(timeout).items():
            given = options.get(key)
            if isinstance(value, dict) and isinstance(given, dict):
                # SQS's client-config: the user's proxies must not drop the timeouts.
                options[key] = {**value, **given}
            else:
                options.setdefault(key, value)
        method = app.connection_for_write if for_write else app.connection_for_read
        conn: Connection = method(connect_timeout=timeout, transport_options=options)
        return conn


# -- transport option checks (kombu reads the options lazily and trusts their types) ---------


def string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def number(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        return "must be a number, zero or more"
    return None


def integer(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be a whole number, zero or more"
    return None


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) else 'must be a JSON object, such as {"password": "..."}'


def string_or_boolean(value: Any) -> str | None:
    return None if isinstance(value, (str, bool)) else "must be a string, true or false"


#: Options of kombu's Connection and virtual transports, whatever the broker.
COMMON_OPTION_CHECKS: Mapping[str, Check] = {
    "polling_interval": number,
    "max_retries": integer,
    "interval_start": number,
    "interval_step": number,
    "interval_max": number,
}
