"""Where task events become task metrics.

``task-sent``/``task-received`` carry the name (and ``task-sent`` the queue); later events
carry only the uuid, so the tracker supplies what they lack. When nothing is known the
label says ``(unknown)``, never a plausible wrong value such as ``celery``.

Durations use the senders' raw epoch timestamps: the worker's own ``runtime`` for
successes, and started-to-failed (both on the worker's clock) for failures. Queue wait
spans two clocks (producer and worker) and is clamped at zero.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from exporter.events.stages import (
    Event,
    QueueConsumed,
    QueueOfWorker,
    TaskCounters,
    TaskHandler,
)
from exporter.labels import UNKNOWN, cached_label
from exporter.state.arrivals import ArrivalTracker
from exporter.state.label_cap import LabelCap
from exporter.state.task_names import OTHER, TaskNames
from exporter.state.task_tracker import TaskTracker, TrackedTask

MAX_QUEUES_SEEN = 1_000
# Celery 5.5+ native delayed delivery (RabbitMQ, quorum queues): an ETA/countdown task is
# published to exchange ``celery_delayed_27`` with routing key "<28 bits of the delay, dot
# separated>.<destination routing key>", and its task-sent names no queue.
DELAYED_EXCHANGE_SUFFIX = "celery_delayed_27"
_DELAYED_ROUTING_KEY = re.compile(r"(?:[01]\.){28}(.+)")

MAX_EXCEPTION_CLASS_CHARS = 100
MAX_QUALIFIED_CLASS_CHARS = 1_000
_EXCEPTION_CLASS = re.compile(r"[A-Za-z_][\w.]{0,99}")
_QUALIFIED_CLASS = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*){0,30}")


def event_time(event: Event, now: float) -> float:
    ts = event.get("timestamp")
    if type(ts) is float:  # the usual case, first
        return ts if ts == ts else now
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts == ts:
        return float(ts)
    return now


def parse_eta(value: object) -> float | None:
    """Celery sends ETA/countdown as ISO 8601; naive values are taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.timestamp()
    except (OverflowError, ValueError):  # year 1 or 9999 shifted by its UTC offset
        return None


def exception_class(value: object, traceback: object = None) -> str:
    """The class name of a failure's exception, never its ``repr``.

    Celery sends the exception's ``repr`` and the formatted traceback. A class can define any
    ``__repr__`` (a counter, an id), so the name comes from the traceback's last exception
    line (``myapp.errors.PaymentError: message``), as its last dotted part (what the default
    ``repr`` shows). Without a traceback, the name the ``repr`` starts with:
    ``ValueError('boom')`` -> ``ValueError``.
    """
    if isinstance(traceback, str):
        name = _traceback_class(traceback)
        if name is not None:
            return name
    if isinstance(value, str):
        # Celery 5.7 reports Reject(requeue=False) as task-failed too, with this repr.
        if value.startswith("reject requeue="):
            return "Reject"
        match = _EXCEPTION_CLASS.match(value)
        if match:
            return match.group(0)
    return UNKNOWN


def _traceback_class(text: str) -> str | None:
    """``PaymentError`` from a traceback whose last exception is ``app.PaymentError: ...``."""
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return None
    # The first line after the frames (which are indented) names the exception.
    for line in text[start:].splitlines()[1:]:
        if line[:1].isspace() or not line:
            continue
        qualified = line.split(":", 1)[0].strip()
        if len(qualified) <= MAX_QUALIFIED_CLASS_CHARS and _QUALIFIED_CLASS.fullmatch(qualified):
            name = qualified.rsplit(".", 1)[-1]
            # Too long for a class name: the repr's bounded prefix names it instead.
            return name if len(name) <= MAX_EXCEPTION_CLASS_CHARS else None
        return None
    return None


class TaskEventHandler:
    def __init__(
        self,
        metrics: TaskCounters,
        tracker: TaskTracker,
        queue_of_worker: QueueOfWorker,
        names: TaskNames | None = None,
        queue_names: LabelCap | None = None,
        exceptions: LabelCap | None = None,
        consumed: QueueConsumed = lambda queue: False,
    ) -> None:
        self.metrics = metrics
        self.tracker = tracker
        # Name label policy: include/exclude patterns, the cap, idle times.
        self.names = names if names is not None else TaskNames()
        # Without the worker label (--no-task-worker-label) counters are keyed (name, queue).
        self.worker_label = metrics.worker_label
        # The worker's only queue, when inspection showed it consumes exactly one.
        self.queue_of_worker = queue_of_worker
        # Caps on the queue names task-sent events carry and on exception classes.
        self.queue_names = queue_names
        self.exceptions = exceptions
        # Whether some worker consumes a queue of this name (from active_queues).
        self.consumed = consumed
        # Queues named by task-sent events since the sampler last asked (queue discovery).
        self.queues_seen: set[str] = set()
        self.arrivals = ArrivalTracker()

    def handlers(self) -> dict[str, TaskHandler]:
        """Event type -> handler(event, uuid, hostname, now); uuid is already validated."""
        return {
            "task-sent": self.on_sent,
            "task-received": self.on_received,
            "task-started": self.on_started,
            "task-succeeded": self.on_succeeded,
            "task-failed": self.on_failed,
            "task-retried": self.on_retried,
            "task-rejected": self.on_rejected,
            "task-revoked": self.on_revoked,
        }

    # -- helpers ---------------------------------------------------------------------

    def _labels(self, task: TrackedTask | None, hostname: str, now: float) -> tuple[str, str, str]:
        """(name, hostname, queue) of a worker-side event; marks the name as active."""
        if task is None:
            return UNKNOWN, hostname, self.queue_of_worker(hostname) or UNKNOWN
        if task.queue is not None and task.queue != OTHER and self.queue_names is not None:
            # In use: keeps its place, or takes it back if it was released meanwhile (a
            # long task), or folds: a released value never returns past the cap.
            task.queue = self.queue_names.label(task.queue, now)
        queue = task.queue or self.queue_of_worker(hostname) or UNKNOWN
        name = task.name or UNKNOWN
        self.names.touch(name, now)
        return name, hostname, queue

    def _key(self, labels: tuple[str, str, str]) -> tuple[str, ...]:
        """The worker-side counters' label values."""
        return labels if self.worker_label else (labels[0], labels[2])

    # -- handlers --------------------------------------------------------------------

    def on_sent(self, event: Event, uuid: str, hostname: str, now: float) -> None:
        # Producers publish task-sent after the task message, so a fast worker's events can
        # arrive first; a task-sent for a finished task is late, not a new delivery.
        task = self.tracker.finished(uuid) or self.tracker.touch(uuid, now)
        task.name = name = self.names.label(event.get("name"))
        self.names.touch(name, now)
        queue = self._queue_of_sent(event)
        if queue is not None and self.queue_names is not None:
            queue = self.queue_names.label(queue, now)
        # None, not (unknown): the worker's only queue can still tell it at the worker.
        task.queue = queue
        sent_at = task.sent_at = event_time(event, now)
        task.due_at = parse_eta(event.get("eta"))
        # A retry is sent again with the same uuid: its previous start is history. The
        # first delivery's task-sent can arrive after the task started (producers publish
        # it after the message): it must not erase that start.
        if event.get("retries"):
            task.started_at = None
        self.metrics.sent.inc((task.name, queue or UNKNOWN))
        if not event.get("retries"):
            sender = event.get("hostname")
            if name != OTHER and name != UNKNOWN:  # a mix of names has no rhythm
                self.arrivals.arrive(name, sent_at, sender if type(sender) is str else None)
        # A folded name is not a queue to sample; an admitted one is vouched for by the cap.
        if queue is not None and queue != OTHER and len(self.queues_seen) < MAX_QUEUES_SEEN:
            self.queues_seen.add(queue)

    def _queue_of_sent(self, event: Event) -> str | None:
        """The queue a task-sent names; for a task in native delayed delivery (which names
        none), its destination routing key when a worker consumes a queue of that name
        (Celery routes its queues by their own name)."""
        queue = event.get("queue")
        if isinstance(queue, str) and queue:
            return cached_label(queue)
        exchange, routing_key = event.get("exchange"), event.get("routing_key")
        if (
            isinstance(exchange, str)
            and exchange.endswith(DELAYED_EXCHANGE_SUFFIX)
            and isinstance(routing_key, str)
            and (match := _DELAYED_ROUTING_KEY.fullmatch(routing_key))
            and self.consumed(match.group(1))
        ):
            return cached_label(match.group(1))
        return None

    def on_received(self, event: Event, uuid: str, hostname: str, now: float) -> None:
        task = self.tracker.touch(uuid, now)
        name = event.get("name")
        if name is not None or task.name is None:
            task.name = self.names.label(name)
        task.received_at = event_time(event, now)
        task.received_by = hostname
        first_delivery = task.sent_at is None and not event.get("retries")
        if first_delivery and task.name != OTHER and task.name != UNKNOWN:
            self.arrivals.arrive(task.name, task.received_at, None)
        eta = event.get("eta")
        if eta is not None and (eta := parse_eta(eta)) is not None:
            task.due_at = eta
        task.started_at = None
        self.metrics.received.inc(self._key(self._labels(task, hostname, now)))

    def on_started(self, event: Event, uuid: str, hostname: str, now: float) -> None:
        task = self.tracker.touch(uuid, now)
        started_at = event_time(event, now)
        task.started_at = started_at
        task.started_by = hostname
        labels = self._labels(task, hostname, now)
        self.metrics.started.inc(self._key(labels))
        became_ready = task.sent_at if task.sent_at is not None else task.received_at
        if became_ready is not None:
            if task.due_at is not None and task.due_at > became_ready:
                became_ready = task.due_at
            self.metrics.queue_wait.observe(
                (labels[0], labels[2]), max(0.0, started_at - became_ready)
            )

    def on_succeeded(self, event: Event, uuid: str, hostname: str, now: float) -> None:
        task = self.tracker.finish(uuid)
        labels = self._labels(task, hostname, now)
        self.metrics.succeeded.inc(self._key(labels))
        runtime = event.get("runtime")
        if (
            isinstance(runtime, (int, float))
            and not isinstance(runtime, bool)
            and 0 <= runtime < math.inf
        ):
            self.metrics.runtime.observe((labels[0], labels[2], "succeeded"), float(runtime))

    def on_failed(self, event: Event, uuid: str, hostname: str, now: float) -> None:
        task = self.tracker.finish(uuid)
        labels = self._labels(task, hostname, now)
        exception = exception_class(event.get("exception"), event.get("traceback"))
        if self.exceptions is not None:
            exception = self.exceptions.label(exception, now)
        self.metrics.failed.inc((*self._key(labels), exception))
        if task is not None and task.started_at is not None:
            runtime = max(0.0, event_time(event, now) - task.started_at)
            self.metrics.runtime.observe((labels[0], labels[2], "failed"), runtime)

    def on_retried(self, event: Event, uuid: str, hostname: str, now: float) -> None:
        # Not terminal: the retry is sent and received again under the same uuid (and its
        # task-sent often arrives before this event).
        task = self.tracker.get(uuid, now)
        self.metrics.retried.inc(self._key(self._labels(task, hostname, now)))

    def on_rejected(self, event: Event, uuid: str, hostname: str, now: float) -> None:
        requeued = event.get("requeue") is True
        task = self.tracker.get(uuid, now) if requeued else self.tracker.finish(uuid)
        self.metrics.rejected.inc(self._key(self._labels(task, hostname, now)))

    def on_revoked(self, event: Event, uuid: str, hostname: str, now: float) -> None:
        task = self.tracker.finish(uuid)
        self.metrics.revoked.inc(self._key(self._labels(task, hostname, now)))
