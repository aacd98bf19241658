"""Misconfiguration found at runtime (wrong password, nothing listening): the daemon keeps
serving, says so in metrics, logs one clear line per outage, and never shows the password."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.exporter import ExporterProcess
from tests.support.metrics import value
from tests.support.ports import free_port
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for

WRONG = "n0t-the-Passw0rd"


def _assert_reported(exporter: ExporterProcess, source: str, reason: str) -> None:
    def failed_twice() -> bool:
        s = exporter.scrape()
        return (value(s, "celery_exporter_broker_connect_failures_total") or 0) >= 2 and (
            value(s, "celery_exporter_source_errors_total", source=source) or 0
        ) >= 1

    wait_for(failed_twice, 30, interval=0.2, message=lambda: exporter.log()[-3000:])
    s = exporter.scrape()
    assert value(s, "celery_exporter_broker_up") == 0
    assert value(s, "celery_exporter_source_up", source=source) == 0
    assert exporter.status("/healthz") == 200
    assert exporter.status("/readyz") == 503
    log = exporter.log()
    lines = [line for line in log.splitlines() if "cannot reach the broker" in line]
    assert len(lines) == 1, log  # once per outage, not once per attempt
    assert reason in lines[0].lower()
    assert WRONG not in log


@pytest.mark.parametrize("broker", ["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_wrong_password_is_a_metric_and_one_log_line(
    broker: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    if broker == "redis":
        server = RedisServer(tmp_path / "redis-auth")
        server.start()
        request.addfinalizer(server.stop)
        with server.client() as client:
            client.config_set("requirepass", "the-real-one")
        url, reason = f"redis://:{WRONG}@127.0.0.1:{server.port}/0", "invalid username-password"
    else:
        rabbitmq_url: str = request.getfixturevalue("rabbitmq_url")
        url, reason = rabbitmq_url.replace("guest:guest@", f"guest:{WRONG}@"), "access_refused"
        assert WRONG in url
    exporter = exporter_factory(
        url, "--reconnect-max-backoff", "1", wait_ready=False, broker_url_in_env=True
    )
    _assert_reported(exporter, broker, reason)


def test_nothing_listening_is_a_metric_and_one_log_line(
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    url = f"redis://:{WRONG}@127.0.0.1:{free_port()}/0"
    exporter = exporter_factory(
        url, "--reconnect-max-backoff", "1", wait_ready=False, broker_url_in_env=True
    )
    _assert_reported(exporter, "redis", "connection refused")
