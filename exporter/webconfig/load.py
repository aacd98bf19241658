"""Reading the file: the YAML (duplicate keys refused), every section checked, a ``WebConfig``.

Each section is checked by its own module (tls, headers, auth, rate_limit); this one holds the
top level, and the key that is ours, not the toolkit's: ``celery_exporter_unauthenticated_paths``,
a list of ``/healthz`` and/or ``/readyz`` served without basic auth (for probes that cannot send
a password). Default: every path needs the password.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.webconfig.auth import BasicAuth, _users
from exporter.webconfig.fields import WebConfigError, _check_keys, _error, _mapping
from exporter.webconfig.headers import _http
from exporter.webconfig.rate_limit import RateLimiter, _rate_limiter
from exporter.webconfig.tls import _ssl_context, peer_sans

UNAUTHENTICATED_PATHS_KEY = "celery_exporter_unauthenticated_paths"
# Paths that may be opened with UNAUTHENTICATED_PATHS_KEY: probes only, never /metrics or /.
OPENABLE_PATHS = ("/healthz", "/readyz")

TOP_LEVEL_KEYS = (
    "tls_server_config",
    "http_server_config",
    "basic_auth_users",
    "rate_limit",
    UNAUTHENTICATED_PATHS_KEY,
)


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that refuses duplicate keys (a second hash for one user must not win)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            line = key_node.start_mark.line + 1
            raise WebConfigError(f"duplicate key {key!r} (line {line})")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class WebConfig:
    """A loaded, validated web config: what the HTTP server applies to each connection."""

    path: str
    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    headers: dict[str, str] = field(default_factory=dict)
    unauthenticated_paths: frozenset[str] = frozenset()
    summary: str = "plain HTTP, no authentication"
    # client_allowed_sans: a verified client certificate must name one of these.
    client_allowed_sans: frozenset[str] | None = None
    rate_limiter: RateLimiter | None = None

    def needs_auth(self, path: str) -> bool:
        return self.auth is not None and path not in self.unauthenticated_paths

    def client_allowed(self, peer_cert: dict[str, Any] | None) -> bool:
        """Whether a client with this (verified) certificate may go on, per client_allowed_sans.

        As the toolkit: DNS names, e-mail addresses, IP addresses and URIs of the certificate's
        subjectAltName, compared exactly (IP addresses in their canonical form).
        """
        if self.client_allowed_sans is None:
            return True
        return bool(peer_sans(peer_cert) & self.client_allowed_sans)


def load_web_config(path: str) -> WebConfig:
    """Read and check ``path``; raises WebConfigError with a one-line message."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WebConfigError(f"cannot read {path}: {problem}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: the snippet could show a hash.
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise WebConfigError(f"{path}: not valid YAML{at}: {exc.problem}") from None
    except yaml.YAMLError:
        raise WebConfigError(f"{path}: not valid YAML") from None
    except WebConfigError as exc:
        raise WebConfigError(f"{path}: {exc}") from None
    try:
        return _build(path, file.parent, raw)
    except WebConfigError as exc:
        raise WebConfigError(f"{path}: {exc}") from None


def _build(path: str, directory: Path, raw: Any) -> WebConfig:
    config = _mapping(raw, "the file")
    _check_keys(config, TOP_LEVEL_KEYS, "")
    limiter = _rate_limiter(config.get("rate_limit"))
    tls = config.get("tls_server_config")
    context, tls_summary, allowed_sans = (None, "plain HTTP", None)
    if tls is not None:
        context, tls_summary, allowed_sans = _ssl_context(
            _mapping(tls, "tls_server_config"), directory
        )
    headers = _http(config.get("http_server_config"))
    users = _users(config.get("basic_auth_users"))
    open_paths = config.get(UNAUTHENTICATED_PATHS_KEY) or []
    if not isinstance(open_paths, list):
        raise _error(UNAUTHENTICATED_PATHS_KEY, "must be a list")
    for open_path in open_paths:
        if open_path not in OPENABLE_PATHS:
            raise _error(
                UNAUTHENTICATED_PATHS_KEY,
                f"{open_path!r} cannot be opened (only {', '.join(OPENABLE_PATHS)})",
            )
    auth = BasicAuth(users) if users else None
    if limiter is not None:
        tls_summary += (
            f"; rate limit: bursts of {limiter.burst}, one more every {limiter.interval:g} s"
        )
    auth_summary = f"basic auth ({len(users)} users)" if users else "no basic auth"
    if auth is not None and open_paths:
        auth_summary += f", open without auth: {', '.join(open_paths)}"
    return WebConfig(
        path=path,
        ssl_context=context,
        auth=auth,
        headers=headers,
        unauthenticated_paths=frozenset(open_paths),
        summary=f"{tls_summary}; {auth_summary}",
        client_allowed_sans=allowed_sans,
        rate_limiter=limiter,
    )


def validate_web_config_file(path: str) -> str:
    """The click-side check of ``--web-config-file``: the path, once it loads."""
    load_web_config(path)
    return path
