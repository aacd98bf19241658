"""One exporter process watching several brokers: two real Redis servers and a RabbitMQ
virtual host, each with its own worker. Every series carries ``broker``; one broker's
outage leaves the others' counting and health untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, total, value
from tests.support.promql import NOT_PER_BROKER
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

HOST = "same@host"  # the same worker name on every broker: only the label tells them apart
SENT = {"red": 2, "blue": 3, "rabbit": 4}


def brokers_sampling(samples: Samples, queue: str) -> set[str]:
    return {
        dict(labels)["broker"]
        for (name, labels), _ in samples.items()
        if name == "celery_queue_messages" and dict(labels)["queue_name"] == queue
    }


def test_several_brokers_from_one_process_and_an_outage_of_one(
    tmp_path: Path,
    redis_url: str,
    rabbitmq_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    blue_server = RedisServer(tmp_path / "blue")
    blue_server.start()
    try:
        urls = {"red": redis_url, "blue": blue_server.url(1), "rabbit": rabbitmq_url}
        exporter = exporter_factory(
            f"red={urls['red']}",
            "--broker-url", f"blue={urls['blue']}",
            "--broker-url", f"rabbit={urls['rabbit']}",
            "--queues", "red:reports,celery",
            "--sample-interval", "0.5",
            "--reconnect-max-backoff", "1",
        )  # fmt: skip
        workers = {
            name: worker_factory(url, HOST, queues=("celery",), pool="solo")
            for name, url in urls.items()
        }
        for worker in workers.values():
            worker.wait_ready()
        producers = {name: producer_factory(url) for name, url in urls.items()}
        for name, count in SENT.items():
            for i in range(count):
                producers[name].send("tests.add", args=(i, i))

        def succeeded(s: Samples, broker: str) -> float:
            return total(s, "celery_task_succeeded_total", broker=broker, hostname=HOST)

        def all_counted() -> Samples | None:
            s = exporter.scrape()
            return s if all(succeeded(s, b) == n for b, n in SENT.items()) else None

        s = wait_for(all_counted, 60, interval=0.25, message=lambda: exporter.log()[-3000:])
        for broker in SENT:
            assert value(s, "celery_exporter_broker_up", broker=broker) == 1
            assert value(s, "celery_worker_up", broker=broker, hostname=HOST) == 1
            assert value(s, "celery_workers_online", broker=broker) == 1
        # No series without the label but the per-process ones (build info, the HTTP
        # server's, the web config's, process metrics).
        for (name, labels), _ in s.items():
            if name.startswith("celery_") and not name.startswith(NOT_PER_BROKER):
                assert "broker" in dict(labels), name
        # Scoped --queues: `reports` is watched on red only; `celery` on every broker.
        wait_for(
            lambda: value(exporter.scrape(), "celery_queue_messages", broker="red",
                          queue_name="reports") == 0,
            30,
        )  # fmt: skip
        s = exporter.scrape()
        assert brokers_sampling(s, "reports") == {"red"}
        assert brokers_sampling(s, "celery") == set(SENT)

        # Blue's broker goes away: only blue's health says so.
        blue_server.stop()
        wait_for(
            lambda: value(exporter.scrape(), "celery_exporter_broker_up", broker="blue") == 0, 30
        )
        assert exporter.status("/readyz") == 503
        assert "blue" in exporter.get("/readyz")[1]
        for name in ("red", "rabbit"):
            producers[name].send("tests.add", args=(1, 1))

        def others_counted() -> Samples | None:
            s = exporter.scrape()
            ok = (
                succeeded(s, "red") == SENT["red"] + 1
                and succeeded(s, "rabbit") == SENT["rabbit"] + 1
            )
            return s if ok else None

        s = wait_for(others_counted, 60, interval=0.25, message=lambda: exporter.log()[-3000:])
        assert value(s, "celery_exporter_broker_up", broker="red") == 1
        assert value(s, "celery_exporter_broker_up", broker="rabbit") == 1
        assert value(s, "celery_exporter_source_up", broker="red", source="redis") == 1
        assert value(s, "celery_exporter_source_up", broker="rabbit", source="rabbitmq") == 1
        assert succeeded(s, "blue") == SENT["blue"]  # kept, not reset
        # The status page names every broker, credentials masked.
        landing = exporter.get("/")[1]
        for name in SENT:
            assert f"<h2>Broker <code>{name}</code> " in landing
        assert "guest:guest" not in landing
    finally:
        blue_server.stop()
