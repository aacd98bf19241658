"""Faults survived, with real brokers, real workers and the real exporter process.

The exporter reaches the broker through a :class:`FaultProxy` the test controls; the workers
and the producer talk to the broker directly, so traffic goes on while only the exporter's
path is slow, hung or cut. Every scrape in these tests must answer within
``SCRAPE_TIMEOUT`` (a liveness bound: ``/metrics`` is built from memory and must never
wait on the broker), and each test asserts exact counts.
"""

from __future__ import annotations

import http.client
import json
import resource
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery.events.event import get_exchange
from kombu import Connection
from kombu import Producer as KombuProducer

from exporter.metrics.health import ExporterHealth
from tests.support.events import RawEventConsumer
from tests.support.exporter import ExporterProcess
from tests.support.faultproxy import FaultProxy
from tests.support.metrics import Samples, parse_samples, value
from tests.support.servers import RabbitMQServer, RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

# Generous: /metrics answers in milliseconds; 2 s means "it did not wait on the broker".
SCRAPE_TIMEOUT = 2.0


def scrape(exporter: ExporterProcess) -> Samples:
    """One scrape that must succeed within SCRAPE_TIMEOUT, whatever the broker does."""
    with urllib.request.urlopen(exporter.url + "/metrics", timeout=SCRAPE_TIMEOUT) as resp:
        assert resp.status == 200
        return parse_samples(resp.read().decode())


def metric(exporter: ExporterProcess, name: str, /, **labels: str) -> float:
    return value(scrape(exporter), name, **labels) or 0.0


def count(exporter: ExporterProcess, name: str, hostname: str) -> float:
    return metric(
        exporter, "celery_task_succeeded_total", name=name, hostname=hostname, queue_name="celery"
    )


def via(url: str, proxy: FaultProxy) -> str:
    """The same broker URL, through the proxy's port."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def broker_port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture
def proxy(broker_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(broker_port(broker_url)) as p:
        yield p


def source_of(url: str) -> str:
    return "redis" if url.startswith("redis") else "rabbitmq"


# -- the outage counter itself ------------------------------------------------------------------


def test_broker_down_seconds_accumulate_outages_only() -> None:
    now = [1000.0]
    health = ExporterHealth(clock=lambda: now[0])
    now[0] = 1002.0
    assert health.broker_down_seconds() == 2.0  # down from the start until connected
    health.set_broker_up(True, 1002.0)
    now[0] = 1010.0
    assert health.broker_down_seconds() == 2.0
    health.set_broker_up(False, 1010.0)
    health.set_broker_up(False, 1011.0)  # repeated "down" does not restart the outage
    now[0] = 1013.5
    assert health.broker_down_seconds() == 5.5  # the open outage counts as it goes
    health.set_broker_up(True, 1014.0)
    health.set_broker_up(True, 1015.0)
    now[0] = 1100.0
    assert health.broker_down_seconds() == 6.0


# -- slow and hung broker -------------------------------------------------------------------------


def test_slow_then_hung_broker(
    broker_url: str,
    proxy: FaultProxy,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    source = source_of(broker_url)
    exporter = exporter_factory(
        via(broker_url, proxy),
        "--event-watchdog", "3",
        "--reconnect-max-backoff", "1",
        "--sample-interval", "1",
        "--sample-timeout", "1",
    )  # fmt: skip
    worker = worker_factory(broker_url, "steady@test", heartbeat_interval=1)
    worker.wait_ready()
    exporter.wait_worker_queues("steady@test")
    producer = producer_factory(broker_url, send_sent_event=True)

    # Slow: every chunk waits 300 ms each way. Everything still arrives, scrapes stay fast.
    proxy.latency(0.3)
    for i in range(5):
        producer.send("tests.add", args=(i, i))
    wait_for(lambda: count(exporter, "tests.add", "steady@test") == 5, 30)
    s = scrape(exporter)
    assert value(s, "celery_exporter_broker_up") == 1
    assert value(s, "celery_exporter_broker_reconnects_total", reason="watchdog") == 0
    assert value(s, "celery_exporter_broker_reconnects_total", reason="error") == 0

    # Hung: connections accepted, nothing answered. The watchdog gives up on the silent
    # event connection, sampling hits its socket timeout; /metrics answers from memory.
    proxy.blackhole()
    wait_for(lambda: metric(exporter, "celery_exporter_broker_up") == 0, 30)
    wait_for(lambda: metric(exporter, "celery_exporter_source_up", source=source) == 0, 30)
    assert metric(exporter, "celery_exporter_broker_reconnects_total", reason="watchdog") == 1
    assert exporter.status("/readyz") == 503
    assert count(exporter, "tests.add", "steady@test") == 5
    # The exporter gives up on the silent connection (closing it is bounded by socket
    # timeouts) and its new attempts, accepted but never answered, time out and are counted.
    wait_for(
        lambda: metric(exporter, "celery_exporter_broker_connect_failures_total") >= 1,
        60,
        message=exporter.log,
    )

    # Traffic while hung: the worker publishes these events (a subscriber of the test's own,
    # on the broker directly, sees them); the exporter is not subscribed: they are lost.
    with RawEventConsumer(broker_url) as direct:
        lost = [producer.send("tests.sleep", args=(0,)) for _ in range(3)]
        direct.drain_until(
            lambda: all(direct.of_type("task-succeeded", uuid=u) for u in lost) or None,
            30,
        )
    down_before_resume = metric(exporter, "celery_exporter_broker_down_seconds_total")
    assert down_before_resume > 0

    proxy.resume()
    wait_for(lambda: exporter.status("/readyz") == 200, 30, message=exporter.log)
    wait_for(lambda: metric(exporter, "celery_exporter_source_up", source=source) == 1, 30)
    for i in range(4):
        producer.send("tests.add", args=(i, 100))
    wait_for(lambda: count(exporter, "tests.add", "steady@test") == 9, 30, message=exporter.log)
    s = scrape(exporter)
    assert value(s, "celery_exporter_broker_up") == 1
    assert value(s, "celery_task_succeeded_total", name="tests.sleep",
                 hostname="steady@test", queue_name="celery") is None  # fmt: skip
    assert value(s, "celery_exporter_broker_reconnects_total", reason="watchdog") == 1
    assert value(s, "celery_exporter_broker_reconnects_total", reason="error") == 0
    # The gap is on record and no longer grows.
    gap = value(s, "celery_exporter_broker_down_seconds_total") or 0.0
    assert gap >= down_before_resume
    assert metric(exporter, "celery_exporter_broker_down_seconds_total") == gap
    assert exporter.process.running
