"""Turn what was observed into findings, most severe first, each with cause and fix."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.sources.redis_priorities import PriorityMismatch

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITY_ORDER = {CRITICAL: 0, WARNING: 1, INFO: 2}


@dataclass(frozen=True)
class WorkerView:
    hostname: str
    alive: bool
    pool_size: int | None
    pool_kind: str | None
    active: int
    queues: tuple[str, ...] | None  # None: did not answer
    task_events: bool | None  # None: unknown (idle during the window)


@dataclass(frozen=True)
class QueueView:
    name: str
    ready: int
    by_priority: dict[str, int] | None
    reserved: int | None
    oldest_age: float | None
    consumers: list[str]  # live workers consuming it
    broker_consumers: int | None
    # Redis: priority lists the exporter's configured steps/separator do not name.
    priority_mismatch: PriorityMismatch | None = None


@dataclass
class Observation:
    broker_ok: bool
    broker_error: str | None = None
    broker_error_kind: str | None = None
    workers: list[WorkerView] = field(default_factory=list)
    queues: list[QueueView] = field(default_factory=list)
    # task name -> distinct task-sent senders seen
    senders: dict[str, int] = field(default_factory=dict)
    window_seconds: float = 0.0
    # Redis: global_keyprefix values of kombu bindings other than the exporter's.
    foreign_keyprefixes: list[str] = field(default_factory=list)
    # RabbitMQ: ETA/countdown tasks waiting in native delayed delivery (None: not set up).
    delayed_total: int | None = None
    # Redis: workers whose priority_steps/sep (inspect conf) differ from the exporter's.
    worker_priority_layouts: dict[str, PriorityMismatch] = field(default_factory=dict)
    # The broker's kind, and whether Celery sends events and answers remote control over
    # it (not on SQS: then nothing is known of workers or consumers).
    broker_kind: str = ""
    task_events: bool = True


@dataclass(frozen=True)
class Finding:
    severity: str
    summary: str
    cause: str
    fix: str


def _fmt(n: int) -> str:
    return f"{n:,}"


def findings(obs: Observation, backlog_threshold: int = 100) -> list[Finding]:
    found: list[Finding] = []
    if not obs.broker_ok:
        found.append(Finding(
            CRITICAL,
            "the broker is unreachable",
            obs.broker_error or "unknown error",
            "fix the broker address, credentials or network; workers are cut off too",
        ))  # fmt: skip
        return found

    if not obs.task_events:
        return queue_only_findings(obs, backlog_threshold)

    alive = [w for w in obs.workers if w.alive]
    waiting = sum(q.ready for q in obs.queues)
    if not alive:
        if waiting:
            found.append(Finding(
                CRITICAL,
                f"no worker alive and {_fmt(waiting)} tasks waiting",
                "no worker sent a heartbeat during the "
                f"{obs.window_seconds:g} s window: workers are not running, crash at start, "
                "or connect to another broker",
                "start the workers under a supervisor and read their logs; compare their "
                "broker URL with this one",
            ))  # fmt: skip
        else:
            found.append(Finding(
                WARNING,
                "no worker alive",
                f"no worker sent a heartbeat during the {obs.window_seconds:g} s window",
                "start the workers if tasks are expected to run",
            ))  # fmt: skip

    consumed = sorted({q for w in alive for q in (w.queues or ())})
    for q in obs.queues:
        has_consumer = bool(q.consumers) or bool(q.broker_consumers)
        if q.ready and not has_consumer and alive:
            listens = ", ".join(f"`{name}`" for name in consumed) or "nothing"
            found.append(Finding(
                CRITICAL,
                f"queue `{q.name}` holds {_fmt(q.ready)} messages and no worker consumes it",
                f"workers consume {listens}: the tasks are routed to a queue no worker "
                "listens to",
                f"check task routes / worker -Q (add `{q.name}` to a worker's -Q, or "
                f"`celery control add_consumer {q.name}`)",
            ))  # fmt: skip
        elif q.ready >= backlog_threshold and has_consumer:
            found.append(Finding(
                WARNING,
                f"queue `{q.name}` holds {_fmt(q.ready)} messages",
                f"consumed by {len(q.consumers) or q.broker_consumers} worker(s) that do not "
                "keep up",
                "add workers or concurrency for this queue, or look for slow tasks",
            ))  # fmt: skip
        if q.by_priority:
            hidden = sum(n for step, n in q.by_priority.items() if step != "0")
            if hidden:
                found.append(Finding(
                    WARNING if q.ready >= backlog_threshold else INFO,
                    f"queue `{q.name}` has {_fmt(hidden)} of its {_fmt(q.ready)} messages in "
                    "priority sub-queues",
                    f"`LLEN {q.name}` shows only {_fmt(q.by_priority.get('0', 0))}: Celery "
                    "keeps other priorities in separate lists",
                    "count the sub-queues too (celery_queue_messages does)",
                ))  # fmt: skip

    found.extend(priority_layout_findings(obs.queues))
    found.extend(worker_priority_layout_findings(obs.worker_priority_layouts))
    found.extend(foreign_keyprefix_findings(obs.foreign_keyprefixes))

    for w in alive:
        if w.task_events is False:
            found.append(Finding(
                WARNING,
                f"worker `{w.hostname}` sends no task events",
                "it processed tasks during the window and no task event arrived",
                "start it with -E or set worker_send_task_events = True (or run "
                "`celery control enable_events`)",
            ))  # fmt: skip
        if w.queues is None:
            found.append(Finding(
                INFO,
                f"worker `{w.hostname}` did not say which queues it consumes",
                "it did not answer an active_queues request (a solo pool busy with a task "
                "cannot answer)",
                "run again, or `celery inspect active_queues` when it is idle",
            ))  # fmt: skip

    for name, count in sorted(obs.senders.items()):
        if count >= 2:
            found.append(Finding(
                INFO,
                f"{count} senders seen for `{name}`",
                "several producer processes sent it during the window; for a periodic task "
                "that means more than one beat",
                "if it is a beat task: is beat running twice? run exactly one beat",
            ))  # fmt: skip

    found.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return found


def queue_only_findings(obs: Observation, backlog_threshold: int) -> list[Finding]:
    """A broker without events (SQS): what it cannot show, and the backlogs it can."""
    found = [
        Finding(
            INFO,
            f"no task or worker events on {obs.broker_kind}: queue depth only",
            f"Celery has no broadcast on {obs.broker_kind}: workers send no events and "
            "answer no remote control (inspect), so tasks, workers and consumers cannot be "
            "seen; the exporter reports queue depth",
            "watch the queues here; for task and worker metrics, run Celery on Redis or RabbitMQ",
        )
    ]
    for q in obs.queues:
        if q.ready >= backlog_threshold:
            found.append(Finding(
                WARNING,
                f"queue `{q.name}` holds {_fmt(q.ready)} messages",
                "workers are not keeping up, or none consumes it (on "
                f"{obs.broker_kind} the exporter cannot see the workers)",
                f"check that workers consume `{q.name}` (-Q) and add workers or concurrency",
            ))  # fmt: skip
    found.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return found


def priority_layout_findings(queues: list[QueueView]) -> list[Finding]:
    """Producers use priority steps or a separator the exporter was not given."""
    found: list[Finding] = []
    for q in queues:
        mismatch = q.priority_mismatch
        if mismatch is None:
            continue
        found.append(Finding(
            WARNING,
            f"queue `{q.name}` has {mismatch.describe()}",
            "producers and workers use other broker_transport_options (priority_steps, "
            "sep) than this exporter: its depth is counted anyway, but any tool reading "
            "only the configured lists misses part of the backlog",
            mismatch.fix(),
        ))  # fmt: skip
    return found


def worker_priority_layout_findings(layouts: dict[str, PriorityMismatch]) -> list[Finding]:
    """Workers configured with other priority steps or separator than the exporter."""
    found: list[Finding] = []
    for hostname, mismatch in sorted(layouts.items()):
        found.append(Finding(
            WARNING,
            f"worker `{hostname}` uses priority_steps {list(mismatch.found_steps)}, separator "
            f"{mismatch.found_seps[0]!r}; the exporter {list(mismatch.configured_steps)}, "
            f"{mismatch.configured_sep!r}",
            "its broker_transport_options (from `inspect conf`) differ from this "
            "exporter's: messages of other priorities go to lists the exporter's "
            "configuration does not name (it reads them anyway)",
            mismatch.fix(),
        ))  # fmt: skip
    return found


def foreign_keyprefix_findings(prefixes: list[str]) -> list[Finding]:
    """kombu apps under another global_keyprefix: invisible to this configuration."""
    return [
        Finding(
            WARNING,
            f"Redis holds Celery queues under global_keyprefix `{prefix}`",
            "kombu prefixes every key and event channel of an app configured with "
            "global_keyprefix: with another prefix the exporter sees none of its queues, "
            "events or workers",
            f"if that app is the one to watch: --broker-transport-option "
            f"'global_keyprefix={prefix}'",
        )
        for prefix in sorted(prefixes)
    ]


def exit_code(found: list[Finding]) -> int:
    if any(f.severity == CRITICAL for f in found):
        return 2
    if any(f.severity == WARNING for f in found):
        return 1
    return 0
