"""The diagnosis as text for people or JSON for machines."""

from __future__ import annotations

import json
from dataclasses import asdict

from exporter.diagnose.findings import Finding, Observation, exit_code


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _legend(obs: Observation) -> list[str]:
    """What a "-" in the queue table means, when one is printed."""
    unknown = []
    if not obs.task_events:
        unknown.append(f"oldest: {obs.broker_kind} does not tell")
    elif any(q.ready and q.oldest_age is None for q in obs.queues):
        unknown.append(
            "oldest: the next message's task-sent event was not seen (producers need "
            "task_send_sent_event = True)"
        )
    if any(q.reserved is None for q in obs.queues):
        unknown.append("reserved: the broker does not tell (RabbitMQ)")
    return [f"  - = not known. {'; '.join(unknown)}"] if unknown else []


def text_report(obs: Observation, found: list[Finding], broker: str) -> str:
    lines = [f"celery-metrics-exporter diagnose: {broker}"]
    if not obs.broker_ok:
        lines += ["", f"Broker    UNREACHABLE ({obs.broker_error_kind})"]
    else:
        alive = [w for w in obs.workers if w.alive]
        listened = (
            f"(listened to events for {obs.window_seconds:g} s)"
            if obs.task_events
            else f"(queues only: Celery sends no events over {obs.broker_kind})"
        )
        lines += [
            listened,
            "",
            "Broker    reachable",
            "",
            f"Workers   {len(alive)} alive" + (f", {len(obs.workers) - len(alive)} down"
                                                if len(obs.workers) > len(alive) else "")
            if obs.task_events else f"Workers   not visible on {obs.broker_kind}",
        ]  # fmt: skip
        for w in obs.workers:
            events = {True: "on", False: "OFF", None: "unknown (idle)"}[w.task_events]
            queues = ", ".join(w.queues) if w.queues is not None else "(no answer)"
            pool = f"{w.pool_kind or '?'} x{w.pool_size}" if w.pool_size else "pool ?"
            state = "up" if w.alive else "DOWN"
            lines.append(
                f"  {w.hostname:<28} {state:<4} {pool:<12} active {w.active:<3} "
                f"task events {events:<14} queues: {queues}"
            )
        lines += ["", "Queues"]
        if obs.queues:
            width = max(12, *(len(q.name) for q in obs.queues))
            lines.append(
                f"  {'name':<{width}} {'ready':>9} {'reserved':>9} {'oldest':>7}  consumers"
            )
            for q in obs.queues:
                consumers = ", ".join(q.consumers) or (
                    f"{q.broker_consumers} (broker)" if q.broker_consumers else "(none)"
                )
                if not obs.task_events:
                    consumers = "(not visible)"
                lines.append(
                    f"  {q.name:<{width}} {_count(q.ready):>9} {_count(q.reserved):>9} "
                    f"{_age(q.oldest_age):>7}  {consumers}"
                )
                if q.by_priority and any(n for p, n in q.by_priority.items() if p != "0"):
                    parts = ", ".join(f"{p}: {n:,}" for p, n in q.by_priority.items() if n)
                    lines.append(f"  {'':<{width}}   by priority: {parts}")
            lines += _legend(obs)
        else:
            lines.append("  (none found)")
        if obs.delayed_total is not None:
            how_delayed = "native delayed delivery" if obs.task_events else "DelaySeconds"
            lines.append(f"  scheduled for later ({how_delayed}): {_count(obs.delayed_total)}")
    lines += ["", "Findings"]
    if not found:
        lines.append("  none: healthy")
    for f in found:
        lines += [
            f"  {f.severity.upper():<8}  {f.summary}",
            f"  {'':<8}  cause: {f.cause}",
            f"  {'':<8}  fix:   {f.fix}",
        ]
    critical = sum(f.severity == "critical" for f in found)
    warnings = sum(f.severity == "warning" for f in found)
    lines += [
        "",
        f"Result: {critical} critical, {warnings} warning(s) (exit {exit_code(found)})",
    ]
    return "\n".join(lines)


def json_report(obs: Observation, found: list[Finding], broker: str) -> str:
    return json.dumps(
        {
            "broker": broker,
            "exit_code": exit_code(found),
            "observation": asdict(obs),
            "findings": [asdict(f) for f in found],
        },
        indent=2,
        sort_keys=True,
    )
