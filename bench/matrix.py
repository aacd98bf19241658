#!/usr/bin/env python
"""Ingestion rate matrix: 1, 10 and 100 task names x 10, 100 and 500 workers, batched and
single-event messages, the exporter against the minimal-subscriber baseline in each cell.

Run ``.venv/bin/python bench/matrix.py [--events N] [--mode drain|live]`` (part of
``make bench``). It reuses bench/lib/ (private redis-server, kombu's exact wire
format, the publisher process, the baseline subscriber, the real exporter daemon and its
exact-count checks), with a reduced flood per cell, and writes the "## Ingestion rate
matrix" section of bench/RESULTS.md. Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.exporter_process import Exporters
from lib.procs import log
from lib.publisher import Publisher
from lib.redis_server import RedisServer
from lib.results import checks_line, finish, run_facts
from lib.runs import MODES, TARGET_RATIO, Run, run_baseline, run_exporter_flood
from lib.wire import capture_wire_format
from lib.workload import HEARTBEAT_EVERY_TASKS, SHAPES

NAMES = (1, 10, 100)
WORKERS = (10, 100, 500)
DEFAULT_EVENTS = 100_000
HEADER = "## Ingestion rate matrix"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events per flood")
    parser.add_argument("--mode", choices=MODES, default="drain")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--no-results", action="store_true", help="print only, write nothing")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python bench/matrix.py", *(argv or sys.argv[1:])])
    facts = run_facts(command)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="cme-matrix-"))
    server = RedisServer(workdir)
    exporters = Exporters(server, workdir)
    rows: list[tuple[int, int, str, Run, Run]] = []
    checks: list[tuple[str, bool, str]] = []
    try:
        server.start()
        fmt = capture_wire_format(server)
        for names in NAMES:
            for workers in WORKERS:
                publisher = Publisher(
                    server.port, fmt, args.events, args.seed, names, workers, in_flight_rounds=0
                )
                try:
                    for shape in SHAPES:
                        base = run_baseline(server, fmt, publisher, shape, args.mode)
                        exporter = exporters.start()
                        run = run_exporter_flood(exporter, publisher, shape, args.mode)
                        exporter.stop()
                        rows.append((names, workers, shape, base, run))
                        ratio = run.rate / base.rate if base.rate else 0.0
                        cell = f"{names} names x {workers} workers, {shape}"
                        log(
                            f"{cell}: baseline {base.rate:,.0f}/s "
                            f"({base.cpu_us_per_event:.1f} µs), exporter {run.rate:,.0f}/s "
                            f"({run.cpu_us_per_event:.1f} µs): {ratio:.2f}"
                        )
                        checks += [(f"{cell}: {n}", ok, d) for n, ok, d in base.checks]
                        checks += [(f"{cell}: {n}", ok, d) for n, ok, d in run.checks]
                        per_cpu = base.cpu_us_per_event / run.cpu_us_per_event
                        checks.append(
                            (
                                f"{cell}: exporter >= {TARGET_RATIO:.0%} of baseline "
                                "(events per CPU second)",
                                per_cpu >= TARGET_RATIO,
                                f"{per_cpu:.2f} (rate ratio {ratio:.2f})",
                            )
                        )
                finally:
                    publisher.close()
    finally:
        exporters.stop_all()
        server.stop()
    lines = [
        HEADER,
        "",
        "Written by `bench/matrix.py`. The check is on CPU per event (the events one core "
        "takes in per second), the steady figure: the rate of a single run of half a second "
        "on this shared machine varies by ±30%. "
        "One baseline-then-exporter pair per cell and shape, "
        f"{args.mode} mode (see the rate table above), ~{args.events:,} events per flood "
        f"(a reduced count: the main table above uses 250,000), the same workload generator "
        "as bench/ingest.py with the task names and workers of the cell (heartbeats: every "
        f"worker once per {HEARTBEAT_EVERY_TASKS:,} tasks, so 500 workers add many "
        "single-event heartbeat messages to the batched shape).",
        "",
        *facts,
        f"- Wall time: {time.monotonic() - started:.0f} s",
        checks_line(checks),
        "",
        "| task names | workers | shape | messages | CPU µs/event baseline | CPU µs/event "
        "exporter | **per CPU second vs baseline** | baseline events/s | exporter events/s | "
        "rate vs baseline | lost |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for names, workers, shape, base, run in rows:
        ratio = run.rate / base.rate if base.rate else 0.0
        per_cpu = base.cpu_us_per_event / run.cpu_us_per_event
        lines.append(
            f"| {names} | {workers} | {shape} | {run.messages:,} | "
            f"{base.cpu_us_per_event:.1f} | {run.cpu_us_per_event:.1f} | **{per_cpu:.2f}** | "
            f"{base.rate:,.0f} | {run.rate:,.0f} | {ratio:.2f} | {run.lost} |"
        )
    return finish(HEADER, lines, checks, write=not args.no_results)


if __name__ == "__main__":
    sys.exit(main())
