"""Where Redis queue depth is read.

kombu keeps a Redis queue as a list, plus one list per priority step:
``<prefix><queue>`` for priority 0 (consumed first) and ``<prefix><queue><sep><step>`` for
the others (``sep`` ``\\x06\\x16``, steps ``[0, 3, 6, 9]`` by default; all three are
transport options). Which lists exist is learned rather than assumed, since producers
may use other steps or separators than the exporter was given (``redis_priorities.py``);
bindings and unusual lists are found by a bounded keyspace walk (``redis_keyspace.py``).
An empty queue has no key: ``LLEN`` says 0. Messages handed to a worker but not
acknowledged sit in the ``unacked`` hash as ``[message, exchange, routing_key]``. A sample
is a few pipelined round trips and consumes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from kombu.connection import Connection

from exporter.labels import cached_label
from exporter.sources.base import BrokerSample, QueueSample
from exporter.sources.redis_keyspace import KeyspaceWalk
from exporter.sources.redis_priorities import (
    DEFAULT_SEP,
    DEFAULT_STEPS,
    PriorityLayout,
    sep_of_default_binding,
)

BINDING_PREFIX = "_kombu.binding."
# Celery's own fanout exchanges: event receivers (ours included) and remote-control reply
# queues are bound there; they are not task queues.
NOT_TASK_EXCHANGES = frozenset({"celeryev", "celery.pidbox", "reply.celery.pidbox"})
# Parsing every unacked message is O(n); past this many, only the total is exported.
DEFAULT_UNACKED_SCAN_LIMIT = 10_000
Length = tuple[tuple[str, int], int]  # ((sep, step), LLEN) of one list
MAX_FOREIGN_PREFIXES = 10

log = logging.getLogger(__name__)


class RedisQueueSource:
    name = "redis"

    def __init__(
        self,
        app: Celery,
        transport_options: dict[str, Any],
        timeout: float,
        unacked_scan_limit: int = DEFAULT_UNACKED_SCAN_LIMIT,
        worker_options: Callable[[], dict[str, dict[str, Any]]] = dict,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.prefix = str(transport_options.get("global_keyprefix", "") or "")
        self.sep = str(transport_options.get("sep", DEFAULT_SEP))
        steps = transport_options.get("priority_steps", DEFAULT_STEPS)
        self.priority_steps = tuple(int(s) for s in steps)
        self.layout = PriorityLayout(
            self.prefix, self.sep, self.priority_steps, "priority_steps" in transport_options
        )
        self.walk = KeyspaceWalk(self.prefix)
        self.unacked_key = str(transport_options.get("unacked_key", "unacked"))
        self.unacked_scan_limit = unacked_scan_limit
        # hostname -> the priority options of its broker_transport_options (inspect conf)
        self.worker_options = worker_options
        self._conn: Connection | None = None
        self._client: redis.Redis | None = None
        # (exchange, routing key) -> queue, from kombu's binding sets.
        self._routes: dict[tuple[str, str], str] = {}
        self._listed: set[str] = set()  # queues the bindings named in the last sample
        # global_keyprefix values of other kombu apps found in the keyspace
        self.foreign_prefixes: set[str] = set()

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

    def sample(self, queues: list[str]) -> BrokerSample:
        try:
            return self._sample(queues)
        except Exception:
            self.close()  # a fresh connection next time
            self.walk.reset()
            raise

    def _sample(self, queues: list[str]) -> BrokerSample:
        client = self._redis()
        self.layout.learn_workers(self.worker_options())
        known = set(queues) | self._listed
        keys = self.walk.step(client, lambda key: self._wanted_key(key, known))
        listed = self._read_bindings(client, {k for k in keys if self._is_binding(k)})
        self._listed = listed
        # Queues the broker lists are sampled at once, not only from the next sample on.
        queues = sorted(set(queues) | listed)
        self.layout.note_queues(set(queues))
        self._note_found_lists(client, keys, set(queues))
        lengths = self._lengths(client, queues)
        unacked_key = f"{self.prefix}{self.unacked_key}"
        reserved_total = int(client.hlen(unacked_key))

        sample = BrokerSample(listed_queues=listed, reserved_total=reserved_total)
        tails = client.pipeline(transaction=False)
        tail_queues: list[str] = []
        for queue in queues:
            by_priority: dict[str, int] = {}
            for (sep, step), length in lengths[queue]:
                by_priority[str(step)] = by_priority.get(str(step), 0) + length
                if length:
                    self.layout.saw(queue, step)
                    self.layout.found_list(queue, sep, step)
            qs = QueueSample(ready=sum(by_priority.values()), by_priority=by_priority, reserved=0)
            self.layout.log_mismatch(queue)
            qs.priority_mismatch = self.layout.mismatch(queue)
            sample.queues[queue] = qs
            # kombu pushes on the left and pops on the right, highest priority first: the
            # next message to be consumed is the tail of the first non-empty list.
            for (sep, step), length in lengths[queue]:
                if length:
                    tails.lindex(self.layout.key(queue, sep, step), -1)
                    tail_queues.append(queue)
                    break
        if tail_queues:
            for queue, raw in zip(tail_queues, tails.execute(), strict=True):
                sample.queues[queue].oldest_message_id = _message_id(raw)
        self._count_reserved(client, unacked_key, reserved_total, sample)
        return sample

    def _lengths(self, client: redis.Redis, queues: list[str]) -> dict[str, list[Length]]:
        """queue -> ((sep, step), LLEN) of every list known, in step order. Candidate lists
        not known yet are probed with one EXISTS per queue; those found are read at once."""
        pipe = client.pipeline(transaction=False)
        plan: list[tuple[str, list[tuple[str, int]], list[tuple[str, int]]]] = []
        for queue in queues:
            lists, probes = self.layout.lists(queue), self.layout.unprobed(queue)
            plan.append((queue, lists, probes))
            for sep, step in lists:
                pipe.llen(self.layout.key(queue, sep, step))
            if probes:
                pipe.exists(*(self.layout.key(queue, sep, step) for sep, step in probes))
        results = iter(pipe.execute(raise_on_error=False))
        lengths: dict[str, list[Length]] = {}
        hits: list[tuple[str, list[tuple[str, int]]]] = []
        for queue, lists, probes in plan:
            lengths[queue] = [(pair, _int(next(results))) for pair in lists]
            if probes and _int(next(results)):
                hits.append((queue, probes))
        if hits:
            confirm = client.pipeline(transaction=False)
            for queue, probes in hits:
                for sep, step in probes:
                    confirm.llen(self.layout.key(queue, sep, step))
            found = iter(confirm.execute(raise_on_error=False))
            for queue, probes in hits:
                for sep, step in probes:
                    length = _int(next(found))
                    if length:
                        self.layout.found_list(queue, sep, step)
                        lengths[queue].append(((sep, step), length))
                lengths[queue].sort(key=lambda item: item[0][1])
        return lengths

    def _wanted_key(self, key: str, queues: set[str]) -> bool:
        if self._is_binding(key):
            return True
        self._note_foreign_prefix(key)
        return self.layout.classify(key, queues) is not None

    def _note_foreign_prefix(self, key: str) -> None:
        """kombu's binding keys under another ``global_keyprefix`` than the exporter's: an
        app whose queues, events and workers this exporter cannot see. Logged once each."""
        at = key.find(BINDING_PREFIX)
        if at <= 0 or len(self.foreign_prefixes) >= MAX_FOREIGN_PREFIXES:
            return
        prefix = key[:at]
        if prefix not in self.foreign_prefixes:
            self.foreign_prefixes.add(prefix)
            log.warning(
                "Redis holds kombu bindings under global_keyprefix %r (%s): this exporter "
                "sees none of that app's queues, events or workers; if it is yours, give "
                "--broker-transport-option 'global_keyprefix=%s'",
                prefix,
                key,
                prefix,
            )

    def _is_binding(self, key: str) -> bool:
        return key.startswith(f"{self.prefix}{BINDING_PREFIX}")

    def _note_found_lists(self, client: redis.Redis, keys: set[str], queues: set[str]) -> None:
        """Priority lists the keyspace walk found (other separators, unusual steps). A key
        under a separator not known yet is taken only when it holds a kombu message: a key
        name alone is no proof that producers use that separator."""
        candidates: list[tuple[str, tuple[str, str, int]]] = []
        for key in sorted(keys):
            found = self.layout.classify(key, queues)
            if found is not None:
                candidates.append((key, found))
        unproven = [key for key, (_q, sep, _s) in candidates if sep not in self.layout.seps]
        heads: dict[str, object] = {}
        if unproven:
            pipe = client.pipeline(transaction=False)
            for key in unproven:
                pipe.lindex(key, 0)
            heads = dict(zip(unproven, pipe.execute(raise_on_error=False), strict=True))
        for key, found in candidates:
            if key not in heads or _is_kombu_message(heads[key]):
                self.layout.found_list(*found)

    def _read_bindings(self, client: redis.Redis, keys: set[str]) -> set[str]:
        """Queue names from kombu's ``_kombu.binding.<exchange>`` sets; also learns the
        separator the producers use when it is not the configured one."""
        routes: dict[tuple[str, str], str] = {}
        listed: set[str] = set()
        ordered = sorted(keys)
        if ordered:
            pipe = client.pipeline(transaction=False)
            for key in ordered:
                pipe.smembers(key)
            for key, members in zip(ordered, pipe.execute(), strict=True):
                exchange = key[len(self.prefix) + len(BINDING_PREFIX) :]
                if exchange in NOT_TASK_EXCHANGES:
                    continue
                for member in members:
                    parsed = self._parse_binding(_text(member))
                    if parsed is not None:
                        routing_key, queue = parsed
                        routes[(exchange, routing_key)] = queue
                        listed.add(cached_label(queue))
        self._routes = routes
        return listed

    def _parse_binding(self, member: str) -> tuple[str, str] | None:
        """(routing key, queue) of a binding member ``<routing key><sep><pattern><sep><queue>``."""
        for sep in self.layout.seps:
            parts = member.split(sep)
            if len(parts) == 3 and parts[2]:
                return parts[0], parts[2]
        learned = sep_of_default_binding(member)
        if learned is None:
            return None
        queue, sep = learned
        self.layout.learn_sep(sep)
        return queue, queue

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


def _int(reply: object) -> int:
    """A reply of a pipeline run without raising: an error (WRONGTYPE) counts as 0."""
    return reply if isinstance(reply, int) else 0


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _envelope(raw: object) -> dict[str, Any] | None:
    """``raw`` parsed as a JSON object, else None (not text: no such list, or not a list)."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        envelope = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return envelope if isinstance(envelope, dict) else None


def _is_kombu_message(raw: object) -> bool:
    """A kombu message envelope as kombu's Redis transport stores it (JSON with
    ``properties.delivery_info``, or a Celery task's ``headers.task``)."""
    envelope = _envelope(raw)
    if envelope is None:
        return False
    properties, headers = envelope.get("properties"), envelope.get("headers")
    return (isinstance(properties, dict) and isinstance(properties.get("delivery_info"), dict)) or (
        isinstance(headers, dict) and isinstance(headers.get("task"), str)
    )


def _message_id(raw: bytes | str | None) -> str | None:
    """The Celery task id in a queued message envelope (headers.id), if readable."""
    envelope = _envelope(raw)
    if envelope is None:
        return None
    headers = envelope.get("headers")
    if isinstance(headers, dict) and isinstance(headers.get("id"), str):
        return str(headers["id"])
    properties = envelope.get("properties")
    if isinstance(properties, dict) and isinstance(properties.get("delivery_tag"), str):
        return str(properties["delivery_tag"])
    return None
