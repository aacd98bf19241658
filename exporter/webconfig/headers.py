"""``http_server_config``: ``headers`` (the five the toolkit allows) and ``http2``.

``http2`` is accepted and checked but changes nothing: this server speaks HTTP/1.1 only, which
clients fall back to.
"""

from __future__ import annotations

from typing import Any

from exporter.webconfig.fields import _check_keys, _error, _mapping, _string

# The security headers the toolkit lets a config set; values checked as the toolkit does.
HEADERS = (
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
)
_HEADER_VALUES = {"X-Frame-Options": ("deny", "sameorigin"), "X-Content-Type-Options": ("nosniff",)}
HTTP_KEYS = ("http2", "headers")


def _http(value: Any) -> dict[str, str]:
    where = "http_server_config"
    http = _mapping(value, where)
    _check_keys(http, HTTP_KEYS, where)
    http2 = http.get("http2", True)
    if not isinstance(http2, bool):
        raise _error(f"{where}.http2", "must be true or false")
    headers: dict[str, str] = {}
    for name, header_value in _mapping(http.get("headers"), f"{where}.headers").items():
        if name not in HEADERS:
            raise _error(
                f"{where}.headers", f"{name!r} cannot be set (allowed: {', '.join(HEADERS)})"
            )
        text = _string(header_value, f"{where}.headers.{name}")
        allowed = _HEADER_VALUES.get(name)
        if allowed is not None and text and text.lower() not in allowed:
            raise _error(f"{where}.headers.{name}", f"must be one of {', '.join(allowed)}")
        if "\r" in text or "\n" in text:
            raise _error(f"{where}.headers.{name}", "must be one line")
        if text:
            headers[name] = text
    return headers
