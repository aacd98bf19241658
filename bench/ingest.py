#!/usr/bin/env python
"""Ingestion benchmark: how fast the exporter takes in Celery events through a real Redis.

Run ``.venv/bin/python bench/ingest.py [--events N] [--quick]`` (``make bench``). It:

1. starts a private ``redis-server`` on a free 127.0.0.1 port (no persistence, pub/sub output
   buffer limit 0 0 0 so the broker never disconnects a slow subscriber);
2. publishes a few events with Celery's own ``EventDispatcher`` (kombu's Redis transport) and
   captures what Redis carries, so the flood is built in exactly that format (the rebuild is
   checked byte for byte against the capture);
3. in a separate publisher process, pre-encodes a realistic event stream (100 task names,
   100 workers, received/started/succeeded-or-failed per task, worker heartbeats) twice: as
   prefork workers send it (``task.multi`` batches of up to 24 events) and one event per
   message, and replays it with redis-py ``PUBLISH`` pipelines as fast as it can;
4. measures, one at a time and each in a subprocess of its own, a baseline subscriber (redis-py
   ``psubscribe`` + JSON/base64 decode, nothing else) and the real exporter daemon: ingestion
   rate, CPU per event (from /proc), exact counts (no loss), and the exporter's memory, also
   with 100,000 tasks in flight;
5. prints a table and writes ``bench/RESULTS.md``.

The script ends only the processes it started (redis-server, publisher, baseline, exporter).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import os
import platform
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = ROOT / "bench" / "RESULTS.md"
# Sections of RESULTS.md written by the other scripts (matrix.py, scrape.py, memory.py,
# soak.py): kept when this script rewrites the file.
OTHER_SECTIONS = (
    "## Ingestion rate matrix",
    "## /metrics latency",
    "## Memory after 1,000,000 tasks",
    "## Soak",
    "## Memory drift",  # hand-written (bench/drift.py)
    "## Protobuf exposition",
    "## Reference subscribers",
    "## Redis queue sampling with 1,000,000 keys",
)

EXCHANGE = "celeryev"
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
PROFILE_EVENTS = 60_000  # about this many events per shape under the profiler
IN_FLIGHT_ROUNDS = int(os.environ.get("BENCH_IN_FLIGHT_ROUNDS", "3"))
TARGET_RATIO = 0.75
FULL_EVENTS = 250_000
QUICK_EVENTS = 100_000
FULL_REPEAT = 2
QUICK_REPEAT = 1

Event = dict[str, Any]
Message = tuple[str, bytes]  # (channel, payload)


# --------------------------------------------------------------------------------------------
# small helpers: ports, /proc, HTTP
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM...), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


_METRIC_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A parsed Prometheus text exposition: name -> [(labels, value)]."""

    def __init__(self, text: str) -> None:
        self.series: dict[str, list[tuple[dict[str, str], float]]] = {}
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            match = _METRIC_LINE.match(line)
            if match is None:
                continue
            name, labels_text, value = match.groups()
            labels = dict(_LABEL.findall(labels_text)) if labels_text else {}
            self.series.setdefault(name, []).append((labels, float(value)))

    def total(self, name: str, **match: str) -> float:
        return sum(
            value
            for labels, value in self.series.get(name, [])
            if all(labels.get(k) == v for k, v in match.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self.series.get(name, []):
            key = labels.get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out


# --------------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server: own port, own working directory, no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (make bench installs it)")
        self.version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.workdir / "redis.log"),
            "--daemonize",
            "no",
            # A subscriber slower than the flood must never be disconnected by the broker:
            # whatever is lost then is lost by the consumer.
            "--client-output-buffer-limit",
            "pubsub 0 0 0",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        # Set it again at run time (and read it back) so the report states what was in force.
        client.config_set("client-output-buffer-limit", "pubsub 0 0 0")

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)

    def buffer_limit(self) -> str:
        value = self.client().config_get("client-output-buffer-limit")
        return str(value.get("client-output-buffer-limit", ""))

    def numpat(self) -> int:
        return int(self.client().execute_command("PUBSUB", "NUMPAT"))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --------------------------------------------------------------------------------------------
# the wire format, captured from kombu itself
# --------------------------------------------------------------------------------------------


@dataclass
class WireFormat:
    """What kombu's Redis transport publishes for Celery events, learnt from a capture."""

    channel_prefix: str  # "/0.celeryev/" : keyprefix_fanout + exchange + "/"
    pattern: str  # what a subscriber binding routing key "#" psubscribes to
    envelope: dict[str, Any]  # a captured envelope: the template for every message
    samples: list[tuple[str, bytes]] = field(default_factory=list)  # (channel, payload)
    event_keys: dict[str, list[str]] = field(default_factory=dict)  # type -> field order
    utcoffset: Any = 0


def encode_message(
    fmt: WireFormat, routing_key: str, hostname: str, body: Any, delivery_tag: str
) -> Message:
    """One event message exactly as kombu's Redis transport puts it on the channel."""
    template = fmt.envelope
    body_json = json.dumps(body).encode("utf-8")  # kombu's json serializer: default separators
    properties = dict(template["properties"])
    properties["delivery_info"] = {**template["properties"]["delivery_info"]}
    properties["delivery_info"]["routing_key"] = routing_key
    properties["delivery_tag"] = delivery_tag
    message = dict(template)
    message["body"] = base64.b64encode(body_json).decode("ascii")
    message["headers"] = {**template["headers"], "hostname": hostname}
    message["properties"] = properties
    return fmt.channel_prefix + routing_key, json.dumps(message).encode("utf-8")


def capture_wire_format(server: RedisServer) -> WireFormat:
    """Send events with Celery's EventDispatcher (as a prefork worker does) and capture them."""
    from celery import Celery
    from celery.utils.sysinfo import load_average
    from celery.utils.time import utcoffset
    from celery.worker.state import SOFTWARE_INFO

    client = server.client()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"/0.{EXCHANGE}/*")
    pubsub.get_message(timeout=1.0)  # the psubscribe confirmation

    app = Celery("bench-capture", broker=server.url, set_as_current=False)
    hostname = "celery@capture"
    with app.connection_for_write() as conn:
        # Prefork/solo/threads workers: task events buffered into task.multi batches.
        batched = app.events.Dispatcher(conn, hostname=hostname, buffer_group=["task"])
        batched.send(
            "task-received",
            uuid="u-1",
            name="proj.tasks.add",
            args="(1, 2)",
            kwargs="{}",
            root_id="u-1",
            parent_id=None,
            retries=0,
            eta=None,
            expires=None,
        )
        batched.send("task-started", uuid="u-1")
        batched.send("task-succeeded", uuid="u-1", result="3", runtime=0.0123)
        batched.send("task-failed", uuid="u-2", exception="ValueError('x')", traceback="Tb")
        batched.flush()
        batched.send(
            "worker-heartbeat",
            freq=2.0,
            active=1,
            processed=2,
            loadavg=load_average(),
            **SOFTWARE_INFO,
        )
        # gevent/eventlet workers: one event per message.
        single = app.events.Dispatcher(conn, hostname=hostname)
        single.send("task-started", uuid="u-3")
        batched.close()
        single.close()

    samples: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + 10
    while len(samples) < 3 and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=1.0)
        if msg is not None and msg["type"] == "pmessage":
            samples.append((msg["channel"].decode(), msg["data"]))
    pubsub.close()
    if len(samples) != 3:
        raise RuntimeError(f"captured {len(samples)} of 3 messages from kombu")

    channels = [c for c, _ in samples]
    if channels != [
        f"/0.{EXCHANGE}/task.multi",
        f"/0.{EXCHANGE}/worker.heartbeat",
        f"/0.{EXCHANGE}/task.started",
    ]:
        raise RuntimeError(f"unexpected channels {channels}")
    envelope = json.loads(samples[0][1])
    fmt = WireFormat(
        channel_prefix=f"/0.{EXCHANGE}/",
        # kombu binds routing key "#" as the glob "*" (redis.py: routing_key.replace('#', '*'))
        pattern=f"/0.{EXCHANGE}/*",
        envelope=envelope,
        samples=samples,
        utcoffset=utcoffset(),
    )
    for _, payload in samples:
        env = json.loads(payload)
        body = json.loads(base64.b64decode(env["body"]))
        for event in body if isinstance(body, list) else [body]:
            fmt.event_keys.setdefault(event["type"], list(event))
    # The rebuild must be byte-identical to what kombu published.
    for channel, payload in samples:
        env = json.loads(payload)
        body = json.loads(base64.b64decode(env["body"]))
        routing_key = env["properties"]["delivery_info"]["routing_key"]
        rebuilt = encode_message(
            fmt, routing_key, env["headers"]["hostname"], body, env["properties"]["delivery_tag"]
        )
        if rebuilt != (channel, payload):
            raise RuntimeError(f"cannot reproduce kombu's message byte for byte:\n{payload!r}")
    return fmt


# --------------------------------------------------------------------------------------------
# the workload (built in the publisher process)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# the publisher process
# --------------------------------------------------------------------------------------------


def publisher_main(
    pipe: PipeEnd,
    port: int,
    fmt: WireFormat,
    events: int,
    seed: int,
    names: int = N_TASK_NAMES,
    workers: int = N_WORKERS,
    in_flight_rounds: int = IN_FLIGHT_ROUNDS,
) -> None:
    """Build every flood up front, then publish one on each request (runs in its own process)."""
    import redis

    started = time.monotonic()
    workload = Workload(fmt.utcoffset, seed, names, workers)
    n_tasks = max(1, round(events / (3 + workers / HEARTBEAT_EVERY_TASKS)))
    stream = list(workload.task_stream(n_tasks))
    check_field_order(fmt, stream)
    rng = random.Random(seed + 1)
    floods: dict[str, Packed] = {
        "batched": pack(fmt, stream, batched=True, rng=rng),
        "single": pack(fmt, stream, batched=False, rng=rng),
    }
    del stream
    for round_no in range(1, in_flight_rounds + 1):
        received, _ = workload.in_flight(IN_FLIGHT_TASKS)
        floods[f"inflight{round_no}-received"] = pack(fmt, received, batched=True, rng=rng)
        floods[f"inflight{round_no}-succeeded"] = pack(
            fmt, workload.finish_all(), batched=True, rng=rng
        )
    pipe.send(
        {
            "build_seconds": time.monotonic() - started,
            "floods": {name: p.manifest() for name, p in floods.items()},
        }
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    while True:
        command = pipe.recv()
        if command is None:
            break
        action, name, limit = command
        if action == "messages":  # hand the payloads over
            pipe.send(floods[name].messages[:limit])
        else:
            pipe.send(publish(client, floods[name].messages[:limit]))


def publish(client: Any, messages: list[Message]) -> dict[str, Any]:
    """PUBLISH every message, pipelined; report timings and how many subscribers got each."""
    pipe = client.pipeline(transaction=False)
    receivers = 0
    pending = 0
    pending_bytes = 0
    start = time.time()
    for channel, payload in messages:
        pipe.publish(channel, payload)
        pending += 1
        pending_bytes += len(payload)
        if pending >= 1000 or pending_bytes >= 1 << 20:
            receivers += sum(pipe.execute())
            pending = pending_bytes = 0
    if pending:
        receivers += sum(pipe.execute())
    end = time.time()
    return {"start": start, "end": end, "receivers": receivers, "messages": len(messages)}


class Publisher:
    def __init__(
        self,
        port: int,
        fmt: WireFormat,
        events: int,
        seed: int,
        names: int = N_TASK_NAMES,
        workers: int = N_WORKERS,
        in_flight_rounds: int = IN_FLIGHT_ROUNDS,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=publisher_main,
            args=(child, port, fmt, events, seed, names, workers, in_flight_rounds),
            name="bench-publisher",
        )
        self.proc.start()
        child.close()
        self.manifest: dict[str, Any] = self.pipe.recv()

    def flood(self, name: str) -> dict[str, Any]:
        return dict(self.manifest["floods"][name])

    def start_publish(self, name: str, limit: int | None = None) -> None:
        """Publish flood ``name`` (its first ``limit`` messages only, if given)."""
        self.pipe.send(("publish", name, limit))

    def done(self) -> bool:
        return self.pipe.poll()

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = self.pipe.recv()
        return result

    def messages(self, name: str, limit: int | None = None) -> list[Message]:
        self.pipe.send(("messages", name, limit))
        messages: list[Message] = self.pipe.recv()
        return messages

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pipe.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# --------------------------------------------------------------------------------------------
# the baseline subscriber (runs as `ingest.py --role baseline`)
# --------------------------------------------------------------------------------------------


def baseline_main(port: int, pattern: str, expect: int, idle_seconds: float) -> None:
    """psubscribe, decode each envelope and its base64 JSON body, count events. Nothing else."""
    import redis

    loads = json.loads
    b64decode = base64.b64decode
    client = redis.Redis(host="127.0.0.1", port=port)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.psubscribe(pattern)
    while True:  # the psubscribe confirmation: from here on nothing published is missed
        msg = pubsub.get_message(timeout=5.0)
        if msg is not None and msg["type"] == "psubscribe":
            break
    print("READY", flush=True)
    events = messages = 0
    first = last = 0.0
    waiting_since = time.time()
    get = pubsub.get_message
    while events < expect:
        msg = get(ignore_subscribe_messages=True, timeout=0.5)
        if msg is None:
            since = last or waiting_since
            if time.time() - since > (idle_seconds if last else 120.0):
                break
            continue
        envelope = loads(msg["data"])
        body = loads(b64decode(envelope["body"]))
        events += len(body) if type(body) is list else 1
        messages += 1
        last = time.time()
        if messages == 1:
            first = last
    print(json.dumps({"events": events, "messages": messages, "first": first, "last": last}))
    sys.stdout.flush()
    sys.stdin.read()  # let the parent read our CPU time before we exit


class Baseline:
    def __init__(
        self,
        port: int,
        pattern: str,
        expect: int,
        script: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``script``: the file whose ``--role baseline`` runs (this one by default)."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(script or Path(__file__).resolve()),
                "--role",
                "baseline",
                "--port",
                str(port),
                "--pattern",
                pattern,
                "--expect",
                str(expect),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.lines.get(timeout=30)
        if line.strip() != "READY":
            raise RuntimeError(f"baseline subscriber said {line!r}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def result(self, timeout: float) -> dict[str, Any] | None:
        """The subscriber's report, or None if it has not finished within ``timeout``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if not line:
            raise RuntimeError("baseline subscriber exited without a result")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case it is still paused
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------------------------
# the exporter daemon
# --------------------------------------------------------------------------------------------


class ExporterProcess:
    def __init__(self, broker_url: str, workdir: Path) -> None:
        binary = Path(sys.executable).parent / "celery-metrics-exporter"
        if not binary.exists():
            found = shutil.which("celery-metrics-exporter")
            if found is None:
                sys.exit("celery-metrics-exporter is not installed in this environment")
            binary = Path(found)
        self.port = free_port()
        self.log_path = workdir / "exporter.log"
        self.command = [
            str(binary),
            "--broker-url",
            broker_url,
            "--listen-address",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 30.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the exporter exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = http_get(self.url("/readyz"), timeout=2)
                if status == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"the exporter was not ready after {timeout} s: {self.log_tail()}")

    def scrape(self) -> Metrics:
        status, body = http_get(self.url("/metrics"), timeout=60)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return Metrics(body.decode("utf-8"))

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------


MODES = ("live", "drain")


@dataclass
class Run:
    consumer: str  # "baseline" or "exporter"
    shape: str  # "batched" or "single"
    mode: str  # "live": consumer runs during the publish; "drain": paused until it is done
    published: int  # events
    messages: int
    consumed: int
    seconds: float  # live: first PUBLISH -> last event; drain: resume -> last event
    cpu_seconds: float
    publish_seconds: float
    peak_rss_kib: int
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.consumed / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.consumed * 1e6 if self.consumed else float("nan")

    @property
    def lost(self) -> int:
        return self.published - self.consumed

    def named_checks(self) -> list[tuple[str, bool, str]]:
        prefix = f"{self.consumer} {self.shape} {self.mode}"
        return [(f"{prefix}: {name}", ok, detail) for name, ok, detail in self.checks]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2]


def start_flood(
    pid: int, publisher: Publisher, name: str, mode: str
) -> tuple[float | None, dict[str, Any] | None]:
    """Start publishing flood ``name`` at the consumer ``pid``.

    live: returns at once (None, None); the consumer drains while the publisher publishes.
    drain: the consumer is stopped (SIGSTOP) until the whole flood waits in Redis, then
    resumed; returns (the resume time, the publish result). On 2 cores this keeps the
    publisher from competing with the consumer for CPU.
    """
    if mode == "live":
        publisher.start_publish(name)
        return None, None
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while process_state(pid) not in "Tt" and time.monotonic() < deadline:
            time.sleep(0.005)
        publisher.start_publish(name)
        pub = publisher.result()
    finally:
        resumed = time.time()
        os.kill(pid, signal.SIGCONT)
    return resumed, pub


def run_baseline(
    server: RedisServer,
    fmt: WireFormat,
    publisher: Publisher,
    shape: str,
    mode: str,
    factory: Any = None,
    consumer: str = "baseline",
) -> Run:
    """One flood into a reference subscriber: ``Baseline``, or what ``factory(port, pattern,
    expect)`` starts (bench/reference.py's hiredis one)."""
    flood = publisher.flood(shape)
    baseline = (factory or Baseline)(server.port, fmt.pattern, flood["events"])
    pid = baseline.proc.pid
    try:
        if server.numpat() != 1:
            raise RuntimeError("expected exactly one pattern subscriber (the baseline)")
        cpu0 = cpu_seconds(pid)
        resumed, pub = start_flood(pid, publisher, shape, mode)
        deadline = time.monotonic() + 900
        while (result := baseline.result(timeout=0.2)) is None:
            if pub is None and publisher.done():
                pub = publisher.result()
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline subscriber did not finish")
        cpu1 = cpu_seconds(pid)
        peak = proc_status_kib(pid, "VmHWM")  # a fresh process: its peak is this flood's
        if pub is None:
            pub = publisher.result()
    finally:
        baseline.close()
    start = resumed if resumed is not None else pub["start"]
    run = Run(
        consumer=consumer,
        shape=shape,
        mode=mode,
        published=flood["events"],
        messages=flood["messages"],
        consumed=result["events"],
        seconds=result["last"] - start,
        cpu_seconds=cpu1 - cpu0,
        publish_seconds=pub["end"] - pub["start"],
        peak_rss_kib=peak,
    )
    run.checks.append(("every event decoded", run.lost == 0, f"{run.consumed} of {run.published}"))
    run.checks.append(
        (
            "every message reached 1 subscriber",
            pub["receivers"] == flood["messages"],
            f"{pub['receivers']} of {flood['messages']}",
        )
    )
    return run


def events_total(metrics: Metrics) -> float:
    return metrics.total("celery_exporter_events_total")


def wait_until_ingested(
    exporter: ExporterProcess,
    publisher: Publisher,
    base_total: float,
    expected: int,
    pub: dict[str, Any] | None = None,
) -> tuple[Metrics, float, dict[str, Any], int]:
    """Wait for the publisher, then for the exporter to go idle; scrape only then.

    Scraping /metrics renders thousands of series under the dispatcher's lock, so polling it
    during the flood would slow the consumer down. Instead /proc tells when the process has
    stopped using CPU (drained, or stuck); then one scrape says whether everything arrived.
    Returns the metrics, the exporter's CPU time when it went idle, the publish result and
    the highest RSS sampled meanwhile.
    """
    samples: deque[tuple[float, float]] = deque()
    peak = 0
    last_count = -1.0
    stalled_since = 0.0
    deadline = time.monotonic() + 900
    while True:
        time.sleep(0.1)
        if pub is None and publisher.done():
            pub = publisher.result()
        now = time.monotonic()
        cpu = cpu_seconds(exporter.pid)
        peak = max(peak, exporter.rss_kib())
        samples.append((now, cpu))
        while len(samples) > 2 and now - samples[1][0] >= 0.6:
            samples.popleft()
        window = now - samples[0][0]
        idle = pub is not None and window >= 0.6 and cpu - samples[0][1] < 0.03
        if not idle and now < deadline:
            continue
        metrics = exporter.scrape()
        count = events_total(metrics) - base_total
        if count >= expected or now >= deadline:
            break
        if count != last_count:
            last_count, stalled_since = count, now
        elif now - stalled_since >= 3.0:
            break  # idle and not increasing for 3 s: the rest is lost
        samples.clear()
    assert pub is not None
    return metrics, cpu, pub, peak


def wait_until_released(
    exporter: ExporterProcess, after: Metrics, cpu: float, timeout: float = 30.0
) -> tuple[Metrics, float]:
    """Every event is consumed, but a new worker's first tasks may still be held for its
    active_queues answer (events/reorder.py; the bench's workers never answer, so for the
    reorder window): they are counted when released. Wait for that, CPU included."""
    deadline = time.monotonic() + timeout
    while after.total("celery_exporter_held_tasks") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        after = exporter.scrape()
        cpu = cpu_seconds(exporter.pid)
    return after, cpu


def counter_delta(after: Metrics, before: Metrics, name: str, label: str) -> dict[str, float]:
    a, b = after.by_label(name, label), before.by_label(name, label)
    return {k: v - b.get(k, 0.0) for k, v in a.items() if v - b.get(k, 0.0)}


def run_exporter_flood(
    exporter: ExporterProcess, publisher: Publisher, shape: str, mode: str
) -> Run:
    flood = publisher.flood(shape)
    before = exporter.scrape()
    base_total = events_total(before)
    cpu0 = cpu_seconds(exporter.pid)
    resumed, pub = start_flood(exporter.pid, publisher, shape, mode)
    after, cpu1, pub, peak = wait_until_ingested(
        exporter, publisher, base_total, flood["events"], pub
    )
    after, cpu1 = wait_until_released(exporter, after, cpu1)
    consumed = int(events_total(after) - base_total)
    last_event = after.total("celery_exporter_last_event_timestamp_seconds")
    start = resumed if resumed is not None else pub["start"]
    run = Run(
        consumer="exporter",
        shape=shape,
        mode=mode,
        published=flood["events"],
        messages=flood["messages"],
        consumed=consumed,
        seconds=last_event - start,
        cpu_seconds=cpu1 - cpu0,
        publish_seconds=pub["end"] - pub["start"],
        peak_rss_kib=peak,
    )
    run.checks = exporter_checks(flood, before, after, pub)
    return run


def exporter_checks(
    flood: dict[str, Any], before: Metrics, after: Metrics, pub: dict[str, Any]
) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    types = counter_delta(after, before, "celery_exporter_events_total", "type")
    expected_types = {k: float(v) for k, v in flood["types"].items()}
    checks.append(
        (
            "events_total per type == published",
            types == expected_types,
            f"got {fmt_counts(types)}"
            + ("" if types == expected_types else f", published {fmt_counts(expected_types)}"),
        )
    )
    done = sum(counter_delta(after, before, "celery_task_succeeded_total", "name").values())
    done += sum(counter_delta(after, before, "celery_task_failed_total", "name").values())
    checks.append(
        (
            "succeeded + failed == tasks",
            done == flood["succeeded"] + flood["failed"],
            f"{done:,.0f} of {flood['succeeded'] + flood['failed']:,}",
        )
    )
    unknown = sum(
        counter_delta(after, before, metric, "name").get("(unknown)", 0.0)
        for metric in (
            "celery_task_started_total",
            "celery_task_succeeded_total",
            "celery_task_failed_total",
        )
    )
    checks.append(("no task lost its name", unknown == 0, f"{unknown:.0f} as (unknown)"))
    skipped = after.total("celery_exporter_events_skipped_total") - before.total(
        "celery_exporter_events_skipped_total"
    )
    checks.append(("nothing skipped", skipped == 0, f"{skipped:.0f} skipped"))
    reconnects = after.total("celery_exporter_broker_reconnects_total") - before.total(
        "celery_exporter_broker_reconnects_total"
    )
    checks.append(("no reconnect", reconnects == 0, f"{reconnects:.0f} reconnects"))
    checks.append(
        (
            "every message reached 1 subscriber",
            pub["receivers"] == flood["messages"],
            f"{pub['receivers']:,} of {flood['messages']:,}",
        )
    )
    return checks


def fmt_counts(counts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(counts.items()))


@dataclass
class MemoryPoint:
    label: str
    rss_kib: int
    metric_rss_kib: int
    tracked: int
    peak_kib: int = 0  # highest RSS sampled while getting there (0: not sampled)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB" if kib else "-"


def memory_point(exporter: ExporterProcess, label: str, peak_kib: int = 0) -> MemoryPoint:
    rss = exporter.rss_kib()  # before the scrape, which allocates while rendering
    metrics = exporter.scrape()
    return MemoryPoint(
        label,
        rss,
        int(metrics.total("process_resident_memory_bytes") / 1024),
        int(metrics.total("celery_exporter_tracked_tasks")),
        peak_kib,
    )


@dataclass
class InFlight:
    points: list[MemoryPoint]
    checks: list[tuple[str, bool, str]]
    task_bytes: float  # RSS per tracked task (round 1)


LEAK_ALLOWANCE = 0.10  # of what the tracked tasks themselves cost, per round after warm-up


def run_in_flight(exporter: ExporterProcess, publisher: Publisher) -> InFlight:
    points: list[MemoryPoint] = [memory_point(exporter, "before the in-flight rounds")]
    checks: list[tuple[str, bool, str]] = []
    for round_no in range(1, IN_FLIGHT_ROUNDS + 1):
        for phase in ("received", "succeeded"):
            name = f"inflight{round_no}-{phase}"
            flood = publisher.flood(name)
            before = exporter.scrape()
            publisher.start_publish(name)
            after, _, pub, peak = wait_until_ingested(
                exporter, publisher, events_total(before), flood["events"]
            )
            checks.extend(
                (f"in flight, round {round_no}, {phase}: {c}", ok, d)
                for c, ok, d in exporter_checks(flood, before, after, pub)
            )
            label = (
                f"round {round_no}: {IN_FLIGHT_TASKS:,} tasks in flight"
                if phase == "received"
                else f"round {round_no}: all {IN_FLIGHT_TASKS:,} succeeded"
            )
            point = memory_point(exporter, label, peak)
            points.append(point)
            want = IN_FLIGHT_TASKS if phase == "received" else 0
            checks.append(
                (
                    f"in flight, round {round_no}, {phase}: tracked_tasks == {want:,}",
                    point.tracked == want,
                    f"{point.tracked:,}",
                )
            )
    in_flight = [p.rss_kib for p in points[1::2]]
    done = [p.rss_kib for p in points[2::2]]
    cost = in_flight[0] - points[0].rss_kib  # what 100,000 tracked tasks take
    # Round 1 warms up the allocator (the tracker's table grows to 100,000 entries); from
    # round 2 on, a leak of the task records would add about `cost` per round.
    ref = 1 if IN_FLIGHT_ROUNDS >= 3 else 0
    rounds_after = IN_FLIGHT_ROUNDS - 1 - ref
    allowed = max(2048, int(LEAK_ALLOWANCE * cost * rounds_after))
    for what, series in (("in flight", in_flight), ("after all succeeded", done)):
        growth = series[-1] - series[ref]
        checks.append(
            (
                f"RSS flat {what}: round {IN_FLIGHT_ROUNDS} vs round {ref + 1} grows less than "
                f"{LEAK_ALLOWANCE:.0%} of the tasks' own cost per round",
                growth <= allowed,
                f"{growth / 1024:+.1f} MiB (allowed {allowed / 1024:.1f} MiB; 100,000 tracked "
                f"tasks cost {cost / 1024:.1f} MiB)",
            )
        )
    return InFlight(points, checks, cost * 1024 / IN_FLIGHT_TASKS)


# --------------------------------------------------------------------------------------------
# optional profile (--profile): cProfile of the real consumer path, in this process
# --------------------------------------------------------------------------------------------


@dataclass
class Profile:
    shape: str
    events: int
    cpu_seconds: float
    top: list[tuple[str, int, float, float]]  # function, calls, self %, cumulative %
    groups: list[tuple[str, float]]  # package, self %


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return filename


def _group(filename: str) -> str:
    short = _short(filename)
    if short.startswith("~") or short.startswith("<"):
        return "builtins (C: json, base64, dict...)"
    top = short.split("/", 1)[0]
    if top in ("exporter", "kombu", "redis", "celery", "prometheus_client"):
        return top
    return "stdlib (Python)" if filename != short else top


def profile_messages(publisher: Publisher, shape: str) -> int:
    """How many of a flood's first messages carry about PROFILE_EVENTS events."""
    flood = publisher.flood(shape)
    return max(1, round(PROFILE_EVENTS * int(flood["messages"]) / int(flood["events"])))


def profile_exporter(server: RedisServer, publisher: Publisher, shape: str) -> Profile:
    """Run the exporter's own consumer loop in this thread under cProfile (CPU time)."""
    import cProfile
    import pstats

    from exporter.daemon import Exporter
    from exporter.settings import Settings

    exporter = Exporter(Settings(broker_url=server.url))
    consumer = exporter.consumer
    counts = exporter.health.events.values
    limit = profile_messages(publisher, shape)

    def trigger() -> None:
        """Publish once subscribed; stop the loop when the events stop coming."""
        try:
            deadline = time.monotonic() + 30
            while server.numpat() < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            publisher.start_publish(shape, limit)
            publisher.result()
            seen = -1.0
            while (now := sum(list(counts.values()))) != seen:
                seen = now
                time.sleep(0.3)
        finally:
            consumer.stopping.set()

    threading.Thread(target=trigger, daemon=True).start()
    profiler = cProfile.Profile(time.process_time)
    conn = exporter.app.connection_for_read()
    cpu0 = time.process_time()
    profiler.enable()
    try:
        consumer._consume(conn)
    finally:
        profiler.disable()
        cpu = time.process_time() - cpu0
        conn.release()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    top = [
        (f"{_short(f)}:{line} {name}", int(v[1]), 100 * v[2] / total, 100 * v[3] / total)
        for (f, line, name), v in rows
    ]
    groups: dict[str, float] = {}
    for (f, _, _), v in entries.items():
        groups[_group(f)] = groups.get(_group(f), 0.0) + 100 * v[2] / total
    ranked = sorted(groups.items(), key=lambda kv: kv[1], reverse=True)
    return Profile(shape, int(sum(counts.values())), cpu, top, ranked)


def what_if(publisher: Publisher) -> list[tuple[str, dict[str, float]]]:
    """CPU per event of ``EventDispatcher.on_message`` alone, as is and with two changes.

    The changes are applied by patching modules in this process only (nothing under
    exporter/ is edited), and undone afterwards: a memo in front of ``label_value`` (20
    hostnames and 100 task names recur millions of times), and ``orjson.loads`` for the body.
    """
    import functools

    import exporter.events.decode as decode_module
    from exporter.daemon import Exporter
    from exporter.labels import label_value
    from exporter.settings import Settings

    bodies: dict[str, list[bytes]] = {}
    for shape in SHAPES:
        messages = publisher.messages(shape, profile_messages(publisher, shape))
        bodies[shape] = [base64.b64decode(json.loads(p)["body"]) for _, p in messages]

    def measure() -> dict[str, float]:
        out: dict[str, float] = {}
        for shape, items in bodies.items():
            best = float("inf")
            for _ in range(3):
                exporter = Exporter(Settings(broker_url="redis://127.0.0.1:1/0"))
                on_message = exporter.dispatcher.on_message
                t0 = time.process_time()
                for body in items:
                    on_message(body, "application/json")
                cpu = time.process_time() - t0
                events = sum(exporter.health.events.values.values())
                best = min(best, cpu / events * 1e6)
            out[shape] = best
        return out

    memo = functools.lru_cache(maxsize=8192)(label_value)

    def memo_label_value(value: object, max_length: int = 200) -> str:
        return memo(value, max_length) if type(value) is str else label_value(value, max_length)

    results = [("as is", measure())]
    saved_json = getattr(decode_module, "json")  # noqa: B009 - not an exported name
    users = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("exporter.") and getattr(module, "label_value", None) is label_value
    ]
    try:
        for module in users:
            module.label_value = memo_label_value  # type: ignore[attr-defined]
        results.append(("label_value memoised", measure()))
        try:
            import orjson
        except ImportError:
            return results

        class _OrJSON:
            loads = staticmethod(orjson.loads)

        setattr(decode_module, "json", _OrJSON)  # noqa: B010
        results.append(("+ orjson.loads for the body", measure()))
    finally:
        for module in users:
            module.label_value = label_value  # type: ignore[attr-defined]
        setattr(decode_module, "json", saved_json)  # noqa: B010
    return results


def heap_check(publisher: Publisher) -> list[tuple[str, float]]:
    """tracemalloc: the Python heap of a fresh dispatcher fed the in-flight rounds."""
    import tracemalloc

    from exporter.daemon import Exporter
    from exporter.settings import Settings

    steps: list[tuple[str, list[bytes]]] = []
    for round_no in range(1, IN_FLIGHT_ROUNDS + 1):
        for phase in ("received", "succeeded"):
            messages = publisher.messages(f"inflight{round_no}-{phase}")
            # Decoding the envelopes is kombu's part: done before tracing starts.
            bodies = [base64.b64decode(json.loads(p)["body"]) for _, p in messages]
            steps.append((f"round {round_no}: {phase}", bodies))
            del messages
    exporter = Exporter(Settings(broker_url="redis://127.0.0.1:1/0"))
    on_message = exporter.dispatcher.on_message
    out: list[tuple[str, float]] = []
    tracemalloc.start()
    try:
        for step, bodies in steps:
            for body in bodies:
                on_message(body, "application/json")
            out.append((step, float(tracemalloc.get_traced_memory()[0])))
    finally:
        tracemalloc.stop()
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def machine_info(server: RedisServer, revision: str) -> list[tuple[str, str]]:
    from importlib.metadata import version

    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    versions = ", ".join(
        f"{pkg} {version(pkg)}"
        for pkg in ("celery", "kombu", "redis", "prometheus_client", "celery-metrics-exporter")
    )
    return [
        ("exporter code (at the start)", revision),
        ("nproc", nproc or str(os.cpu_count())),
        ("CPU model", cpu_model),
        ("memory", f"{mem_kib / 1024 / 1024:.1f} GiB"),
        ("kernel", platform.release()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("packages", versions),
        ("hiredis", "yes" if _hiredis() else "no (redis-py's pure-Python parser)"),
        ("broker", server.version),
        ("load average at the start (1, 5, 15 min)", load_average()),
    ]


def load_average() -> str:
    """``uptime``'s load average: the machine is shared, so say how busy it was."""
    try:
        with open("/proc/loadavg") as f:
            return ", ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def _hiredis() -> bool:
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return False
    return bool(HIREDIS_AVAILABLE)


def exporter_fingerprint() -> str:
    """sha256 over exporter/**/*.py: the code this run measures (checked again at the end)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "exporter").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def exporter_revision() -> str:
    """The git commit, and whether exporter/ differs from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("log", "-1", "--format=%h %s")
    if not commit:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", "exporter")
    return f"{commit} (exporter/ {'has uncommitted changes' if dirty else 'as committed'})"


def utc_date() -> str:
    try:
        return subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())


SHAPES = ("batched", "single")
SHAPE_NAMES = {"batched": "batched (`task.multi`)", "single": "single-event"}


@dataclass
class Pair:
    """A baseline run and, right after it, an exporter run (a fresh daemon) on the same flood."""

    baseline: Run
    exporter: Run
    idle: MemoryPoint  # the fresh exporter before the flood
    after: MemoryPoint  # and after it

    @property
    def ratio(self) -> float:
        return self.exporter.rate / self.baseline.rate


@dataclass
class Summary:
    """One shape and mode, over the repeats."""

    shape: str
    mode: str
    pairs: list[Pair]

    def runs(self, consumer: str) -> list[Run]:
        return [getattr(pair, consumer) for pair in self.pairs]

    def rate(self, consumer: str) -> float:
        runs = self.runs(consumer)
        return sum(r.rate for r in runs) / len(runs)

    def cpu_us(self, consumer: str) -> float:
        runs = self.runs(consumer)
        return sum(r.cpu_seconds for r in runs) / max(1, sum(r.consumed for r in runs)) * 1e6

    def peak_kib(self, consumer: str) -> int:
        return max(r.peak_rss_kib for r in self.runs(consumer))

    def lost(self, consumer: str) -> int:
        return sum(r.lost for r in self.runs(consumer))

    @property
    def ratio(self) -> float:
        return self.rate("exporter") / self.rate("baseline")

    @property
    def ratio_range(self) -> str:
        ratios = [pair.ratio for pair in self.pairs]
        if len(ratios) == 1:
            return f"{ratios[0]:.2f}"
        return f"{min(ratios):.2f}-{max(ratios):.2f}"


def rate_table(summaries: list[Summary]) -> list[str]:
    lines = [
        "| shape | measured | consumer | events/s | vs baseline | each pair | CPU µs/event "
        "| CPU vs baseline | peak RSS | lost |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        for consumer in ("baseline", "exporter"):
            is_base = consumer == "baseline"
            ratio = "1.00" if is_base else f"**{s.ratio:.2f}**"
            pairs = "" if is_base else s.ratio_range
            cpu_ratio = "1.00" if is_base else f"{s.cpu_us(consumer) / s.cpu_us('baseline'):.2f}"
            lines.append(
                f"| {SHAPE_NAMES[s.shape]} | {s.mode} | {consumer} | {s.rate(consumer):,.0f} "
                f"| {ratio} | {pairs} | {s.cpu_us(consumer):.1f} | {cpu_ratio} "
                f"| {mib(s.peak_kib(consumer))} | {s.lost(consumer):,} |"
            )
    return lines


def console_table(summaries: list[Summary]) -> str:
    head = (
        f"{'shape':<8} {'mode':<6} {'consumer':<9} {'events/s':>9} {'ratio':>6} "
        f"{'pairs':>10} {'CPU us/ev':>9} {'CPU ratio':>9} {'peak RSS':>10} {'lost':>5}"
    )
    out = [head, "-" * len(head)]
    for s in summaries:
        for consumer in ("baseline", "exporter"):
            is_base = consumer == "baseline"
            out.append(
                f"{s.shape:<8} {s.mode:<6} {consumer:<9} {s.rate(consumer):>9,.0f} "
                f"{1.0 if is_base else s.ratio:>6.2f} {'' if is_base else s.ratio_range:>10} "
                f"{s.cpu_us(consumer):>9.1f} {s.cpu_us(consumer) / s.cpu_us('baseline'):>9.2f} "
                f"{mib(s.peak_kib(consumer)):>10} {s.lost(consumer):>5,}"
            )
    return "\n".join(out)


def memory_table(points: list[MemoryPoint]) -> list[str]:
    return [
        "| when | RSS (/proc VmRSS) | `process_resident_memory_bytes` | highest RSS sampled "
        "on the way | tracked tasks |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {p.label} | {mib(p.rss_kib)} | {mib(p.metric_rss_kib)} | {mib(p.peak_kib)} "
            f"| {p.tracked:,} |"
            for p in points
        ),
    ]


def profile_section(
    profiles: list[Profile],
    heap: list[tuple[str, float]],
    variants: list[tuple[str, dict[str, float]]],
    date: str,
    command: str,
) -> list[str]:
    lines = [
        "## Profile",
        "",
        f"From `{command}` on `{date}`. cProfile (CPU-time clock) of the exporter's own "
        "consumer loop (`EventConsumer._consume` -> kombu -> `EventDispatcher.on_message`) run "
        "in the benchmark's process against the same Redis and floods; live mode. Profiling "
        "slows everything down, so read shares, not absolute times. The first "
        f"~{PROFILE_EVENTS:,} events of each flood.",
        "",
    ]
    for prof in profiles:
        lines += [
            f"### {SHAPE_NAMES[prof.shape]}: {prof.events:,} events, "
            f"{prof.cpu_seconds / max(prof.events, 1) * 1e6:.1f} µs CPU/event under the profiler",
            "",
            "Self time by package: "
            + ", ".join(f"{g} {pct:.0f}%" for g, pct in prof.groups if pct >= 0.5)
            + ".",
            "",
            "| function | calls | self % | cumulative % |",
            "|---|---:|---:|---:|",
            *(
                f"| `{name}` | {calls:,} | {own:.1f} | {cum:.1f} |"
                for name, calls, own, cum in prof.top
            ),
            "",
        ]
    if variants:
        lines += [
            "### What-if: the dispatcher alone (`EventDispatcher.on_message` on decoded bodies)",
            "",
            "In this process, best of 3, the same first events of each flood; changes applied "
            "by patching modules here, not by editing exporter/:",
            "",
            "| variant | batched µs/event | single-event µs/event |",
            "|---|---:|---:|",
            *(f"| {name} | {v['batched']:.2f} | {v['single']:.2f} |" for name, v in variants),
            "",
        ]
    if heap:
        lines += [
            "### Python heap with 100,000 tasks in flight (tracemalloc)",
            "",
            "A fresh `EventDispatcher` in this process, fed the in-flight rounds' message "
            "bodies; the traced heap after each step (envelope decoding excluded):",
            "",
            "| step | traced Python heap |",
            "|---|---:|",
            *(f"| {step} | {size / 2**20:.2f} MiB |" for step, size in heap),
            "",
        ]
    return lines


def grouped(checks: list[tuple[str, bool, str]]) -> list[tuple[str, str, str]]:
    """One row per run: checks named "<run>: <check>" share the row of <run>."""
    groups: dict[str, list[tuple[str, bool, str]]] = {}
    for name, ok, detail in checks:
        head, sep, tail = name.partition(": ")
        key, item = (head, tail) if sep else (name, "")
        groups.setdefault(key, []).append((item, ok, detail))
    rows: list[tuple[str, str, str]] = []
    for key, items in groups.items():
        failed = [item for item in items if not item[1]]
        result = f"{len(items)} ok" if not failed else f"**{len(failed)} FAILED**"
        details = "; ".join(
            (f"{item}: {detail}" if item else detail) + ("" if ok else " **(failed)**")
            for item, ok, detail in items
        )
        rows.append((key, result, details))
    return rows


def _section(text: str, header: str) -> list[str]:
    """The lines of a "## " section of ``text`` (up to the next one), or []."""
    start = text.find("\n" + header)
    if start < 0:
        return []
    end = text.find("\n## ", start + 1)
    body = text[start + 1 : end if end >= 0 else len(text)].rstrip()
    return [*body.split("\n"), ""]


def write_results(
    path: Path,
    *,
    command: str,
    date: str,
    machine: list[tuple[str, str]],
    server: RedisServer,
    buffer_limit: str,
    manifest: dict[str, Any],
    summaries: list[Summary],
    memory: list[MemoryPoint],
    in_flight: InFlight,
    exporter_command: str,
    channel_prefix: str,
    ready_seconds: float,
    wall_seconds: float,
    checks: list[tuple[str, bool, str]],
    profile: list[str],
) -> None:
    floods = manifest["floods"]
    batched, single = floods["batched"], floods["single"]
    failed = [c for c in checks if not c[1]]
    repeats = len(summaries[0].pairs)
    publish_times = [
        r.publish_seconds for s in summaries for p in s.pairs for r in (p.baseline, p.exporter)
    ]
    lines: list[str] = [
        "# Ingestion benchmark results",
        "",
        "Written by `bench/ingest.py`; `bench/README.md` explains each figure. Re-running the "
        "benchmark overwrites this file.",
        "",
        f"- Date: `{date}`",
        f"- Command: `{command}`",
        f"- Wall time: {wall_seconds:.0f} s (building the floods: "
        f"{manifest['build_seconds']:.1f} s of it)",
        f"- Checks: {len(checks) - len(failed)} of {len(checks)} passed"
        + ("" if not failed else " - **FAILED: " + "; ".join(c[0] for c in failed) + "**"),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine),
        "",
        "## Ingestion rate and CPU",
        "",
        *rate_table(summaries),
        "",
        f"Target: the exporter at >= {TARGET_RATIO:.0%} of the baseline's rate in both shapes, "
        f"no event lost. Each line is over {repeats} baseline-then-exporter pair(s) run back to "
        "back (a fresh exporter each time); *each pair* gives the spread of the pairs' ratios. "
        "**live**: the consumer drains while the publisher floods (they compete for the "
        "CPUs); **drain**: the consumer is paused (SIGSTOP) until the whole flood waits in "
        "Redis, then resumed and timed alone. CPU µs/event counts every thread of the "
        "consumer process. Peak RSS: the baseline's is mostly redis-py's read buffer, which "
        "the exporter compacts as it goes (see README). Publishing "
        f"a flood took {min(publish_times):.1f}-{max(publish_times):.1f} s.",
        "",
        "## Exporter memory",
        "",
        *memory_table([*memory, *in_flight.points]),
        "",
        f"In-flight scenario (a fresh exporter): `task-received` for {IN_FLIGHT_TASKS:,} new "
        "task ids (batched, as prefork workers send them) and no terminal event, then their "
        f"`task-succeeded`; {IN_FLIGHT_ROUNDS} rounds, each with new ids. 100,000 tracked "
        f"tasks cost {in_flight.task_bytes:.0f} bytes of RSS each (round 1). Memory is flat "
        "when later rounds need no more than the earlier ones; CPython keeps freed memory for "
        "reuse, so RSS stays near its high-water mark after the tasks complete.",
        "",
        "## Setup",
        "",
        f"- A private `redis-server` on 127.0.0.1:{server.port}, started and stopped by the "
        'benchmark, `--save ""`, `--appendonly no`. Its pub/sub client output buffer limit '
        "is raised to 0 0 0 (unlimited; `CONFIG GET client-output-buffer-limit` said "
        f"`{buffer_limit}`), so **the broker itself never drops a slow subscriber**: the "
        "flood waits in Redis and each consumer drains it at its own speed. (Redis's default "
        "for pub/sub, 32 MB hard / 8 MB for 60 s, disconnects a lagging subscriber.)",
        "- Messages are in the exact format of kombu's Redis transport: Celery's own "
        "`EventDispatcher` (with `buffer_group=['task']`, as prefork workers use it) "
        "published a sample, a raw `psubscribe` captured it, and the benchmark's encoder "
        "reproduced every captured message byte for byte before the run: channel "
        f"`{channel_prefix}<routing key>`, a JSON envelope (`body` base64 of the JSON event "
        "or list, `content-type: application/json`, `properties.body_encoding: base64`, "
        "`delivery_info`, a fresh `delivery_tag`), and events with the fields, in the order, "
        "Celery sends them.",
        f"- Workload: {N_TASK_NAMES} task names (skewed), {N_WORKERS} workers. Per task "
        "`task-received` (name, args/kwargs reprs, retries, eta, expires...), `task-started`, "
        f"then `task-succeeded` (result repr, runtime) or, {FAILURE_RATE:.0%} of the time, "
        f"`task-failed` (exception repr and traceback); each worker holds {PREFETCH} tasks "
        "(its events interleave); a `worker-heartbeat` from every worker per "
        f"{HEARTBEAT_EVERY_TASKS:,} tasks. Per shape: {batched['tasks']:,} tasks, "
        f"{batched['events']:,} events ({fmt_counts(batched['types'])}).",
        "- Batched shape (prefork/solo/threads workers): each worker's task events in "
        f"`task.multi` lists of up to {BATCH_LIMIT} ({EARLY_FLUSH_PROBABILITY:.0%} chance of an "
        "early flush after each event, as the worker's hub flushes), heartbeats alone: "
        f"{batched['messages']:,} messages, {batched['events'] / batched['messages']:.1f} "
        f"events per message, {batched['bytes'] / 2**20:.0f} MiB.",
        "- Single-event shape (gevent/eventlet workers, `task-sent`): the same events, one "
        f"per message: {single['messages']:,} messages, {single['bytes'] / 2**20:.0f} MiB.",
        "- Publisher: a separate process replays the pre-encoded messages with redis-py "
        "`PUBLISH` pipelines (up to 1,000 commands or 1 MiB each) as fast as it can; the "
        "replies confirm each message reached exactly one subscriber.",
        "- Consumers, one at a time, each a subprocess of its own: the **baseline** (redis-py "
        "`psubscribe` on the event pattern, `json.loads` of the envelope, base64 decode, "
        "`json.loads` of the body, count the events, nothing else), then the **exporter** "
        f"(`{exporter_command}`, ready about {ready_seconds:.1f} s after start).",
        "- Rate = events / (first `PUBLISH`, or the resume in drain mode -> last event "
        "consumed), on this host's clock (for the exporter, its "
        "`celery_exporter_last_event_timestamp_seconds`). Completion is detected from /proc "
        "(the exporter goes idle), then one scrape checks the counts, so scrapes do not slow "
        "the flood.",
        "",
        "## Checks",
        "",
        "| checks | result | details |",
        "|---|---|---|",
        *(f"| {group} | {result} | {details} |" for group, result, details in grouped(checks)),
        "",
    ]
    existing = path.read_text() if path.exists() else ""
    # A Profile section from an earlier --profile run (it is dated) is kept unless this run
    # made a new one; a hand-written "## Notes" section is always kept, at the end.
    lines += profile or _section(existing, "## Profile")
    # Sections the other bench scripts write (bench/results.py) are kept as they are.
    for header in OTHER_SECTIONS:
        lines += _section(existing, header)
    lines += _section(existing, "## Notes")
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help=f"events per shape (default {FULL_EVENTS:,}; {QUICK_EVENTS:,} with --quick)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"baseline/exporter pairs per shape and mode (default {FULL_REPEAT}; "
        f"{QUICK_REPEAT} with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile the exporter's consumer loop in-process and check its heap with "
        "tracemalloc; the results gain a Profile section",
    )
    parser.add_argument("--seed", type=int, default=20240601, help="workload random seed")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS_PATH,
        help="where to write the report (default bench/RESULTS.md)",
    )
    parser.add_argument("--no-results", action="store_true", help="print only, write nothing")
    # Internal: the baseline subscriber runs as a subprocess of this script.
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pattern", default="", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class Exporters:
    """Every exporter daemon this run starts (each with a log of its own); stops them all."""

    def __init__(self, server: RedisServer, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.started: list[ExporterProcess] = []
        self.ready_seconds = 0.0

    def start(self) -> ExporterProcess:
        log_dir = self.workdir / f"exporter-{len(self.started) + 1}"
        log_dir.mkdir()
        exporter = ExporterProcess(self.server.url, log_dir)
        self.started.append(exporter)
        self.ready_seconds = exporter.wait_ready()
        # /readyz turns 200 after the first drain turn; make sure the pattern is in place.
        deadline = time.monotonic() + 10
        while self.server.numpat() != 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the exporter is not subscribed to the event pattern")
            time.sleep(0.05)
        time.sleep(0.3)
        return exporter

    def problems(self) -> str:
        out = []
        for exporter in self.started:
            text = exporter.log_tail(2000)
            if "Traceback" in text or "ERROR" in text:
                out.append(f"{exporter.log_path}:\n{text}")
        return "\n".join(out)

    def stop_all(self) -> None:
        for exporter in self.started:
            exporter.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "baseline":
        baseline_main(args.port, args.pattern, args.expect, idle_seconds=5.0)
        return 0
    events = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    repeat = max(1, args.repeat or (QUICK_REPEAT if args.quick else FULL_REPEAT))
    command = " ".join(
        [".venv/bin/python bench/ingest.py", *(argv if argv is not None else sys.argv[1:])]
    )
    wall_start = time.monotonic()
    fingerprint = exporter_fingerprint()
    revision = f"{exporter_revision()}; sha256(exporter/**/*.py) {fingerprint}"
    workdir = Path(tempfile.mkdtemp(prefix="cme-bench-"))
    server = RedisServer(workdir)
    exporters = Exporters(server, workdir)
    publisher: Publisher | None = None
    ok = False
    try:
        server.start()
        buffer_limit = server.buffer_limit()
        log(
            f"redis-server pid {server.proc.pid if server.proc else '?'} on port {server.port}; "
            f"client-output-buffer-limit: {buffer_limit}"
        )
        fmt = capture_wire_format(server)
        log(
            f"captured kombu's messages on {fmt.channel_prefix}<routing key>; rebuilt them "
            "byte for byte"
        )
        log(
            f"building ~{events:,} events per shape and {IN_FLIGHT_ROUNDS} x {IN_FLIGHT_TASKS:,} "
            "in-flight tasks in the publisher process..."
        )
        publisher = Publisher(server.port, fmt, events, args.seed)
        manifest = publisher.manifest
        for shape in SHAPES:
            m = manifest["floods"][shape]
            log(
                f"  {shape}: {m['events']:,} events in {m['messages']:,} messages "
                f"({m['bytes'] / 2**20:.0f} MiB)"
            )
        log(f"  built in {manifest['build_seconds']:.1f} s")

        summaries: list[Summary] = []
        memory: list[MemoryPoint] = []
        for shape in SHAPES:
            for mode in MODES:
                pairs: list[Pair] = []
                for rep in range(repeat):
                    base = run_baseline(server, fmt, publisher, shape, mode)
                    exporter = exporters.start()
                    idle = memory_point(exporter, "a fresh exporter, idle")
                    run = run_exporter_flood(exporter, publisher, shape, mode)
                    after = memory_point(
                        exporter, f"after the {shape} {mode} flood", run.peak_rss_kib
                    )
                    exporter.stop()
                    pairs.append(Pair(base, run, idle, after))
                    log(
                        f"{shape} {mode} #{rep + 1}: baseline {base.rate:,.0f} events/s "
                        f"({base.cpu_us_per_event:.1f} µs CPU/event), exporter "
                        f"{run.rate:,.0f} ({run.cpu_us_per_event:.1f} µs): "
                        f"{pairs[-1].ratio:.2f}; lost {base.lost}/{run.lost}; published in "
                        f"{base.publish_seconds:.1f}/{run.publish_seconds:.1f} s"
                    )
                summaries.append(Summary(shape, mode, pairs))
                if not memory:
                    memory.append(pairs[0].idle)
                memory.append(pairs[0].after)

        log(
            f"a fresh exporter: {IN_FLIGHT_ROUNDS} rounds of {IN_FLIGHT_TASKS:,} tasks in flight..."
        )
        exporter = exporters.start()
        in_flight = run_in_flight(exporter, publisher)
        for point in in_flight.points[1:]:
            log(f"  {point.label}: RSS {mib(point.rss_kib)}, tracked {point.tracked:,}")
        in_flight.points.append(
            MemoryPoint(
                "in-flight exporter: peak RSS over its life (VmHWM)",
                proc_status_kib(exporter.pid, "VmHWM"),
                0,
                0,
            )
        )
        exporter_command = " ".join([".venv/bin/celery-metrics-exporter", *exporter.command[1:]])
        exporter.stop()

        profile: list[str] = []
        if args.profile:
            profiles = []
            for shape in SHAPES:
                log(f"profiling the exporter's consumer loop, {shape}...")
                profiles.append(profile_exporter(server, publisher, shape))
            log("tracemalloc: the dispatcher's heap over the in-flight rounds...")
            heap = heap_check(publisher)
            log("what-if: the dispatcher alone, as is and with two changes...")
            variants = what_if(publisher)
            profile = profile_section(profiles, heap, variants, utc_date(), command)

        checks = [
            (
                f"target: exporter >= {TARGET_RATIO:.0%} of baseline, {s.shape}, {s.mode}",
                s.ratio >= TARGET_RATIO,
                f"{s.ratio:.2f} (pairs {s.ratio_range})",
            )
            for s in summaries
        ]
        for s in summaries:
            for i, pair in enumerate(s.pairs):
                for run in (pair.baseline, pair.exporter):
                    checks += [(f"#{i + 1} {n}", ok, d) for n, ok, d in run.named_checks()]
        checks += in_flight.checks
        final_fingerprint = exporter_fingerprint()
        checks.append(
            (
                "exporter code unchanged during the run",
                final_fingerprint == fingerprint,
                f"sha256(exporter/**/*.py) {fingerprint} at the start, {final_fingerprint} at "
                "the end",
            )
        )
        wall = time.monotonic() - wall_start
        print()
        print(console_table(summaries))
        print()
        for p in [*memory, *in_flight.points]:
            print(
                f"  RSS {mib(p.rss_kib):>10} (metric {mib(p.metric_rss_kib):>10}, peak on the "
                f"way {mib(p.peak_kib):>10})  tracked {p.tracked:>7,}  {p.label}"
            )
        print()
        if profile:
            print("\n".join(profile))
        failed = [c for c in checks if not c[1]]
        for name, _, detail in failed:
            print(f"  FAILED: {name}: {detail}")
        print(f"{len(checks) - len(failed)} of {len(checks)} checks passed; run took {wall:.0f} s")
        problems = exporters.problems()
        if problems:
            print("exporter logs with errors:\n" + problems)
        if not args.no_results:
            write_results(
                args.results,
                command=command,
                date=utc_date(),
                machine=machine_info(server, revision),
                server=server,
                buffer_limit=buffer_limit,
                manifest=manifest,
                summaries=summaries,
                memory=memory,
                in_flight=in_flight,
                exporter_command=exporter_command,
                channel_prefix=fmt.channel_prefix,
                ready_seconds=exporters.ready_seconds,
                wall_seconds=wall,
                checks=checks,
                profile=profile,
            )
            print(f"wrote {args.results}")
        ok = not failed
    finally:
        exporters.stop_all()
        if publisher is not None:
            publisher.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
