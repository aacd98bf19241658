"""Faults survived, with real brokers, real workers and the real exporter process.

The exporter reaches the broker through a :class:`FaultProxy` the test controls; the workers
and the producer talk to the broker directly, so traffic goes on while only the exporter's
path is slow, hung or cut. Every scrape in these tests must answer within
``SCRAPE_TIMEOUT`` (a liveness bound: ``/metrics`` is built from memory and must never
wait on the broker), and each test asserts exact counts.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from exporter.collectors.health import ExporterHealth
from tests.support.events import RawEventConsumer
from tests.support.exporter import ExporterProcess
from tests.support.faultproxy import FaultProxy
from tests.support.metrics import Samples, parse_samples, total, value
from tests.support.publish import publish_raw_events
from tests.support.servers import RedisServer
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


RECONNECTS = "celery_exporter_broker_reconnects_total"


# -- the outage counter itself ------------------------------------------------------------------


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


def test_hung_broker_is_down_from_its_last_event_and_each_attempt_keeps_its_timeout(
    redis_url: str, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """A broker that hangs (accepts, never answers) is an outage from the last event that
    arrived, not from the watchdog's verdict; the first reconnect attempt after it takes its
    socket timeout (5 s), not also the close of the lost connection."""
    proxy = FaultProxy(broker_port(redis_url)).start()
    exporter = exporter_factory(
        via(redis_url, proxy), "--event-watchdog", "3", "--reconnect-max-backoff", "1"
    )
    stop = threading.Event()

    def heartbeats() -> None:  # a worker's heartbeats, on the broker directly
        while not stop.is_set():
            beat = {"type": "worker-heartbeat", "hostname": "beat@h", "freq": 1.0,
                    "timestamp": time.time()}  # fmt: skip
            publish_raw_events(redis_url, [(json.dumps(beat).encode(), "application/json")],
                               routing_key="worker.heartbeat")  # fmt: skip
            stop.wait(0.5)

    thread = threading.Thread(target=heartbeats, daemon=True)
    thread.start()
    try:
        wait_for(lambda: metric(exporter, "celery_worker_up", hostname="beat@h") == 1, 20)
        hung_at = time.time()
        proxy.blackhole()
        wait_for(lambda: metric(exporter, "celery_exporter_broker_up") == 0, 30)
        noticed = time.monotonic()
        failures = "celery_exporter_broker_connect_failures_total"
        wait_for(lambda: metric(exporter, failures) >= 1, 30, message=exporter.log)
        # 5 s socket timeout + at most 1 s of backoff (+1.5 s for a busy machine); closing
        # the lost connection used to come first and add another 5 s.
        assert time.monotonic() - noticed <= 7.5
        asked = time.time()
        down = metric(exporter, "celery_exporter_broker_down_seconds_total")
        # The last heartbeat arrived before the hang (0.25 s for one in flight).
        assert down >= asked - hung_at - 0.25
    finally:
        stop.set()
        thread.join(5)
        proxy.close()


# -- broker cut for longer than the backoff cap ---------------------------------------------------


def test_cut_longer_than_backoff_cap_then_back(
    broker_url: str,
    proxy: FaultProxy,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    source = source_of(broker_url)
    exporter = exporter_factory(
        via(broker_url, proxy), "--reconnect-max-backoff", "1", "--sample-interval", "1"
    )
    worker = worker_factory(broker_url, "steady@test", heartbeat_interval=1)
    worker.wait_ready()
    exporter.wait_worker_queues("steady@test")
    producer = producer_factory(broker_url, send_sent_event=True)
    for i in range(3):
        producer.send("tests.add", args=(i, i))
    wait_for(lambda: count(exporter, "tests.add", "steady@test") == 3, 30)
    s = scrape(exporter)
    assert value(s, "celery_exporter_broker_connect_failures_total") == 0
    gap_before = value(s, "celery_exporter_broker_down_seconds_total") or 0.0
    scraped_before = time.monotonic()

    proxy.cut()  # connections reset, new ones refused
    wait_for(lambda: metric(exporter, "celery_exporter_broker_up") == 0, 30)
    seen_down = time.monotonic()
    assert metric(exporter, "celery_exporter_broker_reconnects_total", reason="error") == 1
    # Longer than the backoff cap (1 s): attempts go on at the cap, each one counted.
    wait_for(lambda: metric(exporter, "celery_exporter_broker_connect_failures_total") >= 4, 30)
    wait_for(lambda: metric(exporter, "celery_exporter_source_up", source=source) == 0, 30)
    assert exporter.status("/readyz") == 503
    # The status page says so in diagnose's plain words, from memory (the broker is not
    # asked), and keeps the last known workers in view.
    status, page = exporter.get("/")
    assert status == 200
    assert '<span class="verdict critical">UNREACHABLE</span>' in page
    assert "the broker is unreachable" in page and "(connection refused)" in page
    assert "<code>steady@test</code>" in page
    # Sent during the cut: the exporter has no subscription (Redis) and its exclusive
    # queue went with its connection (RabbitMQ): these are lost, and only the gap says so.
    with RawEventConsumer(broker_url) as direct:
        lost = [producer.send("tests.sleep", args=(0,)) for _ in range(2)]
        direct.drain_until(
            lambda: all(direct.of_type("task-succeeded", uuid=u) for u in lost) or None, 30
        )
    failures = metric(exporter, "celery_exporter_broker_connect_failures_total")
    resumed = time.monotonic()
    proxy.resume()
    wait_for(lambda: exporter.status("/readyz") == 200, 30, message=exporter.log)
    for i in range(4):
        producer.send("tests.add", args=(i, 7))
    wait_for(lambda: count(exporter, "tests.add", "steady@test") == 7, 30, message=exporter.log)
    wait_for(lambda: metric(exporter, "celery_exporter_source_up", source=source) == 1, 30)
    s = scrape(exporter)
    scraped_after = time.monotonic()
    assert value(s, "celery_exporter_broker_up") == 1
    assert value(s, "celery_exporter_broker_reconnects_total", reason="error") == 1
    assert value(s, "celery_exporter_broker_reconnects_total", reason="watchdog") == 0
    assert (value(s, "celery_exporter_broker_connect_failures_total") or 0) >= failures
    assert value(s, "celery_task_succeeded_total", name="tests.sleep",
                 hostname="steady@test", queue_name="celery") is None  # fmt: skip
    # The gap: at least the time the test saw the exporter down before resuming, at most
    # the time between the two scrapes around the outage.
    gap = (value(s, "celery_exporter_broker_down_seconds_total") or 0.0) - gap_before
    assert resumed - seen_down <= gap <= scraped_after - scraped_before
    assert exporter.process.running


# -- a flood faster than the exporter can take ----------------------------------------------------


def flood_events(
    name: str, tasks: int, hostname: str = "flood@test", padding: int = 0
) -> list[list[dict[str, Any]]]:
    """Batches of 24 events (as prefork workers send them: task.multi), stamped now.

    ``padding`` characters of task arguments make each task-received that much bigger.
    """
    events: list[dict[str, Any]] = []
    now = time.time()
    for i in range(tasks):
        task_id = f"{name}-{i}-{uuid.uuid4().hex}"
        common = {"uuid": task_id, "hostname": hostname, "timestamp": now, "pid": 1}
        events += [
            {**common, "type": "task-received", "name": name, "kwargs": "x" * padding},
            {**common, "type": "task-started"},
            {**common, "type": "task-succeeded", "runtime": 0.001, "result": "None"},
        ]
    return [events[i : i + 24] for i in range(0, len(events), 24)]


def publish_batches(broker_url: str, batches: list[list[dict[str, Any]]]) -> None:
    publish_raw_events(
        broker_url, [(json.dumps(batch).encode(), "application/json") for batch in batches]
    )


def succeeded_total(samples: Samples, name: str) -> float:
    return total(samples, "celery_task_succeeded_total", name=name)


# The container limit the README recommends: idle is about 45 MiB, a flood being caught up
# peaks at 100-150 MiB (bench/RESULTS.md). Past 256 MiB the pod would be OOM-killed.
MEMORY_BOUND_BYTES = 256 * 1024 * 1024


def test_flood_lag_rises_memory_stays_bounded_counts_exact(
    redis_server: RedisServer,
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    # The exporter's link carries at most 4 KiB per 50 ms (80 KiB/s): 1,200 tasks (3,600
    # events, about 1 MB) published in a moment take seconds to get through. Redis holds the
    # rest in the subscriber's output buffer (under its 32 MB pub/sub limit).
    with FaultProxy(redis_server.port, chunk_size=4096) as proxy:
        exporter = exporter_factory(via(redis_url, proxy))
        proxy.latency(0.05)
        tasks = 1200
        publish_batches(redis_url, flood_events("flood.task", tasks))
        lags: list[float] = []
        rss: list[float] = []

        def caught_up() -> bool:
            s = scrape(exporter)
            lag = value(s, "celery_exporter_event_lag_seconds")
            if lag is not None:
                lags.append(lag)
            rss.append(value(s, "process_resident_memory_bytes") or 0.0)
            return succeeded_total(s, "flood.task") == tasks

        wait_for(caught_up, 60, interval=0.2, message=lambda: f"lags {lags[-5:]}")
        s = scrape(exporter)
    # Lag rose (the last events waited seconds in the broker's buffer) and was reported.
    assert max(lags) >= 1.0, lags
    assert max(rss) < MEMORY_BOUND_BYTES, max(rss)
    # Nothing lost, nothing counted twice.
    assert total(s, "celery_exporter_events_total", type="task-succeeded") == tasks
    assert total(s, "celery_exporter_events_total", type="task-received") == tasks
    assert value(s, "celery_exporter_broker_reconnects_total", reason="error") == 0
    assert total(s, "celery_exporter_events_skipped_total") == 0


def test_flood_past_redis_output_buffer_limit_is_a_counted_reconnect(
    tmp_path: Path, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    # Redis closes a subscriber whose pending output passes its pub/sub limit (32 MB by
    # default; 256 KiB here, so that a flood of a few MB is enough once the socket buffers
    # are full). Events are lost; the exporter must say so (a reconnect with its reason)
    # and count exactly again afterwards.
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    try:
        with server.client() as client:
            client.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")
        url = server.url(0)
        with FaultProxy(server.port, chunk_size=4096, upstream_rcvbuf=4096) as proxy:
            exporter = exporter_factory(via(url, proxy), "--reconnect-max-backoff", "1")
            proxy.latency(0.05)
            tasks = 2000  # about 10 MB with the padding: more than the kernel buffers hold
            publish_batches(url, flood_events("flood.task", tasks, padding=4096))
            wait_for(
                lambda: "overcoming of output buffer limits" in server.log_path.read_text(),
                30,
                message="Redis did not close the slow subscriber",
            )
            # The link is fast again: what the kernel still held arrives, then the close.
            proxy.pass_through()
            wait_for(
                lambda: metric(exporter, RECONNECTS, reason="error") >= 1, 60, message=exporter.log
            )
            assert "lost the broker connection" in exporter.log()
            wait_for(lambda: exporter.status("/readyz") == 200, 30)
            # What Redis dropped is gone for good: fewer than sent were counted.
            assert succeeded_total(scrape(exporter), "flood.task") < tasks
            publish_batches(url, flood_events("after.flood", 10))
            wait_for(lambda: succeeded_total(scrape(exporter), "after.flood") == 10, 30)
            assert metric(exporter, RECONNECTS, reason="error") == 1
            assert exporter.process.running
    finally:
        server.stop()


# -- SIGTERM during a scrape ----------------------------------------------------------------------


def test_sigterm_during_a_slow_scrape_exits_cleanly(
    redis_url: str, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    exporter = exporter_factory(redis_url)
    # Many task names: /metrics becomes megabytes (a histogram per name), more than the
    # socket buffers hold, so the response is still being written when SIGTERM comes.
    names = 400
    batches: list[list[dict[str, Any]]] = []
    for n in range(names):
        batches += flood_events(f"big.metrics.task.{n:04d}", 1)
    publish_batches(redis_url, batches)
    wait_for(lambda: total(scrape(exporter), "celery_task_succeeded_total") == names, 30)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10.0)  # a hang fails the test instead of blocking it
    sock.connect(("127.0.0.1", exporter.port))
    received = bytearray()
    try:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
        while b"\r\n\r\n" not in received:  # a slow client: byte by byte
            chunk = sock.recv(1)
            assert chunk, "connection closed before the headers"
            received += chunk
        exporter.process.send_signal(signal.SIGTERM)
        assert exporter.process.wait(5.0), exporter.log()
        assert exporter.process.returncode == 0
        while True:  # the rest: whatever was sent, then EOF (or a reset), never a hang
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    assert length > 1_000_000  # the response really was bigger than the buffers
    # Complete, or cut: never more, never garbage in what arrived.
    assert len(body) <= length
    assert body.startswith(b"# HELP ")
    if len(body) == length:
        assert total(parse_samples(body.decode()), "celery_task_succeeded_total") == names
    assert "stopped" in exporter.log()


# -- a failed attempt tells its own error ---------------------------------------------------------


def test_a_failed_attempt_reports_its_own_error_not_one_from_cancelling(
    redis_url: str, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that never starts consuming (here: a Redis user not allowed to subscribe,
    so the subscription is never confirmed) is closed without cancelling its consumer: on a
    broken connection cancel() can raise something else, which then replaced the error the
    status page explains, or block for the socket timeout."""
    import kombu
    import redis

    from exporter.brokers.app import make_app
    from exporter.events.consumer import EventConsumer
    from exporter.settings import Settings

    user = f"nosub{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-psubscribe", "-subscribe"
    )
    cancels: list[float] = []

    def cancel(self: kombu.Consumer) -> None:  # the second fault: a broken connection's
        cancels.append(time.monotonic())
        raise RuntimeError("cancel on a broken connection")

    monkeypatch.setattr(kombu.Consumer, "cancel", cancel)
    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(netloc=f"{user}:pw@{parts.hostname}:{parts.port}"))
    settings = Settings(broker_url=url)
    health = ExporterHealth(time.time)
    consumer = EventConsumer(make_app(settings), settings, lambda *a: None, health, time.time)
    consumer.start()
    try:
        wait_for(lambda: health.connect_failures.values[()] >= 1, 20)
    finally:
        consumer.stop(timeout=10)
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()
    assert health.broker_error is not None
    assert "did not confirm the event subscription" in health.broker_error[1]
    assert cancels == []
