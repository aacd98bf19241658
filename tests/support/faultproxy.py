"""A TCP proxy on 127.0.0.1 that the test controls: put it between the exporter and a broker.

Modes (switch at any time, they apply to live connections at once):

- ``pass_through()``: bytes flow both ways as they come.
- ``latency(seconds)``: every chunk (up to ``chunk_size`` bytes) waits ``seconds`` before it
  is forwarded, in both directions: a slow broker or a slow link. Throughput is then at most
  ``chunk_size / seconds`` per direction, so a fast sender fills the kernel buffers and then
  the broker's own output buffer (backpressure, as with a real slow reader).
- ``blackhole()``: connections are still accepted, but nothing is forwarded any more (bytes
  stay in the kernel buffers): a hung broker or a stalled network path. Nothing is lost:
  ``resume()`` forwards what was held, as a network that comes back would.
- ``cut()``: every open connection is closed and new ones are refused (the listening socket
  is closed): a broker that is down, or a partition that resets connections.
- ``resume()``: back to pass-through (listening again after a cut, on the same port).

One thread accepts; each connection gets two pump threads (one per direction). Every thread
is a daemon and ``close()`` ends them all; the proxy never binds anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time
from types import TracebackType

from tests.support.ports import free_port

_REBIND_SECONDS = 10.0
_POLL_SECONDS = 0.05


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self.bytes_up = 0  # client -> upstream
        self.bytes_down = 0  # upstream -> client

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class FaultProxy:
    """``FaultProxy(upstream_port)``; clients connect to ``127.0.0.1:proxy.port``."""

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        chunk_size: int = 65536,
        upstream_rcvbuf: int | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.chunk_size = chunk_size
        # A small receive buffer towards the broker: with ``latency``, what the proxy cannot
        # forward yet backs up into the broker's own output buffer instead of the kernel's
        # (loopback buffers grow to megabytes).
        self.upstream_rcvbuf = upstream_rcvbuf
        self._lock = threading.Lock()
        self._mode = "pass"
        self._delay = 0.0
        self._links: list[_Link] = []
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._closing = threading.Event()
        #: Connections accepted since the proxy started (all modes).
        self.accepted = 0
        #: Local ports of every connection the proxy opened to the broker: what the broker
        #: sees as the client's port (Redis ``MONITOR``, ``CLIENT LIST``).
        self.upstream_ports: set[int] = set()

    # -- control -------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def pass_through(self) -> None:
        with self._lock:
            self._mode, self._delay = "pass", 0.0

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._mode, self._delay = "latency", seconds

    def blackhole(self) -> None:
        with self._lock:
            self._mode = "blackhole"

    def cut(self) -> None:
        """Close every connection and stop listening (new connections are refused)."""
        with self._lock:
            self._mode = "cut"
            links, self._links = self._links, []
        self._stop_listening()
        for link in links:
            link.close()

    def resume(self) -> None:
        """Forward again, as fast as possible; listen again if cut."""
        with self._lock:
            was_cut = self._mode == "cut"
            self._mode, self._delay = "pass", 0.0
        if was_cut:
            self._listen()

    def live_connections(self) -> int:
        with self._lock:
            self._links = [link for link in self._links if not link.closed.is_set()]
            return len(self._links)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            links, self._links = self._links, []
        self._stop_listening()
        for link in links:
            link.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # While cut, the port is free: an outgoing connection may have taken it as its
        # source port for a moment (even the exporter's own retry, connected to itself).
        # It is released when that connection fails: retry the bind until then.
        deadline = time.monotonic() + _REBIND_SECONDS
        while True:
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(_POLL_SECONDS)
        listener.listen(64)
        listener.settimeout(_POLL_SECONDS)
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept_loop, args=(listener,), name=f"faultproxy-{self.port}", daemon=True
        )
        self._acceptor.start()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None and acceptor is not threading.current_thread():
            acceptor.join(2.0)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._closing.is_set() and self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()  # the broker itself is down: so is the proxied connection
                continue
            self.upstream_ports.add(upstream.getsockname()[1])
            for sock in (client, upstream):
                sock.setblocking(True)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            with self._lock:
                if self._mode == "cut" or self._closing.is_set():
                    link.close()
                    continue
                self._links.append(link)
                self.accepted += 1
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(link, src, dst, up), name="proxy-pump", daemon=True
                ).start()

    def _connect_upstream(self) -> socket.socket:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.upstream_rcvbuf is not None:
                # Before connect(), so that the window the broker sees is small from the start.
                upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.upstream_rcvbuf)
            upstream.settimeout(5.0)
            upstream.connect(self.upstream)
        except OSError:
            upstream.close()
            raise
        return upstream

    def _current(self) -> tuple[str, float]:
        with self._lock:
            return self._mode, self._delay

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while not link.closed.is_set():
                mode, delay = self._current()
                if mode == "blackhole":
                    # Read nothing: the sender's data waits in the kernel (and, past that, in
                    # the broker's output buffer), exactly as behind a stalled path.
                    link.closed.wait(_POLL_SECONDS)
                    continue
                readable, _, _ = select.select([src], [], [], _POLL_SECONDS)
                if not readable:
                    continue
                # A mode switched while waiting applies to this chunk too.
                mode, delay = self._current()
                if mode == "blackhole":
                    continue
                data = src.recv(self.chunk_size)
                if not data:
                    break
                if mode == "latency" and delay > 0:
                    time.sleep(delay)
                    # Blackholed while this chunk waited: hold it until resumed.
                    while self._current()[0] == "blackhole" and not link.closed.is_set():
                        link.closed.wait(_POLL_SECONDS)
                dst.sendall(data)
                if up:
                    link.bytes_up += len(data)
                else:
                    link.bytes_down += len(data)
        except OSError:
            pass
        finally:
            link.close()
