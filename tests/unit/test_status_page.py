"""The status page (exporter/status_page.py) escapes what the cluster controls; in a real browser,
during a real routing mismatch: tests/integration/http/test_status_page.py.
"""

from __future__ import annotations

from exporter.diagnose.findings import CRITICAL, Finding, Observation, QueueView, WorkerView
from exporter.status_page import BrokerStatus, render


def test_every_value_is_escaped_in_every_place() -> None:
    """Markup in each field the cluster controls comes out as text (exhaustive, no browser)."""
    evil = "<img src=x onerror=alert(1)>\"'&"
    obs = Observation(
        broker_ok=False,
        broker_error=evil,
        workers=[WorkerView(evil + "@h", False, 4, evil, 1, (evil,), False)],
        queues=[QueueView(evil, 3, {"0": 1, evil: 2}, 1, 5.0, [], None)],
        senders={evil: 3},
    )
    found = [Finding(CRITICAL, f"`{evil}`", evil, evil)]
    status = BrokerStatus(evil, evil, False, 0.0, obs, found, {evil + "@h": 1.0})
    page = render([status], 100.0)
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;" in page
