#!/usr/bin/env python
"""The protobuf exposition (native histograms): the hand-written encoder against the
``protobuf`` package, and what native buckets cost at observe time.

Run ``.venv/bin/python bench/protobuf.py [--names N] [--workers N] [--rounds N]``. In
process, no HTTP: the exporter's own TaskMetrics with ``--names`` task names x ``--workers``
workers (three counters per pair) and runtime and queue-wait histograms per name, each fed
60 observations spread over 1 ms .. 1 h (about 55 native buckets a series). Then, on the
same snapshot:

- ``/metrics`` body in OpenMetrics (what Prometheus gets without native histograms), in
  protobuf by exporter/prom/protobuf.py, and in protobuf built as ``protobuf`` package
  messages (upb, its fastest backend) from the same values; both protobuf bodies must decode
  to the same messages;
- ``observe()`` per call with native buckets off and on, and CPU per event of the whole
  in-process event path (JSON decode, dispatch, counting) with ``--no-native-histograms``
  and with the default;
- memory per histogram series of the native buckets (tracemalloc).

Writes the "## Protobuf exposition" section of bench/RESULTS.md; exits 1 if a check fails.
The ``protobuf`` package is a dev dependency (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from google.protobuf.internal.encoder import _VarintBytes  # noqa: E402
from lib.results import RESULTS_PATH, replace_section, run_facts  # noqa: E402

from exporter.cli import settings_from_args  # noqa: E402
from exporter.collectors.tasks import TaskMetrics  # noqa: E402
from exporter.daemon import Exporter  # noqa: E402
from exporter.prom.exposition import FastCounterFamily, FastHistogramFamily, render  # noqa: E402
from exporter.prom.native import NativeConfig, spans_and_deltas  # noqa: E402
from exporter.settings import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS  # noqa: E402
from tests.support.metrics_proto import decode, message_class  # noqa: E402

HEADER = "## Protobuf exposition"
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0"
PROTOBUF_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
)


class _Registry:
    def __init__(self, metrics: TaskMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> list[Any]:
        return self.metrics.collect()


def build(names: int, workers: int, native: NativeConfig | None) -> TaskMetrics:
    metrics = TaskMetrics(DEFAULT_RUNTIME_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS, native=native)
    for n in range(names):
        name = f"proj.tasks.task_{n:04d}"
        for w in range(workers):
            labels = (name, f"celery@worker-{w:03d}", "celery")
            for counter in (metrics.received, metrics.started, metrics.succeeded):
                counter.inc(labels)
        for i in range(60):
            value = 0.001 * 1.25 ** (i + n % 5)  # 1 ms .. about an hour
            metrics.runtime.observe((name, "celery", "succeeded"), value)
            metrics.queue_wait.observe((name, "celery"), value / 3)
    return metrics


def package_body(families: list[Any]) -> bytes:
    """The same body, built as ``protobuf`` package messages and serialized by upb."""
    family_class = message_class("MetricFamily")
    out: list[bytes] = []
    for fam in families:
        mf = family_class()
        if isinstance(fam, FastCounterFamily):
            mf.name, mf.help, mf.type = fam.name + "_total", fam.documentation, 0
            for labels, value in fam.values.items():
                m = mf.metric.add()
                for k, v in sorted(zip(fam.labelnames, labels, strict=True)):
                    m.label.add(name=k, value=v)
                m.counter.value = value
        elif isinstance(fam, FastHistogramFamily):
            mf.name, mf.help, mf.type = fam.name, fam.documentation, 4
            config = fam.native_config
            assert config is not None and fam.native is not None
            for labels, slots in fam.values.items():
                m = mf.metric.add()
                for k, v in sorted(zip(fam.labelnames, labels, strict=True)):
                    m.label.add(name=k, value=v)
                h = m.histogram
                cumulative = 0
                for bound, n in zip(fam.bounds, slots, strict=False):
                    cumulative += int(n)
                    h.bucket.add(cumulative_count=cumulative, upper_bound=bound)
                h.sample_count = cumulative + int(slots[-2])
                h.sample_sum = slots[-1]
                nb = fam.native[labels]
                h.schema, h.zero_threshold, h.zero_count = (
                    nb.schema,
                    config.zero_threshold,
                    nb.zero_count,
                )
                spans, deltas = spans_and_deltas(nb.positive)
                for offset, length in spans:
                    h.positive_span.add(offset=offset, length=length)
                h.positive_delta.extend(deltas)
        else:
            raise TypeError(type(fam))
        if not mf.metric:
            continue
        data = mf.SerializeToString()
        out.append(_VarintBytes(len(data)) + data)
    return b"".join(out)


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median wall time of ``fn`` in ms."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def observe_ns(native: NativeConfig | None, calls: int = 200_000) -> float:
    metrics = TaskMetrics(DEFAULT_RUNTIME_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS, native=native)
    values = [0.001 * 1.07**i for i in range(200)]
    labels = [(f"t{i}", "celery", "succeeded") for i in range(100)]
    observe = metrics.runtime.observe
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(calls):
            observe(labels[i % 100], values[i % 200])
        best = min(best, (time.perf_counter() - start) / calls * 1e9)
    return best


def event_batches(tasks: int = 20_000, per_message: int = 100) -> list[bytes]:
    """Each task's four events (sent, received, started, succeeded), JSON batches as
    ``task.multi`` messages carry them: 200 task names, 10 workers, runtimes 1 ms .. 20 s."""
    now = time.time()
    events: list[dict[str, Any]] = []
    for t in range(tasks):
        task, name, host = str(uuid.uuid4()), f"proj.tasks.task_{t % 200:03d}", f"w{t % 10}@h"
        events += [
            {"type": "task-sent", "uuid": task, "name": name, "queue": "celery",
             "hostname": "gen1@producer", "timestamp": now},
            {"type": "task-received", "uuid": task, "name": name, "hostname": host,
             "timestamp": now + 0.01},
            {"type": "task-started", "uuid": task, "hostname": host, "timestamp": now + 0.02},
            {"type": "task-succeeded", "uuid": task, "hostname": host,
             "runtime": 0.001 * 1.05 ** (t % 200), "timestamp": now + 0.5},
        ]  # fmt: skip
    return [
        json.dumps(events[i : i + per_message]).encode() for i in range(0, len(events), per_message)
    ]


def dispatch_us_per_event(native: bool, batches: list[bytes]) -> float:
    """CPU µs per event of the in-process event path (decode, dispatch, count), best of 3."""
    best = float("inf")
    for _ in range(3):
        exporter = Exporter(
            settings_from_args(
                ["--broker-url", "redis://127.0.0.1:1/0", "--reorder-window", "0",
                 "--native-histograms" if native else "--no-native-histograms"]
            )
        )  # fmt: skip
        on_message = exporter.primary.dispatcher.on_message
        start = time.process_time()
        for body in batches:
            on_message(body, "application/json")
        best = min(best, time.process_time() - start)
    return best / (len(batches) * 100) * 1e6


def _traced_bytes(native: NativeConfig | None, series: int) -> tuple[int, TaskMetrics]:
    tracemalloc.start()
    metrics = TaskMetrics(DEFAULT_RUNTIME_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS, native=native)
    for n in range(series):
        for i in range(60):
            metrics.runtime.observe((f"t{n}", "celery", "succeeded"), 0.001 * 1.25**i)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size, metrics


def native_bytes_per_series(series: int = 2_000) -> tuple[float, int]:
    """(bytes the native buckets add per series, buckets per series)."""
    with_native, metrics = _traced_bytes(NativeConfig(), series)
    without, _ = _traced_bytes(None, series)
    buckets = len(next(iter(metrics.runtime.native.values())).positive.as_dict())
    return (with_native - without) / series, buckets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    metrics = build(args.names, args.workers, NativeConfig())
    registry = _Registry(metrics)
    families = metrics.collect()
    ours, content_type = render(registry, PROTOBUF_ACCEPT)
    theirs = package_body(families)
    checks = {
        "protobuf content type": content_type.startswith("application/vnd.google.protobuf"),
        "both encoders decode to the same messages": decode(ours) == decode(theirs),
    }
    openmetrics_body = render(registry, OPENMETRICS_ACCEPT)[0]
    histogram_series = len(metrics.runtime.values) + len(metrics.queue_wait.values)
    counter_series = sum(len(c.values) for c in (metrics.received, metrics.started))
    counter_series += len(metrics.succeeded.values)
    results = {
        "openmetrics": timed(lambda: render(registry, OPENMETRICS_ACCEPT), args.rounds),
        "ours": timed(lambda: render(registry, PROTOBUF_ACCEPT), args.rounds),
        "theirs": timed(lambda: package_body(metrics.collect()), args.rounds),
    }
    observe_off, observe_on = observe_ns(None), observe_ns(NativeConfig())
    per_series, buckets = native_bytes_per_series()
    batches = event_batches()
    dispatch_off = dispatch_us_per_event(False, batches)
    dispatch_on = dispatch_us_per_event(True, batches)
    lines = [
        HEADER,
        "",
        *run_facts(f"python bench/protobuf.py --names {args.names} --workers {args.workers}"),
        "",
        f"{counter_series:,} counter series and {histogram_series:,} histogram series "
        f"(runtime and queue wait, {len(DEFAULT_RUNTIME_BUCKETS)} classic buckets and about "
        f"{buckets} native buckets each, schema 3). Median of {args.rounds} renders, "
        "in process:",
        "",
        "| body | size | render |",
        "|---|---|---|",
        f"| OpenMetrics (classic only) | {len(openmetrics_body) / 1e6:.2f} MB | "
        f"{results['openmetrics']:.0f} ms |",
        f"| protobuf, hand-written encoder (exporter/prom/protobuf.py) | "
        f"{len(ours) / 1e6:.2f} MB | {results['ours']:.0f} ms |",
        f"| protobuf, `protobuf` package messages (upb) | {len(theirs) / 1e6:.2f} MB | "
        f"{results['theirs']:.0f} ms |",
        "",
        f"`observe()` of a histogram: {observe_off:.0f} ns without native buckets, "
        f"{observe_on:.0f} ns with them. Native buckets add {per_series / 1024:.1f} KiB "
        f"per histogram series with {buckets} buckets (tracemalloc). The whole in-process "
        f"event path (JSON decode, dispatch, counting; 80,000 events in batches of 100): "
        f"{dispatch_off:.2f} µs CPU per event with --no-native-histograms, "
        f"{dispatch_on:.2f} µs with native histograms "
        f"({(dispatch_on / dispatch_off - 1) * 100:+.1f}%).",
        "",
        "Checks: " + ", ".join(f"{k}: {'ok' if v else 'FAILED'}" for k, v in checks.items()),
    ]
    replace_section(RESULTS_PATH, HEADER, lines)
    print("\n".join(lines))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
