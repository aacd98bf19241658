"""Loading --web-config-file (exporter/webconfig/load.py).

The exporter as users run it, over real TLS: tests/integration/http/test_web_security.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporter.webconfig import load_web_config
from tests.support.tls import Pki


def test_relative_paths_resolve_against_the_config_directory(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    confdir = tmp_path / "conf"
    (confdir / "tls").mkdir(parents=True)
    shutil.copy(pki.one.cert, confdir / "tls" / "server.crt")
    shutil.copy(pki.one.key, confdir / "tls" / "server.key")
    (confdir / "web.yml").write_text(
        "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: tls/server.key\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_web_config(str(confdir / "web.yml"))
    assert config.ssl_context is not None
    assert config.auth is None
    assert config.summary == "TLS TLS12-TLS13, client certificates: NoClientCert; no basic auth"
