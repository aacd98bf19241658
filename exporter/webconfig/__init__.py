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
- ``rate_limit``: ``interval`` (a Go duration) and ``burst``, for all paths (429 beyond);
- ours, not the toolkit's: ``celery_exporter_unauthenticated_paths``, ``/healthz`` and/or
  ``/readyz`` served without basic auth (for probes that cannot send a password).

What Python's ``ssl`` module cannot do the way the toolkit does is refused at load time with one
line naming the field, never ignored: ``client_auth_type`` RequestClientCert and
RequireAnyClientCert (Python cannot ask for a certificate without verifying it),
``curve_preferences``. Errors never quote a password or a hash.

Where things are:

- ``load``: reading and checking the file, the top-level keys, ``WebConfig``;
- ``tls``: ``tls_server_config`` -> SSLContext; the client-certificate SAN check;
- ``headers``: ``http_server_config``;
- ``auth``: ``basic_auth_users`` and ``BasicAuth``, the password check;
- ``rate_limit``: ``rate_limit``, ``RateLimiter`` and Go durations;
- ``reload``: ``WebConfigReloader``, SIGHUP and its metrics;
- ``fields``: ``WebConfigError`` and the checks of a value's type all sections share.
"""

from __future__ import annotations

from exporter.webconfig.auth import REALM, BasicAuth
from exporter.webconfig.fields import WebConfigError
from exporter.webconfig.load import WebConfig, load_web_config, validate_web_config_file
from exporter.webconfig.rate_limit import RateLimiter, parse_go_duration
from exporter.webconfig.reload import WebConfigReloader
from exporter.webconfig.tls import CIPHER_SUITES, peer_sans

__all__ = [
    "CIPHER_SUITES",
    "REALM",
    "BasicAuth",
    "RateLimiter",
    "WebConfig",
    "WebConfigError",
    "WebConfigReloader",
    "load_web_config",
    "parse_go_duration",
    "peer_sans",
    "validate_web_config_file",
]
