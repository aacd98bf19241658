"""``rate_limit``: ``interval`` (a Go duration) and ``burst``, for all paths (429 beyond).

``interval`` 0 (or leaving it out) disables the limit, as in the toolkit.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from exporter.webconfig.fields import _check_keys, _error, _mapping


class RateLimiter:
    """The toolkit's ``rate_limit``: a token bucket of ``burst`` requests, one more every
    ``interval`` seconds, shared by every path; a request without a token gets 429."""

    def __init__(self, interval: float, burst: int, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) / self.interval)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration such as ``1s``, ``250ms`` or ``1h30m`` (``0`` alone too)."""
    if text == "0":
        return 0.0
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"{text!r} is not a duration (such as 1s, 250ms, 1m)")
    return seconds


def _rate_limiter(value: Any) -> RateLimiter | None:
    where = "rate_limit"
    limit = _mapping(value, where)
    _check_keys(limit, ("interval", "burst"), where)
    interval_value = limit.get("interval", 0)
    if interval_value == 0:
        return None  # the toolkit's "0 disables"
    if not isinstance(interval_value, str):
        raise _error(f"{where}.interval", "must be a duration such as 1s or 250ms")
    try:
        interval = parse_go_duration(interval_value)
    except ValueError as exc:
        raise _error(f"{where}.interval", str(exc)) from None
    if interval == 0:
        return None
    burst = limit.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise _error(f"{where}.burst", "must be a whole number of at least 1 (0 refuses all)")
    return RateLimiter(interval, burst)
