"""What a ``BrokerWatch`` knows, from memory, as an ``Observation``.

One source of findings, two renderings: ``diagnose`` builds its observation with this after
listening for a few seconds, and the daemon's status page builds it on every request from
the same in-memory state that ``/metrics`` renders. Nothing here talks to the broker.
"""

from __future__ import annotations

from exporter.diagnose.findings import Observation, QueueView, WorkerView
from exporter.watch import BrokerWatch


def observation_of(
    watch: BrokerWatch,
    window: float,
    broker_ok: bool = True,
    broker_error: str | None = None,
    broker_error_kind: str | None = None,
    events_grace: float | None = None,
) -> Observation:
    """``events_grace``: call a worker's task events off once it has processed tasks without
    one for this long (diagnose's short window); None: trust the registry's own verdict."""
    queues_of = watch.worker_queues.all()
    stats = dict(watch.control.stats)
    workers: list[WorkerView] = []
    now = watch.clock()
    for snap in watch.workers.snapshot():
        events = snap.task_events_enabled
        since = snap.processed_without_events_since
        # Batched task events can trail the heartbeat that counts the task by a few seconds.
        if (
            events_grace is not None
            and events is None
            and since is not None
            and now - since >= events_grace
        ):
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
    snapshot = watch.queue_sampler.snapshot
    if snapshot is not None:
        for name, qs in sorted(snapshot.sample.queues.items()):
            consumers = sorted(h for h, qn in queues_of.items() if name in qn and h in alive)
            queues.append(
                QueueView(
                    name=name,
                    ready=qs.ready,
                    by_priority=qs.by_priority,
                    reserved=qs.reserved,
                    # A lower bound from first sight is not an age: shown as "-".
                    oldest_age=(
                        snapshot.oldest_age.get(name) if name in snapshot.oldest_age_exact else None
                    ),
                    consumers=consumers,
                    broker_consumers=qs.broker_consumers,
                    priority_mismatch=qs.priority_mismatch,
                )
            )
    with watch.dispatcher.lock:
        arrivals = watch.dispatcher.tasks.arrivals.stats()
    senders = {name: a.senders for name, a in arrivals.items() if a.senders}
    source = watch.queue_sampler.source
    layout = getattr(source, "layout", None)  # Redis only: the priority lists' layout
    return Observation(
        broker_ok=broker_ok,
        broker_error=broker_error,
        broker_error_kind=broker_error_kind,
        worker_priority_layouts=dict(getattr(layout, "worker_mismatch", {})),
        delayed_total=snapshot.sample.delayed_total if snapshot is not None else None,
        foreign_keyprefixes=sorted(getattr(source, "foreign_prefixes", ())),
        workers=sorted(workers, key=lambda w: w.hostname),
        queues=queues,
        senders=senders,
        window_seconds=window,
        broker_kind=watch.settings.broker.name,
        task_events=watch.settings.broker.task_events,
    )
