"""The daemon survives what production throws at it: broker outages, garbage on the event
exchange, signals; and it never shows credentials."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, value
from tests.support.ports import free_port
from tests.support.publish import publish_raw_events
from tests.support.servers import RabbitMQServer, RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer


def succeeded_in(samples: Samples, hostname: str) -> float:
    return (
        value(
            samples,
            "celery_task_succeeded_total",
            name="tests.add",
            hostname=hostname,
            queue_name="celery",
        )
        or 0.0
    )


def succeeded(exporter: ExporterProcess, hostname: str) -> float:
    return succeeded_in(exporter.scrape(), hostname)


def heartbeat_since(exporter: ExporterProcess, hostname: str, since: float) -> bool:
    """The worker is up, with a heartbeat that reached the exporter after ``since``."""
    s = exporter.scrape()
    last = value(s, "celery_worker_last_heartbeat_timestamp_seconds", hostname=hostname)
    up = value(s, "celery_worker_up", hostname=hostname)
    return up == 1 and last is not None and last > since


def assert_outage_reported(exporter: ExporterProcess, source: str) -> None:
    """While the broker is down: /metrics answers from memory with the counts kept and the
    broker down, /readyz fails, /healthz does not, sampling says it fails, retries go on."""
    s = wait_for(
        lambda: (lambda s: s if value(s, "celery_exporter_broker_up") == 0 else None)(
            exporter.scrape()
        ),
        30,
    )
    assert succeeded_in(s, "steady@test") == 5
    assert exporter.status("/readyz") == 503
    assert exporter.status("/healthz") == 200
    wait_for(lambda: value(exporter.scrape(), "celery_exporter_source_up", source=source) == 0, 30)
    errors = value(exporter.scrape(), "celery_exporter_source_errors_total", source=source)
    assert (errors or 0) >= 1
    wait_for(
        lambda: (
            (value(exporter.scrape(), "celery_exporter_broker_connect_failures_total") or 0) >= 2
        ),
        30,
        message="exporter did not keep retrying",
    )
    # The gap is measured as it goes: the seconds without a broker grow during the outage.
    gap = value(exporter.scrape(), "celery_exporter_broker_down_seconds_total") or 0.0
    assert gap > 0
    wait_for(
        lambda: (value(exporter.scrape(), "celery_exporter_broker_down_seconds_total") or 0) > gap,
        10,
    )


def assert_gap_closed(exporter: ExporterProcess) -> None:
    """After the outage: the gap is on record and no longer grows."""
    gap = value(exporter.scrape(), "celery_exporter_broker_down_seconds_total")
    assert gap is not None and gap > 0
    assert value(exporter.scrape(), "celery_exporter_broker_down_seconds_total") == gap


def own_broker(kind: str, workdir: Path) -> tuple[RedisServer | RabbitMQServer, str]:
    """A broker of the test's own, which it stops and starts again on the same port. RabbitMQ:
    on the default vhost, since stop() takes the whole node down, and the restarted node
    finds vhost "/" (and the durable "celery" queue) in its data directory."""
    if kind == "redis":
        redis = RedisServer(workdir / "own-redis")
        redis.start()
        return redis, redis.url(0)
    rabbitmq = RabbitMQServer(workdir / "own-rabbitmq")
    rabbitmq.start()
    return rabbitmq, rabbitmq.url("/")


@pytest.mark.parametrize("kind", ["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_outage_is_reported_and_counting_resumes(
    kind: str,
    tmp_path: Path,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    server, url = own_broker(kind, tmp_path)
    try:
        exporter = exporter_factory(url, "--reconnect-max-backoff", "1")
        worker = worker_factory(url, "steady@test")
        worker.wait_ready()
        exporter.wait_worker_queues("steady@test")
        producer = producer_factory(url, send_sent_event=True)
        for i in range(5):
            producer.send("tests.add", args=(i, i))
        wait_for(lambda: succeeded(exporter, "steady@test") == 5, 30)
        # Traffic while the broker goes away: a task is running when the broker drops its
        # connections, and ends during the outage (when the test creates its file). A solo
        # worker publishes a task's events only once it finished, so its log says when the
        # task began. Whether its events get through after the outage is up to Celery, so it
        # has another name and stays out of the tests.add counts.
        gate = tmp_path / "end-the-running-task"
        running = producer.send("tests.wait_for_file", args=(str(gate),))
        wait_for(
            lambda: f"tests.wait_for_file[{running}] received" in worker.log_text(),
            30,
            message=lambda: worker.log_text()[-3000:],
        )

        server.stop()  # Redis, or the whole RabbitMQ node: every client connection reset
        assert_outage_reported(exporter, kind)
        gate.touch()
        wait_for(
            lambda: f"tests.wait_for_file[{running}] succeeded" in worker.log_text(),
            30,
            message=lambda: worker.log_text()[-3000:],
        )

        server.start()  # same port (RabbitMQ: same data directory)
        back_at = time.time()
        wait_for(lambda: exporter.status("/readyz") == 200, 30, message=lambda: exporter.log())
        # The worker reconnects on its own (Celery retries every few seconds). It may still
        # show as up from before the outage, so wait for a heartbeat that reached the
        # exporter through the restarted broker (stamped on the exporter's clock: this host's).
        wait_for(
            lambda: heartbeat_since(exporter, "steady@test", back_at),
            60,
            message=lambda: "worker did not come back:\n" + worker.log_text()[-3000:],
        )
        # New tasks are counted on top of the old ones.
        for i in range(3):
            producer.send("tests.add", args=(i, 10))
        wait_for(
            lambda: succeeded(exporter, "steady@test") == 8,
            60,
            message=lambda: exporter.log()[-3000:],
        )
        s = exporter.scrape()
        assert value(s, "celery_exporter_broker_up") == 1
        assert value(s, "celery_exporter_broker_reconnects_total", reason="error") == 1
        assert exporter.process.running
        assert_gap_closed(exporter)
        wait_for(
            lambda: value(exporter.scrape(), "celery_exporter_source_up", source=kind) == 1,
            30,
        )
    finally:
        server.stop()


def test_exporter_starts_without_a_broker_and_connects_when_it_appears(
    tmp_path: Path, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    server = RedisServer(tmp_path / "late-redis", port=free_port())
    exporter = exporter_factory(server.url(0), "--reconnect-max-backoff", "1", wait_ready=False)
    try:
        s = exporter.scrape()
        assert value(s, "celery_exporter_broker_up") == 0
        assert exporter.status("/readyz") == 503
        server.start()
        wait_for(lambda: exporter.status("/readyz") == 200, 30)
        assert value(exporter.scrape(), "celery_exporter_broker_up") == 1
    finally:
        server.stop()


def test_garbage_on_the_event_exchange_is_counted_and_skipped(
    broker_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(broker_url)
    worker = worker_factory(broker_url, "honest@test")
    worker.wait_ready()
    exporter.wait_worker_queues("honest@test")
    wait_for(lambda: value(exporter.scrape(), "celery_worker_up", hostname="honest@test") == 1, 30)
    junk = [
        (b"{not json", "application/json"),
        (b'"a string"', "application/json"),
        (b"\x80\x81binary", "application/octet-stream"),
        (
            json.dumps(
                [
                    {"type": "task-exploded", "uuid": "x"},
                    42,
                    {"no": "type"},
                    {"type": "task-started", "uuid": ["not", "a", "string"]},
                ]
            ).encode(),
            "application/json",
        ),
        (
            json.dumps(
                {
                    "type": "task-received",
                    "uuid": "huge",
                    "name": "x" * 2_000_000,
                    "hostname": "honest@test",
                }
            ).encode(),
            "application/json",
        ),
    ]
    publish_raw_events(broker_url, junk)
    producer = producer_factory(broker_url, send_sent_event=True)
    for i in range(4):
        producer.send("tests.add", args=(i, i))

    def skipped() -> dict[str, float]:
        return {
            dict(ls)["reason"]: v
            for (n, ls), v in exporter.scrape().items()
            if n == "celery_exporter_events_skipped_total"
        }

    wait_for(
        lambda: succeeded(exporter, "honest@test") == 4 and sum(skipped().values()) == 7,
        30,
        message=lambda: f"{skipped()} {exporter.log()[-2000:]}",
    )
    assert skipped() == {
        "not_json": 1,
        "not_object": 2,
        "content_type": 1,
        "unknown_type": 1,
        "missing_type": 1,
        "bad_uuid": 1,
    }
    s = exporter.scrape()
    long_names = [
        dict(ls)["name"]
        for (n, ls) in s
        if n == "celery_task_received_total" and dict(ls)["name"].startswith("xxx")
    ]
    assert [len(n) for n in long_names] == [200]
    assert exporter.process.running
    assert value(s, "celery_exporter_broker_up") == 1


def test_sigterm_stops_within_two_seconds(
    redis_url: str, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    exporter = exporter_factory(redis_url)
    exporter.scrape()
    elapsed = exporter.terminate()
    assert elapsed < 2.0
    assert exporter.process.returncode == 0


def test_credentials_never_shown(
    tmp_path: Path, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    # Nothing listens there: the connection errors must be redacted too.
    url = f"redis://:Sup3rS3cret@127.0.0.1:{free_port()}/0"
    exporter = exporter_factory(
        url, "--reconnect-max-backoff", "1", wait_ready=False, broker_url_in_env=True
    )
    wait_for(lambda: "cannot reach the broker" in exporter.log(), 30)
    status, landing = exporter.get("/")
    assert status == 200
    assert "redis://:***@127.0.0.1" in landing
    assert "celery-metrics-exporter" in landing and "/metrics" in landing
    _, metrics = exporter.get("/metrics")
    _, ready = exporter.get("/readyz")
    exporter.terminate()
    for text in (landing, metrics, ready, exporter.log()):
        assert "Sup3rS3cret" not in text


def test_pubsub_connection_killed_by_redis_is_detected_and_reconnected(
    redis_server: RedisServer,
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    # What Redis does to a slow subscriber at its output buffer limit: close the connection.
    exporter = exporter_factory(redis_url)
    worker = worker_factory(redis_url, "busy@test")
    worker.wait_ready()
    exporter.wait_worker_queues("busy@test")
    producer = producer_factory(redis_url, send_sent_event=True)
    producer.send("tests.add", args=(1, 1))
    wait_for(lambda: succeeded(exporter, "busy@test") == 1, 30)
    with redis_server.client() as client:
        # Only the exporter's subscription (it names its connections), not the worker's.
        ours = [
            c for c in client.client_list(_type="pubsub") if c["name"] == "celery-metrics-exporter"
        ]
        assert len(ours) == 1
        client.client_kill_filter(_id=ours[0]["id"])
    wait_for(
        lambda: (
            (
                value(exporter.scrape(), "celery_exporter_broker_reconnects_total", reason="error")
                or 0
            )
            >= 1
        ),
        30,
    )
    wait_for(lambda: exporter.status("/readyz") == 200, 30)
    producer.send("tests.add", args=(2, 2))
    wait_for(lambda: succeeded(exporter, "busy@test") == 2, 30)


def test_silent_connection_trips_the_watchdog(
    redis_server: RedisServer,
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
) -> None:
    exporter = exporter_factory(redis_url, "--event-watchdog", "3")
    worker = worker_factory(redis_url, "ticker@test", heartbeat_interval=1)
    worker.wait_ready()
    wait_for(lambda: value(exporter.scrape(), "celery_worker_up", hostname="ticker@test") == 1, 30)
    # Freeze every client (the worker's heartbeats included) for longer than the watchdog:
    # the subscription stays open but carries nothing, as a half-open connection would.
    with redis_server.client() as client:
        client.execute_command("CLIENT", "PAUSE", "8000", "ALL")
    wait_for(
        lambda: (
            (
                value(
                    exporter.scrape(), "celery_exporter_broker_reconnects_total", reason="watchdog"
                )
                or 0
            )
            >= 1
        ),
        30,
    )
    assert "reconnecting" in exporter.log()
    # Once the pause ends the exporter is back and heartbeats arrive again.
    wait_for(lambda: exporter.status("/readyz") == 200, 30)
    before = value(exporter.scrape(), "celery_exporter_events_total", type="worker-heartbeat")
    wait_for(
        lambda: (
            (value(exporter.scrape(), "celery_exporter_events_total", type="worker-heartbeat") or 0)
            > (before or 0)
        ),
        30,
    )


def test_json_log_lines(exporter_factory: Callable[..., ExporterProcess]) -> None:
    url = f"amqp://user:pw-in-json@127.0.0.1:{free_port()}//"
    exporter = exporter_factory(
        url, "--log-format", "json", "--reconnect-max-backoff", "1",
        wait_ready=False, broker_url_in_env=True,
    )  # fmt: skip
    wait_for(lambda: "cannot reach the broker" in exporter.log(), 30)
    exporter.terminate()
    lines = [line for line in exporter.log().splitlines() if line and not line.startswith("=")]
    entries = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "msg"} <= set(entries[0])
    assert any(e["level"] == "error" and "cannot reach the broker" in e["msg"] for e in entries)
    assert entries[-1]["msg"] == "stopped"
    assert "pw-in-json" not in exporter.log()
