"""Polling with a deadline: the only way tests wait for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition was not met",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value.

    Raises AssertionError with ``message`` (a string, or a callable evaluated at timeout so it can
    show fresh state such as a log tail) once ``timeout`` seconds have passed. Exceptions of the
    types in ``ignore`` count as "not yet"; the last one is quoted in the failure message.
    The predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        expired = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignore as exc:
            last_exc = exc
        else:
            if value:
                return value
        if expired:
            text = message() if callable(message) else message
            detail = f" (last error: {last_exc!r})" if last_exc is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s: {text}{detail}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
