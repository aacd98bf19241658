"""Label values that are safe to export: bounded in length and valid UTF-8."""

from __future__ import annotations

from functools import lru_cache

# Distinct values that no real task, queue or worker can be confused with.
UNKNOWN = "(unknown)"

MAX_LABEL_LENGTH = 200


def label_value(value: object, max_length: int = MAX_LABEL_LENGTH) -> str:
    """Turn an event field into a label value, or ``UNKNOWN`` when it is unusable."""
    if not isinstance(value, str) or not value:
        return UNKNOWN
    if len(value) > max_length:
        value = value[: max_length - 1] + "…"
    if not value.isprintable():
        value = "".join(ch if ch.isprintable() else "?" for ch in value)
    # Lone surrogates (valid in JSON, invalid in UTF-8) would break the exposition.
    return value.encode("utf-8", "replace").decode("utf-8")


_label_of_str = lru_cache(maxsize=16_384)(label_value)


def cached_label(value: object) -> str:
    """``label_value`` for the hot path: the same few names and hosts repeat endlessly."""
    if type(value) is str:
        return _label_of_str(value)
    return UNKNOWN
