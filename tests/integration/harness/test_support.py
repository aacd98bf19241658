"""Self-tests of tests/support: the helpers outage tests will lean on must hold by themselves."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import amqp
import pytest
import redis

from tests.support.ports import free_port, port_is_open
from tests.support.processes import group_members
from tests.support.servers import RabbitMQServer, RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer


def test_wait_for_returns_the_truthy_value() -> None:
    calls = iter([0, None, "", "done"])
    assert wait_for(lambda: next(calls), timeout=5, interval=0.001) == "done"


def test_wait_for_times_out_with_the_message_and_last_error() -> None:
    def boom() -> bool:
        raise ConnectionError("refused")

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0.2s: server up .*refused"):
        wait_for(boom, timeout=0.2, message=lambda: "server up", ignore=(ConnectionError,))
    assert time.monotonic() - started < 2


def test_wait_for_does_not_swallow_other_errors() -> None:
    def bad() -> bool:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        wait_for(bad, timeout=5, ignore=(ConnectionError,))


def test_free_port_never_repeats() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50


def test_redis_restarts_on_the_same_port(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        port, pid = server.port, server.pid
        assert pid is not None
        with server.client() as client:
            client.set("k", "v")
        server.stop()
        assert not server.running
        assert not port_is_open(port)
        assert group_members(pid) == []
        with pytest.raises(redis.exceptions.ConnectionError), server.client() as client:
            client.ping()
        server.start()
        assert server.port == port
        with server.client() as client:
            assert client.ping()
            assert client.get("k") is None  # no persistence: an outage loses everything
    assert not port_is_open(port)


@pytest.mark.rabbitmq
def test_rabbitmq_stops_and_starts_on_the_same_port(tmp_path: Path) -> None:
    def connects(url_port: int) -> bool:
        conn = amqp.Connection(host=f"127.0.0.1:{url_port}", connect_timeout=2)
        try:
            conn.connect()
            return True
        except OSError:
            return False
        finally:
            conn.collect()

    with RabbitMQServer(tmp_path) as server:
        pid = server.pid
        assert pid is not None
        ports = (server.port, server.dist_port, server.epmd_port)
        assert connects(server.port)
        server.stop()
        assert not any(port_is_open(p) for p in ports)
        assert group_members(pid) == []
        server.start()
        assert connects(server.port)
        server.kill()  # a crash: the next boot must recover the database
        assert not any(port_is_open(p) for p in ports)
        server.start()
        assert connects(server.port)
    assert not any(port_is_open(p) for p in ports)


def test_worker_kill_takes_the_pool_children_too(
    redis_url: str, worker_factory: Callable[..., CeleryWorker]
) -> None:
    worker = worker_factory(redis_url, "pool@test", pool="prefork", concurrency=2, events=False)
    worker.wait_ready()
    with Producer(redis_url) as producer:
        assert producer.ping([worker.hostname]) == [{worker.hostname: {"ok": "pong"}}]
    assert len(group_members(worker.pid)) >= 3  # main process and two pool children
    worker.kill()
    assert not worker.running
    assert group_members(worker.pid) == []
