"""Each collector fails alone (exporter/collectors/guard.py): a real exporter, in process, with
its HTTP server and a real Redis broker; one collector raises on every scrape.

/metrics still answers 200 in the text, OpenMetrics and protobuf formats with every other
family, ``celery_exporter_collector_success`` is 0 for that collector only, and the failure
is logged once (not once per scrape), its recovery once.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.daemon import Exporter
from exporter.prom.exposition import FastFamily, LabelText, render
from exporter.settings import Settings
from tests.support.metrics import Samples, parse_samples, registry_samples, total, value
from tests.support.metrics_proto import decode
from tests.support.waiting import wait_for

OPENMETRICS = "application/openmetrics-text;version=1.0.0"
PROTOBUF = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
)
SUCCESS = "celery_exporter_collector_success"
DURATION = "celery_exporter_collector_scrape_duration_seconds"
BUILT_IN = ("tasks", "workers", "health", "queues")


class Breakable:
    """A collector that raises while ``broken`` (the test's seam: registered as any other)."""

    def __init__(self) -> None:
        self.broken = True

    def collect(self) -> Iterable[Metric]:
        if self.broken:
            raise RuntimeError("deliberately broken")
        yield GaugeMetricFamily("test_breakable_ok", "Present while the collector works.", 1.0)


@pytest.fixture
def exporter(redis_url: str) -> Iterator[Exporter]:
    running = Exporter(Settings(broker_url=redis_url, listen_host="127.0.0.1", listen_port=0))
    yield running
    running.shutdown()


def _get(exporter: Exporter, accept: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{exporter.port}/metrics", headers={"Accept": accept}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read()


def _text(exporter: Exporter, accept: str = "") -> Samples:
    status, _, body = _get(exporter, accept)
    assert status == 200
    return parse_samples(body.decode())


def test_a_failing_collector_leaves_the_rest_of_the_scrape_served(
    exporter: Exporter, caplog: pytest.LogCaptureFixture
) -> None:
    breakable = Breakable()
    exporter.register_collector("breakable", breakable.collect)
    caplog.set_level(logging.INFO, logger="exporter.collectors.guard")
    exporter.start()
    wait_for(lambda: exporter.ready()[0], 30, message="exporter never connected to Redis")
    received = {"type": "task-received", "uuid": "u1", "name": "app.t", "hostname": "w@h",
                "timestamp": time.time()}  # fmt: skip
    exporter.primary.dispatcher.on_message(json.dumps(received).encode(), "application/json")

    for _ in range(3):
        samples = _text(exporter)
    assert value(samples, SUCCESS, collector="breakable") == 0.0
    for name in BUILT_IN:
        assert value(samples, SUCCESS, collector=name) == 1.0, name
        assert value(samples, DURATION, collector=name) is not None, name
    assert value(samples, "celery_exporter_broker_up") == 1.0
    assert total(samples, "celery_task_received_total") == 1.0
    assert value(samples, "celery_workers_online") == 0.0
    assert total(samples, "celery_exporter_build_info") == 1.0
    assert not any(name.startswith("test_breakable") for name, _ in samples)

    om = _text(exporter, OPENMETRICS)
    assert value(om, SUCCESS, collector="breakable") == 0.0
    assert value(om, SUCCESS, collector="tasks") == 1.0
    assert value(om, "celery_exporter_broker_up") == 1.0

    status, content_type, body = _get(exporter, PROTOBUF)
    assert (status, content_type.split(";")[0]) == (200, "application/vnd.google.protobuf")
    families = {family.name: family for family in decode(body)}
    success = {
        {lp.name: lp.value for lp in m.label}["collector"]: m.gauge.value
        for m in families[SUCCESS].metric
    }
    assert success == {"breakable": 0.0, **dict.fromkeys(BUILT_IN, 1.0)}
    assert "celery_exporter_broker_up" in families
    assert "celery_task_received_total" in families

    # Five scrapes of a failing collector: one error line, with its traceback.
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "collector breakable failed; its metrics are left out of /metrics until it "
        "recovers (celery_exporter_collector_success=0)"
    ]
    assert failures[0].exc_info is not None
    assert "deliberately broken" in caplog.text

    breakable.broken = False
    samples = _text(exporter)
    _text(exporter)
    assert value(samples, SUCCESS, collector="breakable") == 1.0
    assert value(samples, "test_breakable_ok") == 1.0
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "collector breakable recovered"
    ]


def test_a_built_in_collector_with_corrupt_state_fails_alone(exporter: Exporter) -> None:
    """The task collector, given a beat schedule entry it cannot read: the task families go,
    the worker, queue and exporter families stay."""
    exporter.primary.schedule = [None]  # type: ignore[list-item]
    exporter.start()
    samples = _text(exporter)
    assert value(samples, SUCCESS, collector="tasks") == 0.0
    for name in ("workers", "health", "queues"):
        assert value(samples, SUCCESS, collector=name) == 1.0, name
    assert not any(name.startswith("celery_task_") for name, _ in samples)
    assert value(samples, "celery_exporter_tracked_tasks") == 0.0
    assert total(samples, "celery_exporter_build_info") == 1.0


def test_a_process_wide_collector_fails_alone_without_an_outcome_gauge(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Registered process-wide (as build info and process_* are), a failing collector is
    left out and logged once, and adds no series without the ``broker`` label."""
    exporter = Exporter(
        Settings(broker_url=redis_url, brokers=(("red", redis_url),), reorder_window=0)
    )
    breakable = Breakable()
    exporter.register_collector("breakable", breakable.collect, process_wide=True)
    for _ in range(3):
        samples = registry_samples(exporter.registry)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "collector breakable failed; its metrics are left out of /metrics until it "
        "recovers (celery_exporter_collector_success=0)"
    ]
    assert {dict(labels).get("broker") for name, labels in samples if name == SUCCESS} == {"red"}
    assert total(samples, "celery_exporter_build_info") == 1.0


class _Unwritable(FastFamily):
    """A fast family (written at render time, after its collector returned) that raises."""

    def __init__(self) -> None:
        super().__init__("test_unwritable", "Raises when written.", "counter", self._fail)
        self.text = LabelText(())

    def _fail(self) -> list[str]:
        raise RuntimeError("deliberately unwritable")

    def proto_type(self) -> int:
        raise RuntimeError("deliberately unwritable")


def test_a_family_that_cannot_be_written_is_left_out_in_every_format(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = Exporter(Settings(broker_url="redis://127.0.0.1:1/0"))
    exporter.register_collector("unwritable", lambda: [_Unwritable()])
    for accept in ("", OPENMETRICS, OPENMETRICS):
        body, _ = render(exporter.registry, accept)
        samples = parse_samples(body.decode())
        assert b"test_unwritable" not in body
        assert total(samples, "celery_exporter_build_info") == 1.0
        assert value(samples, "celery_exporter_broker_up") == 0.0
    body, content_type = render(exporter.registry, PROTOBUF)
    assert content_type.startswith("application/vnd.google.protobuf")
    names = {family.name for family in decode(body)}
    assert "test_unwritable" not in names and "celery_exporter_broker_up" in names
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "writing metric family test_unwritable failed; it is left out of /metrics "
        "(a bug: please report)"
    ]
