"""Shared fixtures: real Redis and RabbitMQ servers for the whole session, isolated per test.

- ``redis_server`` / ``rabbitmq_server``: one private server each per session (started on first
  use, stopped at the end), files under pytest's tmp dir.
- ``redis_url``: a Redis database of the test's own, flushed before the test. Kombu prefixes
  event channels with the database number, so the test also gets its own event stream.
- ``rabbitmq_url``: a vhost of the test's own (queues, exchanges and events are per vhost).
- ``broker_url``: parametrized over ``redis`` and ``rabbitmq`` (the latter marked
  ``rabbitmq``).
- ``worker_factory`` / ``producer_factory``: workers and producers that are stopped/closed
  after the test even if it fails.

A missing server binary fails the tests with a message to run ``make test``: never a skip.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.exporter import ExporterProcess
from tests.support.processes import install_sigterm_cleanup
from tests.support.redis_monitor import SESSION, session_recorder_enabled
from tests.support.servers import RabbitMQServer, RedisServer, ServerBinaryMissing
from tests.support.sqs import MotoSqsServer
from tests.support.workers import CeleryWorker, Producer

# Database 0 is left alone (handy for poking around by hand); tests take 1..15 in turn.
_REDIS_DBS = itertools.cycle(range(1, 16))
_VHOST_BATCH = 32


S = TypeVar("S", RedisServer, RabbitMQServer)


def _make_server(cls: type[S], workdir: Path) -> S:
    missing: str | None = None
    try:
        return cls(workdir)
    except ServerBinaryMissing as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = _make_server(RedisServer, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    server = _make_server(RabbitMQServer, tmp_path_factory.mktemp("rabbitmq"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoSqsServer]:
    """moto's SQS server, standing in for Amazon SQS (tests/support/sqs.py)."""
    server = MotoSqsServer(tmp_path_factory.mktemp("sqs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:P/<db>`` with a database of this test's own, empty at start."""
    db = next(_REDIS_DBS)
    with redis_server.client(db) as client:
        client.flushdb()
    return redis_server.url(db)


class _VhostPool:
    """Hands out fresh vhosts, creating them in batches (each rabbitmqctl call costs ~0.5 s)."""

    def __init__(self, server: RabbitMQServer) -> None:
        self.server = server
        self.free: list[str] = []

    def take(self) -> str:
        if not self.free:
            batch = [f"test-{uuid.uuid4().hex[:10]}" for _ in range(_VHOST_BATCH)]
            self.server.add_vhosts(batch)
            self.free.extend(batch)
        return self.free.pop()


@pytest.fixture(scope="session")
def _vhost_pool(rabbitmq_server: RabbitMQServer) -> _VhostPool:
    return _VhostPool(rabbitmq_server)


@pytest.fixture
def rabbitmq_url(rabbitmq_server: RabbitMQServer, _vhost_pool: _VhostPool) -> str:
    """``amqp://guest:guest@127.0.0.1:P/<vhost>`` with a vhost used by no other test."""
    return rabbitmq_server.url(_vhost_pool.take())


@pytest.fixture(
    params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
)
def broker_url(request: pytest.FixtureRequest) -> str:
    """The test runs once on Redis and once on RabbitMQ, each time on an isolated broker."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
    else:
        url = request.getfixturevalue("rabbitmq_url")
    return url


def pytest_configure(config: pytest.Config) -> None:
    # A CI timeout or a ^C'd `make` sends SIGTERM: still take our servers and workers down.
    install_sigterm_cleanup()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """TEST_REDIS_MONITOR=1: fail the run if an exporter connection sent a forbidden command
    to any Redis server the suite started (read-only proof over the whole run)."""
    if session_recorder_enabled() and SESSION.violations():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not session_recorder_enabled():
        return
    violations = SESSION.violations()
    terminalreporter.write_sep("=", "Redis MONITOR over the whole run (TEST_REDIS_MONITOR=1)")
    terminalreporter.write_line(
        f"{SESSION.recordings} server runs recorded, {len(SESSION.commands)} commands from "
        f"exporter connections, {len(violations)} not allowed"
    )
    for line in violations[:50]:
        terminalreporter.write_line(f"NOT ALLOWED: {line}")


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


@pytest.fixture
def worker_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., CeleryWorker]]:
    """``worker_factory(broker_url, hostname, **kwargs)``: a started worker, not yet ready.

    Call ``.wait_ready()`` on it. Every worker is stopped (warm, then SIGKILL) after the test;
    if the test failed, the end of each worker's log is printed (shown in the report).
    """
    workers: list[CeleryWorker] = []

    def make(broker_url: str, hostname: str, **kwargs: Any) -> CeleryWorker:
        kwargs.setdefault("logdir", tmp_path / "workers")
        worker = CeleryWorker(broker_url, hostname, **kwargs)
        workers.append(worker)
        worker.start()
        return worker

    yield make
    for worker in reversed(workers):
        worker.stop(timeout=15)
    if _test_failed(request):
        for worker in workers:
            print(f"----- log of worker {worker.hostname} ({worker.log_path}):")
            print(worker.log_text()[-6000:])


@pytest.fixture
def producer_factory() -> Iterator[Callable[..., Producer]]:
    """``producer_factory(broker_url, send_sent_event=True, ...)``; closed after the test."""
    producers: list[Producer] = []

    def make(broker_url: str, **kwargs: Any) -> Producer:
        producer = Producer(broker_url, **kwargs)
        producers.append(producer)
        return producer

    yield make
    for producer in producers:
        producer.close()


@pytest.fixture
def exporter_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ExporterProcess]]:
    """``exporter_factory(broker_url, *args, wait_ready=True)``: a running exporter process.

    Stopped after the test; its log is printed when the test failed.
    """
    exporters: list[ExporterProcess] = []

    def make(
        broker_url: str,
        *args: str,
        wait_ready: bool = True,
        broker_url_in_env: bool = False,
        env: dict[str, str] | None = None,
    ) -> ExporterProcess:
        exporter = ExporterProcess(
            broker_url, tmp_path / "exporters", args, broker_url_in_env=broker_url_in_env, env=env
        )
        exporters.append(exporter)
        return exporter.start(wait_ready=wait_ready)

    yield make
    for exporter in exporters:
        exporter.stop()
    if _test_failed(request):
        for exporter in exporters:
            print(f"----- log of exporter on port {exporter.port}:")
            print(exporter.log()[-8000:])
