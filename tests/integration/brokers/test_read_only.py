"""The exporter only reads from the broker: proved with Redis MONITOR and RabbitMQ's queues.

A full scenario runs against the broker: real workers with task events, tasks waiting in
queues (Redis priority sub-queues included) and in Redis' unacked hash, inspect requests
(``active_queues``, ``stats``) and ``enable_events`` broadcasts, queue sampling every
second, and ``celery-metrics-exporter diagnose``. The exporter and diagnose reach the broker
through a pass-through :class:`FaultProxy`, so every connection they open is known by its
port, even one that lived a few milliseconds; the workers and the test connect directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import amqp
import pytest

from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.faultproxy import FaultProxy
from tests.support.metrics import value
from tests.support.publish import publish_raw_events
from tests.support.redis_monitor import (
    EXPORTER_NAME,
    PIDBOX,
    Command,
    MonitorRecorder,
    allowed,
    exporter_commands,
    sets_name,
)
from tests.support.servers import RabbitMQServer, RedisServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

SEP = "\x06\x16"


def run_diagnose(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "exporter", "diagnose", "--broker-url", url, *args]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)


def test_redis_monitor_shows_only_reads_and_own_subscription(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    db = int(redis_url.rsplit("/", 1)[1])
    with MonitorRecorder(redis_server) as monitor, FaultProxy(redis_server.port) as proxy:
        proxied = f"redis://127.0.0.1:{proxy.port}/{db}"
        worker = worker_factory(
            redis_url, "ro@test", pool="threads", concurrency=2, heartbeat_interval=1
        )
        worker.wait_ready()
        producer = producer_factory(redis_url, send_sent_event=True)
        # Waiting where only the exporter could touch them: a queue nobody consumes, at
        # three priorities (bare list and two sub-lists), and a running acks_late task in
        # the unacked hash.
        for priority in (0, 0, 5, 9):
            producer.send("tests.add", args=(priority, 0), queue="parked", priority=priority)
        gate = tmp_path / "gate"
        producer.send("tests.wait_for_file_acks_late", args=(str(gate),))
        with redis_server.client(db) as r:
            wait_for(lambda: r.hlen("unacked") == 1, 30)
            parked_before = {k: r.lrange(k, 0, -1) for k in _parked_keys(r)}
            unacked_before = r.hgetall("unacked")
        assert len(parked_before) == 3

        exporter = exporter_factory(
            proxied,
            "--queues",
            "parked",
            "--sample-interval",
            "1",
            "--inspect-interval",
            "2",
            "--enable-events-interval",
            "2",
        )
        exporter.wait_worker_queues("ro@test")
        for i in range(3):
            producer.send("tests.add", args=(i, i))

        def seen_everything() -> bool:
            s = exporter.scrape()
            return (
                value(
                    s,
                    "celery_task_succeeded_total",
                    name="tests.add",
                    hostname="ro@test",
                    queue_name="celery",
                )
                == 3
                and value(s, "celery_queue_messages", queue_name="parked") == 4
                and value(s, "celery_queue_messages_by_priority", queue_name="parked", priority="9")
                == 1
                and value(s, "celery_queue_reserved_messages", queue_name="celery") == 1
                and value(s, "celery_worker_pool_processes", hostname="ro@test") == 2
                and (value(s, "celery_exporter_enable_events_broadcasts_total") or 0) >= 2
            )

        wait_for(seen_everything, 30, message=lambda: exporter.log()[-3000:])
        result = run_diagnose(proxied, "--listen", "2", "--queues", "parked")
        assert "parked" in result.stdout, result.stdout + result.stderr
        exporter.stop()
        commands = monitor.snapshot()
        exporter_ports = set(proxy.upstream_ports)

        with redis_server.client(db) as r:
            parked_after = {k: r.lrange(k, 0, -1) for k in _parked_keys(r)}
            assert parked_after == parked_before
            # The running task is still unacknowledged, untouched, until the worker ends it
            # (the gate opens only after this check: the worker then acknowledges it).
            assert r.hgetall("unacked") == unacked_before
        gate.touch()

    ours = [c for c in commands if c.port in exporter_ports]
    assert ours, "MONITOR recorded nothing from the exporter"
    # Every connection of the exporter (and diagnose) names itself.
    by_port: dict[int, list[Command]] = {}
    for c in ours:
        by_port.setdefault(c.port, []).append(c)
    unnamed = [
        port for port, cs in by_port.items() if not any(sets_name(c) == EXPORTER_NAME for c in cs)
    ]
    assert not unnamed, [str(c) for p in unnamed for c in by_port[p][:5]]
    forbidden = [str(c) for c in ours if not allowed(c, db)]
    assert not forbidden, "\n".join(forbidden[:50])
    # And the scenario did exercise what it claims to.
    names = {c.name for c in ours}
    assert {"LLEN", "HLEN", "PSUBSCRIBE", "PUBLISH", "BRPOP"} <= names, names


def _parked_keys(r: object) -> list[str]:
    return ["parked", f"parked{SEP}6", f"parked{SEP}9"]


def test_the_allowed_list_rejects_what_would_touch_task_messages() -> None:
    """The rules (tests/support/redis_monitor.py) have teeth: each of these fails the proof."""
    own_reply = "1f2e-3d4c.reply.celery.pidbox"
    forbidden = [
        ("LPUSH", "celery", "msg"),
        ("RPUSH", "parked", "msg"),
        ("BRPOP", "celery", "celery\\x06\\x163", "1"),
        ("BRPOP", own_reply, "celery", "1"),
        ("LPOP", "parked"),
        ("RPOPLPUSH", "parked", "elsewhere"),
        ("DEL", "parked"),
        ("DEL", "unacked"),
        ("HDEL", "unacked", "tag"),
        ("ZREM", "unacked_index", "tag"),
        ("ZADD", "unacked_index", "1", "tag"),
        ("SADD", "_kombu.binding.celery", "celery\\x06\\x16\\x06\\x16celery"),
        ("SREM", "_kombu.binding.celery", "celery\\x06\\x16\\x06\\x16celery"),
        ("PUBLISH", "/1.celeryev/task.multi", "[]"),
        ("EVALSHA", "0" * 40, "1", "celery"),
        ("FLUSHDB",),
        ("CONFIG SET", "maxmemory", "1"),
    ]
    for name, *args in forbidden:
        assert not allowed(Command(1, 1, name, tuple(args)), 1), name
    permitted = [
        ("LLEN", "parked"),
        ("BRPOP", own_reply, own_reply + "\\x06\\x163", "1"),
        ("DEL", own_reply + "\\x06\\x166"),
        ("SADD", "_kombu.binding.celeryev", "#\\x06\\x16\\x06\\x16celeryev.exporter.ab12"),
        ("PUBLISH", "/1.celery.pidbox", "{}"),
    ]
    for name, *args in permitted:
        assert allowed(Command(1, 1, name, tuple(args)), 1), name


# -- RabbitMQ: the messages in the task queues are the same before and after -------------------


def _rabbit_connection(url: str) -> amqp.Connection:
    parts = urlsplit(url)
    conn = amqp.Connection(
        host=f"{parts.hostname}:{parts.port}",
        userid=parts.username,
        password=parts.password,
        virtual_host=parts.path[1:] or "/",
        connect_timeout=5,
    )
    conn.connect()
    return conn


def peek(url: str, queue: str) -> list[tuple[Any, ...]]:
    """Every ready message of ``queue`` (body, task id, priority), left in place and in order.

    The test (not the exporter) takes them with basic_get without acknowledging, then closes
    the channel: RabbitMQ puts unacknowledged messages back where they were.
    """
    conn = _rabbit_connection(url)
    try:
        channel = conn.channel()
        messages: list[tuple[Any, ...]] = []
        while True:
            message = channel.basic_get(queue=queue, no_ack=False)
            if message is None:
                break
            headers = message.properties.get("application_headers") or {}
            messages.append((message.body, headers.get("id"), message.properties.get("priority")))
        channel.close()
        return messages
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def queue_counts(server: RabbitMQServer, vhost: str) -> dict[str, tuple[str, ...]]:
    """rabbitmqctl's view: ready, unacknowledged, consumers, per task queue of the vhost."""
    out = server.rabbitmqctl(
        "list_queues",
        "-p",
        vhost,
        "--no-table-headers",
        "--quiet",
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
    ).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {r[0]: tuple(r[1:]) for r in rows if r[0] in ("celery", "parked")}


@pytest.mark.rabbitmq
def test_rabbitmq_task_queues_identical_before_and_after(
    tmp_path: Path,
    rabbitmq_server: RabbitMQServer,
    rabbitmq_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    vhost = urlsplit(rabbitmq_url).path[1:]
    worker = worker_factory(
        rabbitmq_url, "ro@test", pool="threads", concurrency=2, heartbeat_interval=1
    )
    worker.wait_ready()
    producer = producer_factory(rabbitmq_url, send_sent_event=True)
    for i in range(4):
        producer.send("tests.add", args=(i, 0), queue="parked")
    gate = tmp_path / "gate"
    producer.send("tests.wait_for_file_acks_late", args=(str(gate),))
    wait_for(lambda: queue_counts(rabbitmq_server, vhost).get("celery") == ("0", "1", "1"), 30)
    counts_before = queue_counts(rabbitmq_server, vhost)
    parked_before = peek(rabbitmq_url, "parked")
    assert counts_before["parked"] == ("4", "0", "0")
    assert len(parked_before) == 4

    with FaultProxy(rabbitmq_server.port) as proxy:
        parts = urlsplit(rabbitmq_url)
        proxied = parts._replace(
            netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
        ).geturl()
        exporter = exporter_factory(
            proxied,
            "--queues",
            "parked",
            "--sample-interval",
            "1",
            "--inspect-interval",
            "2",
            "--enable-events-interval",
            "2",
        )
        exporter.wait_worker_queues("ro@test")
        for i in range(3):
            producer.send("tests.add", args=(i, i))

        def seen_everything() -> bool:
            s = exporter.scrape()
            return (
                value(
                    s,
                    "celery_task_succeeded_total",
                    name="tests.add",
                    hostname="ro@test",
                    queue_name="celery",
                )
                == 3
                and value(s, "celery_queue_messages", queue_name="parked") == 4
                and value(s, "celery_queue_broker_consumers", queue_name="celery") == 1
                and value(s, "celery_worker_pool_processes", hostname="ro@test") == 2
                and (value(s, "celery_exporter_enable_events_broadcasts_total") or 0) >= 2
            )

        wait_for(seen_everything, 30, message=lambda: exporter.log()[-3000:])
        result = run_diagnose(proxied, "--listen", "2", "--queues", "parked")
        assert "parked" in result.stdout, result.stdout + result.stderr
        exporter.stop()

    # Same counts (the running task still unacknowledged by its worker), same messages in
    # the same order.
    assert queue_counts(rabbitmq_server, vhost) == counts_before
    assert peek(rabbitmq_url, "parked") == parked_before
    gate.touch()


def test_session_recorder_attributes_connections_by_their_name() -> None:
    """TEST_REDIS_MONITOR=1 attributes a port to the exporter from its naming handshake
    until another handshake on that port (a new connection of someone else)."""
    hello_ours = Command(1, 1, "HELLO", ("3", "SETNAME", EXPORTER_NAME))
    commands = [
        hello_ours,
        Command(1, 1, "LLEN", ("celery",)),
        Command(2, 1, "HELLO", ("3",)),  # a worker
        Command(2, 1, "BRPOP", ("celery", "1")),
        Command(1, 1, "LPOP", ("celery",)),
        Command(1, 1, "HELLO", ("3",)),  # port 1 reused by another client
        Command(1, 1, "RPUSH", ("celery", "x")),
        Command(3, 1, "CLIENT SETNAME", (EXPORTER_NAME,)),
        Command(3, 1, "DEL", ("unacked",)),
    ]
    ours = exporter_commands(commands)
    assert ours == [commands[0], commands[1], commands[4], commands[7], commands[8]]
    assert [c.name for c in ours if not allowed(c, c.db)] == ["LPOP", "DEL"]


def test_inspect_never_restores_unacked_messages(
    redis_server: RedisServer,
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    """kombu's Redis channels re-queue unacked messages older than the visibility timeout
    (``restore_visible``) while they wait for messages: in the exporter, while an inspect
    request waits for its reply. That would re-queue a task a worker still holds (and run
    it twice when the workers' ``visibility_timeout`` is longer than the exporter's). The
    exporter must never do it.

    A message sits in the unacked hash with a delivery time long past; a worker is known
    from its heartbeat but never answers, so the exporter's inspect waits its full second.
    """
    db = int(redis_url.rsplit("/", 1)[1])
    tag = "planted-delivery-tag"
    payload = {
        "body": "e30=",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"id": tag, "task": "tests.add"},
        "properties": {
            "delivery_tag": tag,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_info": {"exchange": "parked", "routing_key": "parked"},
        },
    }
    with redis_server.client(db) as r:
        r.sadd("_kombu.binding.parked", f"parked{SEP}{SEP}parked")
        r.hset("unacked", tag, json.dumps([payload, "parked", "parked"]))
        r.zadd("unacked_index", {tag: 1.0})  # delivered in 1970: long past any timeout
        unacked_before = r.hgetall("unacked")
    with MonitorRecorder(redis_server) as monitor:
        exporter = exporter_factory(redis_url, "--inspect-timeout", "1")
        heartbeat = {
            "type": "worker-heartbeat", "hostname": "silent@test", "freq": 2.0,
            "timestamp": time.time(), "active": 0, "processed": 0,
        }  # fmt: skip
        publish_raw_events(
            redis_url, [(json.dumps(heartbeat).encode(), "application/json")], "worker.heartbeat"
        )

        def inspect_finished() -> bool:
            # The exporter deletes its reply queue when the request is over.
            return any(
                c.name == "DEL" and PIDBOX in c.args[0] and c.db == db
                for c in exporter_commands(monitor.snapshot())
            )

        wait_for(inspect_finished, 30, message=exporter.log)
        exporter.stop()
        commands = exporter_commands(monitor.snapshot())
    with redis_server.client(db) as r:
        assert r.llen("parked") == 0
        assert r.hgetall("unacked") == unacked_before
        assert r.zscore("unacked_index", tag) == 1.0
    forbidden = [str(c) for c in commands if c.db == db and not allowed(c, db)]
    assert not forbidden, "\n".join(forbidden)


def test_a_reply_that_comes_after_its_request_is_dropped_not_pushed_back(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A worker's reply that arrives after the inspect request ended (its consumer cancelled)
    can still be taken by the channel's BRPOP; kombu hands such a message to
    ``_reject_inbound_message``, which records it as unacked and pushes it back onto the reply
    queue: five writes, seen once in a full run by the suite's read-only check. In the
    exporter's process the message is dropped: nobody reads that queue again."""
    from exporter.brokers.app import make_app
    from exporter.settings import Settings

    db = int(redis_url.rsplit("/", 1)[1])
    reply_queue = f"0b7c3f8e-1d2a-4c5b-9e6f-7a8b9c0d1e2f{PIDBOX}"
    tag = "late-reply-delivery-tag"
    raw = {
        "body": "e30=",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"ticket": "a-request-long-over", "clock": 7},
        "properties": {
            "delivery_tag": tag,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_info": {"exchange": "reply.celery.pidbox", "routing_key": reply_queue},
        },
    }
    app = make_app(Settings(broker_url=redis_url))
    with MonitorRecorder(redis_server) as monitor:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            channel.client.ping()  # the connection's handshake names it the exporter's
            conn.transport._deliver(raw, reply_queue)  # no consumer: kombu's reject path
        commands = [c for c in exporter_commands(monitor.snapshot()) if c.db == db]
    assert [c.name for c in commands if c.name == "PING"], "the connection was not seen"
    assert [str(c) for c in commands if not allowed(c, db)] == []
    with redis_server.client(db) as r:
        assert (r.llen(reply_queue), r.hlen("unacked"), r.zcard("unacked_index")) == (0, 0, 0)
