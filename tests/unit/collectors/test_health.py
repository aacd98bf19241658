"""The exporter's own health (exporter/collectors/health.py): seconds without a broker; real outages
through a fault proxy: tests/integration/resilience/test_faults.py.
"""

from __future__ import annotations

from exporter.collectors.health import ExporterHealth


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


# The self-metrics are written through methods (events/stages.py, control.py), never by
# poking ExporterHealth's counters: each method shows in the families it owns.
def _samples(health: ExporterHealth) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in health.collect()
        for s in family.samples
    }


def test_connection_seam() -> None:
    health = ExporterHealth(clock=lambda: 100.0)
    health.set_broker_up(True, 100.0)
    health.set_event_backlog(2048)
    health.connection_lost("watchdog", ("watchdog", "no events"), 130.0)
    health.connect_failed(("refused", "nothing listens"))
    got = _samples(health)
    assert got[("celery_exporter_broker_reconnects_total", (("reason", "watchdog"),))] == 1.0
    assert got[("celery_exporter_broker_reconnects_total", (("reason", "error"),))] == 0.0
    assert got[("celery_exporter_broker_connect_failures_total", ())] == 1.0
    assert got[("celery_exporter_broker_up", ())] == 0.0
    assert got[("celery_exporter_event_backlog_bytes", ())] == 2048.0
    assert health.broker_error == ("refused", "nothing listens")
    assert health.broker_since == 130.0
    health.set_event_backlog(None)
    assert ("celery_exporter_event_backlog_bytes", ()) not in _samples(health)


def test_intake_and_control_seams() -> None:
    health = ExporterHealth()
    tally = health.event_tally()
    tally[("task-sent",)] = tally.get(("task-sent",), 0.0) + 1.0  # as the hot path does
    health.count_event("worker-heartbeat")
    health.skip("bad_uuid")
    health.received(50.0, tracked=7, held=2, names=3)
    health.set_evictions(by_size=4, by_age=1)
    health.enable_events_broadcast()
    health.labels_dropped("hostname", "idle", 2.0)
    health.set_labels_dropped("queue_name", "idle", 5.0)
    got = _samples(health)
    assert got[("celery_exporter_events_total", (("type", "task-sent"),))] == 1.0
    assert got[("celery_exporter_events_total", (("type", "worker-heartbeat"),))] == 1.0
    assert got[("celery_exporter_events_skipped_total", (("reason", "bad_uuid"),))] == 1.0
    assert got[("celery_exporter_last_event_timestamp_seconds", ())] == 50.0
    assert got[("celery_exporter_tracked_tasks", ())] == 7.0
    assert got[("celery_exporter_held_tasks", ())] == 2.0
    assert got[("celery_exporter_task_names", ())] == 3.0
    assert got[("celery_exporter_tracked_task_evictions_total", (("reason", "size"),))] == 4.0
    assert got[("celery_exporter_tracked_task_evictions_total", (("reason", "age"),))] == 1.0
    assert got[("celery_exporter_enable_events_broadcasts_total", ())] == 1.0
    dropped = "celery_exporter_dropped_label_values_total"
    assert got[(dropped, (("label", "hostname"), ("reason", "idle")))] == 2.0
    assert got[(dropped, (("label", "queue_name"), ("reason", "idle")))] == 5.0
    health.set_sizes(tracked=0, held=0, names=1)
    health.set_task_names(0)
    got = _samples(health)
    assert got[("celery_exporter_tracked_tasks", ())] == 0.0
    assert got[("celery_exporter_task_names", ())] == 0.0
