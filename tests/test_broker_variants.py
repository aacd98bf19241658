"""Redis variants users run: Sentinel, TLS (rediss://), and a global key prefix."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import redis

from tests.support.exporter import ExporterProcess
from tests.support.metrics import value
from tests.support.ports import free_port
from tests.support.processes import ManagedProcess
from tests.support.publish import publish_raw_events
from tests.support.servers import RedisServer
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


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    return ca_crt, crt, key


def test_rediss_with_certificate_verification(
    tmp_path: Path, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    ca, crt, key = _make_certificates(tmp_path)
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
        other_ca, _, _ = _make_certificates(tmp_path / "other")
        distrustful = exporter_factory(
            url, "--broker-ssl-option", "ssl_cert_reqs=required",
            "--broker-ssl-option", f"ssl_ca_certs={other_ca}", wait_ready=False,
        )  # fmt: skip
        wait_for(lambda: "certificate verify failed" in distrustful.log(), 30)
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
