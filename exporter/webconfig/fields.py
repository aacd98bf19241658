"""WebConfigError, and the checks every section of the file makes of its YAML values.

An error is one line that names the field (``tls_server_config.cert_file: ...``) and never
quotes a password or a hash.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class WebConfigError(ValueError):
    """A web config file that cannot be used; the message is one line and holds no secret."""


def _error(where: str, problem: str) -> WebConfigError:
    return WebConfigError(f"{where}: {problem}" if where else problem)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(where, "must be a mapping")
    return value


def _check_keys(value: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = tuple(allowed)
    for key in value:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise WebConfigError(
                f"unknown key {prefix}{key} (expected one of: {', '.join(allowed)})"
            )


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _error(where, "must be a string")
    return value
