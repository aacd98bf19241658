"""Route each decoded event to its handler, and count what arrives and what is skipped.

Nothing an event contains can stop the stream: an event that is not an object, has no or
an unknown type, or fields of the wrong type is counted in
``celery_exporter_events_skipped_total{reason}``, logged once per reason, and skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from exporter.events.decode import MalformedMessage, decode_events
from exporter.events.tasks import BadEvent, TaskEventHandler
from exporter.events.workers import WorkerEventHandler
from exporter.logs import LogOnce
from exporter.metrics.health import ExporterHealth
from exporter.state.worker_registry import WorkerRegistry

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], float], str | None]

# Known types not turned into metrics (Celery's own, harmless).
IGNORED_TYPES = frozenset({"worker-refused"})


class EventDispatcher:
    def __init__(
        self,
        tasks: TaskEventHandler,
        workers: WorkerEventHandler,
        registry: WorkerRegistry,
        health: ExporterHealth,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tasks = tasks
        self.workers = workers
        self.registry = registry
        self.health = health
        self.clock = clock
        self._handlers: dict[str, Handler] = {**tasks.handlers(), **workers.handlers()}
        # Guards the task tracker and the task/health counters: events are applied on the
        # consumer thread, scrapes and housekeeping read them from others.
        self.lock = threading.Lock()
        self._log_once = LogOnce(log)

    def on_message(self, body: bytes | str, content_type: str | None) -> None:
        now = self.clock()
        try:
            events = decode_events(body, content_type)
        except MalformedMessage as exc:
            with self.lock:
                self.health.skipped.inc((exc.reason,))
            self._log_once(exc.reason, logging.WARNING, "skipping a message: %s", exc)
            return
        with self.lock:
            for event in events:
                self._dispatch(event, now)
            self.health.last_event_at = now
            self.health.tracked_tasks = len(self.tasks.tracker)

    def _skip(self, reason: str, message: str, *args: object) -> None:
        self.health.skipped.inc((reason,))
        self._log_once(reason, logging.WARNING, "skipping an event (%s): " + message, reason, *args)

    def _dispatch(self, event: Any, now: float) -> None:
        if type(event) is not dict:
            self._skip("not_object", "a %s, not an object", type(event).__name__)
            return
        etype = event.get("type")
        handler = self._handlers.get(etype) if isinstance(etype, str) else None
        if handler is None:
            if not isinstance(etype, str):
                self._skip("missing_type", "no string 'type' field")
            elif etype in IGNORED_TYPES:
                self.health.events.inc((etype,))
            else:
                self._skip("unknown_type", "type %.80r", etype)
            return
        self.health.events.inc((str(etype),))
        ts = event.get("timestamp")
        if type(ts) is float or type(ts) is int:
            self.health.event_lag = now - ts
        try:
            hostname = handler(event, now)
        except BadEvent as exc:
            self._skip(exc.reason, "%s", exc)
            return
        except Exception:  # never let one event stop the stream
            self.health.skipped.inc(("handler_error",))
            self._log_once(
                ("handler_error", etype),
                logging.ERROR,
                "error handling a %.80r event",
                etype,
                exc_info=True,
            )
            return
        if hostname is not None and self.registry.task_event(hostname):
            log.info("worker %s sends task events", hostname)

    def housekeeping(self, now: float) -> None:
        """Age out tracked tasks; called on the clock by the daemon."""
        with self.lock:
            tracker = self.tasks.tracker
            tracker.expire(now)
            self.health.tracked_tasks = len(tracker)
            # The tracker keeps the tallies (no counter call on the hot path); mirror them.
            self.health.evictions.values[("size",)] = float(tracker.evicted_by_size)
            self.health.evictions.values[("age",)] = float(tracker.evicted_by_age)
