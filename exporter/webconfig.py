"""``--web-config-file``: TLS and basic auth for the HTTP endpoints, reloaded on SIGHUP.

The file has the format of the Prometheus exporter-toolkit (``docs/web-configuration.md`` in
prometheus/exporter-toolkit), so a file written for node_exporter works here:

- ``tls_server_config``: ``cert_file``, ``key_file`` (or inline ``cert``, ``key``: loaded
  through an in-memory file, never written to disk), ``client_auth_type``, ``client_ca_file``
  (or inline ``client_ca``), ``client_allowed_sans`` (checked once the handshake is done),
  ``min_version``, ``max_version``, ``cipher_suites``, ``prefer_server_cipher_suites``;
- ``http_server_config``: ``headers`` (the five the toolkit allows), ``http2`` (accepted; this
  server speaks HTTP/1.1 only, which clients fall back to);
- ``basic_auth_users``: user name -> bcrypt hash;
- ``rate_limit``: ``interval`` (a Go duration) and ``burst``, for all paths (429 beyond).

What Python's ``ssl`` module cannot do the way the toolkit does is refused at load time with one
line naming the field, never ignored: ``client_auth_type`` RequestClientCert and
RequireAnyClientCert (Python cannot ask for a certificate without verifying it),
``curve_preferences``.

One key is ours, not the toolkit's: ``celery_exporter_unauthenticated_paths``, a list of
``/healthz`` and/or ``/readyz`` served without basic auth (for probes that cannot send a
password). Default: every path needs the password.

Relative file names are resolved against the directory of the config file, as the toolkit does.
Errors never quote a password or a hash.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

UNAUTHENTICATED_PATHS_KEY = "celery_exporter_unauthenticated_paths"
# Paths that may be opened with UNAUTHENTICATED_PATHS_KEY: probes only, never /metrics or /.
OPENABLE_PATHS = ("/healthz", "/readyz")

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
# Go's names (crypto/tls CipherSuites(), TLS 1.0-1.2) -> OpenSSL's.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
# The security headers the toolkit lets a config set; values checked as the toolkit does.
HEADERS = (
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
)
_HEADER_VALUES = {"X-Frame-Options": ("deny", "sameorigin"), "X-Content-Type-Options": ("nosniff",)}

TOP_LEVEL_KEYS = (
    "tls_server_config",
    "http_server_config",
    "basic_auth_users",
    "rate_limit",
    UNAUTHENTICATED_PATHS_KEY,
)
TLS_KEYS = (
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
HTTP_KEYS = ("http2", "headers")

# $2a$, $2b$ or $2y$, a two-digit cost, then 53 characters of bcrypt's base64 (salt + hash).
_BCRYPT_HASH = re.compile(rb"^\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}$")
REALM = "celery-metrics-exporter"


class WebConfigError(ValueError):
    """A web config file that cannot be used; the message is one line and holds no secret."""


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


def peer_sans(peer_cert: dict[str, Any] | None) -> set[str]:
    """The subjectAltName values of ``SSLSocket.getpeercert()`` the toolkit matches."""
    sans: set[str] = set()
    for kind, value in (peer_cert or {}).get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                continue
        elif kind not in ("DNS", "email", "URI"):
            continue
        sans.add(value)
    return sans


class RateLimiter:
    """The toolkit's ``rate_limit``: a token bucket of ``burst`` requests, one more every
    ``interval`` seconds, shared by every path; a request without a token gets 429."""

    def __init__(self, interval: float, burst: int, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) / self.interval)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration such as ``1s``, ``250ms`` or ``1h30m`` (``0`` alone too)."""
    if text == "0":
        return 0.0
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"{text!r} is not a duration (such as 1s, 250ms, 1m)")
    return seconds


class BasicAuth:
    """Checks ``Authorization: Basic`` credentials against bcrypt hashes.

    A bcrypt check costs ~50-100 ms of CPU at cost 10, and Prometheus sends the same credentials
    on every scrape, so the last password that passed bcrypt is remembered per user, as an HMAC
    under a key of this process (never the password itself) and compared in constant time. Only
    passwords that passed bcrypt are remembered; a wrong one always costs a full bcrypt check,
    and so does an unknown user (against a dummy hash of the same cost), so the response time
    does not tell whether a user exists.
    """

    def __init__(self, users: Mapping[bytes, bytes]) -> None:
        self._users = dict(users)
        cost = max(int(_BCRYPT_HASH.match(h).group("cost")) for h in users.values())  # type: ignore[union-attr]
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        self._key = secrets.token_bytes(32)
        self._good: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        # One bcrypt check at a time (as the toolkit): a flood of wrong passwords takes one core.
        self._bcrypt_lock = threading.Lock()

    def check(self, user: bytes, password: bytes) -> bool:
        mac = hmac.new(self._key, len(user).to_bytes(4, "big") + user + password, hashlib.sha256)
        digest = mac.digest()
        with self._lock:
            remembered = self._good.get(user)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return True
        hashed = self._users.get(user)
        if len(password) > 72:
            # bcrypt reads 72 bytes: bcrypt 4 would compare a prefix, bcrypt 5 raises. A longer
            # password was never hashed whole, so it is wrong, for every user alike.
            return False
        try:
            with self._bcrypt_lock:
                matches = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy)
        except ValueError:  # a hash bcrypt cannot read (checked at load: should not happen)
            matches = False
        if not matches or hashed is None:
            return False
        with self._lock:
            self._good[user] = digest
        return True

    def check_header(self, header: str | None) -> bool:
        """True when ``header`` (the Authorization header's value) holds good credentials."""
        if not header:
            return False
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        if not sep:
            return False
        return self.check(user, password)


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


def _readable(path: Path, where: str) -> Path:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _error(where, f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _resolve(directory: Path, value: Any, where: str) -> Path | None:
    text = _string(value, where) if value is not None else ""
    if not text:
        return None
    path = Path(text)
    return _readable(path if path.is_absolute() else directory / path, where)


@contextlib.contextmanager
def _memory_file(text: str, where: str) -> Iterator[str]:
    """A path to ``text`` that lives in memory only (an inline key never touches a disk)."""
    if not hasattr(os, "memfd_create"):
        raise _error(where, "inline PEM needs Linux (memfd_create); use the _file field")
    fd = os.memfd_create("celery-exporter-web-config", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as file:
            file.write(text.encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _ssl_context(
    tls: dict[str, Any], directory: Path
) -> tuple[ssl.SSLContext, str, frozenset[str] | None]:
    where = "tls_server_config"
    _check_keys(tls, TLS_KEYS, where)
    if tls.get("curve_preferences"):
        raise _error(
            f"{where}.curve_preferences",
            "not supported: Python's ssl module cannot set a list of curves",
        )
    cert_file = _resolve(directory, tls.get("cert_file"), f"{where}.cert_file")
    key_file = _resolve(directory, tls.get("key_file"), f"{where}.key_file")
    inline: dict[str, str] = {}
    for name, file in (("cert", cert_file), ("key", key_file)):
        text = tls.get(name)
        if text is not None and _string(text, f"{where}.{name}"):
            if file is not None:
                raise _error(f"{where}.{name}", f"give {name} or {name}_file, not both")
            inline[name] = text
    if cert_file is None and "cert" not in inline:
        raise _error(f"{where}.cert_file", "missing (TLS needs a certificate)")
    if key_file is None and "key" not in inline:
        raise _error(f"{where}.key_file", "missing (TLS needs the certificate's key)")

    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        text = tls.get(name)
        text = default if text is None else _string(text, f"{where}.{name}")
        if text not in TLS_VERSIONS:
            raise _error(f"{where}.{name}", f"{text!r} is not one of {', '.join(TLS_VERSIONS)}")
        versions[name] = text
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise _error(f"{where}.min_version", "is above max_version")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[versions["min_version"]]
    context.maximum_version = TLS_VERSIONS[versions["max_version"]]
    context.set_alpn_protocols(["http/1.1"])
    prefer = tls.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise _error(f"{where}.prefer_server_cipher_suites", "must be true or false")
    if prefer:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE

    suites = tls.get("cipher_suites") or []
    if not isinstance(suites, list):
        raise _error(f"{where}.cipher_suites", "must be a list")
    if suites:
        names = []
        for suite in suites:
            if suite in TLS13_SUITES:
                raise _error(
                    f"{where}.cipher_suites",
                    f"{suite} is a TLS 1.3 suite; only TLS 1.2 suites can be chosen",
                )
            if suite not in CIPHER_SUITES:
                raise _error(f"{where}.cipher_suites", f"unknown or unsupported suite {suite!r}")
            names.append(CIPHER_SUITES[suite])
        try:
            context.set_ciphers(":".join(names))
        except ssl.SSLError:
            raise _error(f"{where}.cipher_suites", "none of them is available") from None

    # The certificate first (so a bad one is named as such), then the key that must match it.
    cert_name = f"{where}.cert_file" if cert_file is not None else f"{where}.cert"
    key_name = f"{where}.key_file" if key_file is not None else f"{where}.key"
    cert_shown = f"{cert_file} holds" if cert_file is not None else "holds"
    key_shown = f"{key_file} " if key_file is not None else ""
    try:
        checker = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cert_file is not None:
            checker.load_verify_locations(cafile=str(cert_file))
        else:
            checker.load_verify_locations(cadata=inline["cert"])
    except ssl.SSLError:
        raise _error(cert_name, f"{cert_shown} no PEM certificate") from None
    with contextlib.ExitStack() as stack:
        cert_path = (
            str(cert_file)
            if cert_file is not None
            else stack.enter_context(_memory_file(inline["cert"], cert_name))
        )
        key_path = (
            str(key_file)
            if key_file is not None
            else stack.enter_context(_memory_file(inline["key"], key_name))
        )
        try:
            # The callback refuses encrypted keys instead of prompting on the terminal.
            context.load_cert_chain(cert_path, key_path, password=lambda: b"")
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
                raise _error(key_name, f"{key_shown}does not match the certificate") from None
            raise _error(
                key_name, f"{key_shown}holds no usable PEM private key (or it is encrypted)"
            ) from None

    auth_type = tls.get("client_auth_type") or "NoClientCert"
    auth_type = _string(auth_type, f"{where}.client_auth_type")
    if auth_type == "RequireClientCert":  # the toolkit's old name
        auth_type = "RequireAnyClientCert"
    if auth_type not in CLIENT_AUTH_TYPES:
        raise _error(
            f"{where}.client_auth_type",
            f"{auth_type!r} is not one of {', '.join(CLIENT_AUTH_TYPES)}",
        )
    if auth_type in ("RequestClientCert", "RequireAnyClientCert"):
        raise _error(
            f"{where}.client_auth_type",
            f"{auth_type} is not supported: Python's ssl module cannot accept a client "
            "certificate without verifying it; use RequireAndVerifyClientCert (or "
            "VerifyClientCertIfGiven) with client_ca_file",
        )
    client_ca_file = _resolve(directory, tls.get("client_ca_file"), f"{where}.client_ca_file")
    client_ca = tls.get("client_ca")
    if client_ca is not None:
        client_ca = _string(client_ca, f"{where}.client_ca")
    if client_ca_file is not None and client_ca:
        raise _error(f"{where}.client_ca", "give client_ca or client_ca_file, not both")
    has_ca = client_ca_file is not None or bool(client_ca)
    if auth_type == "NoClientCert":
        if has_ca:
            raise _error(
                f"{where}.client_auth_type",
                "client CAs are configured but client_auth_type is NoClientCert",
            )
        context.verify_mode = ssl.CERT_NONE
    else:
        if not has_ca:
            raise _error(f"{where}.client_ca_file", f"missing (needed by {auth_type})")
        try:
            if client_ca_file is not None:
                context.load_verify_locations(cafile=str(client_ca_file))
            else:
                context.load_verify_locations(cadata=client_ca)
        except ssl.SSLError:
            name = "client_ca_file" if client_ca_file is not None else "client_ca"
            raise _error(f"{where}.{name}", "holds no PEM certificate") from None
        context.verify_mode = (
            ssl.CERT_REQUIRED if auth_type == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL
        )
    summary = (
        f"TLS {versions['min_version']}-{versions['max_version']}, client certificates: {auth_type}"
    )
    allowed_sans = None
    sans = tls.get("client_allowed_sans")
    if sans is not None:
        if not isinstance(sans, list) or not all(isinstance(v, str) and v for v in sans):
            raise _error(f"{where}.client_allowed_sans", "must be a list of non-empty strings")
        if auth_type != "RequireAndVerifyClientCert":
            raise _error(
                f"{where}.client_allowed_sans",
                "needs client_auth_type RequireAndVerifyClientCert (a client without a "
                "certificate would have no SAN to match)",
            )
        allowed_sans = frozenset(sans)
        summary += f", allowed SANs: {len(allowed_sans)}"
    return context, summary, allowed_sans


def _users(value: Any) -> dict[bytes, bytes]:
    where = "basic_auth_users"
    users: dict[bytes, bytes] = {}
    for user, hashed in _mapping(value, where).items():
        if not isinstance(user, str) or not user:
            raise _error(where, f"user name {user!r} must be a non-empty string (quote it)")
        if ":" in user:
            raise _error(where, f"user name {user!r} cannot contain ':'")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed.encode()):
            # Never quote the value: it is a hash, or a password pasted by mistake.
            raise _error(where, f"the password of user {user!r} is not a bcrypt hash")
        cost = int(_BCRYPT_HASH.match(hashed.encode()).group("cost"))  # type: ignore[union-attr]
        if not 4 <= cost <= 31:
            raise _error(where, f"the bcrypt hash of user {user!r} has an invalid cost")
        users[user.encode()] = hashed.encode()
    return users


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


def _rate_limiter(value: Any) -> RateLimiter | None:
    where = "rate_limit"
    limit = _mapping(value, where)
    _check_keys(limit, ("interval", "burst"), where)
    interval_value = limit.get("interval", 0)
    if interval_value == 0:
        return None  # the toolkit's "0 disables"
    if not isinstance(interval_value, str):
        raise _error(f"{where}.interval", "must be a duration such as 1s or 250ms")
    try:
        interval = parse_go_duration(interval_value)
    except ValueError as exc:
        raise _error(f"{where}.interval", str(exc)) from None
    if interval == 0:
        return None
    burst = limit.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise _error(f"{where}.burst", "must be a whole number of at least 1 (0 refuses all)")
    return RateLimiter(interval, burst)


def validate_web_config_file(path: str) -> str:
    """The click-side check of ``--web-config-file``: the path, once it loads."""
    load_web_config(path)
    return path


class WebConfigReloader:
    """Holds the current web config; ``request_reload`` (SIGHUP) swaps it if the new one loads.

    The swap is one attribute assignment: connections accepted afterwards use the new TLS
    context, requests handled afterwards the new users. The listener and open connections are
    left alone. A file that fails to load is logged, counted, and the previous config stays.
    Also a collector for the reload metrics.
    """

    def __init__(self, path: str, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self.current = load_web_config(path)
        self._lock = threading.Lock()
        self._results = {"success": 0, "failure": 0}
        self._last_success = clock()
        log.info("web config %s: %s", path, self.current.summary)

    def request_reload(self, signum: int | None = None, frame: object = None) -> None:
        """Signal-handler safe: the reload runs on a thread of its own."""
        threading.Thread(target=self.reload, name="web-config-reload", daemon=True).start()

    def reload(self) -> bool:
        with self._lock:
            try:
                new = load_web_config(self.path)
                if (new.ssl_context is None) != (self.current.ssl_context is None):
                    raise WebConfigError(
                        f"{self.path}: tls_server_config cannot be added or removed by a "
                        "reload; restart the exporter"
                    )
            except WebConfigError as exc:
                self._results["failure"] += 1
                log.error("reloading the web config failed, keeping the previous one: %s", exc)
                return False
            self.current = new
            self._results["success"] += 1
            self._last_success = self._clock()
            log.info("reloaded web config %s: %s", self.path, new.summary)
            return True

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            results = dict(self._results)
            last_success = self._last_success
        reloads = CounterMetricFamily(
            "celery_exporter_web_config_reloads",
            "Reloads of --web-config-file (SIGHUP), by result.",
            labels=["result"],
        )
        for result, count in results.items():
            reloads.add_metric([result], count)
        yield reloads
        yield GaugeMetricFamily(
            "celery_exporter_web_config_last_reload_success_timestamp_seconds",
            "When --web-config-file was last loaded successfully (at start or on SIGHUP).",
            value=last_success,
        )
