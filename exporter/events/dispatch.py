"""Route each decoded event to its handler, and count what arrives and what is skipped.

Nothing an event contains can stop the stream: an event that is not an object, has no or
an unknown type, or a task event without a usable uuid is counted in
``celery_exporter_events_skipped_total{reason}``, logged once per reason, and skipped. A
number out of its range (``events/ranges.py``) is dropped before any handler sees it and
counted the same way (``reason="out_of_range"``); the event still counts for the rest. Each
event of a batch is applied on its own: one that fails costs only itself, never the events
after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from exporter.events.decode import MalformedMessage, decode_events
from exporter.events.ranges import CHECKED_TYPES, EventRanges
from exporter.events.reorder import Reorder
from exporter.events.stages import (
    AwaitsWorker,
    Event,
    IntakeHealth,
    TaskHandler,
    WorkerHandler,
)
from exporter.events.tasks import TaskEventHandler
from exporter.events.workers import WorkerEventHandler
from exporter.labels import UNKNOWN, cached_label
from exporter.logs import LogOnce
from exporter.state.label_cap import LabelCap
from exporter.state.worker_registry import WorkerRegistry

log = logging.getLogger(__name__)

# Known types not turned into metrics (Celery's own, harmless).
IGNORED_TYPES = frozenset({"worker-refused"})
MAX_UUID_LENGTH = 256
# Raw hostname -> label value, for the hot path; cleared when full (pod churn).
MAX_CACHED_HOSTNAMES = 4_096


class EventDispatcher:
    def __init__(
        self,
        tasks: TaskEventHandler,
        workers: WorkerEventHandler,
        registry: WorkerRegistry,
        health: IntakeHealth,
        clock: Callable[[], float] = time.time,
        reorder_window: float = 2.0,
        ranges: EventRanges | None = None,
        hostnames: LabelCap | None = None,
        awaits_worker: AwaitsWorker = lambda hostname: False,
    ) -> None:
        self.tasks = tasks
        self.workers = workers
        self.registry = registry
        self.health = health
        self.clock = clock
        self._task_handlers: dict[str, TaskHandler] = tasks.handlers()
        # Event type -> (handler, its key in celery_exporter_events_total).
        self._task_routes: dict[str, tuple[TaskHandler, tuple[str]]] = {
            etype: (handler, (etype,)) for etype, handler in self._task_handlers.items()
        }
        self._event_counts = health.event_tally()
        self._hostnames: dict[str, str] = {}
        # Hostname label -> its last task event (LabelCap.last_seen, batched off the hot path).
        self._hostname_seen: dict[str, float] = {}
        self.ranges = ranges if ranges is not None else EventRanges()
        self._window = self.ranges.time_window
        # The cap on worker hostnames (shared with the worker event handler); None: no cap.
        self.hostnames = hostnames
        self._worker_handlers: dict[str, WorkerHandler] = workers.handlers()
        self.reorder = Reorder(tasks.tracker, reorder_window, awaits_worker=awaits_worker)
        # Guards the task tracker and the task/health counters: events are applied on the
        # consumer thread, scrapes and housekeeping read them from others.
        self.lock = threading.Lock()
        self._log_once = LogOnce(log)
        # Per task name: (running, oldest start), refreshed by housekeeping (an O(n) scan).
        self.running: dict[str, tuple[int, float]] = {}
        # Per queue: tasks workers received and have not started, refreshed likewise.
        self.reserved: dict[str, int] = {}

    def on_message(self, body: bytes | str, content_type: str | None) -> None:
        now = self.clock()
        try:
            events = decode_events(body, content_type)
        except MalformedMessage as exc:
            with self.lock:
                self.health.skip(exc.reason)
            self._log_once(exc.reason, logging.WARNING, "skipping a message: %s", exc)
            return
        with self.lock:
            for event in events:
                try:
                    self._dispatch(event, now)
                except Exception:  # costs this event only, never the rest of the batch
                    self._handler_error(event.get("type") if type(event) is dict else None)
            self.health.received(
                now, len(self.tasks.tracker), len(self.reorder), len(self.tasks.names)
            )

    def _skip(self, reason: str, message: str, *args: object) -> None:
        self.health.skip(reason)
        self._log_once(reason, logging.WARNING, "skipping an event (%s): " + message, reason, *args)

    def _dispatch(self, event: Any, now: float) -> None:
        # The hot path: one call per event, attributes and cached label values read
        # directly (bench/RESULTS.md, Profile).
        if type(event) is not dict:
            self._skip("not_object", "a %s, not an object", type(event).__name__)
            return
        etype = event.get("type")
        if type(etype) is not str:
            self._skip("missing_type", "no string 'type' field")
            return
        route = self._task_routes.get(etype)
        if route is not None:
            task_handler, key = route
            counts = self._event_counts
            counts[key] = counts.get(key, 0.0) + 1.0
            uuid = event.get("uuid")
            if type(uuid) is not str or not uuid or len(uuid) > MAX_UUID_LENGTH:
                self._skip("bad_uuid", "%s event without a usable uuid", etype)
                return
            ts = event.get("timestamp")
            if (
                type(ts) is float
                and etype not in CHECKED_TYPES
                and -self._window <= now - ts <= self._window
            ):  # the usual case, inline: a float timestamp and nothing else to check
                self.health.event_lag = now - ts
            else:
                event = self._in_range(event, etype, now)
            if etype == "task-sent":
                hostname = UNKNOWN  # a producer's hostname labels nothing (nor takes a place)
            else:
                raw = event.get("hostname")
                cached = self._hostnames.get(raw) if type(raw) is str else None
                hostname = cached if cached is not None else self._hostname(raw, now)
                self._hostname_seen[hostname] = now  # for release_idle_labels
                if self.registry.task_event(hostname):
                    log.info("worker %s sends task events", hostname)
            if self.reorder.hold(etype, uuid, event, now, hostname):
                if len(self.reorder) > self.reorder.max_held:
                    # Past the bound between two housekeeping passes (a flood, or a backlog
                    # read at full speed): the oldest go now, so that the held events'
                    # memory stays bounded however fast they come.
                    for held in self.reorder.shed():
                        self._apply_held(held, now)
                return
            try:
                task_handler(event, uuid, hostname, now)
            except Exception:  # never let one event stop the stream
                self._handler_error(etype)
            if etype == "task-sent":
                for held in self.reorder.release(uuid):
                    self._apply_held(held, now)
            return

        worker_handler = self._worker_handlers.get(etype)
        if worker_handler is not None:
            self.health.count_event(etype)
            event = self._in_range(event, etype, now)
            try:
                worker_handler(event, now)
            except Exception:  # never let one event stop the stream
                self._handler_error(etype)
        elif etype in IGNORED_TYPES:
            self.health.count_event(etype)
        else:
            self._skip("unknown_type", "type %.80r", etype)

    def _in_range(self, event: Event, etype: str, now: float) -> Event:
        """``event`` without its out-of-range numbers (counted, logged once per field)."""
        bad = self.ranges.bad_fields(event, etype, now)
        if bad:
            self.health.skip("out_of_range")
            for field in bad:
                self._log_once(
                    ("out_of_range", field),
                    logging.WARNING,
                    "ignoring the %s of a %.80r event: %.40r is out of range%s",
                    field,
                    etype,
                    event.get(field),
                    " (is the sender's clock wrong? see --event-time-window)"
                    if field == "timestamp"
                    else "",
                )
            event = {k: v for k, v in event.items() if k not in bad}
        ts = event.get("timestamp")
        if type(ts) is float or type(ts) is int:
            self.health.event_lag = now - ts  # within the time window: finite
        return event

    def _hostname(self, raw: object, now: float) -> str:
        """The ``hostname`` label of a task event (``cached_label``, then the cap), kept in a
        small dict the hot path reads. A task event admits a hostname provisionally (a
        worker's first task events can precede its first heartbeat): one that never joins
        the worker registry gives its place back once idle (``release_idle_labels``)."""
        hostname = cached_label(raw)
        if self.hostnames is not None:
            hostname = self.hostnames.label(hostname, now)
        if type(raw) is str:
            if len(self._hostnames) >= MAX_CACHED_HOSTNAMES:
                self._hostnames.clear()
            self._hostnames[raw] = hostname
        return hostname

    def _apply_task(
        self, handler: TaskHandler, event: Event, uuid: str, hostname: str, now: float
    ) -> None:
        try:
            handler(event, uuid, hostname, now)
        except Exception:  # never let one event stop the stream
            self._handler_error(event.get("type"))

    def _apply_held(self, event: Event, now: float) -> None:
        # Held events were validated on arrival.
        handler = self._task_handlers[event["type"]]
        hostname = self._hostname(event.get("hostname"), now)
        self._apply_task(handler, event, event["uuid"], hostname, now)

    def _handler_error(self, etype: object) -> None:
        self.health.skip("handler_error")
        self._log_once(
            ("handler_error", etype),
            logging.ERROR,
            "error handling a %.80r event",
            etype,
            exc_info=True,
        )

    def take_queues_seen(self) -> set[str]:
        """Queues named by task-sent events since the last call."""
        with self.lock:
            seen, self.tasks.queues_seen = self.tasks.queues_seen, set()
        return seen

    def sent_at(self, uuid: str) -> float | None:
        with self.lock:
            return self.tasks.tracker.sent_at(uuid)

    def refresh_running(
        self,
        live_workers: set[str],
        idle_since: dict[str, float],
        online_since: dict[str, float] | None = None,
    ) -> None:
        """Recount running tasks per name (tasks on workers that went down do not count),
        and tasks reserved by workers per queue."""
        with self.lock:
            tracker = self.tasks.tracker
            self.running = tracker.running(live_workers, dict(idle_since))
            self.reserved = tracker.reserved(
                live_workers, dict(online_since or {}), self.tasks.queue_of_worker
            )

    def forget_worker(self, hostname: str) -> None:
        """Remove a forgotten worker's task series (pod churn must not grow them forever)."""
        with self.lock:
            self.tasks.metrics.forget("hostname", hostname)
            if self.hostnames is not None:
                self.hostnames.forget(hostname)
                self._hostnames.clear()  # cached decisions may name it

    def forget_idle_names(self, now: float, forget_after: float, keep: set[str]) -> list[str]:
        """Remove the series of task names without events for ``forget_after`` seconds
        (arrivals of periodic-looking names and of ``keep`` stay: alerts watch them)."""
        with self.lock:
            names = self.tasks.names
            gone = names.idle(now, forget_after)
            self.tasks.metrics.forget("name", gone)
            for name in gone:
                self.tasks.arrivals.forget_unless_periodic(name, keep)
            self.health.set_task_names(len(names))
        return gone

    def release_idle_labels(
        self, now: float, hostname_after: float, queue_after: float, exception_after: float
    ) -> tuple[list[str], list[str], list[str]]:
        """Free the cap places, and remove the series, of label values idle too long: task
        events' hostnames the worker registry does not know, ``task-sent`` queues no worker
        consumes, exception classes; returns them (hostnames, queues, exceptions)."""
        with self.lock:
            hostnames: list[str] = []
            if self.hostnames is not None and hostname_after > 0:
                seen = self.hostnames.last_seen
                cap = self.hostnames
                # The hot path's notes, folded in here (only of values that hold a place).
                seen.update((h, t) for h, t in self._hostname_seen.items() if h in cap)
                self._hostname_seen = {}
                hostnames = self.hostnames.release_idle(now, hostname_after, self.registry.knows)
                if hostnames:
                    self._hostnames.clear()  # cached decisions may name them
            # One pass over the series per label, however many values go (a flood of junk
            # labels released at once must not hold the lock for seconds).
            metrics = self.tasks.metrics
            metrics.forget("hostname", hostnames)
            queues = exceptions = []
            caps = self.tasks.queue_names, self.tasks.exceptions
            if caps[0] is not None and queue_after > 0:
                queues = caps[0].release_idle(now, queue_after, self.tasks.consumed)
                metrics.forget("queue_name", queues)
            if caps[1] is not None and exception_after > 0:
                exceptions = caps[1].release_idle(now, exception_after)
                metrics.forget("exception", exceptions)
        return hostnames, queues, exceptions

    def housekeeping(self, now: float) -> None:
        """Release held events whose wait is over, age out tracked tasks; on the clock."""
        with self.lock:
            for held in self.reorder.overdue(now):
                self._apply_held(held, now)
            tracker = self.tasks.tracker
            tracker.expire(now)
            self.health.set_sizes(len(tracker), len(self.reorder), len(self.tasks.names))
            # The tracker keeps the tallies (no counter call on the hot path); mirror them.
            self.health.set_evictions(tracker.evicted_by_size, tracker.evicted_by_age)
