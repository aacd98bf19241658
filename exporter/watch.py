"""Everything the exporter does for one broker (or virtual host): its own connection, event
stream, worker registry, task metrics and queue sampling.

A process runs one ``BrokerWatch`` per configured broker (``exporter/daemon.py``); they
share nothing but the HTTP server, so one broker's outage never touches another's series.

Threads per watch: the event consumer (applies events), the control thread (inspect,
enable_events) and the queue sampler. The daemon's clock calls ``tick`` once a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

from prometheus_client.core import Metric

from exporter.beat_schedule import load_app, read_schedule
from exporter.brokers.app import make_app
from exporter.collectors.health import ExporterHealth
from exporter.collectors.queues import QueueCollector, worker_reserved_family
from exporter.collectors.tasks import TaskMetrics, arrival_families, schedule_families
from exporter.collectors.workers import WorkerCollector
from exporter.control import ControlThread, WorkerQueues
from exporter.events.consumer import EventConsumer
from exporter.events.dispatch import EventDispatcher
from exporter.events.ranges import EventRanges
from exporter.events.tasks import TaskEventHandler
from exporter.events.workers import WorkerEventHandler
from exporter.logs import LogOnce
from exporter.settings import MIN_TASK_NAME_FORGET_SECONDS, Settings
from exporter.sources.runner import QueueSampler
from exporter.state.label_cap import LabelCap
from exporter.state.queue_registry import QueueRegistry
from exporter.state.task_names import TaskNames
from exporter.state.task_tracker import TaskTracker
from exporter.state.worker_registry import WorkerRegistry

log = logging.getLogger(__name__)

# Running tasks per name take an O(tracked tasks) scan: every 5 ticks.
RUNNING_REFRESH_TICKS = 5
# Idle task names are looked for once a minute (an O(series) scan).
IDLE_NAMES_TICKS = 60
# An exception class with no failure for this long gives up its place under
# --max-exception-classes (and its series), so junk classes cannot fill the cap for good.
EXCEPTION_FORGET_AFTER_SECONDS = 86_400.0
# A hostname only task events named keeps its place at least this long without one (also
# with --worker-purge-after 0), so a worker without heartbeats keeps its series between tasks.
MIN_UNREGISTERED_HOSTNAME_IDLE_SECONDS = 60.0

# Per clock tick, workers named one by one in a log line; a flood of hostnames adds one more
# line per tick, not one per hostname.
MAX_WORKERS_LOGGED_PER_TICK = 5

# A metric collector's name (the `collector` label of its scrape metrics), what it
# collects, and the lock (if any) to hold while it collects.
Source = tuple[str, Callable[[], Iterable[Metric]], AbstractContextManager[object] | None]


class BrokerWatch:
    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        # The `broker` label value (None: a single unnamed broker, no label).
        self.name = name
        self.app = make_app(settings)
        self.started_at = clock()
        self.health = ExporterHealth(clock)
        self.workers = WorkerRegistry(
            settings.worker_timeout_heartbeats, settings.worker_purge_after
        )
        self.worker_queues = WorkerQueues()
        self.control = ControlThread(
            self.app,
            self.worker_queues,
            self.health,
            settings.inspect_timeout,
            settings.enable_events_interval,
            inspect_interval=settings.inspect_interval,
            is_alive=self.workers.is_up,
        )
        self.task_metrics = TaskMetrics(
            settings.runtime_buckets,
            settings.queue_wait_buckets,
            settings.task_worker_label,
            settings.native_config(),
        )
        task_names = TaskNames(
            settings.task_include,
            settings.task_exclude,
            settings.max_task_names,
            self.health.dropped_label_values,
        )
        tracker = TaskTracker(settings.max_tracked_tasks, settings.tracked_task_max_age)
        dropped = self.health.dropped_label_values
        hostnames = LabelCap(
            "hostname", settings.max_worker_hostnames, dropped, "--max-worker-hostnames"
        )
        self.worker_events = WorkerEventHandler(self.workers, self.control.ask_queues, hostnames)
        task_events = TaskEventHandler(
            self.task_metrics,
            tracker,
            self.worker_queues.only_queue,
            task_names,
            queue_names=LabelCap(
                "queue_name", settings.max_queue_names, dropped, "--max-queue-names",
                preset=settings.queues,
            ),
            exceptions=LabelCap(
                "exception", settings.max_exception_classes, dropped, "--max-exception-classes"
            ),
            consumed=self.worker_queues.consumed,
        )  # fmt: skip
        self.dispatcher = EventDispatcher(
            task_events,
            self.worker_events,
            self.workers,
            self.health,
            clock,
            reorder_window=settings.reorder_window,
            ranges=EventRanges(settings.event_time_window),
            hostnames=hostnames,
            awaits_worker=self.control.awaiting_queues,
        )
        self.consumer = EventConsumer(
            self.app, settings, self.dispatcher.on_message, self.health, clock
        )
        self.queue_registry = QueueRegistry(settings.queues, settings.queue_forget_after)
        self.queue_sampler = QueueSampler(
            settings.broker.queue_source(
                self.app, settings, lambda: dict(self.control.priority_options)
            ),
            self.queue_registry,
            self.worker_queues,
            self.dispatcher.take_queues_seen,
            self.dispatcher.sent_at,
            settings.sample_interval,
            clock,
        )
        self.schedule = read_schedule(load_app(settings.app)) if settings.app else []
        self._hint = LogOnce(log)
        self._ticks = 0
        self._queue_labels_released = 0

    @property
    def display_name(self) -> str:
        return f"broker {self.name}: " if self.name else ""

    def sources(self) -> list[Source]:
        """Where this broker's metrics come from, by collector name, for the registry (each
        collector fails alone: exporter/collectors/guard.py)."""
        queues = QueueCollector(
            self.queue_sampler,
            self.worker_queues,
            self.workers,
            worker_consumers=self.settings.broker.remote_control,
        )
        workers = WorkerCollector(self.workers, self.worker_queues, self.control.stats)

        def queue_families() -> list[Metric]:
            return [*worker_reserved_family(self.dispatcher.reserved), *queues.collect()]

        if not self.settings.broker.task_events:
            # No events (SQS): no task or worker series, rather than zeros that read as
            # "no worker alive" to the alerts.
            return [
                ("health", self.health.collect, self.dispatcher.lock),
                ("queues", queues.collect, None),
            ]
        return [
            ("tasks", self._task_families, None),
            ("workers", workers.collect, None),
            ("health", self.health.collect, self.dispatcher.lock),
            ("queues", queue_families, None),
        ]

    def _task_families(self) -> list[Metric]:
        lock = self.dispatcher.lock
        families = list(self.task_metrics.collect(lock))
        families += TaskMetrics.running_families(self.dispatcher.running)
        with lock:
            families += arrival_families(self.dispatcher.tasks.arrivals.stats())
        families += schedule_families(self.schedule)
        return families

    def ready(self) -> tuple[bool, str]:
        if not self.settings.broker.task_events:
            if self.health.broker_up:
                return True, "sampling queues (no events on this broker)"
            return False, "not connected to the broker"
        if self.consumer.consuming.is_set():
            return True, "consuming events"
        return False, "not connected to the broker"

    def start_collection(self, sample: bool = True) -> None:
        """Consume events and ask workers, where the broker has them (and sample queues on
        a clock unless told not to)."""
        broker = self.settings.broker
        if broker.task_events:
            self.consumer.start()
        else:
            log.warning(
                "%sCelery sends no task or worker events over %s and takes no remote control "
                "commands: only queue depth is exported (no task or worker metrics)",
                self.display_name,
                broker.name,
            )
        if broker.remote_control:
            self.control.start()
        if sample:
            self.queue_sampler.start()

    def tick(self) -> None:
        """One turn of the clock: liveness, purge, tracker ageing, idle names."""
        now = self.clock()
        prefix = self.display_name
        if not self.settings.broker.task_events:
            # No event connection to say so: the broker is up while its queues are sampled.
            self.health.set_broker_up(self.queue_sampler.up(now), now)
        down, purged, events_off = self.workers.sweep(now)
        _log_some(
            logging.WARNING, down, "%sworker %s is down: heartbeats overdue", prefix,
            "%s%d more workers are down: heartbeats overdue",
        )  # fmt: skip
        for hostname in purged:
            self.worker_events.forget(hostname)
            self.control.forget(hostname)
            self.dispatcher.forget_worker(hostname)
            self.health.labels_dropped("hostname", "idle")
        _log_some(
            logging.INFO, purged, "%sforgot worker %s (down longer than the purge time)", prefix,
            "%sforgot %d more workers (down longer than the purge time)",
        )  # fmt: skip
        for hostname in events_off:
            self._hint(
                ("events-off", hostname),
                logging.WARNING,
                "%sworker %s processes tasks but sends no task events: start it with -E, set "
                "worker_send_task_events = True, or run the exporter with "
                "--enable-events-interval",
                prefix,
                hostname,
            )
        self.dispatcher.housekeeping(now)
        settings = self.settings
        hostnames, queues, exceptions = self.dispatcher.release_idle_labels(
            now,
            max(settings.worker_purge_after, MIN_UNREGISTERED_HOSTNAME_IDLE_SECONDS),
            # Never sooner than an idle task name: the series outlive every alert's window.
            max(settings.queue_forget_after, MIN_TASK_NAME_FORGET_SECONDS),
            EXCEPTION_FORGET_AFTER_SECONDS,
        )
        health = self.health
        if hostnames:
            health.labels_dropped("hostname", "idle", float(len(hostnames)))
        if exceptions:
            health.labels_dropped("exception", "idle", float(len(exceptions)))
        self._queue_labels_released += len(queues)
        health.set_labels_dropped(
            "queue_name", "idle", float(self.queue_registry.forgotten + self._queue_labels_released)
        )
        self._ticks += 1
        if self._ticks % RUNNING_REFRESH_TICKS == 0:
            live = {w.hostname for w in self.workers.snapshot() if w.up}
            self.dispatcher.refresh_running(
                live, self.workers.idle_since, self.workers.online_since
            )
        forget_after = self.settings.task_name_forget_after
        if forget_after and self._ticks % IDLE_NAMES_TICKS == 0:
            keep = {entry.task for entry in self.schedule}
            gone = self.dispatcher.forget_idle_names(now, forget_after, keep)
            if gone:
                log.info(
                    "%sremoved the series of %d task name(s) with no event for %gs, e.g. %s",
                    prefix,
                    len(gone),
                    forget_after,
                    gone[0],
                )

    def stop(self) -> None:
        self.consumer.stop(timeout=1.0)
        self.control.stop(timeout=0.5)
        self.queue_sampler.stop(timeout=0.3)


def _log_some(level: int, hostnames: list[str], each: str, prefix: str, rest: str) -> None:
    """One line per worker up to ``MAX_WORKERS_LOGGED_PER_TICK``, then one for the rest."""
    for hostname in hostnames[:MAX_WORKERS_LOGGED_PER_TICK]:
        log.log(level, each, prefix, hostname)
    more = len(hostnames) - MAX_WORKERS_LOGGED_PER_TICK
    if more > 0:
        log.log(level, rest, prefix, more)
