"""Observe a Celery cluster for a short window with the daemon's own parts."""

from __future__ import annotations

import time

from exporter.brokers import bounded_connection
from exporter.diagnose.errors import explain_connection_error
from exporter.diagnose.findings import Observation
from exporter.diagnose.observe import observation_of
from exporter.settings import Settings
from exporter.watch import BrokerWatch

EVENTS_GRACE_SECONDS = 3.0


def check_broker(exporter: BrokerWatch, timeout: float) -> tuple[bool, str | None, str | None]:
    conn = bounded_connection(exporter.app, timeout)
    try:
        conn.ensure_connection(max_retries=0, timeout=timeout)
        # Redis connects lazily: opening a channel makes it talk.
        _ = conn.default_channel
    except Exception as exc:
        kind, explanation = explain_connection_error(exc)
        return False, explanation, kind
    finally:
        conn.release()
    return True, None, None


def observe(settings: Settings, window: float, timeout: float) -> Observation:
    exporter = BrokerWatch(settings)
    ok, error, kind = check_broker(exporter, timeout)
    if not ok:
        return Observation(broker_ok=False, broker_error=error, broker_error_kind=kind)
    exporter.start_collection(sample=False)
    if not settings.broker.task_events:
        window = 0.0  # no events to listen to: the queues are all there is
    try:
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            time.sleep(0.1)
            exporter.tick()
        # Give every worker seen its chance to say which queues it consumes.
        answer_deadline = time.monotonic() + settings.inspect_timeout * 3 + 2
        while time.monotonic() < answer_deadline and not _all_answered(exporter):
            time.sleep(0.1)
        exporter.queue_sampler.sample_once()
        return observation_of(exporter, window, events_grace=EVENTS_GRACE_SECONDS)
    finally:
        exporter.stop()


def _all_answered(exporter: BrokerWatch) -> bool:
    known = exporter.worker_queues.all()
    layouts = exporter.control.priority_options
    return all(
        w.hostname in known and w.hostname in layouts for w in exporter.workers.snapshot() if w.up
    )
