"""Remote control, off the event thread: ask each worker for its queues and its pool
(``active_queues``, ``stats``), and (optionally) broadcast ``enable_events`` on a clock.

A worker consuming exactly one queue tells us the queue of every task it runs, which
task events other than ``task-sent`` do not carry. Each inspect is a broadcast answered
by one worker (``destination`` + ``limit=1``), on a connection of its own, with
``timeout >= 1 s`` (shorter timeouts lost replies on Redis).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from celery import Celery

from exporter.brokers import bounded_connection
from exporter.labels import label_value
from exporter.redact import redact_text

log = logging.getLogger(__name__)

CONTROL_SOCKET_SLACK_SECONDS = 5.0


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

    def consumed(self, queue: str) -> bool:
        """Some worker (up or not) said it consumes this queue."""
        return any(queue in queues for queues in list(self._queues.values()))

    def known(self, hostname: str) -> bool:
        """The worker answered (its queues may be none)."""
        return hostname in self._queues

    def forget(self, hostname: str) -> None:
        self._queues.pop(hostname, None)
        self._only_queue.pop(hostname, None)

    def all(self) -> dict[str, tuple[str, ...]]:
        return dict(self._queues)


# A worker announces itself (worker-online) before it listens for control commands: ask
# shortly after, retry unanswered requests with backoff, and ask again every
# ``inspect_interval`` (queues change with add_consumer; memory and busy processes move).
FIRST_ASK_DELAY_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
# The retry delay after two unanswered requests is 4 s: up to then, events wait.
AWAITED_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class WorkerStats:
    """From a worker's ``stats`` reply."""

    pool_size: int | None  # pool.max-concurrency
    prefetch_count: int | None
    pool_kind: str | None  # prefork, solo, threads, gevent... (pool.implementation)
    max_rss_bytes: float | None  # rusage.maxrss (KiB) of the worker's main process


def parse_stats(reply: Any) -> WorkerStats | None:
    if not isinstance(reply, dict):
        return None
    pool = _dict(reply.get("pool"))
    maxrss = _int(_dict(reply.get("rusage")).get("maxrss"))
    return WorkerStats(
        pool_size=_int(pool.get("max-concurrency")),
        prefetch_count=_int(reply.get("prefetch_count")),
        pool_kind=_pool_kind(pool.get("implementation")),
        max_rss_bytes=None if maxrss is None else maxrss * 1024.0,
    )


def parse_priority_options(reply: Any) -> dict[str, Any] | None:
    """The priority layout in a worker's ``conf`` reply: ``sep``, ``priority_steps`` and
    ``global_keyprefix`` of its broker_transport_options, when well-formed (nothing else is
    kept: the options may hold passwords). None: no usable reply."""
    if not isinstance(reply, dict):
        return None
    options = reply.get("broker_transport_options")
    if not isinstance(options, dict):
        return {}
    found: dict[str, Any] = {}
    sep, steps, prefix = (
        options.get("sep"),
        options.get("priority_steps"),
        options.get("global_keyprefix"),
    )
    if isinstance(sep, str) and 0 < len(sep) <= 8:
        found["sep"] = sep
    if (
        isinstance(steps, list)
        and steps
        and all(type(s) is int and 0 <= s <= 255 for s in steps)
        and steps == sorted(set(steps))
    ):
        found["priority_steps"] = steps
    if isinstance(prefix, str):
        found["global_keyprefix"] = prefix
    return found


def _pool_kind(value: object) -> str | None:
    """``celery.concurrency.prefork:TaskPool`` -> ``prefork``."""
    if not isinstance(value, str) or not value:
        return None
    module = value.split(":", 1)[0]
    kind = module.rsplit(".", 1)[-1]
    return {"thread": "threads", "eventlet": "eventlet", "gevent": "gevent"}.get(kind, kind)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class ControlHealth(Protocol):
    """What the control thread tells the exporter's self-metrics (collectors/health.py)."""

    def enable_events_broadcast(self) -> None: ...


class ControlThread:
    def __init__(
        self,
        app: Celery,
        worker_queues: WorkerQueues,
        health: ControlHealth,
        inspect_timeout: float,
        enable_events_interval: float,
        clock: Callable[[], float] = time.time,
        inspect_interval: float = 30.0,
        is_alive: Callable[[str], bool] = lambda hostname: True,
    ) -> None:
        self.app = app
        self.is_alive = is_alive
        self.inspect_interval = inspect_interval
        # hostname -> its latest stats reply, read by the collector
        self.stats: dict[str, WorkerStats] = {}
        # hostname -> the priority layout of its broker_transport_options (asked once)
        self.priority_options: dict[str, dict[str, Any]] = {}
        self.worker_queues = worker_queues
        self.health = health
        self.inspect_timeout = max(1.0, inspect_timeout)
        # Socket timeouts of the control connection: longer than a reply may take, short
        # enough that a hung broker does not freeze this thread.
        self._socket_timeout = self.inspect_timeout + CONTROL_SOCKET_SLACK_SECONDS
        self.enable_events_interval = enable_events_interval
        self.clock = clock
        # hostname -> (when to ask, seconds to wait before the next try if unanswered)
        self._due: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def ask_queues(self, hostname: str) -> None:
        """Ask this worker for its queues soon (called when it comes online or is first seen)."""
        with self._lock:
            self._due[hostname] = (self.clock() + FIRST_ASK_DELAY_SECONDS, 1.0)
        self._wake.set()

    def awaiting_queues(self, hostname: str) -> bool:
        """True while this worker has never answered and its first two requests for its
        queues are not both unanswered (about 4 s after it came online): its new tasks'
        events may wait for the answer (events/reorder.py). A worker that cannot answer (a
        fake or a busy solo pool) thus delays nothing for long. Lock-free: called for new
        tasks on the event thread."""
        due = self._due.get(hostname)
        return (
            self._thread is not None  # nobody asks before start(): nothing to wait for
            and due is not None
            and due[1] <= AWAITED_RETRY_SECONDS
            and not self.worker_queues.known(hostname)
        )

    def forget(self, hostname: str) -> None:
        with self._lock:
            self._due.pop(hostname, None)
        self.worker_queues.forget(hostname)
        self.stats.pop(hostname, None)
        self.priority_options.pop(hostname, None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _next_due(self) -> tuple[str | None, float]:
        """The most overdue worker (or None) and the seconds until the next one is due."""
        now = self.clock()
        with self._lock:
            if not self._due:
                return None, 1.0
            hostname, (when, _) = min(self._due.items(), key=lambda item: item[1][0])
        if when <= now:
            return hostname, 0.0
        return None, min(1.0, when - now)

    def _run(self) -> None:
        next_enable = self.clock()
        while not self._stopping.is_set():
            hostname, wait = self._next_due()
            if hostname is not None:
                self._ask(hostname)
            if self.enable_events_interval > 0 and self.clock() >= next_enable:
                self._enable_events()
                next_enable = self.clock() + self.enable_events_interval
            if hostname is None:
                if self.enable_events_interval > 0:
                    wait = max(0.0, min(wait, next_enable - self.clock()))
                self._wake.wait(wait)
                self._wake.clear()

    def _ask(self, hostname: str) -> None:
        if not self.is_alive(hostname):
            # A down worker cannot answer: do not spend the thread's time on it. Its next
            # online event or heartbeat asks again (ask_queues).
            with self._lock:
                self._due.pop(hostname, None)
            return
        answered = self._inspect_queues(hostname)
        if answered:
            self._inspect_stats(hostname)
            if hostname not in self.priority_options:
                self._inspect_priority_options(hostname)
        now = self.clock()
        with self._lock:
            entry = self._due.get(hostname)
            if entry is None:  # forgotten meanwhile
                return
            if answered:
                self._due[hostname] = (now + self.inspect_interval, 1.0)
            else:
                retry = entry[1]
                self._due[hostname] = (now + retry, min(retry * 2, RETRY_MAX_SECONDS))

    def _inspect(self, hostname: str, method: str) -> Any:
        """One inspect request answered by this worker alone; None without an answer."""
        try:
            with bounded_connection(self.app, self._socket_timeout, for_write=True) as conn:
                inspect = self.app.control.inspect(
                    destination=[hostname],
                    timeout=self.inspect_timeout,
                    limit=1,
                    connection=conn,
                )
                replies = getattr(inspect, method)()
        except Exception as exc:
            log.debug("%s for %s failed: %s", method, hostname, redact_text(str(exc)))
            return None
        return (replies or {}).get(hostname)

    def _inspect_stats(self, hostname: str) -> None:
        stats = parse_stats(self._inspect(hostname, "stats"))
        if stats is not None:
            self.stats[hostname] = stats

    def _inspect_priority_options(self, hostname: str) -> None:
        """Once per worker: how it lays out Redis priority lists (sources/redis_priorities)."""
        options = parse_priority_options(self._inspect(hostname, "conf"))
        if options is not None:
            self.priority_options[hostname] = options

    def _inspect_queues(self, hostname: str) -> bool:
        reply = self._inspect(hostname, "active_queues")
        if not isinstance(reply, list):
            return False  # no answer (e.g. a solo worker busy with a task): unknown, not empty
        names = tuple(
            sorted(
                label_value(q["name"])
                for q in reply
                if isinstance(q, dict) and isinstance(q.get("name"), str)
            )
        )
        if self.worker_queues.all().get(hostname) != names:
            log.info("worker %s consumes %s", hostname, ", ".join(names) or "nothing")
        self.worker_queues.set(hostname, names)
        return True

    def _enable_events(self) -> None:
        try:
            with bounded_connection(self.app, self._socket_timeout, for_write=True) as conn:
                self.app.control.enable_events(connection=conn)
            self.health.enable_events_broadcast()
        except Exception as exc:
            log.warning("enable_events broadcast failed: %s", redact_text(str(exc)))
