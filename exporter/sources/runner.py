"""Run a queue source on its own clock and keep the latest snapshot for /metrics.

Every source gets the same treatment: a sample every ``interval`` seconds on a thread of
its own (a hung broker stalls neither the event stream nor /metrics), its duration and
last success recorded, errors counted and logged once per outage. The snapshot served is
the last successful one; ``celery_exporter_source_last_success_timestamp_seconds`` says
how old it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.control import WorkerQueues
from exporter.redact import redact_text
from exporter.sources.base import BrokerSample, QueueSource
from exporter.state.queue_registry import QueueRegistry

log = logging.getLogger(__name__)


@dataclass
class SourceHealth:
    up: bool = False
    last_success: float = 0.0
    last_duration: float = 0.0
    errors: int = 0


@dataclass(frozen=True)
class QueueSnapshot:
    sample: BrokerSample
    # queue -> seconds the next message to be consumed has waited (where known)
    oldest_age: dict[str, float] = field(default_factory=dict)
    # queues whose age comes from the message's task-sent (the others: a lower bound)
    oldest_age_exact: frozenset[str] = frozenset()


class QueueSampler:
    def __init__(
        self,
        source: QueueSource,
        registry: QueueRegistry,
        worker_queues: WorkerQueues,
        queues_from_events: Callable[[], set[str]],
        sent_at: Callable[[str], float | None],
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.registry = registry
        self.worker_queues = worker_queues
        self.queues_from_events = queues_from_events
        self.sent_at = sent_at
        self.interval = interval
        self.clock = clock
        self.health = SourceHealth()
        self.snapshot: QueueSnapshot | None = None
        # queue -> (id of the message next to be consumed, when a sample first saw it there)
        self._heads: dict[str, tuple[str, float]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"sample-{self.source.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.source.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sample_once()
            except Exception:  # a dead sampler would serve stale depths for ever
                self.health.up = False
                self.health.errors += 1
                log.exception("sampling %s queues failed unexpectedly", self.source.name)
            self._stopping.wait(self.interval)

    def up(self, now: float) -> bool:
        """Up, and not stale: a sample that hangs past its timeout counts as failing."""
        limit = 3 * self.interval + getattr(self.source, "timeout", 0.0)
        return self.health.up and now - self.health.last_success <= limit

    def sample_once(self) -> None:
        now = self.clock()
        self.registry.note(self.queues_from_events(), now)
        for consumed in self.worker_queues.all().values():
            self.registry.note(consumed, now)
        queues = self.registry.watched(now)
        started = time.monotonic()
        try:
            sample = self.source.sample(queues)
        except Exception as exc:
            if self._stopping.is_set():
                return  # shutting down: stop() closed the source under this sample
            self.health.last_duration = time.monotonic() - started
            self.health.errors += 1
            if self.health.up or self.health.errors == 1:
                log.error(
                    "sampling %s queues failed: %s (keeps retrying every %g s)",
                    self.source.name,
                    redact_text(f"{type(exc).__name__}: {exc}"),
                    self.interval,
                )
            self.health.up = False
            return
        done = self.clock()
        self.health.last_duration = time.monotonic() - started
        self.health.last_success = done
        if not self.health.up:
            log.info("sampling %s queues: %d queues", self.source.name, len(sample.queues))
        self.health.up = True
        self.registry.note(sample.listed_queues, now)
        self.registry.note([q for q, s in sample.queues.items() if s.ready or s.reserved], now)
        ages, exact = self._oldest_ages(sample, done)
        self.snapshot = QueueSnapshot(sample, ages, frozenset(exact))

    def _oldest_ages(self, sample: BrokerSample, now: float) -> tuple[dict[str, float], set[str]]:
        ages: dict[str, float] = {}
        exact: set[str] = set()
        heads: dict[str, tuple[str, float]] = {}
        for queue, qs in sample.queues.items():
            message_id = qs.oldest_message_id
            if message_id is None:
                continue
            previous = self._heads.get(queue)
            first_seen = previous[1] if previous and previous[0] == message_id else now
            heads[queue] = (message_id, first_seen)
            sent = self.sent_at(message_id)
            if sent is not None and sent <= now:
                exact.add(queue)
                since = sent
            else:
                since = first_seen
            ages[queue] = max(0.0, now - since)
        self._heads = heads
        return ages, exact
