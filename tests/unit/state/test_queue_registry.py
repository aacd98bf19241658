"""Which queues are watched: named ones always, discovered ones until they go quiet."""

from __future__ import annotations

from exporter.state.queue_registry import QueueRegistry


def test_named_queues_stay_discovered_ones_are_forgotten_when_quiet() -> None:
    registry = QueueRegistry(named=("critical",), forget_after=60.0)
    registry.note({"from_worker", "from_event"}, now=1000.0)
    assert registry.watched(1000.0) == ["critical", "from_event", "from_worker"]
    registry.note(["from_worker"], now=1050.0)  # still consumed by a worker
    assert registry.watched(1060.5) == ["critical", "from_worker"]
    assert registry.watched(1111.0) == ["critical"]
    # Rediscovered later: watched again.
    registry.note(["from_event"], now=2000.0)
    assert registry.watched(2000.0) == ["critical", "from_event"]
