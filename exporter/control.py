"""Remote control, off the event thread: ask new workers for their queues, and
(optionally) broadcast ``enable_events`` on a clock.

A worker consuming exactly one queue tells us the queue of every task it runs, which
task events other than ``task-sent`` do not carry. Each inspect is a broadcast answered
by one worker (``destination`` + ``limit=1``), on a connection of its own, with
``timeout >= 1 s`` (shorter timeouts lost replies on Redis).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from celery import Celery

from exporter.metrics.health import ExporterHealth
from exporter.redact import redact_text

log = logging.getLogger(__name__)


class WorkerQueues:
    """hostname -> its only queue; read lock-free on the event path."""

    def __init__(self) -> None:
        self._only_queue: dict[str, str] = {}
        self._queues: dict[str, tuple[str, ...]] = {}

    def only_queue(self, hostname: str) -> str | None:
        return self._only_queue.get(hostname)

    def set(self, hostname: str, queues: tuple[str, ...]) -> None:
        self._queues[hostname] = queues
        if len(queues) == 1:
            self._only_queue[hostname] = queues[0]
        else:
            self._only_queue.pop(hostname, None)

    def forget(self, hostname: str) -> None:
        self._queues.pop(hostname, None)
        self._only_queue.pop(hostname, None)

    def all(self) -> dict[str, tuple[str, ...]]:
        return dict(self._queues)


class ControlThread:
    def __init__(
        self,
        app: Celery,
        worker_queues: WorkerQueues,
        health: ExporterHealth,
        inspect_timeout: float,
        enable_events_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.worker_queues = worker_queues
        self.health = health
        self.inspect_timeout = max(1.0, inspect_timeout)
        self.enable_events_interval = enable_events_interval
        self.clock = clock
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._pending: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def ask_queues(self, hostname: str) -> None:
        """Queue an ``active_queues`` request for this worker (deduplicated)."""
        if hostname not in self._pending:
            self._pending.add(hostname)
            self._requests.put(hostname)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._requests.put("")
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        next_enable = self.clock()
        while not self._stopping.is_set():
            wait = 1.0
            if self.enable_events_interval > 0:
                wait = max(0.0, min(wait, next_enable - self.clock()))
            try:
                hostname = self._requests.get(timeout=wait)
            except queue.Empty:
                hostname = None
            if self._stopping.is_set():
                break
            if hostname:
                self._pending.discard(hostname)
                self._inspect_queues(hostname)
            if self.enable_events_interval > 0 and self.clock() >= next_enable:
                self._enable_events()
                next_enable = self.clock() + self.enable_events_interval

    def _inspect_queues(self, hostname: str) -> None:
        try:
            with self.app.connection_for_write() as conn:
                replies = self.app.control.inspect(
                    destination=[hostname],
                    timeout=self.inspect_timeout,
                    limit=1,
                    connection=conn,
                ).active_queues()
        except Exception as exc:
            log.debug("active_queues for %s failed: %s", hostname, redact_text(str(exc)))
            return
        reply = (replies or {}).get(hostname)
        if not isinstance(reply, list):
            return  # no answer (e.g. a solo worker busy with a task): unknown, not empty
        names = tuple(
            sorted(
                q["name"] for q in reply if isinstance(q, dict) and isinstance(q.get("name"), str)
            )
        )
        self.worker_queues.set(hostname, names)
        log.info("worker %s consumes %s", hostname, ", ".join(names) or "nothing")

    def _enable_events(self) -> None:
        try:
            with self.app.connection_for_write() as conn:
                self.app.control.enable_events(connection=conn)
            self.health.enable_events_sent.inc(())
        except Exception as exc:
            log.warning("enable_events broadcast failed: %s", redact_text(str(exc)))
