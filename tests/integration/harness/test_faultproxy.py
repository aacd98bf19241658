"""The fault proxy itself, against a real redis-server: each mode does what it says."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.faultproxy import FaultProxy
from tests.support.ports import port_is_open
from tests.support.servers import RedisServer


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(redis_server.port) as p:
        yield p


def client(proxy: FaultProxy, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=proxy.port,
        db=0,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def test_pass_through_and_latency(proxy: FaultProxy) -> None:
    with client(proxy) as r:
        assert r.ping() is True
        assert r.echo("through the proxy") == b"through the proxy"
        proxy.latency(0.3)
        started = time.monotonic()
        assert r.echo("slow") == b"slow"
        # One chunk each way, each held 0.3 s: the round trip cannot be shorter than 0.6 s.
        assert time.monotonic() - started >= 0.6
        proxy.pass_through()
        assert r.echo("fast again") == b"fast again"


def test_blackhole_holds_bytes_until_resume(proxy: FaultProxy) -> None:
    with client(proxy, timeout=0.5) as hung, client(proxy) as later:
        assert hung.ping() is True
        proxy.blackhole()
        with pytest.raises(redis.exceptions.TimeoutError):
            hung.echo("never answered")
        # Still accepting (a hung broker accepts TCP), but nothing is answered.
        with client(proxy, timeout=0.5) as fresh, pytest.raises(redis.exceptions.TimeoutError):
            fresh.ping()
        assert proxy.live_connections() >= 2
        proxy.resume()
        assert later.echo("after resume") == b"after resume"


def test_cut_closes_connections_and_refuses_new_ones(proxy: FaultProxy) -> None:
    with client(proxy) as r:
        assert r.ping() is True
        proxy.cut()
        assert proxy.live_connections() == 0
        with pytest.raises(redis.exceptions.ConnectionError):
            r.ping()
        assert not port_is_open(proxy.port)
        proxy.resume()
        assert port_is_open(proxy.port)
        assert r.ping() is True  # redis-py reconnects on the next command
