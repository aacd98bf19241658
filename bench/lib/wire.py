"""Kombu's wire format for Celery events on Redis, captured from kombu itself."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from lib.redis_server import RedisServer

EXCHANGE = "celeryev"
Event = dict[str, Any]
Message = tuple[str, bytes]  # (channel, payload)


@dataclass
class WireFormat:
    """What kombu's Redis transport publishes for Celery events, learnt from a capture."""

    channel_prefix: str  # "/0.celeryev/" : keyprefix_fanout + exchange + "/"
    pattern: str  # what a subscriber binding routing key "#" psubscribes to
    envelope: dict[str, Any]  # a captured envelope: the template for every message
    samples: list[tuple[str, bytes]] = field(default_factory=list)  # (channel, payload)
    event_keys: dict[str, list[str]] = field(default_factory=dict)  # type -> field order
    utcoffset: Any = 0


def encode_message(
    fmt: WireFormat, routing_key: str, hostname: str, body: Any, delivery_tag: str
) -> Message:
    """One event message exactly as kombu's Redis transport puts it on the channel."""
    template = fmt.envelope
    body_json = json.dumps(body).encode("utf-8")  # kombu's json serializer: default separators
    properties = dict(template["properties"])
    properties["delivery_info"] = {**template["properties"]["delivery_info"]}
    properties["delivery_info"]["routing_key"] = routing_key
    properties["delivery_tag"] = delivery_tag
    message = dict(template)
    message["body"] = base64.b64encode(body_json).decode("ascii")
    message["headers"] = {**template["headers"], "hostname": hostname}
    message["properties"] = properties
    return fmt.channel_prefix + routing_key, json.dumps(message).encode("utf-8")


def capture_wire_format(server: RedisServer) -> WireFormat:
    """Send events with Celery's EventDispatcher (as a prefork worker does) and capture them."""
    from celery import Celery
    from celery.utils.sysinfo import load_average
    from celery.utils.time import utcoffset
    from celery.worker.state import SOFTWARE_INFO

    client = server.client()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"/0.{EXCHANGE}/*")
    pubsub.get_message(timeout=1.0)  # the psubscribe confirmation

    app = Celery("bench-capture", broker=server.url, set_as_current=False)
    hostname = "celery@capture"
    with app.connection_for_write() as conn:
        # Prefork/solo/threads workers: task events buffered into task.multi batches.
        batched = app.events.Dispatcher(conn, hostname=hostname, buffer_group=["task"])
        batched.send(
            "task-received",
            uuid="u-1",
            name="proj.tasks.add",
            args="(1, 2)",
            kwargs="{}",
            root_id="u-1",
            parent_id=None,
            retries=0,
            eta=None,
            expires=None,
        )
        batched.send("task-started", uuid="u-1")
        batched.send("task-succeeded", uuid="u-1", result="3", runtime=0.0123)
        batched.send("task-failed", uuid="u-2", exception="ValueError('x')", traceback="Tb")
        batched.flush()
        batched.send(
            "worker-heartbeat",
            freq=2.0,
            active=1,
            processed=2,
            loadavg=load_average(),
            **SOFTWARE_INFO,
        )
        # gevent/eventlet workers: one event per message.
        single = app.events.Dispatcher(conn, hostname=hostname)
        single.send("task-started", uuid="u-3")
        batched.close()
        single.close()

    samples: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + 10
    while len(samples) < 3 and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=1.0)
        if msg is not None and msg["type"] == "pmessage":
            samples.append((msg["channel"].decode(), msg["data"]))
    pubsub.close()
    if len(samples) != 3:
        raise RuntimeError(f"captured {len(samples)} of 3 messages from kombu")

    channels = [c for c, _ in samples]
    if channels != [
        f"/0.{EXCHANGE}/task.multi",
        f"/0.{EXCHANGE}/worker.heartbeat",
        f"/0.{EXCHANGE}/task.started",
    ]:
        raise RuntimeError(f"unexpected channels {channels}")
    envelope = json.loads(samples[0][1])
    fmt = WireFormat(
        channel_prefix=f"/0.{EXCHANGE}/",
        # kombu binds routing key "#" as the glob "*" (redis.py: routing_key.replace('#', '*'))
        pattern=f"/0.{EXCHANGE}/*",
        envelope=envelope,
        samples=samples,
        utcoffset=utcoffset(),
    )
    for _, payload in samples:
        env = json.loads(payload)
        body = json.loads(base64.b64decode(env["body"]))
        for event in body if isinstance(body, list) else [body]:
            fmt.event_keys.setdefault(event["type"], list(event))
    # The rebuild must be byte-identical to what kombu published.
    for channel, payload in samples:
        env = json.loads(payload)
        body = json.loads(base64.b64decode(env["body"]))
        routing_key = env["properties"]["delivery_info"]["routing_key"]
        rebuilt = encode_message(
            fmt, routing_key, env["headers"]["hostname"], body, env["properties"]["delivery_tag"]
        )
        if rebuilt != (channel, payload):
            raise RuntimeError(f"cannot reproduce kombu's message byte for byte:\n{payload!r}")
    return fmt
