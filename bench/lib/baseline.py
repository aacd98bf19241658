"""The baseline subscriber (redis-py ``psubscribe`` + JSON/base64, nothing else), run as
``ingest.py --role baseline`` in a process of its own."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# The baseline runs as `ingest.py --role baseline` (reference.py passes a script of its own).
INGEST_SCRIPT = Path(__file__).resolve().parent.parent / "ingest.py"


def baseline_main(port: int, pattern: str, expect: int, idle_seconds: float) -> None:
    """psubscribe, decode each envelope and its base64 JSON body, count events. Nothing else."""
    import redis

    loads = json.loads
    b64decode = base64.b64decode
    client = redis.Redis(host="127.0.0.1", port=port)
    pubsub = client.pubsub()
    pubsub.psubscribe(pattern)
    while True:  # the psubscribe confirmation: from here on nothing published is missed
        msg = pubsub.get_message(timeout=5.0)
        if msg is not None and msg["type"] == "psubscribe":
            break
    print("READY", flush=True)
    events = messages = 0
    first = last = 0.0
    waiting_since = time.time()
    get = pubsub.get_message
    while events < expect:
        msg = get(ignore_subscribe_messages=True, timeout=0.5)
        if msg is None:
            since = last or waiting_since
            if time.time() - since > (idle_seconds if last else 120.0):
                break
            continue
        envelope = loads(msg["data"])
        body = loads(b64decode(envelope["body"]))
        events += len(body) if type(body) is list else 1
        messages += 1
        last = time.time()
        if messages == 1:
            first = last
    print(json.dumps({"events": events, "messages": messages, "first": first, "last": last}))
    sys.stdout.flush()
    sys.stdin.read()  # let the parent read our CPU time before we exit


class Baseline:
    def __init__(
        self,
        port: int,
        pattern: str,
        expect: int,
        script: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``script``: the file whose ``--role baseline`` runs (this one by default)."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(script or INGEST_SCRIPT),
                "--role",
                "baseline",
                "--port",
                str(port),
                "--pattern",
                pattern,
                "--expect",
                str(expect),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.lines.get(timeout=30)
        if line.strip() != "READY":
            raise RuntimeError(f"baseline subscriber said {line!r}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def result(self, timeout: float) -> dict[str, Any] | None:
        """The subscriber's report, or None if it has not finished within ``timeout``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if not line:
            raise RuntimeError("baseline subscriber exited without a result")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case it is still paused
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
