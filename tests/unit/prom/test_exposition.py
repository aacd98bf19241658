"""The exporter's own exposition writer (exporter/prom/exposition.py) gives the bytes
prometheus_client gives, in the Prometheus text format and in OpenMetrics, and both
parsers read the same samples from it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector

from exporter.daemon import Exporter
from exporter.prom.counting import LabelledCounter, LabelledHistogram
from exporter.prom.exposition import go_float, render
from exporter.settings import Settings

TEXT = ""  # no Accept header: the 0.0.4 text format
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
)

HOSTILE = [
    "plain",
    'quote"inside',
    "back\\slash",
    "new\nline",
    "ünïcödé ✓",
    "(unknown)",
    "",
    "trailing\\",
    '\\"\n',
]


class _Fixed(Collector):
    def __init__(self, *metrics: LabelledCounter | LabelledHistogram) -> None:
        self.metrics = metrics

    def collect(self) -> Any:
        return [m.family() for m in self.metrics]


def hostile_registry(extremes: bool = True) -> CollectorRegistry:
    """Hostile label values; with ``extremes`` also values OpenMetrics rejects in a counter
    (negative, NaN), which both writers must still write alike."""
    counter = LabelledCounter("t_events_total", 'Help with "quotes", \\ and\nnewline.', ("b", "a"))
    plain = LabelledCounter("t_plain_total", "No labels.", ())
    empty = LabelledCounter("t_empty_total", "Never incremented.", ("x",))
    histogram = LabelledHistogram(
        "t_seconds", "A histogram.", ("name", "queue_name", "state"), [0.005, 0.5, 1, 2.5, 1e7]
    )
    around_le = LabelledHistogram("t_le", "Labels on both sides of le.", ("zz", "aa"), [1.0])
    for i, a in enumerate(HOSTILE):
        for b in HOSTILE[:3]:
            counter.inc((b, a), float(i))
        histogram.observe((a, "q", "succeeded"), 0.005)  # equal to a bound: in that bucket
        histogram.observe((a, "q", "succeeded"), 3.0 + i)
        histogram.observe((a, "q", "failed"), 1e8)
        around_le.observe((a, a), 0.5)
    plain.inc((), 12_345_678.0)  # Go's exponent form: 1.2345678e+07
    counter.inc(("big", "x"), 1e22)
    counter.inc(("tiny", "x"), 1e-7)
    if extremes:
        counter.inc(("neg", "x"), -2.5)
        counter.inc(("nan", "x"), math.nan)
    counter.inc(("inf", "x"), math.inf)
    histogram.observe(("inf", "q", "succeeded"), math.inf)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(counter, plain, empty, histogram, around_le))
    return registry


def busy_exporter() -> Exporter:
    exporter = Exporter(Settings(broker_url="redis://127.0.0.1:1/0"))
    t = 1_700_000_000.0
    for n in range(7):
        for w in range(5):
            uuid, host = f"{n}-{w}", f'celery@w"{w}'
            exporter.primary.dispatcher.on_message(
                json.dumps(
                    [
                        {
                            "type": "task-sent",
                            "uuid": uuid,
                            "name": f"t{n}",
                            "queue": "q\\1",
                            "hostname": "gen1@p",
                            "timestamp": t,
                        },
                        {
                            "type": "task-received",
                            "uuid": uuid,
                            "name": f"t{n}",
                            "hostname": host,
                            "timestamp": t,
                        },
                        {
                            "type": "task-started",
                            "uuid": uuid,
                            "hostname": host,
                            "timestamp": t + 0.25,
                        },
                        {
                            "type": "task-failed" if w == 0 else "task-succeeded",
                            "uuid": uuid,
                            "hostname": host,
                            "timestamp": t + 1.5,
                            "runtime": 1.25,
                            "exception": "ValueError('x')",
                        },
                    ]
                ),
                "application/json",
            )
    return exporter


CLOCKED = (
    "process_",
    "celery_exporter_broker_down_seconds_total",
    "celery_exporter_collector_scrape_duration_seconds",
)


def without_process_metrics(text: str) -> str:
    """process_* (CPU seconds, memory) and the broker's down time (this test has no broker)
    change between two renderings."""
    return "".join(
        line for line in text.splitlines(keepends=True) if not any(name in line for name in CLOCKED)
    )


@pytest.mark.parametrize("accept", [TEXT, PROMETHEUS_ACCEPT], ids=["text", "openmetrics"])
def test_same_bytes_as_prometheus_client(accept: str) -> None:
    reference = openmetrics_latest if accept else generate_latest
    for registry in (hostile_registry(), busy_exporter().registry):
        body, content_type = render(registry, accept)
        expected = reference(registry)
        assert without_process_metrics(body.decode()) == without_process_metrics(expected.decode())
        assert content_type.startswith(
            "application/openmetrics-text" if accept else "text/plain; version=0.0.4"
        )


def test_both_parsers_read_the_same_samples() -> None:
    registry = hostile_registry(extremes=False)
    text, _ = render(registry, TEXT)
    om, _ = render(registry, PROMETHEUS_ACCEPT)
    assert om.endswith(b"# EOF\n") and not text.endswith(b"# EOF\n")

    def samples(families: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], str]:
        return {
            (s.name, frozenset(s.labels.items())): repr(s.value)
            for f in families
            for s in f.samples
        }

    from_text = samples(parse_text(text.decode()))
    from_om = samples(parse_om(om.decode()))
    assert from_text == from_om
    assert from_text == samples(registry.collect())
    assert from_text[("t_events_total", frozenset({("a", '\\"\n'), ("b", "plain")}))] == "8.0"
    labels = {"name": "plain", "queue_name": "q", "state": "succeeded", "le": "0.005"}
    bucket = ("t_seconds_bucket", frozenset(labels.items()))
    assert from_text[bucket] == "1.0"


def test_series_removed_from_a_counter_leave_the_exposition() -> None:
    counter = LabelledCounter("t_total", "x", ("hostname",))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(counter))
    for i in range(3):
        counter.inc((f"w{i}",))
    render(registry, TEXT)
    del counter.values[("w1",)]
    body, _ = render(registry, TEXT)
    assert body.decode() == (
        '# HELP t_total x\n# TYPE t_total counter\nt_total{hostname="w0"} 1.0\n'
        't_total{hostname="w2"} 1.0\n'
    )


@pytest.mark.parametrize(
    "value",
    [
        0.0,
        1.0,
        0.005,
        999_999.0,
        1e6,
        12_345_678.0,
        1e22,
        1e-7,
        -3.5,
        math.inf,
        -math.inf,
        math.nan,
        3,
    ],
)
def test_numbers_as_go_writes_them(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    assert go_float(value) == floatToGoString(value)


def test_broker_label_of_a_named_broker_is_written_in_order() -> None:
    from exporter.collectors.guard import CollectorOutcomes, GuardedCollector

    registry = CollectorRegistry(auto_describe=False)
    for broker in ("orders", "billing"):
        # Each broker has metrics of its own (a BrokerWatch each), same names.
        counter = LabelledCounter("t_total", "x", ("name", "hostname", "exception"))
        histogram = LabelledHistogram("t_seconds", "y", ("name", "queue_name"), [0.5, 1.0])
        counter.inc(("n", 'h"1', "ValueError"))
        histogram.observe(("n", "q"), 0.75)
        registry.register(
            GuardedCollector(
                "t",
                lambda c=counter, h=histogram: [c.family(), h.family()],
                CollectorOutcomes(),
                None,
                {"broker": broker},
            )
        )
    for accept, reference in ((TEXT, generate_latest), (PROMETHEUS_ACCEPT, openmetrics_latest)):
        text = render(registry, accept)[0].decode()
        # Each family once (HELP/TYPE), both brokers' samples under it: prometheus_client
        # repeats the family per collector, which strict parsers reject.
        headers = [line for line in text.splitlines() if line.startswith("#")]
        assert len(headers) == len(set(headers)), text
        samples = {line for line in text.splitlines() if not line.startswith("#")}
        expected = {
            line for line in reference(registry).decode().splitlines() if not line.startswith("#")
        }
        assert samples == expected
    families = {f.name: f for f in parse_om(render(registry, PROMETHEUS_ACCEPT)[0].decode())}
    assert {s.labels["broker"] for s in families["t"].samples} == {"orders", "billing"}
    body, _ = render(registry, TEXT)
    assert 't_total{broker="orders",exception="ValueError",hostname="h\\"1",name="n"} 1.0\n' in (
        body.decode()
    )
    assert 't_seconds_bucket{broker="billing",le="1.0",name="n",queue_name="q"} 1.0\n' in (
        body.decode()
    )


def test_several_brokers_give_one_family_each_in_a_strict_parse() -> None:
    """Two named brokers: every family is written once with both brokers' series, and the
    OpenMetrics parser (which rejects a repeated family) reads the whole scrape."""
    exporter = Exporter(
        Settings(
            broker_url="redis://127.0.0.1:1/0",
            brokers=(("red", "redis://127.0.0.1:1/0"), ("blue", "redis://127.0.0.1:1/1")),
            reorder_window=0,
        )
    )
    for i, watch in enumerate(exporter.watches):
        event = {"type": "task-received", "uuid": f"u{i}", "name": "t.a", "hostname": "w@h",
                 "timestamp": 1.0}  # fmt: skip
        watch.dispatcher.on_message(json.dumps(event).encode(), "application/json")
    for accept in (TEXT, PROMETHEUS_ACCEPT):
        text = render(exporter.registry, accept)[0].decode()
        types = [line for line in text.splitlines() if line.startswith("# TYPE")]
        assert len(types) == len(set(types))
    families = {
        f.name: f for f in parse_om(render(exporter.registry, PROMETHEUS_ACCEPT)[0].decode())
    }
    received = families["celery_task_received"].samples
    assert {(s.labels["broker"], s.value) for s in received} == {("red", 1.0), ("blue", 1.0)}
    assert {s.labels["broker"] for s in families["celery_exporter_broker_up"].samples} == {
        "red", "blue"
    }  # fmt: skip
