"""The HTTP server's threads: a pool that grows as needed up to the connection cap and keeps its
threads, so the thread count never passes the cap and a flood of short connections does not
start and end a thread for each."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Job = TypeVar("Job")

log = logging.getLogger(__name__)


class HandlerPool(Generic[Job]):
    """Runs ``serve(job)`` then ``release(job)`` for each submitted job, on at most ``limit``
    threads. The caller submits no more jobs at once than ``limit`` (the connection cap)."""

    def __init__(
        self, serve: Callable[[Job], None], release: Callable[[Job], None], limit: int
    ) -> None:
        self._serve = serve
        self._release = release
        self._limit = limit
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job and not yet promised one

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                if self._threads >= self._limit:
                    raise RuntimeError("more jobs submitted than the pool's limit")
                self._threads += 1
                threading.Thread(
                    target=self._run, name=f"http-{self._threads}", daemon=True
                ).start()
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._serve(job)
            except Exception:  # the thread must live on: the pool counts on it
                log.exception("error while serving a connection")
            finally:
                # Idle before the release: whoever the release lets submit finds this thread.
                with self._lock:
                    self._idle += 1
                self._release(job)

    def close(self) -> None:
        """Ends the threads once they are done with their jobs."""
        with self._lock:
            for _ in range(self._threads):
                self._jobs.put(None)
