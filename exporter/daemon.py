"""Run the exporter until SIGTERM/SIGINT: one ``BrokerWatch`` per broker, one HTTP server.

The main thread runs the clock: once a second, whether or not anyone scrapes, each watch
ticks (worker liveness and purge, tracker ageing, idle series). A failure in one watch's
tick is logged and never stops the others.
"""

from __future__ import annotations

import logging
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from types import FrameType

import celery
import kombu
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import InfoMetricFamily, Metric

from exporter import __version__
from exporter.collectors.guard import CollectorOutcomes, GuardedCollector
from exporter.malloc import tune_malloc
from exporter.redact import redact_url
from exporter.settings import Settings
from exporter.status_page import status_page
from exporter.watch import IDLE_NAMES_TICKS, RUNNING_REFRESH_TICKS, BrokerWatch
from exporter.web import ExporterHTTPServer
from exporter.webconfig import WebConfigReloader

log = logging.getLogger(__name__)

CLOCK_TICK_SECONDS = 1.0
BROKER_LABEL = "broker"

__all__ = ["IDLE_NAMES_TICKS", "RUNNING_REFRESH_TICKS", "Exporter", "run"]


class ListenError(Exception):
    """The listen address cannot be bound (one line for the user, exit 2)."""


def _build_info() -> Iterable[Metric]:
    info = InfoMetricFamily("celery_exporter_build", "Exporter and library versions.")
    info.add_metric(
        [],
        {
            "version": __version__,
            "celery_version": celery.__version__,
            "kombu_version": kombu.__version__,
            "python_version": platform.python_version(),
        },
    )
    yield info


class Exporter:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.watches = [
            BrokerWatch(broker_settings, clock, name)
            for name, broker_settings in settings.per_broker()
        ]
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector_outcomes = CollectorOutcomes()
        self._outcomes_registered = False
        for watch in self.watches:
            labels = {BROKER_LABEL: watch.name} if watch.name else None
            for name, collect, lock in watch.sources():
                self.register_collector(name, collect, lock, labels)
        self.register_collector("build_info", _build_info, process_wide=True)
        self.register_collector(
            "process", ProcessCollector(registry=None).collect, process_wide=True
        )
        self.web_config: WebConfigReloader | None = None
        if settings.web_config_file:
            self.web_config = WebConfigReloader(settings.web_config_file)
            self.register_collector("web_config", self.web_config.collect, process_wide=True)
        # Last: it reports the outcomes of the collectors above, in the same scrape.
        self.registry.register(self.collector_outcomes)
        self._outcomes_registered = True
        self.http: ExporterHTTPServer | None = None
        self._stop = threading.Event()

    def register_collector(
        self,
        name: str,
        collect: Callable[[], Iterable[Metric]],
        lock: AbstractContextManager[object] | None = None,
        labels: Mapping[str, str] | None = None,
        process_wide: bool = False,
    ) -> None:
        """The one place a collector joins /metrics: guarded, so that it fails alone
        (exporter/collectors/guard.py); with its outcome gauges unless ``process_wide``."""
        outcomes = None if process_wide else self.collector_outcomes
        guarded = GuardedCollector(name, collect, outcomes, lock, labels, clock=self.clock)
        # The outcomes come after every collector (the registry collects in order), so a
        # scrape shows its own outcomes: step them aside while one joins late.
        late = self._outcomes_registered
        if late:
            self.registry.unregister(self.collector_outcomes)
        self.registry.register(guarded)
        if late:
            self.registry.register(self.collector_outcomes)

    # The single broker's parts, for callers that watch one (tests, benchmarks): reach them
    # as `exporter.primary.dispatcher`, `.health`, `.workers`...
    @property
    def primary(self) -> BrokerWatch:
        return self.watches[0]

    def broker_display(self) -> str:
        """The brokers, credentials masked, for the landing page and logs."""
        if len(self.watches) == 1 and self.primary.name is None:
            return redact_url(self.primary.settings.broker_url)
        return ", ".join(f"{w.name}={redact_url(w.settings.broker_url)}" for w in self.watches)

    def ready(self) -> tuple[bool, str]:
        """Ready when every broker's events are being consumed."""
        states = [(w, w.ready()) for w in self.watches]
        if len(states) == 1:
            return states[0][1]
        waiting = [w.name for w, (ok, _) in states if not ok]
        if waiting:
            return False, f"not connected to broker(s) {', '.join(map(str, waiting))}"
        return True, f"consuming events from {len(states)} brokers"

    def start(self) -> None:
        host, port = self.settings.listen_host, self.settings.listen_port
        try:
            self.http = ExporterHTTPServer(
                (host, port),
                self.registry,
                self.broker_display(),
                self.ready,
                web_config=self.web_config,
                page=status_page(self.watches),
                write_timeout=self.settings.web_write_timeout,
                max_connections=self.settings.web_max_connections,
                header_timeout=self.settings.web_header_timeout,
                idle_timeout=self.settings.web_idle_timeout,
                max_request_bytes=self.settings.web_max_request_size,
            )
        except OSError as exc:  # in use, not an address of this host, privileged port...
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            reason = (exc.strerror or str(exc)).lower()
            raise ListenError(f"cannot listen on {where}: {reason}") from None
        self.http.start()
        bound_host, bound_port = self.http.server_address[:2]
        log.info(
            "celery-metrics-exporter %s listening on %s:%s, broker %s",
            __version__,
            bound_host,
            bound_port,
            self.broker_display(),
        )
        self.start_collection()

    def start_collection(self, sample: bool = True) -> None:
        for watch in self.watches:
            watch.start_collection(sample)

    @property
    def port(self) -> int:
        assert self.http is not None
        return int(self.http.server_address[1])

    def tick(self) -> None:
        for watch in self.watches:
            try:
                watch.tick()
            except Exception:
                log.exception("%shousekeeping failed; continuing", watch.display_name)

    def run_forever(self) -> None:
        while not self._stop.wait(CLOCK_TICK_SECONDS):
            self.tick()

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()

    def shutdown(self) -> None:
        # Watches stop side by side: shutting down takes the slowest, not the sum.
        stoppers = [threading.Thread(target=w.stop, daemon=True) for w in self.watches]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=3.0)
        if self.http is not None:
            self.http.stop()


def run(settings: Settings) -> None:
    tune_malloc()  # before the threads start (exporter/malloc.py)
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
