#!/usr/bin/env python
"""Memory after 1,000,000 tasks with 100,000 of them in flight: the exporter daemon's RSS
against, in the same run, the minimal subscriber (baseline) fed the same events.

Run ``.venv/bin/python bench/memory.py [--tasks N] [--in-flight N]`` (part of ``make
bench``). A private redis-server; the exporter and the baseline subscriber (bench/lib/)
both subscribed; events in kombu's exact wire format and Celery's field order, batched as
prefork workers send them (100 task names, 100 workers, heartbeats). Every 10th task gets
only its ``task-received`` (it stays in flight), the others also ``task-started`` and
``task-succeeded``/``task-failed``. Published in chunks, each one consumed before the next is
sent, so the figures are the exporter's steady memory, not a backlog in redis-py's buffer.
Writes the "## Memory after 1,000,000 tasks" section of bench/RESULTS.md; exits 1 if the
target (RSS under 150 MB) or a check fails.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.baseline import Baseline
from lib.exporter_process import Exporters
from lib.procs import log, proc_status_kib
from lib.publisher import publish
from lib.redis_server import RedisServer
from lib.results import checks_line, finish, run_facts
from lib.scraped import events_total
from lib.wire import capture_wire_format
from lib.workload import HEARTBEAT_EVERY_TASKS, Workload, pack

HEADER = "## Memory after 1,000,000 tasks"
TARGET_MB = 150.0
CHUNK_TASKS = 50_000


def chunk_stream(
    workload: Workload, first: int, count: int, in_flight_every: int
) -> tuple[list[tuple[Any, dict[str, Any]]], int]:
    """Events of tasks ``first .. first+count-1``; returns them and how many stay in flight."""
    rng = workload.rng
    names = rng.choices(workload.names, workload.name_weights, k=count)
    stream: list[tuple[Any, dict[str, Any]]] = []
    staying = 0
    for i in range(count):
        number = first + i
        if number % HEARTBEAT_EVERY_TASKS == 0:
            for worker in workload.workers:
                stream.append((worker, workload.heartbeat(worker)))
        worker = workload.workers[rng.randrange(len(workload.workers))]
        task_id = workload.uuid()
        stream.append((worker, workload.received(worker, task_id, names[i])))
        if number % in_flight_every == 0:
            staying += 1
            continue
        stream.append((worker, workload.started(worker, task_id)))
        stream.append((worker, workload.terminal(worker, task_id, names[i])))
    return stream, staying


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--in-flight", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--no-results", action="store_true", help="print only, write nothing")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python bench/memory.py", *(argv or sys.argv[1:])])
    facts = run_facts(command)
    every = max(1, args.tasks // args.in_flight)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="cme-memory-"))
    server = RedisServer(workdir)
    exporters = Exporters(server, workdir)
    checks: list[tuple[str, bool, str]] = []
    points: list[tuple[int, float, float, int]] = []  # tasks, exporter RSS, baseline RSS, tracked
    baseline: Baseline | None = None
    try:
        server.start()
        fmt = capture_wire_format(server)
        import redis

        client = redis.Redis(host="127.0.0.1", port=server.port)
        exporter = exporters.start()
        idle_kib = exporter.rss_kib()
        workload = Workload(fmt.utcoffset, args.seed)
        rng = random.Random(args.seed + 1)
        # The baseline must know how many events to expect: build everything's size first
        # would cost memory, so it is told a huge number and read from /proc instead.
        baseline = Baseline(server.port, fmt.pattern, expect=10**12)
        published = 0
        in_flight = 0
        done = 0
        while done < args.tasks:
            count = min(CHUNK_TASKS, args.tasks - done)
            stream, staying = chunk_stream(workload, done, count, every)
            packed = pack(fmt, stream, batched=True, rng=rng)
            del stream
            result = publish(client, packed.messages)
            if result["receivers"] != 2 * len(packed.messages):
                checks.append(("every message reached both subscribers", False, str(result)))
            published += packed.events
            in_flight += staying
            done += count
            deadline = time.monotonic() + 120
            while events_total(metrics := exporter.scrape()) < published:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            tracked = int(metrics.total("celery_exporter_tracked_tasks"))
            points.append(
                (
                    done,
                    exporter.rss_kib() / 1024,
                    proc_status_kib(baseline.proc.pid, "VmRSS") / 1024,
                    tracked,
                )
            )
            log(
                f"{done:,} tasks ({in_flight:,} in flight): exporter RSS {points[-1][1]:.1f} "
                f"MiB, baseline {points[-1][2]:.1f} MiB, tracked {tracked:,}"
            )
        metrics = exporter.scrape()
        final_kib = exporter.rss_kib()
        hwm_kib = proc_status_kib(exporter.pid, "VmHWM")
        base_kib = proc_status_kib(baseline.proc.pid, "VmRSS")
        base_hwm = proc_status_kib(baseline.proc.pid, "VmHWM")
        total = events_total(metrics)
        tracked = int(metrics.total("celery_exporter_tracked_tasks"))
        unknown = metrics.by_label("celery_task_succeeded_total", "name").get("(unknown)", 0.0)
        checks += [
            ("every event counted", total == published, f"{total:,.0f} of {published:,}"),
            ("tracked tasks == in flight", tracked == in_flight, f"{tracked:,} of {in_flight:,}"),
            ("no task lost its name", unknown == 0, f"{unknown:,.0f} as (unknown)"),
            (
                f"exporter RSS < {TARGET_MB:.0f} MB after {args.tasks:,} tasks",
                final_kib * 1024 < TARGET_MB * 1e6,
                f"{final_kib * 1024 / 1e6:.1f} MB ({final_kib / 1024:.1f} MiB)",
            ),
            (
                f"exporter peak RSS (VmHWM) < {TARGET_MB:.0f} MB",
                hwm_kib * 1024 < TARGET_MB * 1e6,
                f"{hwm_kib * 1024 / 1e6:.1f} MB",
            ),
        ]
    finally:
        if baseline is not None:
            baseline.proc.kill()
            baseline.proc.wait(5)
        exporters.stop_all()
        server.stop()
    lines = [
        HEADER,
        "",
        f"Written by `bench/memory.py`. {args.tasks:,} tasks ({published:,} events, "
        f"batched, 100 task names, 100 workers), every {every}th left in flight "
        f"(`task-received` only): {in_flight:,} in flight at the end, the tracker's default "
        "bound being 200,000. Published in chunks of "
        f"{CHUNK_TASKS:,} tasks, each consumed before the next. Baseline: the minimal "
        "subscriber of bench/ingest.py, subscribed at the same time, fed the same messages.",
        "",
        *facts,
        f"- Wall time: {time.monotonic() - started:.0f} s",
        checks_line(checks),
        "",
        "| | exporter | baseline subscriber |",
        "|---|---:|---:|",
        f"| RSS idle (fresh) | {idle_kib / 1024:.1f} MiB | - |",
        f"| RSS after {args.tasks:,} tasks, {in_flight:,} in flight | "
        f"**{final_kib / 1024:.1f} MiB** ({final_kib * 1024 / 1e6:.0f} MB) | "
        f"{base_kib / 1024:.1f} MiB |",
        f"| peak RSS over the run (VmHWM) | {hwm_kib / 1024:.1f} MiB | {base_hwm / 1024:.1f} MiB |",
        f"| tracked tasks | {tracked:,} | - |",
        "",
        "RSS along the way (after each chunk was consumed):",
        "",
        "| tasks | exporter RSS MiB | baseline RSS MiB | tracked |",
        "|---:|---:|---:|---:|",
        *(
            f"| {n:,} | {e:.1f} | {b:.1f} | {t:,} |"
            for n, e, b, t in points
            if n % 200_000 == 0 or n == points[-1][0]
        ),
        "",
        "| check | result | details |",
        "|---|---|---|",
        *(f"| {n} | {'ok' if ok else 'FAILED'} | {d} |" for n, ok, d in checks),
    ]
    return finish(HEADER, lines, checks, write=not args.no_results, list_failed=False)


if __name__ == "__main__":
    sys.exit(main())
