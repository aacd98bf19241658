"""Where Redis queue depth is read.

kombu keeps a Redis queue as a list, plus one list per priority step:
``<prefix><queue>`` for priority 0 (consumed first) and ``<prefix><queue><sep><step>`` for
the others (``sep`` ``\\x06\\x16``, steps ``[0, 3, 6, 9]`` by default; all three are
transport options). An empty queue has no key: ``LLEN`` says 0. Messages handed to a
worker but not acknowledged sit in the ``unacked`` hash as ``[message, exchange,
routing_key]``. Everything is read in one pipeline per sample, without consuming anything.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from celery import Celery
from kombu.connection import Connection

from exporter.labels import cached_label
from exporter.sources.base import BrokerSample, QueueSample

DEFAULT_SEP = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
BINDING_PREFIX = "_kombu.binding."
# Celery's own fanout exchanges: event receivers (ours included) and remote-control reply
# queues are bound there; they are not task queues.
NOT_TASK_EXCHANGES = frozenset({"celeryev", "celery.pidbox", "reply.celery.pidbox"})
# Parsing every unacked message is O(n); past this many, only the total is exported.
DEFAULT_UNACKED_SCAN_LIMIT = 10_000


class RedisQueueSource:
    name = "redis"

    def __init__(
        self,
        app: Celery,
        transport_options: dict[str, Any],
        timeout: float,
        unacked_scan_limit: int = DEFAULT_UNACKED_SCAN_LIMIT,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.prefix = str(transport_options.get("global_keyprefix", "") or "")
        self.sep = str(transport_options.get("sep", DEFAULT_SEP))
        steps = transport_options.get("priority_steps", DEFAULT_PRIORITY_STEPS)
        self.priority_steps = tuple(int(s) for s in steps)
        self.unacked_key = str(transport_options.get("unacked_key", "unacked"))
        self.unacked_scan_limit = unacked_scan_limit
        self._conn: Connection | None = None
        self._client: redis.Redis | None = None
        # (exchange, routing key) -> queue, from kombu's binding sets.
        self._routes: dict[tuple[str, str], str] = {}

    def _redis(self) -> redis.Redis:
        if self._client is None:
            conn = self.app.connection_for_read()
            # kombu's channel client knows the URL, TLS and Sentinel settings; its prefixing
            # wrapper does not prefix every command, so we take its pool and prefix keys
            # ourselves.
            pool = conn.default_channel.client.connection_pool
            pool.connection_kwargs["socket_timeout"] = self.timeout
            pool.connection_kwargs["socket_connect_timeout"] = self.timeout
            pool.connection_kwargs["socket_keepalive"] = True
            # kombu's channel already opened a connection without a timeout: drop it, so
            # that every connection used for sampling has one.
            pool.disconnect()
            self._conn = conn
            self._client = redis.Redis(connection_pool=pool)
        return self._client

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.release()
            finally:
                self._conn = None
                self._client = None

    def _key(self, queue: str, step: int) -> str:
        name = f"{self.prefix}{queue}"
        return name if step == 0 else f"{name}{self.sep}{step}"

    def sample(self, queues: list[str]) -> BrokerSample:
        try:
            return self._sample(queues)
        except Exception:
            self.close()  # a fresh connection next time
            raise

    def _sample(self, queues: list[str]) -> BrokerSample:
        client = self._redis()
        listed = self._read_bindings(client)
        # Queues the broker lists are sampled at once, not only from the next sample on.
        queues = sorted(set(queues) | listed)
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for step in self.priority_steps:
                pipe.llen(self._key(queue, step))
        unacked_key = f"{self.prefix}{self.unacked_key}"
        pipe.hlen(unacked_key)
        results = pipe.execute()
        reserved_total = int(results[-1])

        sample = BrokerSample(listed_queues=listed, reserved_total=reserved_total)
        tails = client.pipeline(transaction=False)
        tail_queues: list[str] = []
        n = len(self.priority_steps)
        for i, queue in enumerate(queues):
            lengths = [int(x) for x in results[i * n : (i + 1) * n]]
            by_priority = {
                str(step): length for step, length in zip(self.priority_steps, lengths, strict=True)
            }
            qs = QueueSample(ready=sum(lengths), by_priority=by_priority, reserved=0)
            sample.queues[queue] = qs
            # kombu pushes on the left and pops on the right, highest priority first: the
            # next message to be consumed is the tail of the first non-empty list.
            for step, length in zip(self.priority_steps, lengths, strict=True):
                if length:
                    tails.lindex(self._key(queue, step), -1)
                    tail_queues.append(queue)
                    break
        if tail_queues:
            for queue, raw in zip(tail_queues, tails.execute(), strict=True):
                sample.queues[queue].oldest_message_id = _message_id(raw)
        self._count_reserved(client, unacked_key, reserved_total, sample)
        return sample

    def _read_bindings(self, client: redis.Redis) -> set[str]:
        """Queue names from kombu's ``_kombu.binding.<exchange>`` sets (bounded SCAN)."""
        routes: dict[tuple[str, str], str] = {}
        listed: set[str] = set()
        pattern = f"{self.prefix}{BINDING_PREFIX}*"
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.smembers(key)
            for key, members in zip(keys, pipe.execute(), strict=True):
                exchange = _text(key)[len(self.prefix) + len(BINDING_PREFIX) :]
                if exchange in NOT_TASK_EXCHANGES:
                    continue
                for member in members:
                    parts = _text(member).split(self.sep)
                    if len(parts) == 3 and parts[2]:
                        routes[(exchange, parts[0])] = parts[2]
                        listed.add(cached_label(parts[2]))
        self._routes = routes
        return listed

    def _count_reserved(
        self, client: redis.Redis, key: str, total: int, sample: BrokerSample
    ) -> None:
        if total > self.unacked_scan_limit:
            for qs in sample.queues.values():
                qs.reserved = None
            return
        for _tag, raw in client.hscan_iter(key, count=1000):
            queue = self._queue_of_unacked(raw)
            if queue is None:
                continue
            found = sample.queues.get(queue)
            if found is not None and found.reserved is not None:
                found.reserved += 1

    def _queue_of_unacked(self, raw: bytes | str) -> str | None:
        try:
            _message, exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            return None
        if not isinstance(exchange, str) or not isinstance(routing_key, str):
            return None
        # Celery's automatic queues use the queue name as exchange and routing key.
        return self._routes.get((exchange, routing_key)) or routing_key or None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _message_id(raw: bytes | str | None) -> str | None:
    """The Celery task id in a queued message envelope (headers.id), if readable."""
    if raw is None:
        return None
    try:
        envelope = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(envelope, dict):
        return None
    headers = envelope.get("headers")
    if isinstance(headers, dict) and isinstance(headers.get("id"), str):
        return str(headers["id"])
    properties = envelope.get("properties")
    if isinstance(properties, dict) and isinstance(properties.get("delivery_tag"), str):
        return str(properties["delivery_tag"])
    return None
