"""Redis priority layouts (exporter/sources/redis_priorities.py) in process; against real Redis
and workers: tests/integration/queues/test_redis_priorities.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from exporter.sources.redis_priorities import DEFAULT_STEPS, PriorityLayout

SEP = "\x06\x16"  # kombu's priority separator


def test_workers_layout_findings_are_replaced_whole() -> None:
    """The status page and diagnose read ``worker_mismatch`` from other threads: while a
    sample learns the workers' options, readers still see the previous findings whole
    (before: an empty dict, filled one worker at a time)."""
    layout = PriorityLayout("", SEP, DEFAULT_STEPS, steps_configured=False)
    layout.learn_workers({"a@x": {"priority_steps": [0, 5]}})
    assert set(layout.worker_mismatch) == {"a@x"}
    seen: list[set[str]] = []

    class Watched(dict[str, dict[str, Any]]):
        def items(self) -> Iterator[tuple[str, dict[str, Any]]]:  # type: ignore[override]
            for item in super().items():
                seen.append(set(layout.worker_mismatch))  # what a reader sees meanwhile
                yield item

    layout.learn_workers(Watched({"a@x": {"priority_steps": [0, 5]}, "b@x": {"sep": ":"}}))
    assert seen == [{"a@x"}, {"a@x"}]
    assert set(layout.worker_mismatch) == {"a@x", "b@x"}
    assert layout.worker_mismatch["b@x"].found_seps == (":",)
