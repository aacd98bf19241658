"""The event stream a benchmark publishes: task names, workers, failures, heartbeats, packed as
prefork workers send it (``task.multi`` batches) or one event per message."""

from __future__ import annotations

import os
import platform
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lib.wire import Event, Message, WireFormat, encode_message

N_TASK_NAMES = 100
N_WORKERS = 100  # the target shape: 100 task names, 100 workers
BATCH_LIMIT = 24  # celery.events.dispatcher.EventDispatcher(buffer_limit=24)


# A worker's hub flushes its buffer on every loop turn, so some batches leave before they
# hold 24 events: after each buffered event, flush early with this probability.
EARLY_FLUSH_PROBABILITY = 0.02
HEARTBEAT_EVERY_TASKS = 1000  # one heartbeat from each worker per this many tasks
PREFETCH = 4  # tasks a worker has received but not finished (events interleave)
FAILURE_RATE = 0.05
IN_FLIGHT_TASKS = 100_000
IN_FLIGHT_ROUNDS = int(os.environ.get("BENCH_IN_FLIGHT_ROUNDS", "3"))
# Events per shape, and baseline/exporter pairs per shape and mode (ingest.py, reference.py).
FULL_EVENTS = 250_000
QUICK_EVENTS = 100_000
FULL_REPEAT = 2
QUICK_REPEAT = 1


_MODULES = (
    "billing",
    "reports",
    "emails",
    "images",
    "search",
    "sync",
    "users",
    "orders",
    "webhooks",
    "analytics",
)


_ACTIONS = (
    "process",
    "refresh",
    "send",
    "resize",
    "index",
    "export",
    "import",
    "notify",
    "cleanup",
    "aggregate",
)


TASK_NAMES = [
    f"proj.{m}.tasks.{a}_{m[:-1] if m.endswith('s') else m}" for m in _MODULES for a in _ACTIONS
]


EXCEPTIONS = (
    ("ValueError", "ValueError(\"invalid literal for int() with base 10: 'n/a'\")"),
    ("TimeoutError", "TimeoutError('upstream did not answer within 30 s')"),
    ("KeyError", "KeyError('customer_id')"),
    ("ConnectionError", "ConnectionError('Connection refused')"),
)


def _traceback(exc_repr: str, name: str) -> str:
    module = name.rsplit(".", 1)[0].replace(".", "/")
    return (
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.11/site-packages/celery/app/trace.py", line 453, '
        "in trace_task\n    R = retval = fun(*args, **kwargs)\n"
        '  File "/usr/local/lib/python3.11/site-packages/celery/app/trace.py", line 736, '
        "in __protected_call__\n    return self.run(*args, **kwargs)\n"
        f'  File "/app/{module}.py", line 88, in {name.rsplit(".", 1)[1]}\n'
        "    result = client.fetch(record_id, timeout=30)\n"
        f"{exc_repr.split('(')[0]}: {exc_repr.split('(', 1)[1][:-1]}\n"
    )


class _Worker:
    def __init__(self, index: int, utcoffset: Any) -> None:
        self.hostname = f"celery@bench-worker-{index + 1:02d}"
        self.pid = 4100 + 37 * index
        self.utcoffset = utcoffset
        self.clock = 0
        self.processed = 0
        self.pending: deque[tuple[str, str]] = deque()  # (task id, name): received, not finished

    def base(self) -> Event:
        self.clock += 1
        return {
            "hostname": self.hostname,
            "utcoffset": self.utcoffset,
            "pid": self.pid,
            "clock": self.clock,
        }


class Workload:
    """Deterministic Celery event stream: per task received, started, succeeded or failed."""

    def __init__(
        self, utcoffset: Any, seed: int, names: int = N_TASK_NAMES, workers: int = N_WORKERS
    ) -> None:
        import celery

        self.celery_version = celery.__version__
        self.rng = random.Random(seed)
        self.workers = [_Worker(i, utcoffset) for i in range(workers)]
        self.now = time.time() - 600.0
        self.names = TASK_NAMES[:names]
        # Skewed like real traffic: a few task names carry most of the load.
        self.name_weights = [1.0 / (i + 1) ** 0.8 for i in range(names)]

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _tick(self) -> float:
        self.now += self.rng.random() * 0.0004
        return self.now

    def received(self, worker: _Worker, task_id: str, name: str) -> Event:
        rng = self.rng
        args = f"({rng.randrange(1, 10**6)}, '{rng.choice(_MODULES)}-{rng.randrange(1000)}')"
        kwargs = f"{{'account_id': {rng.randrange(10**5)}, 'force': {rng.random() < 0.1}}}"
        event = worker.base()
        event.update(
            uuid=task_id,
            name=name,
            args=args,
            kwargs=kwargs,
            root_id=task_id,
            parent_id=None,
            retries=0,
            eta=None,
            expires=None,
            timestamp=self._tick(),
            type="task-received",
        )
        return event

    def started(self, worker: _Worker, task_id: str) -> Event:
        event = worker.base()
        event.update(uuid=task_id, timestamp=self._tick(), type="task-started")
        return event

    def terminal(self, worker: _Worker, task_id: str, name: str) -> Event:
        rng = self.rng
        event = worker.base()
        runtime = rng.lognormvariate(-2.5, 1.5)
        if rng.random() < FAILURE_RATE:
            _, exc = rng.choice(EXCEPTIONS)
            event.update(uuid=task_id, exception=exc, traceback=_traceback(exc, name))
            event.update(timestamp=self._tick() + runtime, type="task-failed")
        else:
            result = rng.choice(("None", "'ok'", f"{{'rows': {rng.randrange(10**4)}}}"))
            event.update(uuid=task_id, result=result, runtime=runtime)
            event.update(timestamp=self._tick() + runtime, type="task-succeeded")
        return event

    def heartbeat(self, worker: _Worker) -> Event:
        rng = self.rng
        event = worker.base()
        event.update(
            freq=2.0,
            active=len(worker.pending),
            processed=worker.processed,
            loadavg=[round(rng.uniform(0.5, 4.0), 2) for _ in range(3)],
            sw_ident="py-celery",
            sw_ver=self.celery_version,
            sw_sys=platform.system(),
            timestamp=self._tick(),
            type="worker-heartbeat",
        )
        return event

    def task_stream(self, n_tasks: int) -> Iterator[tuple[_Worker, Event]]:
        """Events of ``n_tasks`` complete tasks plus worker heartbeats, in sending order."""
        rng = self.rng
        names: list[str] = rng.choices(self.names, self.name_weights, k=n_tasks)
        for i in range(n_tasks):
            if i % HEARTBEAT_EVERY_TASKS == 0:
                for worker in self.workers:
                    yield worker, self.heartbeat(worker)
            worker = self.workers[rng.randrange(len(self.workers))]
            task_id = self.uuid()
            worker.processed += 1
            yield worker, self.received(worker, task_id, names[i])
            worker.pending.append((task_id, names[i]))
            if len(worker.pending) > PREFETCH:
                old_id, old_name = worker.pending.popleft()
                yield worker, self.started(worker, old_id)
                yield worker, self.terminal(worker, old_id, old_name)
        for worker in self.workers:
            while worker.pending:
                old_id, old_name = worker.pending.popleft()
                yield worker, self.started(worker, old_id)
                yield worker, self.terminal(worker, old_id, old_name)

    def in_flight(self, n_tasks: int) -> tuple[list[tuple[_Worker, Event]], list[str]]:
        """task-received for ``n_tasks`` new tasks; returns the events and the task ids."""
        names: list[str] = self.rng.choices(self.names, self.name_weights, k=n_tasks)
        events: list[tuple[_Worker, Event]] = []
        ids: list[str] = []
        for name in names:
            worker = self.workers[self.rng.randrange(len(self.workers))]
            task_id = self.uuid()
            worker.processed += 1
            ids.append(task_id)
            events.append((worker, self.received(worker, task_id, name)))
            worker.pending.append((task_id, name))
        return events, ids

    def finish_all(self) -> list[tuple[_Worker, Event]]:
        """task-succeeded for every task still pending (in flight)."""
        events: list[tuple[_Worker, Event]] = []
        while any(worker.pending for worker in self.workers):
            for worker in self.workers:  # the workers take turns
                if worker.pending:
                    task_id, _ = worker.pending.popleft()
                    event = worker.base()
                    event.update(uuid=task_id, result="'ok'", runtime=0.05)
                    event.update(timestamp=self._tick(), type="task-succeeded")
                    events.append((worker, event))
        return events


def check_field_order(fmt: WireFormat, stream: list[tuple[_Worker, Event]]) -> None:
    """Each generated event type has the fields, in the order, Celery's dispatcher sent."""
    seen: set[str] = set()
    for _, event in stream:
        etype = event["type"]
        if etype in seen or etype not in fmt.event_keys:
            continue
        seen.add(etype)
        if list(event) != fmt.event_keys[etype]:
            raise RuntimeError(f"{etype}: fields {list(event)} != Celery's {fmt.event_keys[etype]}")
    missing = set(fmt.event_keys) - seen
    if missing:
        raise RuntimeError(f"the workload never produced {sorted(missing)}")


@dataclass
class Packed:
    """Pre-encoded messages of one flood and what they carry."""

    messages: list[Message]
    types: Counter[str]
    tasks: int
    succeeded: int
    failed: int

    @property
    def events(self) -> int:
        return sum(self.types.values())

    def manifest(self) -> dict[str, Any]:
        return {
            "messages": len(self.messages),
            "events": self.events,
            "types": dict(self.types),
            "tasks": self.tasks,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "bytes": sum(len(p) for _, p in self.messages),
        }


def pack(
    fmt: WireFormat, stream: list[tuple[_Worker, Event]], batched: bool, rng: random.Random
) -> Packed:
    """Encode events as workers send them: ``task.multi`` batches, or one per message."""
    messages: list[Message] = []
    types: Counter[str] = Counter()
    buffers: dict[str, list[Event]] = {}

    def tag() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def flush(hostname: str) -> None:
        buf = buffers.pop(hostname, None)
        if buf:
            messages.append(encode_message(fmt, "task.multi", hostname, buf, tag()))

    for worker, event in stream:
        etype = event["type"]
        types[etype] += 1
        if batched and etype.startswith("task-"):
            buf = buffers.setdefault(worker.hostname, [])
            buf.append(event)
            if len(buf) >= BATCH_LIMIT or rng.random() < EARLY_FLUSH_PROBABILITY:
                flush(worker.hostname)
        else:
            messages.append(
                encode_message(fmt, etype.replace("-", "."), worker.hostname, event, tag())
            )
    for hostname in list(buffers):
        flush(hostname)
    return Packed(
        messages,
        types,
        tasks=types["task-received"],
        succeeded=types["task-succeeded"],
        failed=types["task-failed"],
    )


SHAPES = ("batched", "single")
