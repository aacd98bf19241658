"""The TLS side of --web-config-file (exporter/webconfig/tls.py): the peer's SANs, Go cipher suite
names, the settings in the SSL context.

The exporter as users run it, over real TLS: tests/integration/http/test_web_security.py.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from exporter import webconfig
from exporter.webconfig import load_web_config
from tests.support.tls import Pki, tls_config


def test_peer_sans_as_the_toolkit_reads_them() -> None:
    cert = {
        "subjectAltName": (
            ("DNS", "a.example"),
            ("IP Address", "2001:DB8:0:0:0:0:0:1\n"),
            ("IP Address", "10.0.0.1"),
            ("email", "ops@example.com"),
            ("URI", "spiffe://cluster/ns/monitoring"),
            ("DirName", "ignored"),
        )
    }
    assert webconfig.peer_sans(cert) == {
        "a.example",
        "2001:db8::1",
        "10.0.0.1",
        "ops@example.com",
        "spiffe://cluster/ns/monitoring",
    }
    assert webconfig.peer_sans(None) == set()


def test_tls_settings_reach_the_context(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(
        tls_config(
            pki.one,
            extra_tls="  min_version: TLS13\n  max_version: TLS13\n"
            "  client_auth_type: RequireAndVerifyClientCert\n"
            f"  client_ca_file: {pki.one.cacert}\n",
        )
    )
    context = load_web_config(str(path)).ssl_context
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]

    # An inline client CA, VerifyClientCertIfGiven, and a choice of TLS 1.2 suites.
    inline_ca = "".join(f"    {line}\n" for line in pki.one.cacert.read_text().splitlines())
    path.write_text(
        tls_config(
            pki.one,
            extra_tls="  client_auth_type: VerifyClientCertIfGiven\n"
            f"  client_ca: |\n{inline_ca}"
            "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n"
            "  prefer_server_cipher_suites: false\n",
        )
    )
    context = load_web_config(str(path)).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert len(context.get_ca_certs()) == 1
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-RSA-AES256-GCM-SHA384"}
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_go_cipher_suite_names_map_to_the_same_openssl_suites() -> None:
    """Each Go (IANA) name maps to the OpenSSL name of the very same suite."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: run `make test`")
    for go_name, openssl_name in webconfig.CIPHER_SUITES.items():
        out = subprocess.run(
            ["openssl", "ciphers", "-stdname", openssl_name],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        # Lines: "<standard name> - <OpenSSL name> <protocol> ..." (TLS 1.3 suites come too).
        standard = {line.split()[2]: line.split()[0] for line in out.splitlines()}
        assert standard[openssl_name] == go_name
