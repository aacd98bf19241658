"""What every sampled source provides, and what a queue sample holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from exporter.sources.redis_priorities import PriorityMismatch

if TYPE_CHECKING:
    from kombu.connection import Connection


@dataclass
class QueueSample:
    """One queue as the broker showed it in one sample. None: the broker cannot tell."""

    ready: int = 0
    by_priority: dict[str, int] | None = None
    reserved: int | None = None
    oldest_message_id: str | None = None
    broker_consumers: int | None = None
    # Redis: priority lists found that the configured layout does not name.
    priority_mismatch: PriorityMismatch | None = None


@dataclass
class BrokerSample:
    queues: dict[str, QueueSample] = field(default_factory=dict)
    # Queue names the broker itself knows (Redis: kombu's binding keys), for discovery.
    listed_queues: set[str] = field(default_factory=set)
    # Redis: every reserved (unacked) message (per-queue counts are None past the scan limit).
    reserved_total: int | None = None
    # RabbitMQ: messages in Celery's native delayed delivery queues (ETA/countdown tasks not
    # due yet); None when it is not set up.
    delayed_total: int | None = None
    # Queues this sample could not read while the others answered (SQS: one queue's
    # credentials or rights); they are left out of ``queues``.
    failed_queues: set[str] = field(default_factory=set)


class QueueSource(Protocol):
    name: str

    def sample(self, queues: list[str]) -> BrokerSample:
        """Read these queues; raise on any broker error (the runner handles it)."""
        ...

    def close(self) -> None: ...


def release_quietly(conn: Connection | None) -> None:
    """Let go of a sampler's broker connection. It is being dropped because it failed or the
    sampler stops: an error while releasing it says nothing new."""
    if conn is not None:
        try:
            conn.release()
        except Exception:
            pass
