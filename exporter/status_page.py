"""The status page at ``/``: brokers, workers, queues and what is wrong, for a person.

Built on every request from the same in-memory state as ``/metrics`` (never waits on the
broker), and its findings come from ``diagnose``'s own code (exporter/diagnose/findings.py):
one source of findings, two renderings. Plain server-rendered HTML with a small inline
stylesheet: no JavaScript, readable on a phone, refreshed by the browser every
``REFRESH_SECONDS``. Every value from the cluster (task, queue and worker names, error
texts) is escaped: they are chosen by whoever runs the workers, not by us.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter import __version__
from exporter.diagnose.findings import (
    CRITICAL,
    SEVERITY_ORDER,
    WARNING,
    Finding,
    Observation,
    QueueView,
    WorkerView,
    findings,
)
from exporter.diagnose.observe import observation_of
from exporter.redact import redact_url
from exporter.watch import BrokerWatch

REFRESH_SECONDS = 10
# Ready messages from which a consumed queue is a backlog (diagnose's default).
BACKLOG_THRESHOLD = 100

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:0 12px 24px;max-width:1100px;
color:#1d1d1f;background:#fff}
h1{font-size:1.4em;margin:16px 0 4px}h2{font-size:1.15em;margin:24px 0 6px;
border-top:2px solid #ddd;padding-top:12px}h3{font-size:1em;margin:16px 0 4px}
.meta{color:#555;font-size:.9em;margin:0}.meta a{margin-right:.6em}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:600;margin:6px 0}
.critical{background:#fde2e1;color:#8a1410}.warning{background:#fff1cc;color:#6b4a00}
.info{background:#e6f0fb;color:#12406f}.ok{background:#e1f5e4;color:#125a1f}
.finding{border-left:5px solid;padding:6px 10px;margin:8px 0;border-radius:3px}
.finding.critical{border-color:#c5221f}.finding.warning{border-color:#d39e00}
.finding.info{border-color:#3b78c2}.finding p{margin:2px 0}.label{font-weight:600}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.93em}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e4e4e4;vertical-align:top}
th{background:#f5f5f7;white-space:nowrap}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.critical td,tr.warning td{background:none}tr.critical{background:#fde2e1}
tr.warning{background:#fff1cc}code{font-size:.95em;overflow-wrap:anywhere}
td code{white-space:nowrap}
footer{margin-top:24px;color:#555;font-size:.85em}
"""


@dataclass(frozen=True)
class BrokerStatus:
    """One broker as the page shows it."""

    name: str | None
    url: str  # credentials masked
    up: bool
    since: float  # when it became up or down (epoch seconds)
    observation: Observation
    findings: list[Finding]
    last_heartbeat: dict[str, float]  # hostname -> exporter clock


def broker_status(watch: BrokerWatch) -> BrokerStatus:
    """A watch's state from memory: no broker I/O."""
    health = watch.health
    up = health.broker_up
    kind, error = health.broker_error or (None, None)
    obs = observation_of(
        watch,
        window=float(max(0, int(watch.clock() - watch.started_at))),
        broker_ok=up,
        broker_error=error if not up else None,
        broker_error_kind=kind if not up else None,
    )
    if not up and obs.broker_error is None:
        obs.broker_error = "not connected yet" if not health.last_event_at else "connection lost"
    return BrokerStatus(
        name=watch.name,
        url=redact_url(watch.settings.broker_url),
        up=up,
        since=health.broker_since,
        observation=obs,
        findings=findings(obs, BACKLOG_THRESHOLD),
        last_heartbeat={w.hostname: w.last_heartbeat for w in watch.workers.snapshot()},
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _rich(text: str) -> str:
    """Escaped text with diagnose's `backticked` names set as code."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", _e(text))


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _queue_severity(q: QueueView, consumers_known: bool = True) -> str | None:
    """As diagnose judges the queue (findings.py): the row's highlight."""
    has_consumer = bool(q.consumers) or bool(q.broker_consumers)
    if q.ready and not has_consumer and consumers_known:
        return CRITICAL  # routed to a queue nobody consumes, or no worker alive at all
    if q.ready >= BACKLOG_THRESHOLD:
        return WARNING
    return None


def _worker_severity(w: WorkerView) -> str | None:
    if not w.alive:
        return WARNING  # killed, or scaled down: its series stay until --worker-purge-after
    if w.task_events is False:
        return WARNING
    return None


def _rank(severity: str | None) -> int:
    return SEVERITY_ORDER.get(severity or "", len(SEVERITY_ORDER))


def _findings_html(found: list[Finding]) -> list[str]:
    if not found:
        return ['<p><span class="verdict ok">healthy</span> nothing to report</p>']
    out = []
    for f in found:
        out.append(
            f'<div class="finding {_e(f.severity)}">'
            f'<p><span class="verdict {_e(f.severity)}">{_e(f.severity.upper())}</span> '
            f"{_rich(f.summary)}</p>"
            f'<p><span class="label">Cause:</span> {_rich(f.cause)}</p>'
            f'<p><span class="label">Fix:</span> {_rich(f.fix)}</p></div>'
        )
    return out


def _queues_html(obs: Observation) -> list[str]:
    if not obs.queues:
        return ["<p>No queue sampled yet.</p>"]
    ranked = sorted(
        ((_queue_severity(q, obs.task_events), q) for q in obs.queues),
        key=lambda sq: (_rank(sq[0]), -sq[1].ready, sq[1].name),
    )
    out = [
        '<div class="scroll"><table class="queues"><thead><tr><th>queue</th>'
        '<th class="n">ready</th><th class="n">reserved</th><th class="n">oldest</th>'
        "<th>consumers</th></tr></thead><tbody>"
    ]
    for severity, q in ranked:
        if not obs.task_events:
            consumers = f"not visible on {_e(obs.broker_kind)}"
        elif q.consumers:
            consumers = ", ".join(f"<code>{_e(c)}</code>" for c in q.consumers)
        elif q.broker_consumers:
            consumers = f"{q.broker_consumers} (counted by the broker)"
        else:
            consumers = "<strong>no consumer</strong>"
        age = "-" if q.oldest_age is None else _duration(q.oldest_age)
        priorities = ""
        if q.by_priority and any(n for p, n in q.by_priority.items() if p != "0"):
            parts = ", ".join(f"{_e(p)}: {n:,}" for p, n in q.by_priority.items() if n)
            priorities = f"<br><small>by priority: {parts}</small>"
        out.append(
            f'<tr class="{_e(severity or "")}"><td><code>{_e(q.name)}</code>{priorities}</td>'
            f'<td class="n">{_count(q.ready)}</td><td class="n">{_count(q.reserved)}</td>'
            f'<td class="n">{age}</td><td>{consumers}</td></tr>'
        )
    out.append("</tbody></table></div>")
    return out


def _workers_html(status: BrokerStatus, now: float) -> list[str]:
    obs = status.observation
    if not obs.workers:
        return ["<p>No worker seen yet (workers are seen from their heartbeats).</p>"]
    ranked = sorted(
        ((_worker_severity(w), w) for w in obs.workers),
        key=lambda sw: (_rank(sw[0]), sw[1].hostname),
    )
    out = [
        '<div class="scroll"><table class="workers"><thead><tr><th>worker</th><th>state</th>'
        '<th>pool</th><th class="n">busy</th><th>task events</th><th>last heartbeat</th>'
        "<th>queues</th></tr></thead><tbody>"
    ]
    for severity, w in ranked:
        pool = f"{_e(w.pool_kind or '?')} &times; {w.pool_size}" if w.pool_size else "?"
        busy = f"{w.active} / {w.pool_size}" if w.pool_size else str(w.active)
        events = {True: "on", False: "<strong>OFF</strong>", None: "unknown (idle)"}[w.task_events]
        beat = status.last_heartbeat.get(w.hostname)
        heartbeat = f"{_duration(now - beat)} ago" if beat else "-"
        queues = (
            ", ".join(f"<code>{_e(q)}</code>" for q in w.queues)
            if w.queues is not None
            else "(not answered yet)"
        )
        out.append(
            f'<tr class="{_e(severity or "")}"><td><code>{_e(w.hostname)}</code></td>'
            f"<td>{'up' if w.alive else '<strong>DOWN</strong>'}</td><td>{pool}</td>"
            f'<td class="n">{_e(busy)}</td><td>{events}</td><td>{heartbeat}</td>'
            f"<td>{queues}</td></tr>"
        )
    out.append("</tbody></table></div>")
    return out


def _broker_html(status: BrokerStatus, now: float) -> list[str]:
    obs = status.observation
    title = f"<code>{_e(status.name)}</code> " if status.name else ""
    state = (
        '<span class="verdict ok">reachable</span>'
        if status.up
        else '<span class="verdict critical">UNREACHABLE</span>'
    )
    alive = sum(w.alive for w in obs.workers)
    down = len(obs.workers) - alive
    out = [
        '<section class="broker">',
        f"<h2>Broker {title}<code>{_e(status.url)}</code></h2>",
        f"<p>{state} since {_clock(status.since)} ({_duration(now - status.since)})</p>",
    ]
    if not status.up:
        out.append("<p>Workers and queues below are the last known state.</p>")
    out += ["<h3>Findings</h3>", *_findings_html(status.findings)]
    out.append(f"<h3>Queues ({len(obs.queues)})</h3>")
    out += _queues_html(obs)
    if not obs.task_events:
        out += _no_events_html(obs.broker_kind)
        out.append("</section>")
        return out
    out.append(f"<h3>Workers ({alive} alive" + (f", {down} down)" if down else ")") + "</h3>")
    out += _workers_html(status, now)
    out.append("</section>")
    return out


def _no_events_html(kind: str) -> list[str]:
    """In place of the workers and tasks, on a broker over which Celery sends no events."""
    return [
        "<h3>Workers and tasks</h3>",
        f'<p class="notice"><span class="verdict info">not available on {_e(kind)}</span> '
        f"Celery sends no task or worker events over {_e(kind)} and its workers answer no "
        "remote control, so this exporter cannot see workers or tasks here: no task or "
        "worker metrics, only the queue depth above (ready: visible messages; reserved: in "
        "flight, received by a worker and not yet deleted).</p>",
    ]


def render(statuses: Sequence[BrokerStatus], now: float) -> str:
    every = [f for s in statuses for f in s.findings]
    critical = sum(f.severity == CRITICAL for f in every)
    warnings = sum(f.severity == WARNING for f in every)
    if critical or warnings:
        verdict_class = CRITICAL if critical else WARNING
        verdict = f"{critical} critical, {warnings} warning(s)"
    else:
        verdict_class, verdict = "ok", "healthy"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>Celery: {_e(verdict)} - celery-metrics-exporter</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<header><h1>Celery status</h1>",
        f'<p class="verdict {verdict_class}">{_e(verdict)}</p>',
        f'<p class="meta">As of {_clock(now)}, from the exporter\'s memory; this page '
        f"refreshes every {REFRESH_SECONDS} s.</p>",
        '<p class="meta"><a href="/metrics">/metrics</a><a href="/healthz">/healthz</a>'
        '<a href="/readyz">/readyz</a></p></header>',
    ]
    for status in statuses:
        parts += _broker_html(status, now)
    parts.append(
        "<footer><p>ready: messages waiting; reserved: handed to a worker, not yet "
        "acknowledged (Redis); oldest: how long the next message has waited, known exactly "
        "only when its producer sends <code>task-sent</code> events "
        "(<code>task_send_sent_event = True</code>), else <code>-</code>. "
        "Findings are the ones <code>celery-metrics-exporter diagnose</code> prints.</p>"
        f"<p>celery-metrics-exporter {_e(__version__)}</p></footer></body></html>\n"
    )
    return "\n".join(parts)


def status_page(watches: Sequence[BrokerWatch]) -> Callable[[], str]:
    """The page's renderer for the HTTP server."""

    def page() -> str:
        return render([broker_status(w) for w in watches], time.time())

    return page
