"""Observe a Celery cluster for a short window with the daemon's own parts."""

from __future__ import annotations

import time

from exporter.diagnose.errors import explain_connection_error
from exporter.diagnose.findings import Observation, QueueView, WorkerView
from exporter.settings import Settings
from exporter.watch import BrokerWatch

EVENTS_GRACE_SECONDS = 3.0


def check_broker(exporter: BrokerWatch, timeout: float) -> tuple[bool, str | None, str | None]:
    conn = exporter.app.connection_for_read(connect_timeout=timeout)
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
    try:
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            time.sleep(0.1)
            exporter.tick()
        # Give every worker seen its chance to say which queues it consumes.
        answer_deadline = time.monotonic() + settings.inspect_timeout_seconds * 3 + 2
        while time.monotonic() < answer_deadline and not _all_answered(exporter):
            time.sleep(0.1)
        exporter.queue_sampler.sample_once()
        return _observation(exporter, window)
    finally:
        exporter.stop()


def _all_answered(exporter: BrokerWatch) -> bool:
    known = exporter.worker_queues.all()
    layouts = exporter.control.priority_options
    return all(
        w.hostname in known and w.hostname in layouts for w in exporter.workers.snapshot() if w.up
    )


def _observation(exporter: BrokerWatch, window: float) -> Observation:
    queues_of = exporter.worker_queues.all()
    stats = dict(exporter.control.stats)
    workers: list[WorkerView] = []
    now = exporter.clock()
    for snap in exporter.workers.snapshot():
        events = snap.task_events_enabled
        since = snap.processed_without_events_since
        # Batched task events can trail the heartbeat that counts the task by a few seconds.
        if events is None and since is not None and now - since >= EVENTS_GRACE_SECONDS:
            events = False
        s = stats.get(snap.hostname)
        workers.append(
            WorkerView(
                hostname=snap.hostname,
                alive=snap.up,
                pool_size=s.pool_size if s else None,
                pool_kind=s.pool_kind if s else None,
                active=snap.active,
                queues=queues_of.get(snap.hostname),
                task_events=events,
            )
        )
    alive = {w.hostname for w in workers if w.alive}
    queues: list[QueueView] = []
    snapshot = exporter.queue_sampler.snapshot
    if snapshot is not None:
        for name, qs in sorted(snapshot.sample.queues.items()):
            consumers = sorted(h for h, qn in queues_of.items() if name in qn and h in alive)
            queues.append(
                QueueView(
                    name=name,
                    ready=qs.ready,
                    by_priority=qs.by_priority,
                    reserved=qs.reserved,
                    # A lower bound from first sight means nothing after a short window.
                    oldest_age=(
                        snapshot.oldest_age.get(name) if name in snapshot.oldest_age_exact else None
                    ),
                    consumers=consumers,
                    broker_consumers=qs.broker_consumers,
                    priority_mismatch=qs.priority_mismatch,
                )
            )
    with exporter.dispatcher.lock:
        arrivals = exporter.dispatcher.tasks.arrivals.stats()
    senders = {name: a.senders for name, a in arrivals.items() if a.senders}
    layout = getattr(exporter.queue_sampler.source, "layout", None)
    return Observation(
        broker_ok=True,
        worker_priority_layouts=dict(getattr(layout, "worker_mismatch", {})),
        delayed_total=snapshot.sample.delayed_total if snapshot is not None else None,
        foreign_keyprefixes=sorted(getattr(exporter.queue_sampler.source, "foreign_prefixes", ())),
        workers=sorted(workers, key=lambda w: w.hostname),
        queues=queues,
        senders=senders,
        window_seconds=window,
    )
