"""Native histograms: the bucket arithmetic, the protobuf exposition (decoded with Google's
``protobuf`` package), content negotiation, text formats unchanged. The real Prometheus
storing them: tests/integration/scrape/test_native_histograms.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from exporter.cli import build_settings, command
from exporter.daemon import Exporter
from exporter.prom.counting import LabelledCounter, LabelledHistogram
from exporter.prom.exposition import CACHE_SLACK, FastFamily, render, wants_protobuf
from exporter.prom.native import (
    MAX_SCHEMA,
    MIN_SCHEMA,
    BucketRun,
    NativeBuckets,
    NativeConfig,
    bucket_index,
    bucket_upper_bound,
    spans_and_deltas,
)
from exporter.prom.protobuf import CONTENT_TYPE
from exporter.settings import Settings
from tests.support.metrics import Samples, parse_samples
from tests.support.metrics_proto import decode, native_buckets

# What Prometheus 2.42 sends with and without --enable-feature=native-histograms.
NATIVE_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
    "encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,"
    "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,"
    "*/*;q=0.1"
)
CLASSIC_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
NOW = 1_700_000_000.0


# -- bucket arithmetic -------------------------------------------------------------------------


@pytest.mark.parametrize("schema", range(MIN_SCHEMA, MAX_SCHEMA + 1))
def test_every_value_lands_in_the_bucket_whose_bounds_hold_it(schema: int) -> None:
    values = [2.0**k for k in range(-20, 21)]  # exact bounds at every schema >= 0
    values += [1.5**k for k in range(-30, 31)] + [1e-9, 0.0051, 0.3, 7.77, 3599.0, 1e6]
    for v in values:
        i = bucket_index(v, schema)
        # Bounds computed as 2 ** (i / 2 ** schema): allow one rounding step at a bound.
        assert bucket_upper_bound(i - 1, schema) * (1 - 1e-12) < v
        assert v <= bucket_upper_bound(i, schema) * (1 + 1e-12)
    # A power of two is the upper bound of its bucket (buckets are (lower, upper]).
    assert bucket_index(1.0, schema) == 0
    assert bucket_index(2.0, schema) == (1 << schema if schema >= 0 else 1)
    assert bucket_index(math.nextafter(1.0, 2.0), schema) == 1


def test_too_many_buckets_halve_the_resolution_and_keep_every_count() -> None:
    config = NativeConfig(schema=8, max_buckets=40)
    buckets = NativeBuckets(config.schema)
    values = [1e-4 * 1.07**k for k in range(300)] + [0.0, 0.0]
    for v in values:
        buckets.observe(v, config)
    assert buckets.schema < 8
    assert len(buckets.positive.counts) <= 40
    expected: dict[int, int] = {}
    for v in values[:-2]:
        key = bucket_index(v, buckets.schema)
        expected[key] = expected.get(key, 0) + 1
    assert buckets.positive.as_dict() == expected
    assert buckets.zero_count == 2


def test_a_bucket_run_widens_both_ways_and_halves_exactly() -> None:
    run = BucketRun()
    for key in (5, 3, 9, 5):
        run.add(key)
    assert (run.offset, run.counts) == (3, [1, 0, 2, 0, 0, 0, 1])
    assert run.as_dict() == {3: 1, 5: 2, 9: 1}
    assert spans_and_deltas(run) == spans_and_deltas(run.as_dict())
    # Schema - 1: bucket i goes to ceil(i / 2).
    assert run.halved().as_dict() == {2: 1, 3: 2, 5: 1}
    # Negative values count on their own side, by magnitude.
    buckets = NativeBuckets(3)
    for v in (-0.5, -0.5, 0.5, 0.0):
        buckets.observe(v, NativeConfig())
    assert bucket_index(0.5, 3) == -8
    assert buckets.negative.as_dict() == {-8: 2}
    assert (buckets.positive.as_dict(), buckets.zero_count) == ({-8: 1}, 1)


@pytest.mark.parametrize(
    ("buckets", "spans", "deltas"),
    [
        ({}, [], []),
        ({5: 3}, [(5, 1)], [3]),
        ({5: 3, 6: 4}, [(5, 2)], [3, 1]),
        # Gaps of one or two empty buckets stay in the span as zero counts.
        ({5: 3, 7: 4}, [(5, 3)], [3, -3, 4]),
        ({5: 3, 8: 4}, [(5, 4)], [3, -3, 0, 4]),
        # Three empty buckets start a new span, its offset counted from the previous end.
        ({5: 3, 9: 4}, [(5, 1), (3, 1)], [3, 1]),
        ({-3: 1, 0: 2, 10: 2, 11: 1}, [(-3, 4), (9, 2)], [1, -1, 0, 2, 0, -1]),
    ],
)
def test_spans_and_deltas_are_prometheus_sparse_layout(
    buckets: dict[int, int], spans: list[tuple[int, int]], deltas: list[int]
) -> None:
    assert spans_and_deltas(buckets) == (spans, deltas)


# -- flags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], NativeConfig(schema=3, classic=True)),
        (["--native-histogram-schema", "-2"], NativeConfig(schema=-2, classic=True)),
        (["--no-native-histogram-classic-buckets"], NativeConfig(schema=3, classic=False)),
        (["--no-native-histograms", "--native-histogram-schema", "5"], None),
    ],
)
def test_flags_give_the_native_configuration(
    args: list[str], expected: NativeConfig | None
) -> None:
    context = command.make_context("celery-metrics-exporter", args)
    assert build_settings(context.params).native_config() == expected


@pytest.mark.parametrize("value", ["9", "-5", "fine"])
def test_a_bad_schema_stops_the_exporter_naming_the_flag(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--native-histogram-schema", value],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, CELERY_EXPORTER_BROKER_URL="redis://127.0.0.1:1/0"),
    )
    assert done.returncode == 2
    assert "--native-histogram-schema" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- the protobuf exposition -------------------------------------------------------------------


def _exporter(**overrides: Any) -> Exporter:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", reorder_window=0, **overrides)
    return Exporter(settings, clock=lambda: NOW)


def _task_events(name: str, hostname: str, at: float, runtime: float) -> list[dict[str, Any]]:
    """A task's events as its producer and worker send them (queue wait 0.25 s)."""
    task = str(uuid.uuid4())
    return [
        {"type": "task-sent", "uuid": task, "name": name, "queue": "celery",
         "hostname": "gen1@producer", "timestamp": at},
        {"type": "task-received", "uuid": task, "name": name, "hostname": hostname,
         "timestamp": at + 0.1},
        {"type": "task-started", "uuid": task, "hostname": hostname, "timestamp": at + 0.25},
        {"type": "task-succeeded", "uuid": task, "hostname": hostname, "runtime": runtime,
         "timestamp": at + 0.25 + runtime},
    ]  # fmt: skip


def _fed(**overrides: Any) -> Exporter:
    exporter = _exporter(**overrides)
    events: list[dict[str, Any]] = []
    for i in range(50):
        events += _task_events(f"app.t{i % 3}", f"w{i % 2}@host", NOW - 60 + i, 0.003 * 1.3**i)
    events += _task_events("app.zero", "w0@host", NOW - 10, 0.0)
    exporter.primary.dispatcher.on_message(json.dumps(events).encode(), "application/json")
    return exporter


def _proto_samples(families: list[Any]) -> Samples:
    """The samples the text format would show, read from the decoded protobuf families."""
    samples: Samples = {}
    for family in families:
        for metric in family.metric:
            labels = {(lp.name, lp.value) for lp in metric.label}
            if metric.HasField("histogram"):
                h = metric.histogram
                for b in h.bucket:
                    le = ("le", repr(b.upper_bound))
                    samples[(family.name + "_bucket", frozenset(labels | {le}))] = float(
                        b.cumulative_count
                    )
                inf = frozenset(labels | {("le", "+Inf")})
                samples[(family.name + "_bucket", inf)] = float(h.sample_count)
                samples[(family.name + "_count", frozenset(labels))] = float(h.sample_count)
                samples[(family.name + "_sum", frozenset(labels))] = h.sample_sum
            else:
                field = next(f for f in ("counter", "gauge", "untyped") if metric.HasField(f))
                samples[(family.name, frozenset(labels))] = getattr(metric, field).value
    return samples


T0_LABELS = {("name", "app.t0")}


def _process(key: tuple[str, frozenset[tuple[str, str]]]) -> bool:
    return key[0].startswith("process_")


def test_the_protobuf_body_holds_every_text_sample_plus_the_native_buckets() -> None:
    exporter = _fed()
    body, content_type = render(exporter.registry, NATIVE_ACCEPT)
    assert content_type == CONTENT_TYPE
    families = decode(body)
    text, _ = render(exporter.registry, "text/plain;version=0.0.4")
    # process_* (RSS, CPU) moves between the two renders.
    text_samples = {k: v for k, v in parse_samples(text.decode()).items() if not _process(k)}
    proto_samples = {k: v for k, v in _proto_samples(families).items() if not _process(k)}
    assert proto_samples == text_samples
    assert any(_process(k) for k in _proto_samples(families))
    # Prometheus's types: counters are named with _total, histograms typed HISTOGRAM (4).
    by_name = {f.name: f for f in families}
    assert by_name["celery_task_succeeded_total"].type == 0
    runtime = by_name["celery_task_runtime_seconds"]
    assert runtime.type == 4
    for metric in runtime.metric:
        h = metric.histogram
        assert h.schema == 3
        assert h.zero_threshold == 2.0**-128
        counts = native_buckets(h)
        assert h.zero_count + sum(counts.values()) == h.sample_count
        labels = {lp.name: lp.value for lp in metric.label}
        if labels["name"] == "app.zero":
            assert (h.zero_count, counts) == (1, {})
    # Each runtime went to the bucket whose bounds hold it (one per task of app.t0 here).
    t0 = next(
        m for m in runtime.metric if ("name", "app.t0") in {(x.name, x.value) for x in m.label}
    )
    expected: dict[int, int] = {}
    for i in range(0, 50, 3):
        key = bucket_index(0.003 * 1.3**i, 3)
        expected[key] = expected.get(key, 0) + 1
    assert native_buckets(t0.histogram) == expected


def test_several_brokers_are_one_family_each_with_their_broker_label() -> None:
    exporter = _exporter(brokers=(("a", "redis://127.0.0.1:1/0"), ("b", "redis://127.0.0.1:2/0")))
    for n, watch in enumerate(exporter.watches):
        events = _task_events("app.t", "w0@host", NOW - 5, 0.1 * (n + 1))
        watch.dispatcher.on_message(json.dumps(events).encode(), "application/json")
    families = decode(render(exporter.registry, NATIVE_ACCEPT)[0])
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    text, _ = render(exporter.registry, "")
    text_samples = {k: v for k, v in parse_samples(text.decode()).items() if not _process(k)}
    assert {k: v for k, v in _proto_samples(families).items() if not _process(k)} == text_samples
    runtime = next(f for f in families if f.name == "celery_task_runtime_seconds")
    by_broker = {
        next(lp.value for lp in m.label if lp.name == "broker"): native_buckets(m.histogram)
        for m in runtime.metric
    }
    assert by_broker == {"a": {bucket_index(0.1, 3): 1}, "b": {bucket_index(0.2, 3): 1}}


def test_protobuf_scrapes_alone_forget_the_labels_of_removed_series() -> None:
    """A Prometheus that asks for protobuf never reads the text: the protobuf path must
    prune the cached label bytes of removed series itself (memory stays bounded)."""
    counter = LabelledCounter("t_total", "x", ("name",))
    histogram = LabelledHistogram("t_seconds", "y", ("name",), [1.0], NativeConfig())
    for i in range(CACHE_SLACK + 100):
        counter.inc((f"n{i}",))
        histogram.observe((f"n{i}",), 0.5)
    for metric in (counter, histogram):
        family = metric.family()
        assert isinstance(family, FastFamily)
        family.proto_metrics()
        assert len(metric._text._proto) == CACHE_SLACK + 100
        for labels in list(metric.values):
            del metric.values[labels]
        family = metric.family()
        assert isinstance(family, FastFamily)
        family.proto_metrics()
        assert len(metric._text._proto) == 0


def test_without_classic_buckets_the_protobuf_body_carries_only_the_native_ones() -> None:
    exporter = _fed(native_histogram_classic_buckets=False, native_histogram_schema=0)
    families = {f.name: f for f in decode(render(exporter.registry, NATIVE_ACCEPT)[0])}
    for metric in families["celery_task_queue_wait_seconds"].metric:
        assert len(metric.histogram.bucket) == 0
        assert metric.histogram.schema == 0
        # Every queue wait is 0.25 s: one bucket, (0.125, 0.25] at schema 0.
        assert native_buckets(metric.histogram) == {-2: metric.histogram.sample_count}
    # The text format keeps its classic buckets.
    assert b"celery_task_queue_wait_seconds_bucket{" in render(exporter.registry, "")[0]


def test_text_and_openmetrics_are_the_same_bytes_with_native_histograms_on_or_off() -> None:
    on, off = _fed(), _fed(native_histograms=False)

    def body(exporter: Exporter, accept: str) -> tuple[list[bytes], str]:
        # process_* (RSS, CPU) moves between two renders whatever the flags.
        data, content_type = render(exporter.registry, accept)
        return [
            line for line in data.split(b"\n") if not line.startswith(b"process_")
        ], content_type

    for accept in ("", CLASSIC_ACCEPT, "text/plain;version=0.0.4"):
        assert body(on, accept) == body(off, accept)
    # With native histograms off, a Prometheus asking for protobuf gets OpenMetrics, as before.
    assert render(off.registry, NATIVE_ACCEPT)[1].startswith("application/openmetrics-text")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (NATIVE_ACCEPT, True),
        (CLASSIC_ACCEPT, False),
        ("", False),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily", False),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
         "encoding=text", False),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
         "encoding=delimited;q=0.2,text/plain;q=0.5", False),
        ("text/plain;q=0.5, application/vnd.google.protobuf; "
         "proto=io.prometheus.client.MetricFamily; encoding=delimited", True),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
         "encoding=delimited;q=bad", False),
    ],
)  # fmt: skip
def test_protobuf_is_served_only_when_preferred(accept: str, expected: bool) -> None:
    assert wants_protobuf(accept) is expected
