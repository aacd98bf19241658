"""Workers as the event stream shows them, and when each one counts as gone.

Liveness comes from heartbeats measured on the exporter's own clock (when they arrived),
never from the worker's timestamps, so clock skew between hosts cannot mark a worker down.
A worker is down after ``timeout_heartbeats`` of its own advertised intervals (``freq``)
pass with no heartbeat, or at once on ``worker-offline`` (sent only on warm shutdown:
SIGKILL and OOM send nothing). Down workers keep their series, at 0, for ``purge_seconds``
so alerts with ``for:`` can fire; then they are forgotten.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

DEFAULT_HEARTBEAT_INTERVAL = 2.0
# Batched task events from a busy worker can arrive several seconds after the heartbeat
# that already counts the task as processed; wait this long before calling events "off".
EVENTS_OFF_GRACE_SECONDS = 15.0


@dataclass
class WorkerState:
    hostname: str
    up: bool = False
    last_heartbeat: float = 0.0  # exporter clock (epoch seconds)
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    active: int = 0
    processed: int = 0
    onlines: int = 0
    offlines: int = 0
    went_down_at: float | None = None
    # Task-event detection: processed count at first sight, whether task events came.
    processed_baseline: int | None = None
    task_events_seen: bool = False
    processed_without_events_since: float | None = None
    task_events_off: bool = False

    def task_events_enabled(self) -> bool | None:
        """True/False when known, None while the worker has not processed anything."""
        if self.task_events_seen:
            return True
        if self.task_events_off:
            return False
        return None


@dataclass(frozen=True)
class WorkerSnapshot:
    hostname: str
    up: bool
    last_heartbeat: float
    heartbeat_interval: float
    active: int
    processed: int
    onlines: int
    offlines: int
    task_events_enabled: bool | None
    # When heartbeats first showed tasks processed with no task event seen (None: not so).
    processed_without_events_since: float | None = None


class WorkerRegistry:
    def __init__(self, timeout_heartbeats: float, purge_seconds: float) -> None:
        self.timeout_heartbeats = timeout_heartbeats
        self.purge_seconds = purge_seconds
        self._workers: dict[str, WorkerState] = {}
        self._lock = threading.Lock()
        # Every worker-online, also of workers since forgotten (pods replaced under new names).
        self.starts_total = 0
        # hostname -> when it last reported no running task (or restarted): tasks it started
        # before that are not running, whatever final events were lost.
        self.idle_since: dict[str, float] = {}
        # hostname -> when it last came online (worker-online), on the exporter's clock
        self.online_since: dict[str, float] = {}

    def _get(self, hostname: str) -> WorkerState:
        worker = self._workers.get(hostname)
        if worker is None:
            worker = self._workers[hostname] = WorkerState(hostname)
        return worker

    def online(
        self,
        hostname: str,
        now: float,
        interval: float | None,
        active: int | None = None,
        processed: int | None = None,
    ) -> None:
        with self._lock:
            worker = self._get(hostname)
            worker.onlines += 1
            self.starts_total += 1
            self.idle_since[hostname] = now
            self.online_since[hostname] = now
            # A restarted worker starts its counters again: forget what we learnt.
            worker.processed_baseline = None
            worker.task_events_seen = False
            worker.task_events_off = False
            worker.processed_without_events_since = None
        # worker-online carries the same fields as a heartbeat.
        self.heartbeat(hostname, now, interval, active, processed)

    def heartbeat(
        self,
        hostname: str,
        now: float,
        interval: float | None,
        active: int | None,
        processed: int | None,
    ) -> None:
        with self._lock:
            worker = self._get(hostname)
            self._alive(worker, now, interval)
            if active is not None:
                worker.active = active
                if active == 0:
                    self.idle_since[hostname] = now
            if processed is not None:
                worker.processed = processed
                if worker.processed_baseline is None or processed < worker.processed_baseline:
                    worker.processed_baseline = processed
                elif (
                    processed > worker.processed_baseline
                    and not worker.task_events_seen
                    and worker.processed_without_events_since is None
                ):
                    worker.processed_without_events_since = now

    def offline(self, hostname: str, now: float) -> None:
        with self._lock:
            worker = self._get(hostname)
            worker.offlines += 1
            worker.active = 0
            if worker.up or worker.went_down_at is None:
                worker.up = False
                worker.went_down_at = now

    def knows(self, hostname: str) -> bool:
        """True while the worker is registered (it sent a worker event, not yet purged)."""
        return hostname in self._workers

    def task_event(self, hostname: str) -> bool:
        """Note a task event from a worker; True the first time (so callers can log it)."""
        worker = self._workers.get(hostname)
        if worker is None or worker.task_events_seen:
            return False
        with self._lock:
            worker.task_events_seen = True
            worker.task_events_off = False
            worker.processed_without_events_since = None
        return True

    def _alive(self, worker: WorkerState, now: float, interval: float | None) -> None:
        if interval is not None and interval > 0:
            worker.heartbeat_interval = interval
        worker.last_heartbeat = now
        worker.up = True
        worker.went_down_at = None

    def sweep(self, now: float) -> tuple[list[str], list[str], list[str]]:
        """Apply the clock: returns (went down, forgotten, found without task events)."""
        down: list[str] = []
        purged: list[str] = []
        events_off: list[str] = []
        with self._lock:
            for hostname, worker in list(self._workers.items()):
                if worker.up:
                    deadline = worker.last_heartbeat + worker.heartbeat_interval * (
                        self.timeout_heartbeats
                    )
                    if now > deadline:
                        worker.up = False
                        worker.active = 0
                        worker.went_down_at = now
                        down.append(hostname)
                elif worker.went_down_at is not None and (
                    now - worker.went_down_at >= self.purge_seconds
                ):
                    del self._workers[hostname]
                    self.idle_since.pop(hostname, None)
                    self.online_since.pop(hostname, None)
                    purged.append(hostname)
                    continue
                since = worker.processed_without_events_since
                if (
                    since is not None
                    and not worker.task_events_off
                    and not worker.task_events_seen
                    and now - since >= EVENTS_OFF_GRACE_SECONDS
                ):
                    worker.task_events_off = True
                    events_off.append(hostname)
        return down, purged, events_off

    def snapshot(self) -> list[WorkerSnapshot]:
        with self._lock:
            return [
                WorkerSnapshot(
                    hostname=w.hostname,
                    up=w.up,
                    last_heartbeat=w.last_heartbeat,
                    heartbeat_interval=w.heartbeat_interval,
                    active=w.active,
                    processed=w.processed,
                    onlines=w.onlines,
                    offlines=w.offlines,
                    task_events_enabled=w.task_events_enabled(),
                    processed_without_events_since=w.processed_without_events_since,
                )
                for w in self._workers.values()
            ]

    def is_up(self, hostname: str) -> bool:
        worker = self._workers.get(hostname)
        return worker is not None and worker.up
