"""Property-based: whatever arrives, the daemon counts it, skips it, and keeps counting the
valid events around it exactly."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as text_string_to_openmetrics,
)

from exporter.daemon import Exporter
from exporter.events.ranges import MAX_HEARTBEAT_FREQ_SECONDS
from exporter.prom.exposition import render
from exporter.settings import Settings
from tests.support.metrics import Samples, parse_samples, registry_samples, total, value

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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


def valid_task(uuid: str, t: float | None = None) -> list[dict[str, Any]]:
    t = float(int(time.time())) if t is None else t
    return [
        {
            "type": "task-received",
            "uuid": uuid,
            "name": "ok.task",
            "hostname": "w@h",
            "timestamp": t,
        },
        {"type": "task-started", "uuid": uuid, "hostname": "w@h", "timestamp": t + 0.25},
        {
            "type": "task-succeeded",
            "uuid": uuid,
            "hostname": "w@h",
            "runtime": 0.5,
            "timestamp": t + 0.75,
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
    on_message = exporter.primary.dispatcher.on_message
    for i, body in enumerate(garbage):
        on_message(body, "application/json")
        # valid tasks interleaved with the garbage, in their own uuid space
        for event in valid_task(f"valid-{i}"):
            on_message(json.dumps(event).encode(), "application/json")
    # Garbage may include task-sent events, which make unknown tasks' events wait for theirs.
    exporter.primary.dispatcher.housekeeping(time.time() + 10)
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
    # Likewise an event whose out-of-range numbers were dropped (reason out_of_range).
    counted = (
        total(samples, "celery_exporter_events_total")
        + total(samples, skipped)
        - total(samples, skipped, reason="bad_uuid")
        - total(samples, skipped, reason="out_of_range")
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


# -- whole batches: valid events among out-of-range and malformed ones ----------------------------

WINDOW = 86400.0
# Numbers no real sender sends: 400-digit integers (float() of them overflows), the largest
# floats (a difference of two overflows to inf), inf, NaN, negatives, far past and future.
hostile_numbers = st.one_of(
    st.sampled_from(
        [10**400, -(10**400), 1e308, -1e308, math.inf, -math.inf, math.nan, -1, -1e-9, 0,
         2**63, 1e300, 1.0, 4e9]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
)  # fmt: skip
HOSTILE_FIELDS = {
    "task-sent": ("timestamp",),
    "task-received": ("timestamp",),
    "task-started": ("timestamp",),
    "task-succeeded": ("timestamp", "runtime"),
    "task-failed": ("timestamp",),
    "worker-online": ("timestamp", "freq", "active", "processed"),
    "worker-heartbeat": ("timestamp", "freq", "active", "processed"),
}


@st.composite
def out_of_range_event(draw: st.DrawFn, now: float) -> dict[str, Any]:
    """A plausible event of its own uuid and host with hostile numbers in its fields."""
    etype = draw(st.sampled_from(sorted(HOSTILE_FIELDS)))
    event: dict[str, Any] = {
        "type": etype,
        "uuid": f"bad-{draw(st.integers(0, 5))}",
        "name": "bad.task",
        "queue": "bad-q",
        "hostname": "bad@h",
        "timestamp": now,
        "freq": 2.0,
        "runtime": 0.5,
    }
    for field in draw(st.lists(st.sampled_from(HOSTILE_FIELDS[etype]), min_size=1)):
        event[field] = draw(hostile_numbers)
    return event


def valid_lifecycle(uuid: str, t: float) -> list[dict[str, Any]]:
    """A task sent, received, started and succeeded: queue wait 0.5 s, runtime 0.5 s."""
    return [
        {"type": "task-sent", "uuid": uuid, "name": "ok.task", "queue": "ok-q",
         "hostname": "producer@h", "timestamp": t},
        *valid_task(uuid, t + 0.25),
    ]  # fmt: skip


def assert_finite_and_parses(exporter: Exporter) -> Samples:
    text = render(exporter.registry, "")[0].decode()
    samples = parse_samples(text)  # the exposition parses
    for family in text_string_to_openmetrics(render(exporter.registry, OPENMETRICS)[0].decode()):
        assert family.name  # and so does the OpenMetrics one
    for (name, labels), number in samples.items():
        assert math.isfinite(number), (name, dict(labels), number)
    return samples


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_batches_mixing_valid_out_of_range_and_malformed_events(data: st.DataObject) -> None:
    """Every valid event of a batch is counted exactly, whatever its neighbours carry; no
    exposed value is infinite or NaN."""
    now = float(int(time.time()))
    clock = Clock(now)
    exporter = Exporter(Settings(broker_url="redis://127.0.0.1:1/0"), clock=clock)
    valid_count = data.draw(st.integers(1, 4), label="valid tasks")
    batch: list[Any] = [e for i in range(valid_count) for e in valid_lifecycle(f"ok-{i}", now)]
    hostile = data.draw(
        st.lists(st.one_of(out_of_range_event(now), events, json_values), max_size=12),
        label="hostile",
    )
    # Hostile items anywhere (the valid tasks' own events keep their order).
    for item in hostile:
        batch.insert(data.draw(st.integers(0, len(batch)), label="at"), item)
    body = json.dumps(batch).encode()
    exporter.primary.dispatcher.on_message(body, "application/json")

    samples = assert_finite_and_parses(exporter)
    key = {"name": "ok.task", "queue_name": "ok-q"}
    assert value(samples, "celery_task_sent_total", **key) == valid_count
    assert value(samples, "celery_task_succeeded_total", hostname="w@h", **key) == valid_count
    wait = "celery_task_queue_wait_seconds"
    assert value(samples, f"{wait}_count", **key) == valid_count
    assert value(samples, f"{wait}_sum", **key) == 0.5 * valid_count
    runtime = "celery_task_runtime_seconds"
    assert value(samples, f"{runtime}_count", state="succeeded", **key) == valid_count
    assert value(samples, f"{runtime}_sum", state="succeeded", **key) == 0.5 * valid_count
    skipped = "celery_exporter_events_skipped_total"
    assert total(samples, skipped, reason="handler_error") == 0
    lag = value(samples, "celery_exporter_event_lag_seconds")
    assert lag is None or abs(lag) <= WINDOW
    # Whatever freq a hostile heartbeat carried, its worker goes down in time: at the latest
    # after the longest interval accepted times --worker-timeout-heartbeats (5).
    clock.now = now + MAX_HEARTBEAT_FREQ_SECONDS * 5 + 1
    exporter.tick()
    samples = assert_finite_and_parses(exporter)
    assert value(samples, "celery_worker_up", hostname="bad@h") in (None, 0.0)
    assert value(samples, "celery_worker_up", hostname="w@h") in (None, 0.0)
