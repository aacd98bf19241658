#!/usr/bin/env python
"""Soak: steady, realistic event traffic for an hour (``--minutes N``), a scrape every 15 s,
and the exporter's memory must stay flat.

Run ``.venv/bin/python bench/soak.py [--minutes 60] [--tasks-per-second 1000]`` (``make
bench-soak``). A private redis-server and the exporter daemon; a publisher thread sends,
every second, the events of ``--tasks-per-second`` tasks (bench/ingest.py's workload: 10
task names, 10 workers holding 4 tasks each, a label space that fills within the warm-up;
received/started/succeeded-or-failed, worker heartbeats), batched in kombu's exact wire
format as prefork workers send them. Every 15 s this script scrapes ``/metrics`` as
Prometheus would (OpenMetrics, gzip) and samples the exporter's RSS (/proc), its tracked
tasks and the number of series (sample lines).

**Flat** means: after a warm-up (the first quarter of the run), the highest RSS of the last
quarter is at most 3% (and at least 2 MiB of slack) above the highest RSS of the second
quarter (RSS read just before each scrape); the series stay within the label space the
workload can produce; and the tracked tasks stay under 2x the tasks the workers hold. The
least-squares slope of RSS over the second half, extrapolated to one hour, is reported too.
At the end every published event must have been counted. Writes the "## Soak" section of
bench/RESULTS.md; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest
import scrape as scrape_bench
from results import RESULTS_PATH, replace_section, run_facts

from exporter.settings import DEFAULT_RUNTIME_BUCKETS

HEADER = "## Soak"
SCRAPE_EVERY = 15.0
# A label space the traffic fills within the warm-up (task name x worker x exception class),
# so that growth after it would be a leak, not new label values.
NAMES = 10
WORKERS = 10
RSS_GROWTH = 0.03
RSS_SLACK_MIB = 2.0


class Publisher(threading.Thread):
    def __init__(self, port: int, fmt: ingest.WireFormat, tasks_per_second: int) -> None:
        super().__init__(name="soak-publisher", daemon=True)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=port)
        self.fmt = fmt
        self.tasks_per_second = tasks_per_second
        self.workload = ingest.Workload(fmt.utcoffset, 7, names=NAMES, workers=WORKERS)
        self.rng = random.Random(8)
        self.stop = threading.Event()
        self.published = 0
        self.messages = 0
        self.receivers = 0
        self.late_seconds = 0

    def run(self) -> None:
        next_tick = time.monotonic()
        while not self.stop.is_set():
            stream = list(self.workload.task_stream(self.tasks_per_second))
            packed = ingest.pack(self.fmt, stream, batched=True, rng=self.rng)
            result = ingest.publish(self.client, packed.messages)
            self.published += packed.events
            self.messages += len(packed.messages)
            self.receivers += result["receivers"]
            next_tick += 1.0
            delay = next_tick - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                self.late_seconds += 1


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den * 3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--tasks-per-second", type=int, default=1000)
    parser.add_argument("--no-results", action="store_true", help="print only, write nothing")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python bench/soak.py", *(argv or sys.argv[1:])])
    facts = run_facts(command)
    duration = args.minutes * 60
    workdir = Path(tempfile.mkdtemp(prefix="cme-soak-"))
    server = ingest.RedisServer(workdir)
    exporters = ingest.Exporters(server, workdir)
    samples: list[tuple[float, float, int, int, float]] = []  # t, RSS MiB, tracked, series, ms
    checks: list[tuple[str, bool, str]] = []
    publisher: Publisher | None = None
    started = time.monotonic()
    try:
        server.start()
        fmt = ingest.capture_wire_format(server)
        exporter = exporters.start()
        url = exporter.url("/metrics")
        publisher = Publisher(server.port, fmt, args.tasks_per_second)
        publisher.start()
        t0 = time.monotonic()
        next_scrape = t0 + SCRAPE_EVERY
        while True:
            now = time.monotonic()
            if now - t0 >= duration:
                break
            time.sleep(max(0.0, min(next_scrape, t0 + duration) - now))
            if time.monotonic() < next_scrape:
                continue
            next_scrape += SCRAPE_EVERY
            rss = exporter.rss_kib() / 1024  # before the scrape allocates its text
            elapsed, body, _ = scrape_bench.scrape(url, scrape_bench.PROMETHEUS_ACCEPT, True)
            metrics = ingest.Metrics(body.decode())
            tracked = int(metrics.total("celery_exporter_tracked_tasks"))
            series = scrape_bench.sample_lines(body)
            samples.append((time.monotonic() - t0, rss, tracked, series, elapsed * 1e3))
            if len(samples) % 4 == 0:
                ingest.log(
                    f"{samples[-1][0] / 60:.1f} min: RSS {rss:.1f} MiB, tracked {tracked:,}, "
                    f"series {series:,}, scrape {elapsed * 1e3:.0f} ms, "
                    f"{publisher.published:,} events published"
                )
        publisher.stop.set()
        publisher.join(10)
        deadline = time.monotonic() + 60
        while ingest.events_total(metrics := exporter.scrape()) < publisher.published:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        counted = ingest.events_total(metrics)
        skipped = metrics.total("celery_exporter_events_skipped_total")
        reconnects = metrics.total("celery_exporter_broker_reconnects_total")
        backlog = metrics.total("celery_exporter_event_backlog_bytes")
    finally:
        if publisher is not None:
            publisher.stop.set()
        exporters.stop_all()
        server.stop()
    assert publisher is not None
    n = len(samples)
    q1, q2, q3 = n // 4, n // 2, (3 * n) // 4
    second = samples[q1:q2] or samples[:1]
    last = samples[q3:] or samples[-1:]
    ref = max(s[1] for s in second)
    end = max(s[1] for s in last)
    allowed = max(ref * RSS_GROWTH, RSS_SLACK_MIB)
    slope = slope_per_hour([(s[0], s[1]) for s in samples[q2:]])
    held = WORKERS * (ingest.PREFETCH + 1)
    # Every label combination the workload can produce: counters per (name, worker), the
    # failed counter per exception class too, histograms per name, plus the exporter's own
    # and the workers' series. Rare (name, worker, exception) combinations keep appearing
    # for a long time (the names are skewed), so the series count approaches this bound
    # slowly: growth towards it is new label values, not a leak.
    names = NAMES
    buckets = len(DEFAULT_RUNTIME_BUCKETS) + 3
    bound = (
        names * WORKERS * (3 + len(ingest.EXCEPTIONS))
        + names * (2 * buckets + buckets)
        + WORKERS * 20
        + 1_000
    )
    checks += [
        (
            "RSS flat",
            end - ref <= allowed,
            f"highest RSS, last quarter {end:.1f} MiB vs second quarter {ref:.1f} MiB: "
            f"{end - ref:+.1f} MiB (allowed {allowed:.1f})",
        ),
        (
            "series bounded by the label space",
            samples[-1][3] <= bound,
            f"{samples[q1][3]:,} after the warm-up, {samples[-1][3]:,} at the end, bound {bound:,}",
        ),
        (
            "tracked tasks bounded",
            max(s[2] for s in samples) < 2 * held,
            f"at most {max(s[2] for s in samples):,} (workers hold up to {held:,})",
        ),
        (
            "every event counted",
            counted == publisher.published,
            f"{counted:,.0f} of {publisher.published:,}",
        ),
        (
            "every message reached the exporter",
            publisher.receivers == publisher.messages,
            f"{publisher.receivers:,} of {publisher.messages:,}",
        ),
        ("nothing skipped, no reconnect", skipped == 0 and reconnects == 0, ""),
    ]
    failed = [c for c in checks if not c[1]]
    minutes = (time.monotonic() - started) / 60
    scrape_ms = [s[4] for s in samples]
    lines = [
        HEADER,
        "",
        f"Written by `bench/soak.py`: {args.minutes:g} minutes of steady traffic "
        f"({args.tasks_per_second:,} tasks/s, about "
        f"{publisher.published / max(1.0, samples[-1][0] if samples else 1.0):,.0f} events/s "
        f"batched, {NAMES} task names, {WORKERS} workers), a scrape every {SCRAPE_EVERY:.0f} s "
        "(OpenMetrics, gzip). " + __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        *facts,
        f"- Duration: {minutes:.1f} minutes in all; {n} samples"
        + (
            ""
            if args.minutes >= 60
            else ". **The full hour (the default) was not run in this session**"
        ),
        f"- Checks: {len(checks) - len(failed)} of {len(checks)} passed"
        + ("" if not failed else " - **FAILED: " + "; ".join(c[0] for c in failed) + "**"),
        f"- RSS slope over the second half: {slope:+.1f} MiB per hour; scrapes: median "
        f"{statistics.median(scrape_ms):.0f} ms, max {max(scrape_ms):.0f} ms; publisher late "
        f"{publisher.late_seconds} of its seconds; backlog at the end "
        f"{backlog:,.0f} bytes",
        "",
        "| minute | RSS MiB | tracked tasks | series | scrape ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    step = max(1, n // 20)
    for i, (t, rss, tracked, series, ms) in enumerate(samples):
        if i % step == 0 or i == n - 1:
            lines.append(f"| {t / 60:.1f} | {rss:.1f} | {tracked:,} | {series:,} | {ms:.0f} |")
    lines += [
        "",
        "| check | result | details |",
        "|---|---|---|",
        *(f"| {name} | {'ok' if ok else 'FAILED'} | {d} |" for name, ok, d in checks),
    ]
    print("\n".join(lines))
    if not args.no_results:
        replace_section(RESULTS_PATH, HEADER, lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
