"""Record what clients send to a Redis server (``MONITOR``), to prove who writes what.

``MonitorRecorder(server)`` runs ``MONITOR`` on a connection of its own, in a thread, and
keeps every command as a :class:`Command` (client port, database, command and arguments).
Attribute commands to a process by the client ports it used: a :class:`FaultProxy` in
pass-through knows the ports of its upstream connections exactly, even for connections that
lived a few milliseconds.

``allowed()`` is the list of what the exporter may send (each entry with its reason).

Opt-in, for a whole test run: ``TEST_REDIS_MONITOR=1 pytest ...`` records every Redis server
the suite starts (:func:`session_recorder_enabled`, used by ``RedisServer``), attributes
connections to the exporter by the name it gives each of them (``CLIENT SETNAME`` or
``HELLO ... SETNAME celery-metrics-exporter``;
``tests/integration/brokers/test_read_only.py`` proves every exporter connection names
itself), and fails the run at the end if an exporter connection sent anything not allowed
(``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import redis

from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from tests.support.servers import RedisServer

EXPORTER_NAME = "celery-metrics-exporter"


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


def sets_name(c: Command) -> str | None:
    """The name this command gives its connection, if it names it."""
    if c.name == "CLIENT SETNAME":
        return c.args[0] if c.args else ""
    if c.name == "HELLO":
        upper = [a.upper() for a in c.args]
        if "SETNAME" in upper and upper.index("SETNAME") + 1 < len(c.args):
            return c.args[upper.index("SETNAME") + 1]
    return None


# What the exporter may send, and why. Anything else fails the test.
CONNECTION_SETUP = {
    # redis-py's handshake: protocol, name, client library info, database, liveness.
    "HELLO",
    "CLIENT SETNAME",
    "CLIENT SETINFO",
    "CLIENT MAINT_NOTIFICATIONS",
    "SELECT",
    "PING",
    "AUTH",
    # Transaction brackets around the commands below (each one is checked on its own).
    "MULTI",
    "EXEC",
    # redis-py's script cache for kombu's two binding scripts (see EVALSHA below).
    "SCRIPT EXISTS",
    "SCRIPT LOAD",
}
READS = {
    # Queue sampling: depth per (priority) list, next message, unacked hash, bindings.
    "LLEN",
    "LINDEX",
    "LRANGE",
    "HLEN",
    "HSCAN",
    "HGET",
    "SCAN",
    "SMEMBERS",
    "SSCAN",
    "EXISTS",
    "TYPE",
    # The event backlog metric: the subscription's own id, then its output buffer size.
    "CLIENT ID",
    "CLIENT LIST",
}
SUBSCRIPTION = {
    # Its own event subscription (Celery events are pub/sub) and the control replies'.
    "PSUBSCRIBE",
    "SUBSCRIBE",
    "PUNSUBSCRIBE",
    "UNSUBSCRIBE",
}
PIDBOX = ".reply.celery.pidbox"  # Celery's control reply queues: <uuid>.reply.celery.pidbox
OWN_EVENT_QUEUE = "celeryev.exporter."  # the exporter's event queue: celeryev.exporter.<uuid>


def _own_queue(name: str) -> bool:
    return OWN_EVENT_QUEUE in name or PIDBOX in name


def _kombu_script_sha(name: str) -> str:
    from kombu.transport import redis as kombu_redis

    return hashlib.sha1(getattr(kombu_redis, name).encode()).hexdigest()


# kombu 5.7's scripts: REFRESH_BINDING adds the binding of an expiring queue (Celery's reply
# queues expire) and raises its exchange's deadline; SWEEP_BINDINGS deletes binding tables
# whose deadline passed and that list no permanent queue (the reply tables of clients gone).
# Neither touches a queue's messages; their commands run inside Redis (MONITOR shows them
# as "lua" clients), so the script itself is pinned by its hash here.
REFRESH_BINDING = _kombu_script_sha("REFRESH_BINDING")
SWEEP_BINDINGS = _kombu_script_sha("SWEEP_BINDINGS")


def allowed(c: Command, db: int) -> bool:
    if c.name in CONNECTION_SETUP or c.name in READS or c.name in SUBSCRIPTION:
        return True
    key = c.args[0] if c.args else ""
    if c.name == "PUBLISH":
        # Remote control: inspect requests and enable_events are published to the pidbox
        # fanout channel (workers answer on a reply queue of the exporter's own).
        return key.endswith("celery.pidbox")
    if c.name in ("SADD", "SREM"):
        # kombu records (and on close removes) the bindings of the exporter's own queues:
        # its event queue and its control reply queues, in the exchange's binding table and
        # kombu 5.7's "permanent" set.
        # (``in``, not ``startswith``: with ``global_keyprefix`` every key has a prefix.)
        member = c.args[1] if len(c.args) > 1 else ""
        tables = ("_kombu.binding.", "_kombu.binding_permanent.")
        return any(t in key for t in tables) and _own_queue(member)
    if c.name == "BRPOP":
        # Waiting for control replies: only on its own reply queue (and its priority
        # lists), never on a task queue. The last argument is the timeout.
        keys = c.args[:-1]
        return bool(keys) and all(PIDBOX in k for k in keys)
    if c.name == "DEL":
        # kombu deletes the lists of the exporter's own queues when it closes them.
        return bool(c.args) and all(_own_queue(k) for k in c.args)
    if c.name == "EVALSHA":
        sha, nkeys = c.args[0], int(c.args[1])
        keys, argv = c.args[2 : 2 + nkeys], c.args[2 + nkeys :]
        if sha == REFRESH_BINDING:
            return "_kombu.binding." in keys[0] and _own_queue(argv[0])
        deadlines = "_kombu.binding_deadlines"
        return sha == SWEEP_BINDINGS and len(keys) == 1 and keys[0].endswith(deadlines)
    return False


# -- opt-in: every Redis server of a test run ---------------------------------------------------


def session_recorder_enabled() -> bool:
    return os.environ.get("TEST_REDIS_MONITOR", "") == "1"


def exporter_commands(commands: list[Command]) -> list[Command]:
    """Commands sent on connections that named themselves ``celery-metrics-exporter``.

    A client port is the exporter's from its naming command until a command names it
    otherwise or a new handshake (``HELLO``) without that name starts another connection
    on the same port.
    """
    ours: dict[int, bool] = {}
    found = []
    for c in commands:
        if c.name in ("HELLO", "CLIENT SETNAME"):
            ours[c.port] = sets_name(c) == EXPORTER_NAME
        if ours.get(c.port):
            found.append(c)
    return found


class SessionRecords:
    """Commands recorded from every server of the run (each start of each server)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.commands: list[Command] = []
        self.recordings = 0

    def add(self, commands: list[Command]) -> None:
        with self._lock:
            self.commands.extend(exporter_commands(commands))
            self.recordings += 1

    def violations(self) -> list[str]:
        with self._lock:
            return [str(c) for c in self.commands if not allowed(c, c.db)]


SESSION = SessionRecords()
