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
This file is the scenario; the parts it runs are in bench/lib/ (bench/README.md lists them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Every name ingest.py defined before bench/lib/ existed, re-exported for the scripts that
# still use ``ingest.X`` (soak.py); new code imports from lib.
from lib.baseline import (
    Baseline,
    baseline_main,
)
from lib.exporter_process import (
    ExporterProcess,
    Exporters,
)
from lib.procs import (
    CLOCK_TICKS,
    ROOT,
    cpu_seconds,
    free_port,
    http_get,
    log,
    mib,
    proc_status_kib,
    process_state,
)
from lib.profiling import (
    PROFILE_EVENTS,
    UNREACHABLE,
    Profile,
    _group,
    _short,
    heap_check,
    profile_exporter,
    profile_messages,
    what_if,
)
from lib.publisher import (
    Publisher,
    publish,
    publisher_main,
)
from lib.redis_server import (
    RedisServer,
)
from lib.report import (
    OTHER_SECTIONS,
    SHAPE_NAMES,
    Pair,
    Summary,
    _hiredis,
    _section,
    console_table,
    exporter_fingerprint,
    exporter_revision,
    grouped,
    load_average,
    machine_info,
    memory_table,
    profile_section,
    rate_table,
    utc_date,
    write_results,
)
from lib.results import RESULTS_PATH
from lib.runs import (
    LEAK_ALLOWANCE,
    MODES,
    TARGET_RATIO,
    InFlight,
    MemoryPoint,
    Run,
    exporter_checks,
    memory_point,
    run_baseline,
    run_exporter_flood,
    run_in_flight,
    start_flood,
    wait_until_ingested,
    wait_until_released,
)
from lib.scraped import (
    _LABEL,
    _METRIC_LINE,
    Metrics,
    counter_delta,
    events_total,
    fmt_counts,
)
from lib.wire import (
    EXCHANGE,
    Event,
    Message,
    WireFormat,
    capture_wire_format,
    encode_message,
)
from lib.workload import (
    _ACTIONS,
    _MODULES,
    BATCH_LIMIT,
    EARLY_FLUSH_PROBABILITY,
    EXCEPTIONS,
    FAILURE_RATE,
    FULL_EVENTS,
    FULL_REPEAT,
    HEARTBEAT_EVERY_TASKS,
    IN_FLIGHT_ROUNDS,
    IN_FLIGHT_TASKS,
    N_TASK_NAMES,
    N_WORKERS,
    PREFETCH,
    QUICK_EVENTS,
    QUICK_REPEAT,
    SHAPES,
    TASK_NAMES,
    Packed,
    Workload,
    _traceback,
    _Worker,
    check_field_order,
    pack,
)

# The names this module offers (re-exported ones included), for mypy and readers.
__all__ = [
    "BATCH_LIMIT",
    "CLOCK_TICKS",
    "EARLY_FLUSH_PROBABILITY",
    "EXCEPTIONS",
    "EXCHANGE",
    "FAILURE_RATE",
    "FULL_EVENTS",
    "FULL_REPEAT",
    "HEARTBEAT_EVERY_TASKS",
    "IN_FLIGHT_ROUNDS",
    "IN_FLIGHT_TASKS",
    "LEAK_ALLOWANCE",
    "MODES",
    "N_TASK_NAMES",
    "N_WORKERS",
    "OTHER_SECTIONS",
    "PREFETCH",
    "PROFILE_EVENTS",
    "QUICK_EVENTS",
    "QUICK_REPEAT",
    "RESULTS_PATH",
    "ROOT",
    "SHAPES",
    "SHAPE_NAMES",
    "TARGET_RATIO",
    "TASK_NAMES",
    "UNREACHABLE",
    "_ACTIONS",
    "_LABEL",
    "_METRIC_LINE",
    "_MODULES",
    "Baseline",
    "Event",
    "ExporterProcess",
    "Exporters",
    "InFlight",
    "MemoryPoint",
    "Message",
    "Metrics",
    "Packed",
    "Pair",
    "Profile",
    "Publisher",
    "RedisServer",
    "Run",
    "Summary",
    "WireFormat",
    "Workload",
    "_Worker",
    "_group",
    "_hiredis",
    "_section",
    "_short",
    "_traceback",
    "baseline_main",
    "capture_wire_format",
    "check_field_order",
    "console_table",
    "counter_delta",
    "cpu_seconds",
    "encode_message",
    "events_total",
    "exporter_checks",
    "exporter_fingerprint",
    "exporter_revision",
    "fmt_counts",
    "free_port",
    "grouped",
    "heap_check",
    "http_get",
    "load_average",
    "log",
    "machine_info",
    "main",
    "memory_point",
    "memory_table",
    "mib",
    "pack",
    "parse_args",
    "proc_status_kib",
    "process_state",
    "profile_exporter",
    "profile_messages",
    "profile_section",
    "publish",
    "publisher_main",
    "rate_table",
    "run_baseline",
    "run_exporter_flood",
    "run_in_flight",
    "start_flood",
    "utc_date",
    "wait_until_ingested",
    "wait_until_released",
    "what_if",
    "write_results",
]


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
