"""Check ``--broker-transport-option`` values before anything connects.

Kombu reads transport options lazily and trusts their types: ``sep=5`` fails deep inside a
connection attempt as an ``AttributeError``, and a misspelt key is silently ignored (so the
exporter would sample other keys than the workers use). Known options are type-checked here,
with one clear error; unknown keys are reported so a typo is seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]  # None when fine, else what is wrong


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _number(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        return "must be a number, zero or more"
    return None


def _integer(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be a whole number, zero or more"
    return None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) else 'must be a JSON object, such as {"password": "..."}'


def _string_or_boolean(value: Any) -> str | None:
    return None if isinstance(value, (str, bool)) else "must be a string, true or false"


def _priority_steps(value: Any) -> str | None:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 255 for s in value)
        and value == sorted(set(value))
    ):
        return None
    return "must be a JSON list of increasing whole numbers, such as [0,3,6,9]"


def _queue_order(value: Any) -> str | None:
    choices = ("round_robin", "priority", "sorted")
    return None if value in choices else f"must be one of {', '.join(choices)}"


KNOWN: dict[str, Check] = {
    # kombu's Redis (and Sentinel) channel
    "sep": _string,
    "global_keyprefix": _string,
    "unacked_key": _string,
    "unacked_index_key": _string,
    "unacked_mutex_key": _string,
    "client_name": _string,
    "master_name": _string,
    "body_encoding": _string,
    "deadletter_queue": _string,
    "fanout_prefix": _string_or_boolean,
    "fanout_patterns": _boolean,
    "ack_emulation": _boolean,
    "socket_keepalive": _boolean,
    "retry_on_timeout": _boolean,
    "sentinel_fanout_compat": _boolean,
    "priority_steps": _priority_steps,
    "queue_order_strategy": _queue_order,
    "visibility_timeout": _number,
    "socket_timeout": _number,
    "socket_connect_timeout": _number,
    "health_check_interval": _number,
    "reauth_check_interval": _number,
    "unacked_mutex_expire": _number,
    "unacked_restore_interval": _number,
    "unacked_restore_throttle": _number,
    "max_connections": _integer,
    "unacked_restore_limit": _integer,
    "min_other_sentinels": _integer,
    "sentinel_kwargs": _mapping,
    "socket_keepalive_options": _mapping,
    # kombu's Connection and virtual transports; py-amqp
    "polling_interval": _number,
    "max_retries": _integer,
    "interval_start": _number,
    "interval_step": _number,
    "interval_max": _number,
    "confirm_publish": _boolean,
    "connect_timeout": _number,
    "read_timeout": _number,
    "write_timeout": _number,
    "client_properties": _mapping,
}


def check_transport_options(options: dict[str, Any]) -> list[str]:
    """Raise ``ValueError`` naming the first option of the wrong type; return the keys no
    transport reads (probably misspelt). ``NAME:key`` (scoped to one broker) is checked as
    ``key``."""
    unknown = []
    for key, value in options.items():
        bare = key.partition(":")[2] or key
        check = KNOWN.get(bare)
        if check is None:
            unknown.append(key)
            continue
        problem = check(value)
        if problem is not None:
            # The type only, never the value: it may be a password (sentinel_kwargs).
            raise ValueError(f"{key}: {problem} (got {type(value).__name__})")
    return unknown
