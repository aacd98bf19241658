"""Logging: text or JSON lines on stderr, credentials always masked, repeats suppressed."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from exporter.redact import redact_text


class _RedactingText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class _RedactingJson(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(entry, ensure_ascii=False))


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = _RedactingJson()
        formatter.converter = time.gmtime
    else:
        formatter = _RedactingText("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kombu and celery log every reconnect attempt at WARNING; we report outages ourselves.
    for noisy in ("kombu", "celery", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, root.level))


class LogOnce:
    """Log a message the first time a key is seen, then stay quiet about that key."""

    def __init__(self, logger: logging.Logger, max_keys: int = 10_000) -> None:
        self._logger = logger
        self._seen: set[object] = set()
        self._max_keys = max_keys
        self._lock = threading.Lock()

    def __call__(
        self, key: object, level: int, msg: str, *args: object, exc_info: bool = False
    ) -> None:
        with self._lock:
            if key in self._seen:
                return
            if len(self._seen) >= self._max_keys:
                self._seen.clear()
            self._seen.add(key)
        self._logger.log(level, msg, *args, exc_info=exc_info)

    def forget(self, key: object) -> None:
        """Log ``key`` again the next time it comes (the condition cleared in between)."""
        with self._lock:
            self._seen.discard(key)
