"""Go durations and the token bucket of rate_limit (exporter/webconfig/rate_limit.py).

The exporter as users run it, over real TLS: tests/integration/http/test_web_security.py.
"""

from __future__ import annotations

import pytest

from exporter import webconfig


def test_go_durations_and_the_token_bucket() -> None:
    assert webconfig.parse_go_duration("1s") == 1.0
    assert webconfig.parse_go_duration("250ms") == 0.25
    assert webconfig.parse_go_duration("1h30m") == 5400.0
    assert webconfig.parse_go_duration("1.5s") == 1.5
    assert webconfig.parse_go_duration("0") == 0.0
    for bad in ("", "1", "s", "1x", "-1s", "1s ", "1 s"):
        with pytest.raises(ValueError):
            webconfig.parse_go_duration(bad)
    now = [100.0]
    limiter = webconfig.RateLimiter(interval=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
    now[0] += 1.0  # half a token
    assert not limiter.allow()
    now[0] += 1.0  # a whole one
    assert limiter.allow()
    assert not limiter.allow()
    now[0] += 100.0  # refills up to the burst, no further
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
