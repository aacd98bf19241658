"""Property-based: whatever arrives, the daemon counts it, skips it, and keeps counting the
valid events around it exactly."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.daemon import Exporter
from exporter.settings import Settings
from tests.support.metrics import registry_samples, total, value

EVENT_TYPES = [
    "task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
    "task-retried", "task-rejected", "task-revoked", "worker-online", "worker-heartbeat",
    "worker-offline", "task-bogus", "",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["uuid", "name", "hostname", "queue", "timestamp", "runtime", "exception", "eta",
     "freq", "active", "processed", "requeue", "retries"]
)  # fmt: skip
events = st.builds(
    lambda etype, fields: {"type": etype, **fields},
    st.one_of(st.sampled_from(EVENT_TYPES), json_values),
    st.dictionaries(field_names, json_values, max_size=8),
)
bodies = st.one_of(
    events.map(lambda e: json.dumps(e).encode()),
    st.lists(st.one_of(events, json_values), max_size=6).map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
)


def valid_task(uuid: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "task-received",
            "uuid": uuid,
            "name": "ok.task",
            "hostname": "w@h",
            "timestamp": 1.0,
        },
        {"type": "task-started", "uuid": uuid, "hostname": "w@h", "timestamp": 2.0},
        {
            "type": "task-succeeded",
            "uuid": uuid,
            "hostname": "w@h",
            "runtime": 0.5,
            "timestamp": 2.5,
        },
    ]


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(bodies, min_size=1, max_size=8))
def test_arbitrary_messages_never_break_the_stream(garbage: list[bytes]) -> None:
    exporter = Exporter(Settings(broker_url="redis://127.0.0.1:1/0"))
    on_message = exporter.dispatcher.on_message
    for i, body in enumerate(garbage):
        on_message(body, "application/json")
        # valid tasks interleaved with the garbage, in their own uuid space
        for event in valid_task(f"valid-{i}"):
            on_message(json.dumps(event).encode(), "application/json")
    # Garbage may include task-sent events, which make unknown tasks' events wait for theirs.
    exporter.dispatcher.housekeeping(time.time() + 10)
    samples = registry_samples(exporter.registry)  # the exposition must still render
    succeeded = value(
        samples,
        "celery_task_succeeded_total",
        name="ok.task",
        hostname="w@h",
        queue_name="(unknown)",
    )
    # Garbage may mention the same uuids only by chance; ours are unique strings.
    assert succeeded == len(garbage)
    for (_name, labels), _ in samples.items():
        for label_value in dict(labels).values():
            assert len(label_value) <= 200
    # Nothing vanishes: every event slot of every message is counted, as an event of its
    # type or as skipped with a reason (3 events per valid task). A task event without a
    # usable uuid is both: received as its type, then skipped as bad_uuid.
    skipped = "celery_exporter_events_skipped_total"
    counted = (
        total(samples, "celery_exporter_events_total")
        + total(samples, skipped)
        - total(samples, skipped, reason="bad_uuid")
    )
    assert counted == sum(event_slots(body) for body in garbage) + 3 * len(garbage)
    assert total(samples, skipped, reason="handler_error") == 0


def event_slots(body: bytes) -> int:
    """How many things a message carries: each item of a JSON list, else one (an event, or
    one unusable message)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return 1
    return len(payload) if isinstance(payload, list) else 1
