"""Read a Redis broker's event subscription directly, without kombu's per-message path.

kombu delivers each pub/sub message through ``Channel._receive_one`` -> ``_deliver`` ->
a ``Message`` object -> our callback: envelope JSON with an ``object_hook``, several dict
copies and callbacks per message, about 40% of the exporter's CPU on single-event
messages (bench/RESULTS.md). Here kombu still does everything that depends on the broker
URL and transport options: it creates the connection (``redis://``, ``rediss://`` with
its TLS options, ``sentinel://``), computes the topics (``global_keyprefix``,
``fanout_prefix``, ``fanout_patterns``, the database number) and sends the ``PSUBSCRIBE``
itself. Only the reading of the replies is ours: read a reply from the subscription's
redis-py connection, decode the envelope with orjson, undo the base64 body encoding, and
hand the body to the dispatcher.

Errors are not hidden: a connection error propagates to the consumer (which counts a
reconnect and backs off, as with kombu's path), and an envelope that is not kombu's JSON
is counted as skipped (kombu logged it and dropped it uncounted).
"""

from __future__ import annotations

import binascii
import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kombu.transport.virtual import Channel as VirtualChannel
from orjson import loads as _loads
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError

from exporter.events.stages import OnMessage, OnSkip
from exporter.logs import LogOnce

log = logging.getLogger(__name__)

# Messages handled per drain() call at most, so that stop requests and the watchdog are
# looked at even while a flood lasts.
MAX_MESSAGES_PER_DRAIN = 2_000
# redis-py's pure-Python parser keeps every byte it read until its buffer is read to the
# end, which never happens while a backlog lasts: the buffer grows to the backlog's size
# (hundreds of MiB) and each growth copies it. Past this many bytes already parsed, the
# unread rest (at most a message or a read) is moved to a fresh buffer.
COMPACT_AFTER_BYTES = 1 << 20
COMPACT_EVERY_MESSAGES = 128
# How often Redis is asked how much it holds for us (CLIENT LIST, our connection's omem).
BACKLOG_SAMPLE_SECONDS = 5.0


def is_redis_channel(channel: object) -> bool:
    """Whether ``channel`` is kombu's Redis channel (redis://, rediss://, sentinel://)."""
    try:
        from kombu.transport.redis import Channel as RedisChannel
    except ImportError:  # pragma: no cover - redis-py is a dependency
        return False
    return isinstance(channel, RedisChannel)


class RedisEventStream:
    """The fanout subscription of one kombu Redis channel, read directly.

    Create it after ``Consumer.consume()`` (the channel then knows its fanout queue) and
    before anything drains the connection: it subscribes at once.
    """

    def __init__(self, channel: VirtualChannel, on_message: OnMessage, on_skip: OnSkip) -> None:
        self.on_message = on_message
        self.on_skip = on_skip
        self._log_once = LogOnce(log)
        self.pubsub: Any = channel.subclient  # type: ignore[attr-defined]
        if self.pubsub.connection is None:
            # As kombu's poller does before it subscribes (no redis-py auto-resubscribe:
            # a lost connection is the consumer's to handle and count).
            self.pubsub.connection = self.pubsub.connection_pool.get_connection()
        conn = self.pubsub.connection
        conn.connect()  # a no-op when connected
        self.connection: Any = conn
        # Our connection's id, to find it in CLIENT LIST (output buffer = our backlog). A
        # broker that refuses CLIENT (an ACL, a managed service) only loses that metric.
        self.client_id: int | None
        try:
            conn.send_command("CLIENT", "ID")
            self.client_id = int(conn.read_response())
        except RedisResponseError as exc:
            self.client_id = None
            log.warning("no event backlog metric: Redis refuses CLIENT ID (%s)", exc)
        self._read, self._can_read = _reader(conn)
        # kombu computes the topics from the transport options and sends PSUBSCRIBE.
        channel._subscribe()  # type: ignore[attr-defined]
        self.subscribed = False
        self.messages = 0
        self.bytes_read = 0
        self._channel = channel
        # Bytes Redis holds for this subscription, not yet sent (None: unknown).
        self.backlog_bytes: int | None = None
        self._next_backlog_sample = 0.0
        self._backlog_unavailable = self.client_id is None

    def drain(self, timeout: float) -> int:
        """Handle the messages that arrive within ``timeout``; how many were handled."""
        can_read = self._can_read
        if not can_read(timeout):
            return 0
        read = self._read
        handle = self._handle
        handled = 0
        compact_at = COMPACT_EVERY_MESSAGES
        while True:
            reply = read()
            # RESP2/RESP3 pub/sub: [b"pmessage", pattern, channel, data]. isinstance: with
            # hiredis, a RESP3 push reply is a list subclass (hiredis.PushNotification).
            if isinstance(reply, list):
                kind = reply[0]
                if (kind == b"pmessage" or kind == "pmessage") and len(reply) == 4:
                    handle(reply[3])
                    handled += 1
                elif (kind == b"message" or kind == "message") and len(reply) == 3:
                    handle(reply[2])
                    handled += 1
                elif kind in (b"psubscribe", "psubscribe", b"subscribe", "subscribe"):
                    self.subscribed = True
            if handled >= compact_at:
                compact_at += COMPACT_EVERY_MESSAGES
                self._compact()
            if handled >= MAX_MESSAGES_PER_DRAIN or not can_read(0):
                break
        self._compact()
        # PING every health_check_interval, as redis-py's PubSub does (its reads would
        # push the next check back; ours bypass them, so push it here).
        interval = getattr(self.connection, "health_check_interval", 0)
        if interval and time.monotonic() > self.connection.next_health_check:
            self.pubsub.check_health()
            self.connection.next_health_check = time.monotonic() + interval
        self.messages += handled
        return handled

    def sample_backlog(self, now: float) -> int | None:
        """Bytes waiting in Redis for this subscription (its output buffer, ``omem``),
        asked every ``BACKLOG_SAMPLE_SECONDS`` on another connection; None if unknown.

        Redis disconnects a subscriber whose buffer passes ``client-output-buffer-limit
        pubsub`` (32 MB by default): the events in it are lost, and the consumer counts a
        reconnect. This says how close that is.
        """
        if self._backlog_unavailable or now < self._next_backlog_sample:
            return self.backlog_bytes
        self._next_backlog_sample = now + BACKLOG_SAMPLE_SECONDS
        try:
            with self._channel.conn_or_acquire() as client:  # type: ignore[attr-defined]
                try:
                    entries = client.client_list(client_id=[self.client_id])
                except RedisResponseError:  # Redis < 6.2: no CLIENT LIST ID
                    entries = client.client_list(_type="pubsub")
        except RedisResponseError as exc:  # e.g. an ACL without CLIENT
            self._backlog_unavailable = True
            self.backlog_bytes = None
            log.warning("cannot read the event backlog from Redis (CLIENT LIST): %s", exc)
            return None
        except Exception as exc:  # this side connection must not cost the
            # subscription (a connection limit, a timeout): unknown until the next sample.
            self.backlog_bytes = None
            self._log_once("backlog", logging.WARNING, "cannot read the event backlog: %s", exc)
            return None
        for entry in entries:
            if str(entry.get("id")) == str(self.client_id):
                self.backlog_bytes = int(entry.get("omem", 0))
                break
        else:
            self.backlog_bytes = None
        return self.backlog_bytes

    def _compact(self) -> None:
        socket_buffer = getattr(getattr(self.connection, "_parser", None), "_buffer", None)
        buffer = getattr(socket_buffer, "_buffer", None)
        if type(buffer) is not io.BytesIO or buffer.tell() < COMPACT_AFTER_BYTES:
            return  # hiredis, or nothing worth moving
        fresh = io.BytesIO(buffer.read())
        socket_buffer._buffer = fresh  # type: ignore[union-attr]

    def _handle(self, data: bytes | str) -> None:
        self.bytes_read += len(data)
        try:
            envelope = _loads(data)
        except ValueError:
            try:
                envelope = json.loads(data)
            except (ValueError, TypeError, RecursionError):
                envelope = None
        if type(envelope) is not dict:
            self._skip("envelope", "a message that is not a kombu JSON envelope")
            return
        body = envelope.get("body")
        properties = envelope.get("properties")
        encoding = properties.get("body_encoding") if type(properties) is dict else None
        if encoding == "base64" and body:
            try:
                body = binascii.a2b_base64(body)
            except (binascii.Error, ValueError, TypeError):
                self._skip("envelope", "a message whose base64 body does not decode")
                return
        elif encoding is not None and encoding != "base64":
            self._skip("envelope", "a message with body encoding %.40r", encoding)
            return
        content_type = envelope.get("content-type")
        self.on_message(body, content_type if type(content_type) is str else None)

    def _skip(self, reason: str, message: str, *args: object) -> None:
        self.on_skip(reason)
        self._log_once(reason, logging.WARNING, "skipping " + message, *args)


def _identity(response: Any) -> Any:
    return response


def _reader(conn: Any) -> tuple[Callable[[], Any], Callable[[float], bool]]:
    """read() and can_read(timeout) for the subscription's connection.

    redis-py's ``Connection.read_response``/``can_read`` format an error string (host and
    port) on every call, and its RESP3 parser logs every pub/sub message with
    ``logger.debug("Push response: " + str(response))``, building the repr of each
    message even when debug logging is off: together more than the rest of the read on
    large messages. Read through the parser itself, with a push handler that only returns
    the message; fall back to the connection's methods for parsers that differ.
    """
    parser: Any = getattr(conn, "_parser", None)
    parser_read = getattr(parser, "read_response", None)
    parser_can_read = getattr(parser, "can_read", None)
    if parser_read is None or parser_can_read is None:
        return (
            lambda: conn.read_response(disconnect_on_error=False, push_request=True),
            lambda timeout: bool(conn.can_read(timeout=timeout)),
        )
    resp3 = str(getattr(conn, "protocol", "2")) == "3"
    if resp3 and hasattr(parser, "set_pubsub_push_handler"):
        parser.set_pubsub_push_handler(_identity)

    def read() -> Any:
        try:
            if resp3:
                return parser_read(disable_decoding=False, push_request=True)
            return parser_read(disable_decoding=False)
        except OSError as exc:  # as Connection.read_response says it
            raise RedisConnectionError(
                f"Error while reading the event subscription: {exc}"
            ) from exc

    def can_read(timeout: float) -> bool:
        try:
            return bool(parser_can_read(timeout))
        except OSError as exc:
            raise RedisConnectionError(
                f"Error while reading the event subscription: {exc}"
            ) from exc

    return read, can_read
