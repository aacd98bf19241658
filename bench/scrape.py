#!/usr/bin/env python
"""/metrics latency with 50,000 series: the real exporter daemon, scraped over HTTP, against
prometheus_client's ``generate_latest`` over a plain registry of the same series (same run).

Run ``.venv/bin/python bench/scrape.py [--series N] [--scrapes N]`` (part of ``make bench``).
It starts a private redis-server and the exporter, publishes task events (in kombu's exact
wire format) until the exporter exposes at least ``--series`` sample lines (every line
counts, histogram buckets included), then scrapes ``/metrics`` ``--scrapes`` times in each
format Prometheus may ask for (the 0.0.4 text format, and OpenMetrics, which Prometheus asks
for first), gzip-compressed as Prometheus asks and uncompressed. While scraping, a flood of
events keeps the exporter busy in one of the runs, to show that scrapes and ingestion do not
stall each other. The status page at ``/`` (built from the same memory) is timed the same
way. Writes the "## /metrics latency" section of bench/RESULTS.md; exits 1 if
the target (median and p99 under 100 ms) or a check fails.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.exporter_process import Exporters
from lib.procs import log
from lib.publisher import publish as publish_messages
from lib.redis_server import RedisServer
from lib.results import checks_line, finish, run_facts
from lib.scraped import events_total
from lib.wire import WireFormat, capture_wire_format, encode_message

from exporter.settings import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS

HEADER = "## /metrics latency"
TARGET_MS = 100.0
TEXT_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
# What Prometheus 2.x/3.x sends (OpenMetrics first).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
)
QUEUE = "celery"


def lines_per_combination(names: int) -> tuple[int, int]:
    """(sample lines per (name, worker), sample lines per name) of the task families."""
    per_pair = 3  # received, started, succeeded counters
    per_name = (len(DEFAULT_RUNTIME_BUCKETS) + 3) + (len(DEFAULT_QUEUE_WAIT_BUCKETS) + 3)
    return per_pair, per_name


def task_events(names: int, workers: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """One task per (name, worker): received, started, succeeded, batched per worker."""
    now = time.time()
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for w in range(workers):
        host = f"celery@scrape-worker-{w:04d}"
        batch: list[dict[str, Any]] = []
        for n in range(names):
            task_id = str(uuid.uuid4())
            name = f"proj.scrape.tasks.task_{n:03d}"
            batch += [
                {"hostname": host, "uuid": task_id, "name": name, "timestamp": now,
                 "type": "task-received"},
                {"hostname": host, "uuid": task_id, "timestamp": now + 0.01,
                 "type": "task-started"},
                {"hostname": host, "uuid": task_id, "runtime": 0.02 * (1 + n % 50),
                 "timestamp": now + 0.5, "type": "task-succeeded"},
            ]  # fmt: skip
            if len(batch) >= 24:
                out.append((host, batch))
                batch = []
        if batch:
            out.append((host, batch))
    return out


def heartbeat_workers(server: RedisServer, fmt: WireFormat, workers: int) -> None:
    """One worker-heartbeat per worker (a long interval: they stay up while timed)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port)
    messages = []
    for w in range(workers):
        host = f"celery@scrape-worker-{w:04d}"
        event = {"hostname": host, "timestamp": time.time(), "freq": 600.0, "active": 0,
                 "processed": 100, "type": "worker-heartbeat"}  # fmt: skip
        messages.append(encode_message(fmt, "worker.heartbeat", host, event, str(uuid.uuid4())))
    publish_messages(client, messages)
    client.close()


def publish(server: RedisServer, fmt: WireFormat, batches: list[Any]) -> int:
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port)
    messages = [
        encode_message(fmt, "task.multi", host, batch, str(uuid.uuid4())) for host, batch in batches
    ]
    result = publish_messages(client, messages)
    client.close()
    return int(result["receivers"])


def scrape(url: str, accept: str, gzipped: bool) -> tuple[float, bytes, str]:
    headers = {"Accept": accept}
    if gzipped:
        headers["Accept-Encoding"] = "gzip"
    request = urllib.request.Request(url, headers=headers)
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as resp:
        body = resp.read()
        content_type = resp.headers.get("Content-Type", "")
        encoding = resp.headers.get("Content-Encoding", "")
    elapsed = time.perf_counter() - start
    if encoding == "gzip":
        body = gzip.decompress(body)
    return elapsed, body, content_type


def sample_lines(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def baseline_registry(names: int, workers: int) -> Any:
    """prometheus_client's own Counter/Histogram, the same label sets and observations."""
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram

    prometheus_client.disable_created_metrics()  # the exporter exposes no _created lines
    registry = CollectorRegistry(auto_describe=False)
    labels = ("name", "hostname", "queue_name")
    counters = [
        Counter(f"celery_task_{kind}", f"{kind} tasks", labels, registry=registry)
        for kind in ("received", "started", "succeeded")
    ]
    runtime = Histogram(
        "celery_task_runtime_seconds", "runtime", ("name", "queue_name", "state"),
        registry=registry, buckets=DEFAULT_RUNTIME_BUCKETS,
    )  # fmt: skip
    wait = Histogram(
        "celery_task_queue_wait_seconds", "wait", ("name", "queue_name"),
        registry=registry, buckets=DEFAULT_QUEUE_WAIT_BUCKETS,
    )  # fmt: skip
    for w in range(workers):
        host = f"celery@scrape-worker-{w:04d}"
        for n in range(names):
            name = f"proj.scrape.tasks.task_{n:03d}"
            for counter in counters:
                counter.labels(name, host, QUEUE).inc()
            runtime.labels(name, QUEUE, "succeeded").observe(0.02 * (1 + n % 50))
            wait.labels(name, QUEUE).observe(0.01)
    return registry


def time_baseline(registry: Any, scrapes: int) -> dict[str, tuple[list[float], int]]:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    out: dict[str, tuple[list[float], int]] = {}
    for label, encoder in (("text", generate_latest), ("openmetrics", om_latest)):
        times: list[float] = []
        body = b""
        for _ in range(scrapes):
            start = time.perf_counter()
            body = encoder(registry)
            times.append(time.perf_counter() - start)
        out[label] = (times, sample_lines(body))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=50_000, help="sample lines to reach")
    parser.add_argument("--scrapes", type=int, default=50, help="scrapes per format")
    parser.add_argument("--no-results", action="store_true", help="print only, write nothing")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python bench/scrape.py", *(argv or sys.argv[1:])])
    facts = run_facts(command)
    names = 100
    per_pair, per_name = lines_per_combination(names)
    workers = max(1, -(-(args.series - names * per_name) // (names * per_pair)))
    checks: list[tuple[str, bool, str]] = []
    rows: list[tuple[str, str, list[float], int]] = []
    workdir = Path(tempfile.mkdtemp(prefix="cme-scrape-"))
    server = RedisServer(workdir)
    exporters = Exporters(server, workdir)
    try:
        server.start()
        fmt = capture_wire_format(server)
        exporter = exporters.start()
        batches = task_events(names, workers)
        published = sum(len(b) for _, b in batches)
        receivers = publish(server, fmt, batches)
        deadline = time.monotonic() + 120
        while True:
            got = events_total(exporter.scrape())
            if got >= published or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        checks.append(("every event ingested", got == published, f"{got:,.0f} of {published:,}"))
        checks.append(("every message reached the exporter", receivers == len(batches), ""))
        url = exporter.url("/metrics")
        for fmt_label, accept in (("text 0.0.4", TEXT_ACCEPT), ("OpenMetrics", PROMETHEUS_ACCEPT)):
            for gzipped in (True, False):
                times: list[float] = []
                body, content_type = b"", ""
                scrape(url, accept, gzipped)  # warm-up
                for _ in range(args.scrapes):
                    elapsed, body, content_type = scrape(url, accept, gzipped)
                    times.append(elapsed)
                series = sample_lines(body)
                label = f"{fmt_label}, {'gzip' if gzipped else 'identity'}"
                rows.append((label, content_type.split(";")[0], times, series))
                med, p99 = statistics.median(times) * 1e3, percentile(times, 0.99) * 1e3
                checks.append(
                    (
                        f"exporter {label}: median and p99 < {TARGET_MS:.0f} ms",
                        med < TARGET_MS and p99 < TARGET_MS,
                        f"median {med:.1f} ms, p99 {p99:.1f} ms",
                    )
                )
                checks.append(
                    (f"exporter {label}: >= {args.series:,} series", series >= args.series,
                     f"{series:,}")
                )  # fmt: skip
                log(f"{label}: {series:,} series, median {med:.1f} ms, p99 {p99:.1f} ms")
        # The status page: the same in-memory state, rendered as HTML for a person. Its
        # workers come from heartbeats (published only now: /metrics above is unchanged).
        heartbeat_workers(server, fmt, workers)
        page_url = exporter.url("/")
        deadline = time.monotonic() + 60
        while f"Workers ({workers} alive)".encode() not in scrape(page_url, "text/html", False)[1]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        page_times: list[float] = []
        scrape(page_url, "text/html", False)  # warm-up
        for _ in range(args.scrapes):
            elapsed, page, _ = scrape(page_url, "text/html", False)
            page_times.append(elapsed)
        page_med, page_p99 = statistics.median(page_times) * 1e3, percentile(page_times, 0.99) * 1e3
        checks.append(
            (f"status page: median and p99 < {TARGET_MS:.0f} ms",
             page_med < TARGET_MS and page_p99 < TARGET_MS,
             f"median {page_med:.1f} ms, p99 {page_p99:.1f} ms")
        )  # fmt: skip
        page_rows = page.count(b"<tr") - page.count(b"<thead><tr")
        log(f"status page: {page_rows} table rows, median {page_med:.1f} ms")
        rss_kib = exporter.rss_kib()
        # Scrapes during a flood: the flood still goes in whole, scrapes still answer.
        flood = task_events(names, 20)
        flood_events = sum(len(b) for _, b in flood)
        before = events_total(exporter.scrape())
        import threading

        busy_times: list[float] = []
        done = threading.Event()

        def scraper() -> None:
            while not done.is_set():
                busy_times.append(scrape(url, PROMETHEUS_ACCEPT, True)[0])

        thread = threading.Thread(target=scraper)
        thread.start()
        t0 = time.monotonic()
        publish(server, fmt, flood)
        deadline = time.monotonic() + 60
        while events_total(exporter.scrape()) < before + flood_events:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        flood_seconds = time.monotonic() - t0
        done.set()
        thread.join()
        after = events_total(exporter.scrape())
        checks.append(
            ("a flood during back-to-back scrapes is ingested whole",
             after - before == flood_events, f"{after - before:,.0f} of {flood_events:,}")
        )  # fmt: skip
    finally:
        exporters.stop_all()
        server.stop()
    base = time_baseline(baseline_registry(names, workers), args.scrapes)
    for label, (times, series) in base.items():
        rows.append((f"baseline: prometheus_client generate_latest ({label})", "-", times, series))
    lines = [
        HEADER,
        "",
        "Written by `bench/scrape.py`. The exporter daemon against a private Redis, after "
        f"one task (received, started, succeeded) per (task name, worker) for {names} task "
        f"names x {workers} workers, so the task counters and histograms expose the series "
        f"below; {args.scrapes} scrapes per line (after one warm-up), over HTTP from this "
        "process, one at a time. Every exposed sample line counts as a series (histogram "
        "buckets, `_count` and `_sum` included). Baseline: prometheus_client's own "
        "`Counter`/`Histogram` with the same label sets and observations in a plain "
        "`CollectorRegistry` (`_created` disabled, as the exporter has none), "
        "`generate_latest` called in-process (no HTTP), same run.",
        "",
        *facts,
        checks_line(checks),
        "",
        "| what | content type | series | median ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, content_type, times, series in rows:
        lines.append(
            f"| {label} | {content_type} | {series:,} | {statistics.median(times) * 1e3:.1f} | "
            f"{percentile(times, 0.99) * 1e3:.1f} | {max(times) * 1e3:.1f} |"
        )
    lines += [
        "",
        f"Scrapes during a flood: {flood_events:,} events published while this process "
        f"scraped `/metrics` (OpenMetrics, gzip) back to back: all ingested in "
        f"{flood_seconds:.1f} s, {len(busy_times)} scrapes meanwhile (median "
        f"{statistics.median(busy_times) * 1e3:.0f} ms). The exporter copies the task series "
        "under its lock and renders them outside it. Exporter RSS with these series: "
        f"{rss_kib / 1024:.1f} MiB.",
    ]
    lines += [
        "",
        f"Status page `/` with these workers ({page_rows} table rows, {len(page) / 1024:.0f} "
        f"KiB of HTML): median {page_med:.1f} ms, p99 {page_p99:.1f} ms, max "
        f"{max(page_times) * 1e3:.1f} ms over {args.scrapes} requests.",
    ]
    return finish(HEADER, lines, checks, write=not args.no_results)


if __name__ == "__main__":
    sys.exit(main())
