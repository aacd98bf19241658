"""Wire the parts together and run until SIGTERM/SIGINT.

Threads: the event consumer (applies events), the control thread (inspect, enable_events),
the HTTP server, and the main thread, which runs the clock: worker liveness and purge,
tracker ageing, once a second whether or not anyone scrapes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.beat_schedule import load_app, read_schedule
from exporter.broker import make_app
from exporter.control import ControlThread, WorkerQueues
from exporter.events.consumer import EventConsumer
from exporter.events.dispatch import EventDispatcher
from exporter.events.tasks import TaskEventHandler
from exporter.events.workers import WorkerEventHandler
from exporter.logs import LogOnce
from exporter.metrics.health import ExporterHealth
from exporter.metrics.queues import QueueCollector
from exporter.metrics.tasks import TaskMetrics, arrival_families, schedule_families
from exporter.metrics.workers import WorkerCollector
from exporter.redact import redact_url
from exporter.settings import Settings
from exporter.sources.runner import QueueSampler
from exporter.sources.select import make_queue_source
from exporter.state.queue_registry import QueueRegistry
from exporter.state.task_tracker import TaskTracker
from exporter.state.worker_registry import WorkerRegistry
from exporter.web import ExporterHTTPServer
from exporter.webconfig import WebConfigReloader

log = logging.getLogger(__name__)

CLOCK_TICK_SECONDS = 1.0
# Running tasks per name take an O(tracked tasks) scan: every 5 ticks.
RUNNING_REFRESH_TICKS = 5


class _Collect(Collector):
    """Adapts ``collect`` callables (optionally under a lock) to the registry."""

    def __init__(
        self, collect: Callable[[], Iterable[Metric]], lock: threading.Lock | None = None
    ) -> None:
        self._collect = collect
        self._lock = lock

    def collect(self) -> Iterable[Metric]:
        if self._lock is None:
            return list(self._collect())
        with self._lock:
            return list(self._collect())


class Exporter:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.app = make_app(settings)
        self.health = ExporterHealth()
        self.workers = WorkerRegistry(
            settings.worker_timeout_heartbeats, settings.worker_purge_seconds
        )
        self.worker_queues = WorkerQueues()
        self.control = ControlThread(
            self.app,
            self.worker_queues,
            self.health,
            settings.inspect_timeout_seconds,
            settings.enable_events_interval_seconds,
            inspect_interval=settings.inspect_interval_seconds,
            is_alive=self.workers.is_up,
        )
        self.task_metrics = TaskMetrics(settings.runtime_buckets, settings.queue_wait_buckets)
        tracker = TaskTracker(
            settings.task_tracker_max_tasks, settings.task_tracker_max_age_seconds
        )
        self.worker_events = WorkerEventHandler(self.workers, self.control.ask_queues)
        self.dispatcher = EventDispatcher(
            TaskEventHandler(self.task_metrics, tracker, self.worker_queues.only_queue),
            self.worker_events,
            self.workers,
            self.health,
            clock,
            reorder_window=settings.reorder_window_seconds,
        )
        self.consumer = EventConsumer(
            self.app, settings, self.dispatcher.on_message, self.health, clock
        )
        self.queue_sampler = QueueSampler(
            make_queue_source(self.app, settings),
            QueueRegistry(settings.queues, settings.queue_forget_after_seconds),
            self.worker_queues,
            self.dispatcher.take_queues_seen,
            self.dispatcher.sent_at,
            settings.sample_interval_seconds,
            clock,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collect(lambda: self.task_metrics.collect(self.dispatcher.lock)))
        self.registry.register(
            _Collect(lambda: TaskMetrics.running_families(self.dispatcher.running))
        )
        arrivals = self.dispatcher.tasks.arrivals
        self.registry.register(
            _Collect(lambda: arrival_families(arrivals.stats()), self.dispatcher.lock)
        )
        self.schedule = read_schedule(load_app(settings.app)) if settings.app else []
        self.registry.register(_Collect(lambda: schedule_families(self.schedule)))
        self.registry.register(
            _Collect(WorkerCollector(self.workers, self.worker_queues, self.control.stats).collect)
        )
        self.registry.register(_Collect(self.health.collect, self.dispatcher.lock))
        self.registry.register(
            _Collect(QueueCollector(self.queue_sampler, self.worker_queues, self.workers).collect)
        )
        ProcessCollector(registry=self.registry)
        self.web_config: WebConfigReloader | None = None
        if settings.web_config_file:
            self.web_config = WebConfigReloader(settings.web_config_file)
            self.registry.register(_Collect(self.web_config.collect))
        self.http: ExporterHTTPServer | None = None
        self._stop = threading.Event()
        self._hint = LogOnce(log)
        self._ticks = 0

    def ready(self) -> tuple[bool, str]:
        if self.consumer.consuming.is_set():
            return True, "consuming events"
        return False, "not connected to the broker"

    def start(self) -> None:
        host, port = self.settings.listen_host, self.settings.listen_port
        self.http = ExporterHTTPServer(
            (host, port),
            self.registry,
            redact_url(self.settings.broker_url),
            self.ready,
            web_config=self.web_config,
        )
        self.http.start()
        bound_host, bound_port = self.http.server_address[:2]
        log.info(
            "celery-metrics-exporter %s listening on %s:%s, broker %s",
            __version__,
            bound_host,
            bound_port,
            redact_url(self.settings.broker_url),
        )
        self.start_collection()

    def start_collection(self, sample: bool = True) -> None:
        """Consume events and ask workers (and sample queues on a clock unless told not to)."""
        self.consumer.start()
        self.control.start()
        if sample:
            self.queue_sampler.start()

    @property
    def port(self) -> int:
        assert self.http is not None
        return int(self.http.server_address[1])

    def tick(self) -> None:
        """One turn of the clock: liveness, purge, tracker ageing."""
        now = self.clock()
        down, purged, events_off = self.workers.sweep(now)
        for hostname in down:
            log.warning("worker %s is down: heartbeats overdue", hostname)
        for hostname in purged:
            self.worker_events.forget(hostname)
            self.control.forget(hostname)
            self.dispatcher.forget_worker(hostname)
            log.info("forgot worker %s (down longer than the purge time)", hostname)
        for hostname in events_off:
            self._hint(
                ("events-off", hostname),
                logging.WARNING,
                "worker %s processes tasks but sends no task events: start it with -E, set "
                "worker_send_task_events = True, or run the exporter with "
                "--enable-events-interval",
                hostname,
            )
        self.dispatcher.housekeeping(now)
        self._ticks += 1
        if self._ticks % RUNNING_REFRESH_TICKS == 0:
            live = {w.hostname for w in self.workers.snapshot() if w.up}
            self.dispatcher.refresh_running(live, self.workers.idle_since)

    def run_forever(self) -> None:
        while not self._stop.wait(CLOCK_TICK_SECONDS):
            try:
                self.tick()
            except Exception:
                log.exception("housekeeping failed; continuing")

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()

    def shutdown(self) -> None:
        self.consumer.stop(timeout=1.0)
        self.control.stop(timeout=0.5)
        self.queue_sampler.stop(timeout=0.3)
        if self.http is not None:
            self.http.stop()


def run(settings: Settings) -> None:
    exporter = Exporter(settings)
    signal.signal(signal.SIGTERM, exporter.request_stop)
    signal.signal(signal.SIGINT, exporter.request_stop)
    if exporter.web_config is not None:
        # Reload TLS and basic auth: new connections get them; the listener stays.
        signal.signal(signal.SIGHUP, exporter.web_config.request_reload)
    exporter.start()
    try:
        exporter.run_forever()
    finally:
        exporter.shutdown()
        log.info("stopped")
