"""Record what clients send to a Redis server (``MONITOR``), to prove who writes what.

``MonitorRecorder(server)`` runs ``MONITOR`` on a connection of its own, in a thread, and
keeps every command as a :class:`Command` (client port, database, command and arguments).
Attribute commands to a process by the client ports it used: a :class:`FaultProxy` in
pass-through knows the ports of its upstream connections exactly, even for connections that
lived a few milliseconds.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from types import TracebackType

import redis

from tests.support.servers import RedisServer
from tests.support.waiting import wait_for


@dataclass(frozen=True)
class Command:
    port: int  # the client's port
    db: int
    name: str  # upper case: "LLEN", "CLIENT SETNAME" for two-word commands
    args: tuple[str, ...]  # after the command name

    def __str__(self) -> str:
        return f"[db{self.db} :{self.port}] {self.name} {' '.join(map(repr, self.args))}"


_TWO_WORD = {"CLIENT", "CONFIG", "OBJECT", "MEMORY", "PUBSUB", "XINFO", "COMMAND", "SCRIPT"}


def _parse(raw: dict[str, object]) -> Command | None:
    words = str(raw.get("command", "")).split(" ")
    if not words or not words[0]:
        return None
    # redis-py's parser unquotes and joins the arguments with spaces: good enough for
    # command names and our own key names (which have no spaces).
    name = words[0].upper()
    args = tuple(words[1:])
    if name in _TWO_WORD and args:
        name, args = f"{name} {args[0].upper()}", args[1:]
    port = raw.get("client_port")
    db = raw.get("db")
    if not isinstance(port, str | int) or not str(port).isdigit():
        return None  # lua or unix socket: none in these tests
    return Command(port=int(port), db=int(str(db)), name=name, args=args)


class MonitorRecorder:
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.commands: list[Command] = []
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._marker = "monitor-recorder-started"

    def start(self) -> MonitorRecorder:
        self._client = self.server.client(socket_timeout=None)
        monitor = self._client.monitor()
        monitor.__enter__()

        def run() -> None:
            try:
                for raw in monitor.listen():
                    command = _parse(raw)
                    if command is None:
                        continue
                    if command.name == "ECHO" and command.args == (self._marker,):
                        self._started.set()
                        continue
                    with self._lock:
                        self.commands.append(command)
            except (redis.exceptions.ConnectionError, OSError, ValueError, AttributeError):
                pass  # closed by stop()

        self._thread = threading.Thread(target=run, name="redis-monitor", daemon=True)
        self._thread.start()
        # MONITOR only shows what comes after it is in place: wait until it sees our probe.
        with self.server.client() as probe:

            def seen() -> bool:
                probe.echo(self._marker)
                return self._started.is_set()

            wait_for(seen, 10, interval=0.05, message="MONITOR did not start")
        self._monitor = monitor
        return self

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                self._monitor.connection.disconnect()  # type: ignore[union-attr]
            client.close()
        if self._thread is not None:
            self._thread.join(5.0)

    def snapshot(self) -> list[Command]:
        with self._lock:
            return list(self.commands)

    def __enter__(self) -> MonitorRecorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
