"""The HTTP server's connection cap: which connections hold a handler thread, what each is doing,
and which to close to make room for a new one.

Every accepted connection needs one of ``--web-max-connections`` slots before its thread starts
(the TLS handshake runs on that thread, so it counts too). When all slots are taken, the accept
loop closes the connection that is doing least for anyone: first the one that has waited
longest for a request (idle keep-alive, or connected and silent), then the one that has been
sending its request head (or TLS handshake) for longest, then the one whose client has been
taking its answer for longest (a client that asks and does not read); a connection whose
answer is being rendered is never closed. So a crowd of idle or slow clients cannot starve a
scraper that sends its request at once and reads its answer. Only when every slot is
rendering an answer does a new connection wait, briefly, and is then refused.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.prom.families import by_label

# Phases of a connection, in the order the cap closes them (ConnectionTable._victim).
IDLE = "idle"  # waiting for the first byte of a request
HEAD = "head"  # TLS handshake or request head under way
BUSY = "busy"  # a request being read or its answer rendered: never closed to make room
SEND = "send"  # an answer being sent: its client may read slowly, or not at all

# Why connections were closed without an answer (label values of the counter, all exported).
REJECT_REASONS = (
    "full",  # every slot was rendering an answer for the whole accept wait
    "evicted",  # an idle or slow connection closed to make room for a new one
    "header_timeout",  # the request head (or TLS handshake) did not arrive in time
    "request_too_large",  # request line and headers over --web-max-request-size
)


def _has_input(sock: socket.socket) -> bool:
    """Whether the client has sent bytes (or closed) that no thread has read yet."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed, or detached by a TLS wrap
        return False


class Connection:
    """One admitted connection. ``phase`` changes only under the table's lock."""

    __slots__ = ("admitted", "evicted", "phase", "since", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.admitted = now
        self.phase = IDLE
        self.since = now
        self.evicted = False


class ConnectionTable:
    """Admits connections up to ``limit``; a collector for the connection metrics."""

    def __init__(self, limit: int, accept_wait: float) -> None:
        self.limit = limit
        self.accept_wait = accept_wait  # seconds a new connection may wait for a slot
        self._open: set[Connection] = set()
        self._changed = threading.Condition()
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)

    def admit(self, sock: socket.socket) -> Connection | None:
        """A slot for ``sock`` (on the accept loop), or None: refused, counted as ``full``."""
        deadline = time.monotonic() + self.accept_wait
        with self._changed:
            while len(self._open) >= self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._rejected["full"] += 1
                    return None
                self._evict_one()
                self._changed.wait(remaining)  # for a thread to give its slot back
            connection = Connection(sock, time.monotonic())
            self._open.add(connection)
            return connection

    def _evict_one(self) -> None:
        """Under the lock: shut the socket of the connection to sacrifice first, if any."""
        if any(c.evicted for c in self._open):
            return  # one is already on its way out: its slot is the one to wait for
        victim = self._victim()
        if victim is None:
            return
        victim.evicted = True
        self._rejected["evicted"] += 1
        # The plain socket's shutdown (also under a TLS socket, whose own shutdown would tear
        # down its SSL object under the reading thread): the blocked read returns end-of-file
        # and the thread ends.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(victim.sock, socket.SHUT_RDWR)

    def _victim(self) -> Connection | None:
        """The idle connection waiting longest, else the slowest head, else the slowest reader.

        An idle connection with bytes already waiting is a client that has sent its request
        before its thread got to it (a flood of new connections fills the cap within
        milliseconds on a busy machine): it ranks with the heads.
        """
        idle = sorted((c for c in self._open if c.phase == IDLE), key=lambda c: c.since)
        heads = [c for c in self._open if c.phase == HEAD]
        for connection in idle:
            if not _has_input(connection.sock):
                return connection
            heads.append(connection)
        for candidates in (heads, [c for c in self._open if c.phase == SEND]):
            if candidates:
                return min(candidates, key=lambda c: c.since)
        return None

    def enter(self, connection: Connection, phase: str) -> bool:
        """Move to ``phase``; False if the connection was closed to make room meanwhile."""
        with self._changed:
            if connection.evicted:
                return False
            connection.phase = phase
            connection.since = time.monotonic()
            return True

    def rebind(self, connection: Connection, sock: socket.socket) -> None:
        """The connection is now carried by ``sock`` (its TLS socket)."""
        with self._changed:
            connection.sock = sock
            if connection.evicted:  # meanwhile, through the socket object now detached
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def release(self, connection: Connection) -> None:
        with self._changed:
            self._open.discard(connection)
            self._changed.notify_all()

    def count(self, reason: str) -> None:
        with self._changed:
            self._rejected[reason] += 1

    def phases(self) -> list[str]:
        """The phase of each open connection."""
        with self._changed:
            return sorted(c.phase for c in self._open)

    @property
    def open(self) -> int:
        with self._changed:
            return len(self._open)

    def collect(self) -> Iterable[Metric]:
        with self._changed:
            rejected = dict(self._rejected)
            open_now = len(self._open)
        yield by_label(
            CounterMetricFamily,
            "celery_exporter_http_connections_rejected_total",
            "HTTP connections closed by the server without an answer, by reason.",
            "reason",
            rejected.items(),
        )
        yield GaugeMetricFamily(
            "celery_exporter_http_connections",
            "HTTP connections open (each holds a handler thread).",
            value=open_now,
        )
        yield GaugeMetricFamily(
            "celery_exporter_http_connections_max",
            "The cap on open HTTP connections (--web-max-connections).",
            value=self.limit,
        )
