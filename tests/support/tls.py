"""Throwaway TLS material for test servers, made with the ``openssl`` command line tool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple


class TlsFiles(NamedTuple):
    """PEM files: the CA certificate, and the server certificate it signed with its key.

    A tuple, so ``ca, crt, key = make_certificates(directory)`` works.
    """

    cacert: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> TlsFiles:
    """A new CA (``/CN=test-ca``) and a server certificate for 127.0.0.1 and localhost.

    The server certificate carries ``subjectAltName=IP:127.0.0.1,DNS:localhost``, so clients
    that check the host name accept it for either. Every call makes a new CA: certificates
    from two calls do not trust each other. Keys are unencrypted RSA 2048; both certificates
    are valid for 2 days.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=test-ca", "-keyout", str(ca_key), "-out", str(ca_crt),
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    return TlsFiles(cacert=ca_crt, cert=crt, key=key)


def make_client_certificate(
    ca: TlsFiles, directory: Path, name: str, san: str | None = None
) -> tuple[Path, Path]:
    """A client certificate (``/CN=<name>``, clientAuth) signed by the CA of ``ca``.

    ``ca`` comes from ``make_certificates`` (its CA key sits next to its CA certificate);
    ``san`` is an openssl subjectAltName value (``DNS:a.example,IP:10.0.0.1``), if any.
    Returns (certificate, key), unencrypted PEM, valid for 2 days.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ca.cacert.with_name("ca.key")
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n" + (f"subjectAltName={san}\n" if san else ""))
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cacert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    return crt, key


class Pki:
    """Two independent CAs, each with a server certificate, and client certificates."""

    def __init__(self, root: Path) -> None:
        self.one: TlsFiles = make_certificates(root / "one")
        self.two: TlsFiles = make_certificates(root / "two")
        self.client_one = make_client_certificate(
            self.one, root / "clients", "client-one", san="DNS:client-one.example"
        )
        self.client_other = make_client_certificate(
            self.one, root / "clients", "client-other", san="DNS:other.example,IP:::1"
        )
        self.client_two = make_client_certificate(self.two, root / "clients-two", "client-two")


def tls_config(
    files: TlsFiles,
    users: dict[str, str] | None = None,
    extra_tls: str = "",
    extra: str = "",
) -> str:
    """A --web-config-file serving ``files``, with these basic auth users (name: bcrypt hash)."""
    text = f"tls_server_config:\n  cert_file: {files.cert}\n  key_file: {files.key}\n{extra_tls}"
    if users:
        text += "basic_auth_users:\n" + "".join(f"  {u}: {h}\n" for u, h in users.items())
    return text + extra
