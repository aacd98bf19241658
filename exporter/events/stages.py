"""The event pipeline's stages, named: follow an event from the broker to a counter.

1. ``EventReader`` reads the subscription (Redis: ``redis_stream.RedisEventStream``; RabbitMQ:
   none, kombu's ``drain_events``) and hands each message body to an ``OnMessage``:
   ``consumer.EventConsumer._handle_body`` (watchdog clock, errors contained), which hands it
   to the next ``OnMessage``: ``dispatch.EventDispatcher.on_message``.
2. The dispatcher decodes the body (``decode.decode_events``), counts each event in
   ``IntakeHealth``, checks its ranges, holds early worker events (``reorder.Reorder``) and
   calls the ``TaskHandler`` of its type (``tasks.TaskEventHandler.on_<type>``) or the
   ``WorkerHandler`` (``workers.WorkerEventHandler``).
3. A task handler increments ``TaskCounters`` (``collectors/tasks.py`` ``TaskMetrics``, built
   on ``prom/counting.py``).

The health seams are what each writer may do to the exporter's self-metrics (all of them
``collectors/health.py`` ``ExporterHealth``): ``ConnectionHealth`` (the consumer) and
``IntakeHealth`` (the dispatcher). Protocols are types only: the objects passed are the
implementations, so naming a stage costs nothing per event.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from exporter.prom.counting import LabelledCounter, LabelledHistogram

Event = dict[str, Any]


class OnMessage(Protocol):
    """One message off the wire: its body (JSON text, maybe a ``task.multi`` batch; from
    Redis whatever kombu's envelope held, which decoding checks) and content type."""

    def __call__(self, body: Any, content_type: str | None, /) -> None: ...


class OnSkip(Protocol):
    """A message skipped before decoding, by reason (counted in events_skipped_total)."""

    def __call__(self, reason: str, /) -> None: ...


class EventReader(Protocol):
    """A broker's own reader of the event subscription (Broker.event_reader)."""

    subscribed: bool

    def drain(self, timeout: float) -> int: ...

    def sample_backlog(self, now: float) -> int | None: ...


class TaskHandler(Protocol):
    """Applies one task event of one type; ``hostname`` is already the label value."""

    def __call__(self, event: Event, uuid: str, hostname: str, now: float, /) -> None: ...


class WorkerHandler(Protocol):
    """Applies one worker event (heartbeat, online, offline)."""

    def __call__(self, event: Event, now: float, /) -> None: ...


# What the event handlers ask remote control (control.py), named so that "go to definition"
# on a call lands here: each docstring names the method that answers.


class QueueOfWorker(Protocol):
    """The one queue a worker consumes, None when several or not known yet
    (``control.WorkerQueues.only_queue``)."""

    def __call__(self, hostname: str, /) -> str | None: ...


class QueueConsumed(Protocol):
    """Whether some worker said it consumes the queue (``control.WorkerQueues.consumed``)."""

    def __call__(self, queue: str, /) -> bool: ...


class AwaitsWorker(Protocol):
    """Whether a new worker's queues may still arrive, so its task events are worth holding
    (``control.ControlThread.awaiting_queues``)."""

    def __call__(self, hostname: str, /) -> bool: ...


class OnNewWorker(Protocol):
    """A worker came online or was first seen: ask it for its queues
    (``control.ControlThread.ask_queues``)."""

    def __call__(self, hostname: str, /) -> None: ...


class TaskCounters(Protocol):
    """What task events increment: the task collector's counters and histograms."""

    worker_label: bool
    sent: LabelledCounter
    received: LabelledCounter
    started: LabelledCounter
    succeeded: LabelledCounter
    failed: LabelledCounter
    retried: LabelledCounter
    rejected: LabelledCounter
    revoked: LabelledCounter
    runtime: LabelledHistogram
    queue_wait: LabelledHistogram

    def forget(self, label: str, value: str | Collection[str]) -> int: ...


class IntakeHealth(Protocol):
    """What the dispatcher tells the exporter's self-metrics, under its lock."""

    # Receive time minus the sender's timestamp of the latest event: written per event.
    event_lag: float | None

    def event_tally(self) -> dict[tuple[str, ...], float]:
        """The live counts of celery_exporter_events_total by (type,): the hot path adds
        to them in place (a call per event would cost more than the addition)."""
        ...

    def count_event(self, etype: str) -> None: ...

    def skip(self, reason: str) -> None: ...

    def received(self, now: float, tracked: int, held: int, names: int) -> None:
        """A message was applied at ``now``; the sizes of the tracker, of the held events
        and of the task names after it."""
        ...

    def set_sizes(self, tracked: int, held: int, names: int) -> None: ...

    def set_task_names(self, names: int) -> None: ...

    def set_evictions(self, by_size: int, by_age: int) -> None:
        """The tracker's eviction tallies (it counts them itself, off the hot path)."""
        ...


class ConnectionHealth(Protocol):
    """What the event consumer tells the exporter's self-metrics about its connection."""

    def set_broker_up(self, up: bool, now: float) -> None: ...

    def backdate_outage(self, since: float) -> None: ...

    def connect_failed(self, error: tuple[str, str]) -> None:
        """An attempt to connect failed: ``error`` is (kind, plain explanation)."""
        ...

    def connection_lost(self, reason: str, error: tuple[str, str], now: float) -> None:
        """A connection that carried events is gone (``reason``: error or watchdog)."""
        ...

    def set_event_backlog(self, backlog_bytes: int | None) -> None: ...

    def skip(self, reason: str) -> None: ...
