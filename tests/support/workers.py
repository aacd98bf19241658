"""Real Celery workers in subprocesses, and an in-process producer that sends tasks to them."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from celery import Celery
from kombu import pools
from kombu.utils.collections import eqhash

from tests.support.processes import ManagedProcess
from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY_APP_MODULE = "tests.support.celery_app"

Pool = Literal["solo", "prefork", "threads"]


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class CeleryWorker:
    """``celery -A tests.support.celery_app worker`` in a session of its own.

    ``hostname`` is the full node name (``w1@test``); it is what events and replies carry.
    ``events`` adds ``-E`` (task events). ``heartbeat_interval`` sets
    ``--heartbeat-interval`` (Celery's default is 2 s). ``send_sent_event`` and
    ``task_routes`` reach the app through ``TEST_SEND_SENT_EVENT`` / ``TEST_TASK_ROUTES``;
    ``extra_env`` overrides anything.
    """

    def __init__(
        self,
        broker_url: str,
        hostname: str,
        queues: Sequence[str] = ("celery",),
        pool: Pool = "solo",
        concurrency: int = 1,
        events: bool = True,
        extra_env: Mapping[str, str] | None = None,
        logdir: Path | None = None,
        heartbeat_interval: float | None = None,
        send_sent_event: bool = False,
        task_routes: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if "@" not in hostname:
            raise ValueError(f"hostname must be a full node name like 'w1@test', got {hostname!r}")
        self.broker_url = broker_url
        self.hostname = hostname
        self.queues = tuple(queues)
        self.pool = pool
        self.concurrency = concurrency
        self.events = events
        self.heartbeat_interval = heartbeat_interval
        logdir = Path(logdir) if logdir is not None else REPO_ROOT / ".test-servers" / "workers"
        self.log_path = logdir / f"worker-{_safe_filename(hostname)}.log"
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(
                    [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
                "PYTHONUNBUFFERED": "1",
                "CELERY_BROKER_URL": broker_url,
                "TEST_SEND_SENT_EVENT": "1" if send_sent_event else "0",
                "TEST_TASK_ROUTES": json.dumps(dict(task_routes or {})),
            }
        )
        env.update(extra_env or {})
        self.env = env
        argv = [
            sys.executable, "-m", "celery", "-A", CELERY_APP_MODULE, "worker",
            "-n", hostname,
            "-Q", ",".join(self.queues),
            "-P", pool,
            "-c", str(concurrency),
            "--without-mingle", "--without-gossip",
            "-l", "info",
        ]  # fmt: skip
        if events:
            argv.append("-E")
        if heartbeat_interval is not None:
            argv += ["--heartbeat-interval", f"{heartbeat_interval:g}"]
        argv += list(extra_args)
        self.argv = argv
        self._proc: ManagedProcess | None = None
        self._log_offset = 0
        #: Seconds from start() until the worker logged "ready.".
        self.last_boot_seconds: float | None = None
        self._started_at: float | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"worker {self.hostname} was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    def log_text(self) -> str:
        """This run's log (since the last start())."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._log_offset :].decode("utf-8", errors="replace")

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"worker {self.hostname} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = ManagedProcess(self.argv, self.log_path, env=self.env, cwd=REPO_ROOT)
        self._started_at = time.monotonic()
        self.last_boot_seconds = None
        self._proc.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the worker logs ``<hostname> ready.``.

        Celery logs that from ``on_consumer_ready``, after every consumer bootstep has
        started: the task queues are consumed, the remote-control (pidbox) queue is declared
        and, with ``-E``, the event dispatcher is up. Fails at once if the worker exits.
        """
        marker = f"{self.hostname} ready."

        def ready() -> bool:
            if not self.running:
                raise AssertionError(
                    f"worker {self.hostname} exited with code {self.returncode}:\n"
                    + self.log_text()[-4000:]
                )
            return marker in self.log_text()

        wait_for(
            ready,
            timeout,
            message=lambda: (
                f"worker {self.hostname} did not log {marker!r}:\n" + self.log_text()[-4000:]
            ),
        )
        if self.last_boot_seconds is None and self._started_at is not None:
            self.last_boot_seconds = time.monotonic() - self._started_at

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: SIGTERM to the main process, wait; SIGKILL the group if it hangs."""
        if self._proc is None:
            return
        # Only the main process gets SIGTERM: it shuts its pool down itself. Signalling the
        # group would also hit prefork children mid-task.
        self._proc.stop(timeout, sig=signal.SIGTERM, group=False)

    def kill(self) -> None:
        """SIGKILL the whole group (main process and pool children): no worker-offline."""
        if self._proc is not None:
            self._proc.kill()

    def __enter__(self) -> CeleryWorker:
        self.start()
        self.wait_ready()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Producer:
    """An in-process Celery client that sends tasks by name (``send_task``).

    ``send_sent_event`` is the producer's ``task_send_sent_event``: only then does sending
    publish ``task-sent``, with hostname ``gen<pid>@<host>``. ``broker_use_ssl`` is Celery's
    setting of that name: the TLS options of an ``amqps://`` or ``rediss://`` broker.
    """

    def __init__(
        self,
        broker_url: str,
        send_sent_event: bool = True,
        task_routes: Mapping[str, str] | None = None,
        broker_transport_options: Mapping[str, Any] | None = None,
        broker_use_ssl: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = Celery("tests-producer", broker=broker_url, set_as_current=False)
        self.app.conf.update(
            result_backend=None,
            task_ignore_result=True,
            task_send_sent_event=send_sent_event,
            task_routes={name: {"queue": q} for name, q in (task_routes or {}).items()},
            broker_transport_options=dict(broker_transport_options or {}),
            broker_use_ssl=dict(broker_use_ssl) if broker_use_ssl is not None else False,
            broker_connection_retry_on_startup=True,
        )

    def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        countdown: float | None = None,
        **options: Any,
    ) -> str:
        """Send task ``name``; returns its id. ``options`` go to ``send_task``."""
        if queue is not None:
            options["queue"] = queue
        if countdown is not None:
            options["countdown"] = countdown
        result = self.app.send_task(name, args=tuple(args), kwargs=dict(kwargs or {}), **options)
        return str(result.id)

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        """Broadcast ``revoke`` to all workers (``app.control.revoke``)."""
        self.app.control.revoke(task_id, terminate=terminate)

    def ping(self, hostnames: Sequence[str], timeout: float = 1.0) -> list[dict[str, Any]]:
        """``control.ping`` to these workers; returns as soon as all of them answered."""
        replies: list[dict[str, Any]] = self.app.control.ping(
            destination=list(hostnames), timeout=timeout, limit=len(hostnames)
        )
        return replies

    def close(self) -> None:
        # Celery takes the app's connections from kombu's process-wide pools, keyed by broker
        # URL, and a connection remembers the queues it declared. The next producer on the
        # same URL (a test database reused after FLUSHDB) would skip declaring its queue, and
        # Redis would hold no _kombu.binding key for the exporter to find: forget these pools.
        with self.app.connection_for_write() as connection:
            key = eqhash(connection)
        for group in (pools.producers, pools.connections):
            group.pop(key, None)
        self.app.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
