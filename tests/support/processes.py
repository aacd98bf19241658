"""Child processes that the tests own: own session, log file, and a safety net at exit.

Every process is started with ``start_new_session=True``, so it leads a process group of its own
and signalling that group reaches its children (a shell script's server, a prefork pool) but
nothing else. The atexit hook kills only the groups started here and still alive.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_registry_lock = threading.Lock()
_live: dict[int, ManagedProcess] = {}


def _kill_all_at_exit() -> None:
    with _registry_lock:
        procs = list(_live.values())
    for proc in procs:
        proc.kill()


atexit.register(_kill_all_at_exit)


def install_sigterm_cleanup() -> None:
    """On SIGTERM, kill our children before dying (Python skips atexit on a fatal signal).

    Only installed where SIGTERM still has its default action, so a handler set by someone
    else (a test runner plugin) is left alone. The signal is then re-raised with the default
    action, so the exit status still says "terminated by SIGTERM".
    """
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum: int, frame: object) -> None:
        _kill_all_at_exit()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


def tail(path: Path, max_chars: int = 4000) -> str:
    """The last ``max_chars`` characters of a log file ('' if it does not exist)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    return data[-max_chars:].decode("utf-8", errors="replace")


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``, from /proc."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Format: "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class ManagedProcess:
    """One child process in a session of its own, its output appended to ``log_path``."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError(f"{self.argv[0]} was never started")
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def log_tail(self, max_chars: int = 4000) -> str:
        return tail(self.log_path, max_chars)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.argv[0]} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start {time.strftime('%H:%M:%S')}: {self.argv}\n".encode())
        self._log.flush()
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        with _registry_lock:
            _live[self._popen.pid] = self

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the leader only (e.g. SIGTERM for a Celery warm shutdown)."""
        if self.running:
            assert self._popen is not None
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the whole process group we created, if any member is left."""
        if self._popen is None:
            return
        # The group id is the leader's pid (start_new_session). Signal it only while a member
        # is left: the kernel keeps the id reserved then, so this cannot reach a stranger's group.
        if self._popen.poll() is None or group_members(self._popen.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the leader to exit; True if it did."""
        if self._popen is None:
            return True
        try:
            self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _group_alive(self) -> bool:
        """True while a live (non-zombie) process is left in our group."""
        if self._popen is None:
            return False
        return bool(group_members(self._popen.pid))

    def wait_group_gone(self, timeout: float) -> bool:
        """Wait until no process of our group is left (the leader's children included)."""
        deadline = time.monotonic() + timeout
        while self._group_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM, group: bool = True) -> None:
        """Ask politely (``sig`` to the group or the leader), then SIGKILL the group."""
        if self._popen is None:
            return
        if self.running:
            if group:
                self.signal_group(sig)
            else:
                self.send_signal(sig)
            self.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group and reap the leader. Safe to call repeatedly."""
        if self._popen is None:
            return
        self.signal_group(signal.SIGKILL)
        self.wait(10.0)
        self.wait_group_gone(10.0)
        with _registry_lock:
            _live.pop(self._popen.pid, None)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
