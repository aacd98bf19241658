"""``tls_server_config``: the server's SSLContext, and the client-certificate SAN check.

- ``cert_file`` and ``key_file``, or inline ``cert`` and ``key``: an inline PEM is loaded through
  an in-memory file (memfd), never written to disk;
- ``min_version`` and ``max_version`` (TLS10 to TLS13; default TLS12 to TLS13);
- ``cipher_suites`` by their Go names, mapped to OpenSSL's (TLS 1.0-1.2 suites: TLS 1.3 ones are
  refused, they cannot be chosen); ``prefer_server_cipher_suites`` (default true);
- ``client_auth_type`` with ``client_ca_file`` (or inline ``client_ca``);
- ``client_allowed_sans``: checked once the handshake is done (``peer_sans``, used by
  ``WebConfig.client_allowed``), so it needs RequireAndVerifyClientCert.

Refused, with one line naming the field: ``client_auth_type`` RequestClientCert and
RequireAnyClientCert (Python cannot ask for a certificate without verifying it), and
``curve_preferences`` (Python cannot set a list of curves).

Relative file names are resolved against the directory of the config file, as the toolkit does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exporter.webconfig.fields import _check_keys, _error, _string

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
