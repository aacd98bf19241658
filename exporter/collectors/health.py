"""The exporter's own health, per broker: connection, event intake, tracker bounds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.prom.counting import LabelledCounter


class ExporterHealth:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.broker_up = False
        # Seconds without an event connection: closed outages, plus the open one (if any)
        # since ``_down_since``. Down from the start until the first connection.
        self._down_seconds = 0.0
        self._down_since: float | None = clock()
        # When broker_up last changed (for the status page's "since"), and why the latest
        # connection attempt failed: (kind, plain explanation), None once connected.
        self.broker_since: float = clock()
        self.broker_error: tuple[str, str] | None = None
        # When the current (or last) connection came up: an outage never reaches back before.
        self._up_since: float | None = None
        self.last_event_at: float | None = None
        self.event_lag: float | None = None
        # Redis: bytes the broker holds for the event subscription (None: unknown).
        self.event_backlog_bytes: int | None = None
        self.tracked_tasks = 0
        self.held_tasks = 0
        self.task_names = 0
        self.reconnects = LabelledCounter(
            "celery_exporter_broker_reconnects_total",
            "Times the event connection was lost or abandoned and opened again, by reason.",
            ("reason",),
        )
        self.connect_failures = LabelledCounter(
            "celery_exporter_broker_connect_failures_total",
            "Failed attempts to connect to the broker.",
            (),
        )
        self.events = LabelledCounter(
            "celery_exporter_events_total",
            "Celery events received, by event type (batched events counted one by one).",
            ("type",),
        )
        self.skipped = LabelledCounter(
            "celery_exporter_events_skipped_total",
            "Messages or events skipped as unusable, by reason (malformed, unknown type...).",
            ("reason",),
        )
        self.evictions = LabelledCounter(
            "celery_exporter_tracked_task_evictions_total",
            "Tasks forgotten before their final event, by reason (size or age bound); "
            "their later events are counted with name (unknown).",
            ("reason",),
        )
        self.enable_events_sent = LabelledCounter(
            "celery_exporter_enable_events_broadcasts_total",
            "enable_events control commands broadcast to the workers.",
            (),
        )
        self.dropped_label_values = LabelledCounter(
            "celery_exporter_dropped_label_values_total",
            "Label values whose series were not exported or were removed, by label and "
            "reason: excluded (--task-include/--task-exclude) and over_limit "
            '(--max-task-names) fold into name="(other)"; idle: removed after the '
            "configured idle time.",
            ("label", "reason"),
        )
        # Counters exist (at 0) from the start, so rate() and increase() see the first one.
        self.connect_failures.inc((), 0.0)
        self.enable_events_sent.inc((), 0.0)
        for reason in ("error", "watchdog"):
            self.reconnects.inc((reason,), 0.0)

    # -- what the writers may do (events/stages.py names each writer's part) --------------

    def event_tally(self) -> dict[tuple[str, ...], float]:
        return self.events.values

    def count_event(self, etype: str) -> None:
        self.events.inc((etype,))

    def skip(self, reason: str) -> None:
        self.skipped.inc((reason,))

    def received(self, now: float, tracked: int, held: int, names: int) -> None:
        self.last_event_at = now
        self.tracked_tasks = tracked
        self.held_tasks = held
        self.task_names = names

    def set_sizes(self, tracked: int, held: int, names: int) -> None:
        self.tracked_tasks = tracked
        self.held_tasks = held
        self.task_names = names

    def set_task_names(self, names: int) -> None:
        self.task_names = names

    def set_evictions(self, by_size: int, by_age: int) -> None:
        self.evictions.values[("size",)] = float(by_size)
        self.evictions.values[("age",)] = float(by_age)

    def connect_failed(self, error: tuple[str, str]) -> None:
        self.connect_failures.inc(())
        self.broker_error = error

    def connection_lost(self, reason: str, error: tuple[str, str], now: float) -> None:
        # Counted before shown down: a scrape that sees the broker down sees why.
        self.reconnects.inc((reason,))
        self.set_broker_up(False, now)
        self.broker_error = error

    def set_event_backlog(self, backlog_bytes: int | None) -> None:
        self.event_backlog_bytes = backlog_bytes

    def enable_events_broadcast(self) -> None:
        self.enable_events_sent.inc(())

    def labels_dropped(self, label: str, reason: str, count: float = 1.0) -> None:
        self.dropped_label_values.inc((label, reason), count)

    def set_labels_dropped(self, label: str, reason: str, total: float) -> None:
        """For a tally kept elsewhere (the queue registry's forgotten queues)."""
        self.dropped_label_values.values[(label, reason)] = total

    def set_broker_up(self, up: bool, now: float) -> None:
        with self._lock:
            if up and self._down_since is not None:
                self._down_seconds += max(0.0, now - self._down_since)
                self._down_since = None
                self._up_since = now
            elif not up and self._down_since is None:
                self._down_since = now
            if up != self.broker_up:
                self.broker_since = now
            if up:
                self.broker_error = None
            self.broker_up = up

    def backdate_outage(self, since: float) -> None:
        """The open outage began at ``since`` (the last event before a hang), not when it was
        noticed; never before the connection it ended came up."""
        with self._lock:
            if self._down_since is None:
                return
            if self._up_since is not None:
                since = max(since, self._up_since)
            self._down_since = min(self._down_since, since)
            if not self.broker_up:  # the status page's "unreachable since" agrees
                self.broker_since = min(self.broker_since, self._down_since)

    def broker_down_seconds(self, now: float | None = None) -> float:
        """Seconds the exporter was not consuming events, the current outage included."""
        with self._lock:
            total = self._down_seconds
            if self._down_since is not None:
                now = self._clock() if now is None else now
                total += max(0.0, now - self._down_since)
            return total

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "celery_exporter_broker_up",
            "1 while the exporter is connected to the broker and consuming events, else 0.",
            value=1.0 if self.broker_up else 0.0,
        )
        yield CounterMetricFamily(
            "celery_exporter_broker_down_seconds_total",
            "Seconds the exporter was not connected to the broker and consuming events since "
            "it started (the current outage included): events sent meanwhile were lost.",
            value=self.broker_down_seconds(),
        )
        yield GaugeMetricFamily(
            "celery_exporter_last_event_timestamp_seconds",
            "When the exporter last received an event (its own clock); 0 before the first.",
            value=self.last_event_at or 0.0,
        )
        # A lag measured long ago says nothing about now (and must not keep an alert firing).
        recent = self.last_event_at is not None and time.time() - self.last_event_at < 60
        if self.event_lag is not None and recent:
            yield GaugeMetricFamily(
                "celery_exporter_event_lag_seconds",
                "Receive time minus the sender's timestamp, for the latest event (absent when "
                "no event arrived for a minute). Includes worker-side batching and clock skew "
                "between hosts.",
                value=self.event_lag,
            )
        backlog = self.event_backlog_bytes
        if backlog is not None:
            yield GaugeMetricFamily(
                "celery_exporter_event_backlog_bytes",
                "Redis brokers: bytes of event messages Redis holds for the exporter and has "
                "not sent yet (its pub/sub output buffer, sampled every 5 s). Redis drops the "
                "subscriber, and the events in it, at client-output-buffer-limit pubsub "
                "(32 MiB by default).",
                value=float(backlog),
            )
        yield GaugeMetricFamily(
            "celery_exporter_tracked_tasks",
            "Tasks in flight the exporter remembers (name, queue, timestamps).",
            value=float(self.tracked_tasks),
        )
        yield GaugeMetricFamily(
            "celery_exporter_held_tasks",
            "New tasks whose worker events wait (up to --reorder-window) for their task-sent.",
            value=float(self.held_tasks),
        )
        yield GaugeMetricFamily(
            "celery_exporter_task_names",
            "Distinct task names with series of their own (compare with --max-task-names).",
            value=float(self.task_names),
        )
        for counter in (
            self.reconnects,
            self.connect_failures,
            self.events,
            self.skipped,
            self.evictions,
            self.enable_events_sent,
            self.dropped_label_values,
        ):
            yield counter.family()
