#!/usr/bin/env python
"""Memory by term: what each thing the exporter remembers costs, measured in process, so
that docs/scaling.md's sizing rule ("How much memory to give it") rests on figures.

Run ``.venv/bin/python bench/memory_terms.py`` (part of ``make bench``; about 30 s, no
server). Each term is measured on a fresh ``Exporter`` (the daemon's own object, not
started: its dispatcher is fed decoded message bodies, its clock is the events' own) as
the growth of live memory, after a garbage collection: pymalloc's bytes in allocated
blocks plus glibc's bytes in use (``mallinfo2``: blocks of the heaps and mapped ones).
Freed memory the allocators keep for reuse is not in it: the daemon's RSS is larger, by
what the soak shows (bench/RESULTS.md, "Soak").

- **Series**: bench/soak.py's churning label universe (20 task names, 20 workers, 8 queues,
  exceptions, producers sending ``task-sent`` for a fifth of the tasks), every task
  finished, the clock ticking as in the daemon; per sample line of the exposition
  (OpenMetrics, native histograms on, as by default), rendered once first so that its
  cached lines are counted. The tracker's map of recently finished tasks (10,000 per
  broker, kept to recognise late events) is measured apart: a fixed cost.
- **Held tasks**: producers known to send ``task-sent``, then new tasks whose worker events
  (received, started, succeeded: a fast task's three) come without it and wait for it;
  again with 1 KiB arguments and result (Celery's default repr limit), which a held event
  does not keep.
- **Tracked tasks**: tasks in flight (``task-received`` only), nothing held.

Writes the "## Memory by term" section of bench/RESULTS.md; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest
import soak
from drift_probe import mallinfo, pymalloc
from lib.results import Check, checks_line, finish, run_facts

from exporter.cli import settings_from_args
from exporter.daemon import Exporter
from exporter.prom.exposition import render

HEADER = "## Memory by term"
# docs/scaling.md's sizing rule, bytes per unit: live size with room for what the
# allocators keep and for scrape bodies in flight.
RULE = {"line": 2048, "held": 4096, "tracked": 512}
PAYLOAD = 1024  # Celery's default argsrepr/kwargsrepr/resultrepr limit, bytes each
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
UNREACHABLE = "redis://127.0.0.1:1/0"  # never connected: the exporter is not started


def live_bytes() -> int:
    gc.collect()
    glibc = mallinfo()
    return pymalloc().get("bytes in allocated blocks", 0) + glibc["uordblks"] + glibc["hblkhd"]


class Fed:
    """A fresh exporter and its simulated clock."""

    def __init__(self) -> None:
        self.now = time.time()
        self.exporter = Exporter(
            settings_from_args(["--broker-url", UNREACHABLE]), clock=self.clock
        )
        self.on_message = self.exporter.primary.dispatcher.on_message

    def clock(self) -> float:
        return self.now

    def send(self, body: Any) -> None:
        self.on_message(json.dumps(body).encode(), "application/json")

    def sample_lines(self) -> int:
        body, _ = render(self.exporter.registry, OPENMETRICS)
        return sum(1 for line in body.decode().splitlines() if line and line[0] != "#")

    @property
    def held(self) -> int:
        return len(self.exporter.primary.dispatcher.reorder)

    @property
    def tracked(self) -> int:
        return len(self.exporter.primary.dispatcher.tasks.tracker)


def workload(tasks_per_second: int, phase_seconds: int) -> soak.ChurnWorkload:
    fmt = ingest.WireFormat(channel_prefix="/0.celeryev/", pattern="", envelope={})
    return soak.ChurnWorkload(fmt, tasks_per_second, phase_seconds)


def unpacked(fmt: Any, pairs: list[tuple[Any, dict[str, Any]]], batched: bool, rng: Any) -> Any:
    """ingest.pack without kombu's envelope (whose template needs a capture from a real
    Redis): the bodies the dispatcher is given, one batch per worker and slice (batched) or
    one event each."""
    bodies: list[bytes] = []
    if batched:
        by_worker: dict[str, list[dict[str, Any]]] = {}
        for worker, event in pairs:
            by_worker.setdefault(worker.hostname, []).append(event)
        bodies = [json.dumps(events).encode() for events in by_worker.values()]
    else:
        bodies = [json.dumps(event).encode() for _, event in pairs]
    return SimpleNamespace(messages=bodies, events=len(pairs))


def series_term(seconds: int, tasks_per_second: int) -> dict[str, float]:
    fed = Fed()
    traffic = workload(tasks_per_second, phase_seconds=max(1, seconds // 12))
    fed.sample_lines()
    base = live_bytes()
    start = fed.now
    for second in range(seconds):
        messages, _ = traffic.second(second, start + second)
        for body in messages:  # bodies, not (channel, payload): unpacked() made them
            fed.on_message(cast(bytes, body), "application/json")
        fed.now = start + second + 1
        fed.exporter.primary.tick()
    # Past the reorder window, every task finished: only series remain, and the tracker's
    # map of recently finished tasks (a fixed bound per broker, kept to recognise their late
    # events), measured apart by emptying it (a private field: this is a benchmark).
    fed.now += 10
    fed.exporter.primary.tick()
    lines = fed.sample_lines()
    grown = live_bytes() - base
    tracker = fed.exporter.primary.dispatcher.tasks.tracker
    finished = len(tracker._finished)
    tracker._finished.clear()
    series = live_bytes() - base
    return {
        "lines": lines,
        "bytes": series,
        "finished": finished,
        "finished_bytes": grown - series,
        "held": fed.held,
        "tracked": fed.tracked,
    }


def held_term(tasks: int, payload: int = 0) -> dict[str, float]:
    """``payload``: bytes of each of args, kwargs and result (0: the workload's own, a few
    dozen bytes)."""
    fed = Fed()
    traffic = workload(1_000, 300)
    traffic.now = fed.now
    worker, producer = traffic.workers[0], traffic.producers[0]
    online = traffic.heartbeat(worker)
    online["type"] = "worker-online"
    fed.send(online)
    fed.send(traffic.sent(producer, traffic.uuid(), ingest.TASK_NAMES[0], "celery"))
    base = live_bytes()
    for i in range(tasks):
        task_id, name = traffic.uuid(), ingest.TASK_NAMES[i % soak.NAMES]
        events = [
            traffic.received(worker, task_id, name),
            traffic.started(worker, task_id),
            traffic.terminal(worker, task_id, name),
        ]
        if payload:
            events[0].update(args="a" * payload, kwargs="k" * payload)
            events[2]["result"] = "r" * payload
        fed.send(events)
    return {"tasks": fed.held, "bytes": live_bytes() - base, "tracked": fed.tracked}


def tracked_term(tasks: int) -> dict[str, float]:
    fed = Fed()
    traffic = workload(1_000, 300)
    traffic.now = fed.now
    worker = traffic.workers[0]
    fed.send(traffic.heartbeat(worker))
    base = live_bytes()
    for i in range(tasks):
        fed.send([traffic.received(worker, traffic.uuid(), ingest.TASK_NAMES[i % soak.NAMES])])
    return {"tasks": fed.tracked, "bytes": live_bytes() - base, "held": fed.held}


def described() -> list[str]:
    """The docstring's method and its list of terms, as Markdown lines."""
    method, terms = __doc__.split("\n\n")[1:3]
    items = [" ".join(item.split()) for item in terms.split("\n- ")]
    return [" ".join(method.split()), "", *(i if i.startswith("- ") else "- " + i for i in items)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=120, help="series: simulated seconds")
    parser.add_argument("--tasks-per-second", type=int, default=2_000)
    parser.add_argument("--held", type=int, default=8_000, help="held tasks (bound: 10,000)")
    parser.add_argument("--tracked", type=int, default=50_000)
    parser.add_argument("--no-results", action="store_true", help="print only, write nothing")
    args = parser.parse_args(argv)
    facts = run_facts(" ".join([".venv/bin/python bench/memory_terms.py", *sys.argv[1:]]))
    # soak.py's workload calls ingest.pack through the module: its bodies, no envelope.
    ingest.pack = unpacked  # type: ignore[assignment]  # bodies in place of Packed
    series = series_term(args.seconds, args.tasks_per_second)
    held = held_term(args.held)
    held_big = held_term(args.held, PAYLOAD)
    tracked = tracked_term(args.tracked)
    per_line = series["bytes"] / max(1, series["lines"])
    per_held = held["bytes"] / max(1, held["tasks"])
    per_held_big = held_big["bytes"] / max(1, held_big["tasks"])
    per_tracked = tracked["bytes"] / max(1, tracked["tasks"])
    checks: list[Check] = [
        (
            "series measured alone",
            series["held"] == 0 and series["tracked"] == 0,
            f"{series['held']:.0f} held, {series['tracked']:.0f} tracked at the end",
        ),
        (
            "every task held",
            held["tasks"] == held_big["tasks"] == args.held and held["tracked"] <= 1,
            f"{held['tasks']:.0f} and {held_big['tasks']:.0f} held of {args.held:,} "
            f"(bound: 10,000), {held['tracked']:.0f} tracked",
        ),
        (
            "a held task's cost does not grow with its payload",
            per_held_big <= per_held * 1.1,
            f"{per_held_big:,.0f} bytes with {PAYLOAD:,}-byte args, kwargs and result, "
            f"{per_held:,.0f} without",
        ),
        (
            "every task tracked, none held",
            tracked["tasks"] == args.tracked and tracked["held"] == 0,
            f"{tracked['tasks']:.0f} tracked of {args.tracked:,}, {tracked['held']:.0f} held",
        ),
        (
            "the rule's figures cover the live sizes",
            per_line <= RULE["line"] and per_held_big <= RULE["held"]
            and per_tracked <= RULE["tracked"],
            "",
        ),
    ]  # fmt: skip
    kib = 1024
    lines = [
        HEADER,
        "",
        *described(),
        "",
        *facts,
        checks_line(checks),
        "",
        "| term | measured on | live memory | per unit | docs/scaling.md's rule |",
        "|---|---:|---:|---:|---:|",
        f"| series | {series['lines']:,.0f} sample lines | {series['bytes'] / kib**2:.1f} MiB | "
        f"{per_line / kib:.2f} KiB per line | {RULE['line'] / kib:g} KiB |",
        f"| recently finished tasks (fixed, per broker) | {series['finished']:,.0f} tasks | "
        f"{series['finished_bytes'] / kib**2:.1f} MiB | - | in the 50 MiB |",
        f"| held tasks | {held['tasks']:,.0f} tasks, 3 events each | "
        f"{held['bytes'] / kib**2:.1f} MiB | {per_held / kib:.2f} KiB per task | "
        f"{RULE['held'] / kib:g} KiB |",
        f"| held tasks, {PAYLOAD:,}-byte args, kwargs and result | {held_big['tasks']:,.0f} "
        f"tasks | {held_big['bytes'] / kib**2:.1f} MiB | {per_held_big / kib:.2f} KiB per task "
        f"| {RULE['held'] / kib:g} KiB |",
        f"| tracked tasks | {tracked['tasks']:,.0f} tasks in flight | "
        f"{tracked['bytes'] / kib**2:.1f} MiB | {per_tracked:.0f} bytes per task | "
        f"{RULE['tracked']} bytes |",
    ]
    return finish(HEADER, lines, checks, not args.no_results)


if __name__ == "__main__":
    sys.exit(main())
