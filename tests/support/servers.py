"""Real Redis and RabbitMQ servers for tests, private to the test run, on 127.0.0.1.

Each server keeps its port(s) for its whole life, so ``stop()`` then ``start()`` (or
``restart()``) brings it back where clients expect it: that is what broker outage tests need.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import amqp
import redis
from amqp.exceptions import AMQPError
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.ports import free_port, port_is_open
from tests.support.processes import ManagedProcess, tail
from tests.support.redis_monitor import SESSION, MonitorRecorder, session_recorder_enabled
from tests.support.tls import TlsFiles
from tests.support.waiting import wait_for


class ServerBinaryMissing(RuntimeError):
    """A server binary is not installed; ``make test`` installs them."""


def _require_binary(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/lib/rabbitmq/bin")
    if path is None:
        raise ServerBinaryMissing(
            f"`{name}` is not installed: run `make test`, which installs redis-server and "
            "rabbitmq-server (Debian packages) before running the tests"
        )
    return path


class _Server:
    """Context-manager plumbing shared by the servers."""

    def start(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def restart(self, timeout: float | None = None) -> None:
        """Stop (if running) and start again on the same port(s)."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ProcessServer(_Server):
    """A server that is one process of ours listening on ``self.port``."""

    name = "server"
    port: int
    _proc: ManagedProcess | None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.running else None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; returns once the port is free."""
        if self._proc is not None:
            self._proc.stop(timeout)
        self._wait_port_closed()

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self._proc is not None:
            self._proc.kill()
        self._wait_port_closed()

    def _wait_port_closed(self) -> None:
        wait_for(
            lambda: not port_is_open(self.port),
            10.0,
            message=f"port {self.port} still accepts connections after {self.name} stopped",
        )


class RedisServer(_ProcessServer):
    """A redis-server on 127.0.0.1:<free port>, no persistence, its files under ``workdir``."""

    name = "redis-server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port if port is not None else free_port()
        self.binary = _require_binary("redis-server")
        self.log_path = self.workdir / "redis.log"
        self._proc: ManagedProcess | None = None
        #: Seconds the last start() took until PING answered.
        self.last_boot_seconds: float | None = None
        # TEST_REDIS_MONITOR=1: MONITOR from start to stop (tests/support/redis_monitor.py).
        self._recorder: MonitorRecorder | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0, **kwargs: Any) -> redis.Redis:
        """A new client (close it when done; ``with server.client() as r:`` does).

        It does not retry: redis-py 8 retries a failed command 10 times with backoff by
        default, so a refused connection surfaces only after about 4 s. ``kwargs`` override.
        """
        options: dict[str, Any] = {
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry": Retry(NoBackoff(), 0),
        }
        options.update(kwargs)
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, **options)

    def _ping(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def start(self, timeout: float | None = None) -> None:
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        timeout = 30.0 if timeout is None else timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--protected-mode", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        proc = ManagedProcess(argv, self.log_path, cwd=self.workdir)
        begin = time.monotonic()
        proc.start()
        self._proc = proc

        def ready() -> bool:
            if not proc.running:
                raise AssertionError(
                    f"redis-server exited with code {proc.returncode}:\n{proc.log_tail()}"
                )
            return self._ping()

        try:
            wait_for(
                ready,
                timeout,
                message=lambda: (
                    f"redis-server on port {self.port} did not answer PING:\n" + proc.log_tail()
                ),
                ignore=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
            )
        except BaseException:
            proc.kill()
            raise
        self.last_boot_seconds = time.monotonic() - begin
        if session_recorder_enabled():
            self._recorder = MonitorRecorder(self).start()

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        self._end_recording()

    def kill(self) -> None:
        super().kill()
        self._end_recording()

    def _end_recording(self) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.stop()  # after the server: everything it received is recorded
            SESSION.add(recorder.snapshot())

    def __enter__(self) -> RedisServer:
        self.start()
        return self


# --------------------------------------------------------------------------------------------
# RabbitMQ


def _rabbitmq_bin_dir() -> Path:
    """The directory of RabbitMQ's real scripts (rabbitmq-server, rabbitmqctl, rabbitmq-env).

    Debian's /usr/sbin/rabbitmq-server is a wrapper that, run as root, re-executes the script as
    user ``rabbitmq`` through ``su``: that drops our environment (ports, node name, directories),
    so we call the scripts in /usr/lib/rabbitmq/bin directly.
    """
    override = os.environ.get("RABBITMQ_BIN_DIR")
    candidates = [Path(override)] if override else []
    candidates.append(Path("/usr/lib/rabbitmq/bin"))
    found = shutil.which("rabbitmq-server", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if found:
        candidates.append(Path(os.path.realpath(found)).parent)
    for directory in candidates:
        if (directory / "rabbitmq-server").is_file() and (directory / "rabbitmq-env").is_file():
            return directory
    raise ServerBinaryMissing(
        "rabbitmq-server is not installed (looked in "
        + ", ".join(str(c) for c in candidates)
        + "): run `make test`, which installs redis-server and rabbitmq-server (Debian packages)"
    )


class RabbitMQServer(_Server):
    """A private RabbitMQ node with its own epmd, all on 127.0.0.1, all files under ``workdir``.

    Nothing is shared with a system RabbitMQ: own epmd port, own Erlang cookie (HOME=workdir),
    own node name ``rabbit-<port>@localhost``, own config/log/data directories, no plugins.
    User ``guest``/``guest`` works because clients connect from localhost.

    With ``tls`` (see ``tests.support.tls.make_certificates``) the node also listens for
    AMQP over TLS on 127.0.0.1:``tls_port`` (``tls_url()``), presenting ``tls.cert``. It
    asks clients for no certificate (``verify_none``); verifying the server is up to them.
    """

    BOOT_TIMEOUT = 90.0

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.bin_dir = _rabbitmq_bin_dir()
        self.epmd_binary = _require_binary("epmd")
        self.port = port if port is not None else free_port()
        self.tls = tls
        self._tls_port: int | None = None
        if tls is not None:
            self._tls_port = tls_port if tls_port is not None else free_port()
        elif tls_port is not None:
            raise ValueError("tls_port needs tls (the certificate files)")
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"rabbit-{self.port}@localhost"
        self.log_path = self.workdir / "rabbitmq-server.log"
        self.epmd_log_path = self.workdir / "epmd.log"
        self._node: ManagedProcess | None = None
        self._epmd: ManagedProcess | None = None
        #: Seconds the last start() took until an AMQP connection succeeded (epmd included).
        self.last_boot_seconds: float | None = None
        self._vhosts: set[str] = {"/"}

    # -- addresses -----------------------------------------------------------------------------

    def url(self, vhost: str = "/") -> str:
        """``amqp://guest:guest@127.0.0.1:P//`` for the default vhost, ``.../<vhost>`` else."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    @property
    def tls_port(self) -> int:
        """The AMQP-over-TLS port; only for a server made with ``tls``."""
        if self._tls_port is None:
            raise RuntimeError("this RabbitMQServer has no TLS listener (pass tls=...)")
        return self._tls_port

    def tls_url(self, vhost: str = "/") -> str:
        """``amqps://guest:guest@127.0.0.1:<tls_port>/<vhost>`` (``//`` for the default)."""
        return f"amqps://guest:guest@127.0.0.1:{self.tls_port}/{vhost}"

    @property
    def running(self) -> bool:
        return self._node is not None and self._node.running

    @property
    def pid(self) -> int | None:
        return self._node.pid if self._node is not None and self._node.running else None

    # -- environment ---------------------------------------------------------------------------

    def _paths(self) -> dict[str, Path]:
        return {
            "home": self.workdir / "home",
            "mnesia": self.workdir / "mnesia",
            "log": self.workdir / "log",
            "confd": self.workdir / "conf.d",
            "config": self.workdir / "rabbitmq.conf",
            "advanced": self.workdir / "advanced.config",
            "env_conf": self.workdir / "rabbitmq-env.conf",
            "plugins": self.workdir / "enabled_plugins",
            "pid": self.workdir / "rabbitmq.pid",
        }

    def env(self, ctl_dist_port: int | None = None) -> dict[str, str]:
        """The environment for rabbitmq-server and rabbitmqctl talking to this node."""
        paths = self._paths()
        # Keep Erlang's distribution on loopback, and never let erl start an epmd of its own
        # (it would daemonize and outlive the tests): ours is started first and stopped last.
        erl_args = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_")) and key not in ("HOME", "CONF_ENV_FILE")
        }
        env.update(
            {
                # Erlang writes its cookie to $HOME/.erlang.cookie (mode 0400) on first boot;
                # rabbitmqctl reads the same file, so both must see the same HOME.
                "HOME": str(paths["home"]),
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODENAME": self.nodename,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(paths["mnesia"]),
                "RABBITMQ_LOG_BASE": str(paths["log"]),
                "RABBITMQ_PID_FILE": str(paths["pid"]),
                "RABBITMQ_CONFIG_FILE": str(paths["config"]),
                "RABBITMQ_CONFIG_FILES": str(paths["confd"]),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(paths["advanced"]),
                # Without this the scripts source /etc/rabbitmq/rabbitmq-env.conf.
                "RABBITMQ_CONF_ENV_FILE": str(paths["env_conf"]),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(paths["plugins"]),
                "RABBITMQ_ENABLED_PLUGINS": "",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args,
                "RABBITMQ_CTL_ERL_ARGS": erl_args,
            }
        )
        if ctl_dist_port is not None:
            env["RABBITMQ_CTL_DIST_PORT_MIN"] = str(ctl_dist_port)
            env["RABBITMQ_CTL_DIST_PORT_MAX"] = str(ctl_dist_port)
        return env

    def _write_config(self) -> None:
        paths = self._paths()
        for key in ("home", "mnesia", "log", "confd"):
            paths[key].mkdir(parents=True, exist_ok=True)
        paths["env_conf"].write_text("# empty on purpose: tests set everything in the env\n")
        paths["plugins"].write_text("[].\n")
        paths["config"].write_text(
            "# Written by tests/support/servers.py\n"
            # A test machine's /tmp may be nearly full; the default 50 MB limit would then
            # block every publisher with a disk alarm.
            "disk_free_limit.absolute = 1MB\n"
            "log.file.level = info\n"
            "log.console = false\n" + self._tls_config()
        )

    def _tls_config(self) -> str:
        if self.tls is None:
            return ""
        return (
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {self.tls.cacert}\n"
            f"ssl_options.certfile = {self.tls.cert}\n"
            f"ssl_options.keyfile = {self.tls.key}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        if self.running:
            raise RuntimeError(f"RabbitMQ node {self.nodename} is already running")
        timeout = self.BOOT_TIMEOUT if timeout is None else timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        begin = time.monotonic()
        try:
            self._start_epmd(timeout)
            self._start_node(timeout - (time.monotonic() - begin))
        except BaseException:
            self._kill_all()
            raise
        self.last_boot_seconds = time.monotonic() - begin

    def _start_epmd(self, timeout: float) -> None:
        if self._epmd is not None and self._epmd.running:
            return
        epmd = ManagedProcess(
            [self.epmd_binary, "-address", "127.0.0.1", "-port", str(self.epmd_port)],
            self.epmd_log_path,
            cwd=self.workdir,
        )
        epmd.start()
        self._epmd = epmd

        def ready() -> bool:
            if not epmd.running:
                raise AssertionError(f"epmd exited with code {epmd.returncode}:\n{epmd.log_tail()}")
            return port_is_open(self.epmd_port)

        wait_for(ready, timeout, message=f"epmd did not listen on 127.0.0.1:{self.epmd_port}")

    def _amqp_connects(self, tls: bool = False) -> bool:
        # py-amqp directly: kombu's Connection.connect() sleeps 2 s before its retry.
        # Over TLS, check the certificate too: a listener that cannot load its files still
        # accepts TCP connections, and fails only the handshake.
        ssl_options: dict[str, Any] | bool = False
        if tls:
            assert self.tls is not None
            ssl_options = {
                "ca_certs": str(self.tls.cacert),
                "cert_reqs": ssl.CERT_REQUIRED,
                "server_hostname": "127.0.0.1",
            }
        conn = amqp.Connection(
            host=f"127.0.0.1:{self.tls_port if tls else self.port}",
            userid="guest",
            password="guest",
            virtual_host="/",
            connect_timeout=2,
            ssl=ssl_options,
        )
        try:
            conn.connect()
            return bool(conn.connected)
        finally:
            with contextlib.suppress(Exception):
                conn.collect()

    def _start_node(self, timeout: float) -> None:
        node = ManagedProcess(
            [str(self.bin_dir / "rabbitmq-server")],
            self.log_path,
            env=self.env(),
            cwd=self.workdir,
        )
        node.start()
        self._node = node

        def ready() -> bool:
            if not node.running:
                raise AssertionError(
                    f"rabbitmq-server exited with code {node.returncode}:\n{self._logs()}"
                )
            return self._amqp_connects() and (self.tls is None or self._amqp_connects(tls=True))

        ports = str(self.port) if self.tls is None else f"{self.port} (TLS {self.tls_port})"
        wait_for(
            ready,
            timeout,
            interval=0.1,
            message=lambda: f"RabbitMQ on port {ports} refused AMQP connections:\n" + self._logs(),
            ignore=(OSError, AMQPError),
        )
        # Vhosts live in the node's database and survive a restart; nothing to redo here.

    def _logs(self) -> str:
        node_log = self._paths()["log"] / f"{self.nodename}.log"
        return f"--- {self.log_path}\n{tail(self.log_path)}\n--- {node_log}\n{tail(node_log)}"

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n <node> <args>`` against this node; raise if it fails."""
        argv = [str(self.bin_dir / "rabbitmqctl"), "-n", self.nodename, *args]
        result = subprocess.run(
            argv,
            env=self.env(ctl_dist_port=free_port()),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed with code {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node (``rabbitmqctl stop``, else signals) and then our epmd."""
        node = self._node
        if node is not None and node.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.rabbitmqctl("stop", timeout=timeout)
            if not node.wait(timeout):
                # The start script turns SIGTERM into a graceful stop of the VM.
                node.stop(timeout)
        if node is not None:
            node.kill()  # reaps, and SIGKILLs any straggler of the group
        self._stop_epmd(timeout)
        self._wait_ports_closed()

    def kill(self) -> None:
        """SIGKILL the node (a crash, not a shutdown) and our epmd."""
        self._kill_all()
        self._wait_ports_closed()

    def _kill_all(self) -> None:
        if self._node is not None:
            self._node.kill()
        if self._epmd is not None:
            self._epmd.kill()

    def _stop_epmd(self, timeout: float) -> None:
        if self._epmd is not None:
            self._epmd.stop(timeout)

    def _wait_ports_closed(self) -> None:
        ports = (self.port, self.dist_port, self.epmd_port, *self._tls_ports())
        wait_for(
            lambda: not any(port_is_open(p) for p in ports),
            15.0,
            message=lambda: (
                f"ports still open after RabbitMQ stopped: {[p for p in ports if port_is_open(p)]}"
            ),
        )

    def _tls_ports(self) -> tuple[int, ...]:
        return () if self._tls_port is None else (self._tls_port,)

    # -- vhosts --------------------------------------------------------------------------------

    def add_vhosts(self, names: list[str]) -> None:
        """Create vhosts with full permissions for ``guest``, in one rabbitmqctl call.

        Each rabbitmqctl call boots an Erlang VM (about a second), so create many at once.
        """
        new = [n for n in names if n not in self._vhosts]
        if not new:
            return
        definitions: dict[str, Any] = {
            "vhosts": [{"name": n} for n in new],
            "permissions": [
                {"user": "guest", "vhost": n, "configure": ".*", "write": ".*", "read": ".*"}
                for n in new
            ],
        }
        path = self.workdir / f"definitions-{int(time.time() * 1000)}.json"
        path.write_text(json.dumps(definitions))
        self.rabbitmqctl("import_definitions", str(path))
        self._vhosts.update(new)

    def __enter__(self) -> RabbitMQServer:
        self.start()
        return self
