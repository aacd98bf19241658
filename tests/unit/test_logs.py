"""exporter/logs.py: LogOnce says a thing once per key, and again after ``forget``."""

from __future__ import annotations

import logging

import pytest

from exporter.logs import LogOnce


def test_log_once_per_key_and_again_after_forget(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.log_once")
    once = LogOnce(logger)
    with caplog.at_level(logging.WARNING, logger="tests.log_once"):
        for _ in range(3):
            once(("fail", "a"), logging.WARNING, "queue %s failed", "a")
        once(("fail", "b"), logging.WARNING, "queue %s failed", "b")
        once.forget(("fail", "a"))  # it recovered: the next failure is news again
        once(("fail", "a"), logging.WARNING, "queue %s failed", "a")
        once(("fail", "a"), logging.WARNING, "queue %s failed", "a")
    assert [r.getMessage() for r in caplog.records] == [
        "queue a failed",
        "queue b failed",
        "queue a failed",
    ]
