"""Turn one broker message into the events it carries.

Prefork, solo and threads workers batch task events: one message (routing key
``task.multi``) whose body is a JSON list of up to 24 events. Other senders publish one
event per message. Both shapes are handled here; anything else is reported as malformed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_fast_loads: Callable[[bytes | str], Any] | None
try:
    # orjson decodes event bodies about twice as fast as json, a quarter of the exporter's
    # per-event CPU on batched events (bench/RESULTS.md).
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    _fast_loads = None

JSON_CONTENT_TYPES = frozenset({"application/json", "application/x-json"})


class MalformedMessage(Exception):
    """A message that carries no usable event; ``reason`` is a bounded label value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def decode_events(body: bytes | str, content_type: str | None) -> list[Any]:
    """The events in a message body: a list for batches, a one-element list otherwise.

    Items are returned as decoded; the dispatcher checks each one's shape.
    """
    if content_type is not None and content_type not in JSON_CONTENT_TYPES:
        raise MalformedMessage("content_type", f"unsupported content type {content_type!r}")
    try:
        payload = _loads(body)
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedMessage("not_json", f"body is not JSON: {exc}") from None
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list):
        return payload
    raise MalformedMessage("not_object", f"body is a JSON {type(payload).__name__}, not an event")


def _loads(body: bytes | str) -> Any:
    if _fast_loads is not None:
        try:
            return _fast_loads(body)
        except ValueError:
            # orjson is stricter than Celery's encoder (NaN, lone surrogates): the slow
            # path decides, so one odd field does not cost a whole batch.
            pass
    return json.loads(body)
