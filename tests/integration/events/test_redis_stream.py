"""The direct reader of a Redis broker's event subscription (exporter/events/redis_stream.py),
against a real Redis: kombu connects and subscribes, the stream hands over exact bodies,
counts what is not a kombu envelope, and reports what Redis holds for it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery.events.event import get_exchange
from kombu import Connection, Consumer, Queue

from exporter.events.redis_stream import RedisEventStream, is_redis_channel
from tests.support.publish import publish_raw_events
from tests.support.servers import RedisServer


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, str | None]] = []
        self.skipped: list[str] = []

    def on_message(self, body: Any, content_type: str | None) -> None:
        self.messages.append((body, content_type))

    def on_skip(self, reason: str) -> None:
        self.skipped.append(reason)


@contextmanager
def subscribed(
    broker_url: str, sink: Sink, parser_class: type | None = None
) -> Iterator[RedisEventStream]:
    """As EventConsumer._consume sets it up: kombu's consumer, then the direct stream
    (its connection with ``parser_class`` when given, else redis-py's default)."""
    with Connection(broker_url) as conn:
        conn.ensure_connection(max_retries=0)
        channel = conn.channel()
        assert is_redis_channel(channel)
        queue = Queue(
            "celeryev.test-stream",
            exchange=get_exchange(conn, name="celeryev"),
            routing_key="#",
            durable=False,
            auto_delete=True,
            exclusive=True,
        )
        if parser_class is not None:
            pool = channel.subclient.connection_pool  # type: ignore[attr-defined]
            pool.connection_kwargs["parser_class"] = parser_class
            pool.reset()  # connections made from here on use it
        with Consumer(channel, queues=[queue], no_ack=True):
            stream = RedisEventStream(channel, sink.on_message, sink.on_skip)
            if parser_class is not None:
                assert type(stream.connection._parser) is parser_class
            deadline = time.monotonic() + 10
            while not stream.subscribed:
                assert time.monotonic() < deadline, "no psubscribe confirmation"
                stream.drain(0.1)
            yield stream


def drain_until(stream: RedisEventStream, sink: Sink, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(sink.messages) + len(sink.skipped) < count:
        assert time.monotonic() < deadline, f"got {len(sink.messages)} of {count}"
        stream.drain(0.1)


def _parser(name: str) -> type:
    """redis-py's parser classes; hiredis's only where the optional hiredis is installed
    (``pip install '.[hiredis]'``), as redis-py then picks it by itself."""
    if name == "hiredis":
        pytest.importorskip("hiredis", reason="the optional hiredis extra is not installed")
        from redis._parsers import _HiredisParser

        return _HiredisParser
    from redis._parsers import _RESP3Parser

    return _RESP3Parser


@pytest.mark.parametrize("parser", ["python", "hiredis"])
def test_either_redis_parser_subscribes_and_streams(redis_url: str, parser: str) -> None:
    """With hiredis, RESP3 push replies are ``hiredis.PushNotification`` (a list subclass):
    the stream once missed its subscription confirmation there and never consumed."""
    sink = Sink()
    body = json.dumps([{"type": "task-received", "uuid": "a"}]).encode()
    with subscribed(redis_url, sink, _parser(parser)) as stream:
        publish_raw_events(redis_url, [(body, "application/json")])
        drain_until(stream, sink, 1)
    assert sink.messages == [(body, "application/json")]


def test_bodies_and_content_types_arrive_exactly(redis_url: str) -> None:
    sink = Sink()
    bodies = [
        (json.dumps({"type": "task-received", "uuid": "a"}).encode(), "application/json"),
        (json.dumps([{"type": "x"}, {"type": "y"}]).encode(), "application/json"),
        (b"\x80\x81binary", "application/octet-stream"),
    ]
    with subscribed(redis_url, sink) as stream:
        publish_raw_events(redis_url, bodies)
        drain_until(stream, sink, 3)
    assert sink.messages == [(body, ctype) for body, ctype in bodies]
    assert sink.skipped == []


def test_what_is_not_a_kombu_envelope_is_counted(redis_server: RedisServer, redis_url: str) -> None:
    sink = Sink()
    db = int(redis_url.rsplit("/", 1)[1])
    channel = f"/{db}.celeryev/task.multi"
    good = json.dumps({"type": "worker-heartbeat"}).encode()
    with subscribed(redis_url, sink) as stream, redis_server.client(db) as client:
        client.publish(channel, b"{not json")
        client.publish(channel, b'"a string"')
        client.publish(
            channel,
            json.dumps({"body": "x", "properties": {"body_encoding": "rot13"}}).encode(),
        )
        client.publish(
            channel, json.dumps({"body": "!!", "properties": {"body_encoding": "base64"}})
        )
        # Without body_encoding the body is handed over as it is (a str).
        client.publish(
            channel,
            json.dumps({"body": good.decode(), "content-type": "application/json"}).encode(),
        )
        drain_until(stream, sink, 5)
    assert sink.skipped == ["envelope"] * 3
    # "!!" is not base64 of anything: a2b_base64 (like kombu's b64decode) yields b"".
    assert sink.messages == [(b"", None), (good.decode(), "application/json")]


def test_backlog_is_what_redis_holds_for_the_subscription(
    redis_server: RedisServer, redis_url: str
) -> None:
    sink = Sink()
    db = int(redis_url.rsplit("/", 1)[1])
    channel = f"/{db}.celeryev/task.multi"
    body = json.dumps([{"type": "task-started", "uuid": "u" * 36}] * 20).encode()
    envelope = json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-type": "application/json",
            "properties": {"body_encoding": "base64"},
        }
    ).encode()
    count = (24 << 20) // len(envelope) + 1  # 24 MiB: more than the kernel's socket buffers
    with subscribed(redis_url, sink) as stream, redis_server.client(db) as client:
        assert stream.sample_backlog(time.time()) == 0
        pipe = client.pipeline(transaction=False)
        for _ in range(count):
            pipe.publish(channel, envelope)
        pipe.execute()
        # Nothing read yet: Redis holds what the sockets could not take.
        stream._next_backlog_sample = 0.0
        waiting = stream.sample_backlog(time.time())
        assert waiting is not None and waiting > 0
        drain_until(stream, sink, count)
        stream._next_backlog_sample = 0.0
        assert stream.sample_backlog(time.time()) == 0
    assert len(sink.messages) == count
    assert {b for b, _ in sink.messages} == {body}


def test_a_broker_that_refuses_client_commands_still_streams(
    redis_server: RedisServer, redis_url: str
) -> None:
    # An ACL without CLIENT (as some managed services have): events flow, no backlog figure.
    user = "no-client-cmd"
    with redis_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-client")
    try:
        db = int(redis_url.rsplit("/", 1)[1])
        url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/{db}"
        sink = Sink()
        body = json.dumps({"type": "worker-heartbeat"}).encode()
        with subscribed(url, sink) as stream:
            assert stream.client_id is None
            publish_raw_events(redis_url, [(body, "application/json")])
            drain_until(stream, sink, 1)
            assert stream.sample_backlog(time.time()) is None
        assert sink.messages == [(body, "application/json")]
    finally:
        with redis_server.client() as admin:
            admin.execute_command("ACL", "DELUSER", user)
