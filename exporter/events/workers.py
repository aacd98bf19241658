"""Where worker events (online, heartbeat, offline) update the worker registry.

Heartbeat fields are read with defaults: a heartbeat triggered by the ``heartbeat``
control command carries ``freq`` but no ``active``/``processed``. Their ranges are checked
before (``events/ranges.py``). Hostnames are capped (``--max-worker-hostnames``): a worker
beyond the cap is not tracked (its events are counted, and the hostname in
``celery_exporter_dropped_label_values_total``).
"""

from __future__ import annotations

from exporter.events.stages import Event, OnNewWorker, WorkerHandler
from exporter.labels import cached_label
from exporter.state.label_cap import OTHER, LabelCap
from exporter.state.worker_registry import WorkerRegistry


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def _count(value: object) -> int | None:
    number = _number(value)
    return None if number is None or number < 0 else int(number)


class WorkerEventHandler:
    def __init__(
        self,
        registry: WorkerRegistry,
        on_new_worker: OnNewWorker | None = None,
        hostnames: LabelCap | None = None,
    ) -> None:
        self.registry = registry
        self.hostnames = hostnames
        # Called (on the event thread) the first time a worker is seen or comes online,
        # e.g. to ask it which queues it consumes.
        self.on_new_worker = on_new_worker
        self._known: set[str] = set()

    def handlers(self) -> dict[str, WorkerHandler]:
        return {
            "worker-online": self.on_online,
            "worker-heartbeat": self.on_heartbeat,
            "worker-offline": self.on_offline,
        }

    def _seen(self, hostname: str, announce: bool) -> None:
        if (announce or hostname not in self._known) and self.on_new_worker is not None:
            self.on_new_worker(hostname)
        self._known.add(hostname)

    def _hostname(self, event: Event) -> str | None:
        """The worker's label value, or None when it is beyond the cap (not tracked)."""
        hostname = cached_label(event.get("hostname"))
        if self.hostnames is not None and self.hostnames.label(hostname) == OTHER:
            return None
        return hostname

    def on_online(self, event: Event, now: float) -> None:
        hostname = self._hostname(event)
        if hostname is None:
            return
        self.registry.online(
            hostname,
            now,
            _number(event.get("freq")),
            active=_count(event.get("active")),
            processed=_count(event.get("processed")),
        )
        self._seen(hostname, announce=True)

    def on_heartbeat(self, event: Event, now: float) -> None:
        hostname = self._hostname(event)
        if hostname is None:
            return
        # A worker back from being down (overdue) is asked again about its queues.
        returning = hostname in self._known and not self.registry.is_up(hostname)
        self.registry.heartbeat(
            hostname,
            now,
            interval=_number(event.get("freq")),
            active=_count(event.get("active")),
            processed=_count(event.get("processed")),
        )
        self._seen(hostname, announce=returning)

    def on_offline(self, event: Event, now: float) -> None:
        hostname = self._hostname(event)
        if hostname is not None:
            self.registry.offline(hostname, now)

    def forget(self, hostname: str) -> None:
        self._known.discard(hostname)
