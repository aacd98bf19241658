"""Broker variants users run: Sentinel, TLS (rediss:// and amqps://), a global key prefix."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.support.exporter import ExporterProcess
from tests.support.metrics import value
from tests.support.ports import free_port
from tests.support.processes import ManagedProcess
from tests.support.publish import publish_raw_events
from tests.support.servers import RabbitMQServer, RedisServer
from tests.support.tls import make_certificates
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer


def test_sentinel_broker(
    tmp_path: Path,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    master = RedisServer(tmp_path / "master")
    master.start()
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nprotected-mode no\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
    )
    sentinel = ManagedProcess(["redis-server", str(conf), "--sentinel"], tmp_path / "sentinel.log")
    sentinel.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=sentinel_port)
        wait_for(
            lambda: client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"),
            30,
            ignore=(redis.exceptions.ConnectionError,),
        )
        client.close()
        url = f"sentinel://127.0.0.1:{sentinel_port}/0"
        options = {"master_name": "mymaster"}
        exporter = exporter_factory(url, "--broker-transport-option", "master_name=mymaster")
        worker = worker_factory(
            url, "sentinel@test",
            extra_env={"TEST_BROKER_TRANSPORT_OPTIONS": json.dumps(options)},
        )  # fmt: skip
        worker.wait_ready()
        exporter.wait_worker_queues("sentinel@test")
        producer = producer_factory(url, broker_transport_options=options)
        for i in range(3):
            producer.send("tests.add", args=(i, i))
        wait_for(
            lambda: (
                value(
                    exporter.scrape(),
                    "celery_task_succeeded_total",
                    name="tests.add",
                    hostname="sentinel@test",
                    queue_name="celery",
                )
                == 3
            ),
            30,
        )
    finally:
        sentinel.stop()
        master.stop()


def test_rediss_with_certificate_verification(
    tmp_path: Path, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    ca, crt, key = make_certificates(tmp_path)
    port = free_port()
    server = ManagedProcess(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(crt), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--save", "",
         "--dir", str(tmp_path)],
        tmp_path / "redis-tls.log",
    )  # fmt: skip
    server.start()
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        ssl_args = ("--broker-ssl-option", "ssl_cert_reqs=required",
                    "--broker-ssl-option", f"ssl_ca_certs={ca}")  # fmt: skip
        exporter = exporter_factory(url, *ssl_args, wait_ready=False)
        wait_for(
            lambda: exporter.status("/readyz") == 200, 30, message=lambda: exporter.log()[-3000:]
        )
        publish_url = f"{url}?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        event = {
            "type": "worker-heartbeat",
            "hostname": "tls@test",
            "freq": 2.0,
            "active": 0,
            "processed": 0,
        }
        publish_raw_events(
            publish_url,
            [(json.dumps(event).encode(), "application/json")],
            routing_key="worker.heartbeat",
        )
        wait_for(lambda: value(exporter.scrape(), "celery_worker_up", hostname="tls@test") == 1, 30)
        # Verification is really on: a server certificate from another CA is refused.
        other_ca, _, _ = make_certificates(tmp_path / "other")
        distrustful = exporter_factory(
            url, "--broker-ssl-option", "ssl_cert_reqs=required",
            "--broker-ssl-option", f"ssl_ca_certs={other_ca}", wait_ready=False,
        )  # fmt: skip
        wait_for(lambda: "certificate verify failed" in distrustful.log(), 30)
        assert distrustful.status("/readyz") == 503
        assert value(distrustful.scrape(), "celery_exporter_broker_up") == 0
    finally:
        server.stop()


def _ssl_option_args(options: dict[str, object]) -> list[str]:
    args: list[str] = []
    for key, option in options.items():
        args += ["--broker-ssl-option", f"{key}={option}"]
    return args


@pytest.mark.rabbitmq
def test_amqps_with_certificate_verification(
    tmp_path: Path,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    tls = make_certificates(tmp_path / "certs")
    server = RabbitMQServer(tmp_path / "rabbitmq-tls", tls=tls)
    server.start()
    try:
        url = server.tls_url()
        # What kombu hands to py-amqp, which builds an ssl.SSLContext from it
        # (amqp/transport.py, SSLTransport._wrap_socket_sni): trust only our CA, require a
        # certificate (ssl.CERT_REQUIRED == 2), and check that it names 127.0.0.1.
        ssl_options: dict[str, object] = {
            "ca_certs": str(tls.cacert),
            "cert_reqs": int(ssl.CERT_REQUIRED),
            "server_hostname": "127.0.0.1",
        }
        exporter = exporter_factory(url, *_ssl_option_args(ssl_options), wait_ready=False)
        wait_for(
            lambda: exporter.status("/readyz") == 200, 30, message=lambda: exporter.log()[-3000:]
        )
        worker = worker_factory(
            url, "amqps@test", extra_env={"TEST_BROKER_USE_SSL": json.dumps(ssl_options)}
        )
        worker.wait_ready()
        exporter.wait_worker_queues("amqps@test")
        producer = producer_factory(url, broker_use_ssl=ssl_options)
        for i in range(3):
            producer.send("tests.add", args=(i, i))

        def succeeded() -> float | None:
            return value(
                exporter.scrape(),
                "celery_task_succeeded_total",
                name="tests.add",
                hostname="amqps@test",
                queue_name="celery",
            )

        wait_for(lambda: succeeded() == 3, 30, message=lambda: f"succeeded: {succeeded()}")
        assert value(exporter.scrape(), "celery_exporter_broker_up") == 1

        # Verification is really on: the same options with another CA are refused, and the
        # exporter keeps retrying (and failing) rather than falling back to an unverified
        # connection.
        other = make_certificates(tmp_path / "other")
        distrustful = exporter_factory(
            url,
            *_ssl_option_args({**ssl_options, "ca_certs": str(other.cacert)}),
            "--reconnect-max-backoff", "1",
            wait_ready=False,
        )  # fmt: skip
        wait_for(
            lambda: (
                (value(distrustful.scrape(), "celery_exporter_broker_connect_failures_total") or 0)
                >= 2
            ),
            30,
            message=lambda: distrustful.log()[-3000:],
        )
        assert "certificate verify failed" in distrustful.log()
        assert distrustful.status("/readyz") == 503
        assert value(distrustful.scrape(), "celery_exporter_broker_up") == 0
    finally:
        server.stop()


def test_transport_options_must_match_the_workers(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    options = {"global_keyprefix": "prod:"}
    matching = exporter_factory(redis_url, "--broker-transport-option", "global_keyprefix=prod:")
    mismatched = exporter_factory(redis_url)
    worker = worker_factory(
        redis_url, "prefixed@test",
        extra_env={"TEST_BROKER_TRANSPORT_OPTIONS": json.dumps(options)},
    )  # fmt: skip
    worker.wait_ready()
    matching.wait_worker_queues("prefixed@test")
    producer = producer_factory(redis_url, broker_transport_options=options)
    for i in range(2):
        producer.send("tests.add", args=(i, i))
    wait_for(
        lambda: (
            value(
                matching.scrape(),
                "celery_task_succeeded_total",
                name="tests.add",
                hostname="prefixed@test",
                queue_name="celery",
            )
            == 2
        ),
        30,
    )
    # Same broker, no prefix: the exporter subscribes to other channels and sees nothing.
    s = mismatched.scrape()
    assert value(s, "celery_worker_up", hostname="prefixed@test") is None
    assert not [k for k in s if k[0] == "celery_task_succeeded_total"]
