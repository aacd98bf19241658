"""The exporter's own health (exporter/metrics/health.py): seconds without a broker; real outages
through a fault proxy: tests/integration/resilience/test_faults.py.
"""

from __future__ import annotations

from exporter.metrics.health import ExporterHealth


def test_broker_down_seconds_accumulate_outages_only() -> None:
    now = [1000.0]
    health = ExporterHealth(clock=lambda: now[0])
    now[0] = 1002.0
    assert health.broker_down_seconds() == 2.0  # down from the start until connected
    health.set_broker_up(True, 1002.0)
    now[0] = 1010.0
    assert health.broker_down_seconds() == 2.0
    health.set_broker_up(False, 1010.0)
    health.set_broker_up(False, 1011.0)  # repeated "down" does not restart the outage
    now[0] = 1013.5
    assert health.broker_down_seconds() == 5.5  # the open outage counts as it goes
    health.set_broker_up(True, 1014.0)
    health.set_broker_up(True, 1015.0)
    now[0] = 1100.0
    assert health.broker_down_seconds() == 6.0
    # A hang noticed at 1130 began with the silence after the last event, at 1120...
    health.set_broker_up(False, 1130.0)
    health.backdate_outage(1120.0)
    now[0] = 1131.0
    assert health.broker_down_seconds() == 6.0 + 11.0
    # ...but never before the connection came up (outages never overlap).
    health.set_broker_up(True, 1131.0)
    health.set_broker_up(False, 1140.0)
    health.backdate_outage(1100.0)
    now[0] = 1141.0
    assert health.broker_down_seconds() == 17.0 + 10.0
