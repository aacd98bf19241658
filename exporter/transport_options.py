"""Check ``--broker-transport-option`` values before anything connects.

Kombu reads transport options lazily and trusts their types: ``sep=5`` fails deep inside a
connection attempt as an ``AttributeError``, and a misspelt key is silently ignored (so the
exporter would sample other keys than the workers use). Known options are type-checked here,
with one clear error; unknown keys are reported so a typo is seen. Each broker module
declares the options its transport reads (``Broker.option_checks``); an option is known when
any broker reads it (unscoped options apply to every broker of a multi-broker exporter).
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.brokers import BROKERS
from exporter.brokers.base import COMMON_OPTION_CHECKS, Check

KNOWN: Mapping[str, Check] = {
    **{key: check for broker in BROKERS for key, check in broker.option_checks.items()},
    **COMMON_OPTION_CHECKS,
}


def check_transport_options(options: dict[str, object]) -> list[str]:
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
