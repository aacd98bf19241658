"""The publisher process: builds the workload off the clock, then replays it with redis-py
``PUBLISH`` pipelines as fast as it can."""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import time
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from lib.wire import Message, WireFormat
from lib.workload import (
    HEARTBEAT_EVERY_TASKS,
    IN_FLIGHT_ROUNDS,
    IN_FLIGHT_TASKS,
    N_TASK_NAMES,
    N_WORKERS,
    Packed,
    Workload,
    check_field_order,
    pack,
)


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
