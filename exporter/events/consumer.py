"""Consume the broker's event stream, forever, through any outage.

``celery.events.EventReceiver`` never reconnects, rewrites timestamps by timezone offsets
and decodes through kombu's generic path; this consumer owns the connection instead:

- connect, bind a private queue to the event exchange, drain with a short timeout so that
  stop requests and the watchdog are checked at least twice a second;
- on any error: mark the broker down, count it, back off exponentially (capped), retry;
- watchdog: kombu does not notice a half-open pub/sub connection. When a connection that
  carried events falls silent for ``event_watchdog`` (workers heartbeat every 2 s),
  reconnect;
- a hung broker (accepts, never answers) must not hang the consumer: socket timeouts on the
  event connection (unless the transport options set their own), and the broker is marked
  down before the connection is closed. A lost connection is closed on a thread of its own
  (closing talks to the broker, up to the socket timeouts), so each new attempt starts at
  once and takes at most its own timeout;
- the outage clock: when the watchdog gives up on a silent connection and the reconnect
  then fails (a hung broker, not just quiet workers), the outage is counted from the last
  event that arrived, not from the watchdog's verdict.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from celery import Celery
from celery.events.event import get_exchange
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer

from exporter.brokers import bounded_connection
from exporter.diagnose.errors import explain_connection_error
from exporter.events.stages import ConnectionHealth, EventReader, OnMessage
from exporter.redact import redact_text, redact_url
from exporter.settings import Settings

log = logging.getLogger(__name__)

INITIAL_BACKOFF_SECONDS = 0.5
DRAIN_TIMEOUT_SECONDS = 0.5
# Bound on one blocking socket operation of the event connection outside the drain loop
# (handshake, subscribe, health-check PING, closing): without it a hung broker hangs the
# consumer thread for ever, with the broker still shown up.
EVENT_SOCKET_TIMEOUT_SECONDS = 5.0


class WatchdogExpired(Exception):
    pass


class EventConsumer:
    def __init__(
        self,
        app: Celery,
        settings: Settings,
        on_message: OnMessage,
        health: ConnectionHealth,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.settings = settings
        self.on_message = on_message
        self.health = health
        self.clock = clock
        self.stopping = threading.Event()
        self.consuming = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_message_at = 0.0
        self._lost = False
        # When the watchdog gave up on a silent connection: the last event before the silence.
        self._silent_since: float | None = None
        self._queue_name = f"celeryev.exporter.{uuid.uuid4().hex}"
        # The direct Redis reader of the current connection (None for RabbitMQ).
        self.stream: EventReader | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="event-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        backoff = INITIAL_BACKOFF_SECONDS
        outage_logged = False
        while not self.stopping.is_set():
            self._lost = False
            try:
                conn = self._connection()
                try:
                    self._consume(conn)
                finally:
                    if self._lost:
                        _release_in_background(conn)
                    else:
                        conn.release()
            except Exception as exc:
                if self._lost:
                    log.debug("the lost connection failed: %s", _describe(exc))
                else:
                    if self._silent_since is not None:
                        # The silence the watchdog noticed was the broker hanging.
                        self.health.backdate_outage(self._silent_since)
                        self._silent_since = None
                    if not outage_logged:
                        log.error(
                            "cannot reach the broker: %s (retrying %s)",
                            _describe(exc),
                            redact_url(self.settings.broker_url),
                        )
                        outage_logged = True
                    self.health.connect_failed(explain_connection_error(exc))
            self.consuming.clear()
            self.health.set_event_backlog(None)
            self.health.set_broker_up(False, self.clock())
            if self.stopping.is_set():
                break
            if self._lost:
                backoff = INITIAL_BACKOFF_SECONDS
                outage_logged = False
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_backoff)

    def _connection_lost(self, reason: str, exc: BaseException | None) -> None:
        """A connection that carried events is gone: down and counted now; ``run`` then
        closes it in the background (closing talks to the broker: up to the socket timeouts
        when the broker hangs)."""
        self._lost = True
        if exc is None:
            self._silent_since = self._last_message_at
        self.consuming.clear()
        self.health.connection_lost(
            reason,
            ("watchdog", "no events on a connection that carried events: reconnecting")
            if exc is None
            else explain_connection_error(exc),
            self.clock(),
        )
        if exc is None:
            log.warning(
                "no events for %.0f s on a connection that carried events; reconnecting to %s",
                self.settings.event_watchdog,
                redact_url(self.settings.broker_url),
            )
        else:
            log.error(
                "lost the broker connection: %s (%s)",
                _describe(exc),
                redact_url(self.settings.broker_url),
            )

    # -- one connection --------------------------------------------------------------

    def _connection(self) -> Connection:
        return bounded_connection(self.app, EVENT_SOCKET_TIMEOUT_SECONDS)

    def _queue(self, conn: Connection) -> Queue:
        exchange = get_exchange(conn, name=self.settings.event_exchange)
        # A new name per connection: after a partition the broker may still hold the old
        # exclusive queue (405 RESOURCE_LOCKED) until it notices the dead connection.
        self._queue_name = f"celeryev.exporter.{uuid.uuid4().hex}"
        # Exclusive and auto-deleted: gone with our connection. No message TTL (Celery's
        # default 5 s TTL silently drops events whenever the consumer lags).
        return Queue(
            self._queue_name,
            exchange=exchange,
            routing_key="#",
            durable=False,
            auto_delete=True,
            exclusive=True,
        )

    def _consume(self, conn: Connection) -> None:
        # One attempt: kombu's own retry would sleep 2 s between attempts, deaf to stop
        # requests; run() owns the backoff.
        conn.ensure_connection(max_retries=0)
        channel = conn.channel()
        consumer = Consumer(
            channel, queues=[self._queue(conn)], no_ack=True, on_message=self._handle
        )
        consumer.consume()
        try:
            self._drain(conn, channel)
        except WatchdogExpired:
            self._connection_lost("watchdog", None)
        except Exception as exc:
            if not self.consuming.is_set():
                raise  # never consumed: a failed connection attempt
            self._connection_lost("error", exc)
        finally:
            # A lost connection is released whole, in the background; a failed attempt's
            # (never consuming) is closed as it is: cancelling could block or mask its error.
            if not self._lost and self.consuming.is_set():
                try:
                    consumer.cancel()
                except Exception:  # the connection is broken: its own error is the one to tell
                    log.debug("cancelling the event consumer failed", exc_info=True)

    def _drain(self, conn: Connection, channel: object) -> None:
        self._last_message_at = 0.0
        watchdog = self.settings.event_watchdog
        # Redis: kombu connects and subscribes, we read the replies (redis_stream.py).
        stream = self.settings.broker.event_reader(channel, self._handle_body, self._skipped)
        self.stream = stream
        # A broker that never confirms the subscription (hung or half-open just then) must
        # not keep this thread waiting: it is a failed connection attempt, retried.
        subscribe_deadline = time.monotonic() + EVENT_SOCKET_TIMEOUT_SECONDS
        while not self.stopping.is_set():
            if stream is not None:
                stream.drain(DRAIN_TIMEOUT_SECONDS)
                if not stream.subscribed:
                    if time.monotonic() > subscribe_deadline:
                        raise TimeoutError("the broker did not confirm the event subscription")
                    continue
                self.health.set_event_backlog(stream.sample_backlog(self.clock()))
            else:
                try:
                    conn.drain_events(timeout=DRAIN_TIMEOUT_SECONDS)
                except TimeoutError:
                    pass
            if not self.consuming.is_set():
                self.consuming.set()
                self._silent_since = None
                self.health.set_broker_up(True, self.clock())
                log.info("consuming events from %s", redact_url(self.settings.broker_url))
            if (
                watchdog > 0
                and self._last_message_at
                and self.clock() - self._last_message_at > watchdog
            ):
                raise WatchdogExpired()

    def _handle(self, message: Message) -> None:
        self._handle_body(message.body, message.content_type)

    def _handle_body(self, body: bytes | str, content_type: str | None) -> None:
        self._last_message_at = self.clock()
        try:
            self.on_message(body, content_type)
        except Exception:
            # A bug or a message nothing anticipated must not cost the connection (and the
            # events sent while reconnecting).
            self.health.skip("handler_error")
            log.exception("could not handle an event message; skipped")

    def _skipped(self, reason: str) -> None:
        self._last_message_at = self.clock()
        self.health.skip(reason)


def _release_in_background(conn: Connection) -> None:
    """Close a lost connection without making the next attempt wait for it (a hung broker
    holds each close up to the socket timeouts)."""

    def release() -> None:
        try:
            conn.release()
        except Exception as exc:
            log.debug("closing the lost connection failed: %s", _describe(exc))

    threading.Thread(target=release, name="close-lost-connection", daemon=True).start()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact_text(f"{type(exc).__name__}: {text}")
