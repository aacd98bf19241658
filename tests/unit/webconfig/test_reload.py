"""SIGHUP reloads in process (exporter/webconfig/reload.py).

The exporter as users run it, over real TLS: tests/integration/http/test_web_security.py.
"""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from exporter.webconfig import WebConfigError, WebConfigReloader, load_web_config
from tests.support.tls import Pki, tls_config

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def test_a_failed_reload_in_process_keeps_the_old_config(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(tls_config(pki.one, {"prometheus": HASH}))
    reloader = WebConfigReloader(str(path), clock=lambda: 1000.0)
    before = reloader.current
    path.write_text("basic_auth_users: {prometheus: nothash}\n")
    assert reloader.reload() is False
    assert reloader.current is before
    families = {f.name: f for f in reloader.collect()}
    assert {
        s.labels["result"]: s.value
        for s in families["celery_exporter_web_config_reloads"].samples
        if s.name.endswith("_total")
    } == {
        "success": 0,
        "failure": 1,
    }
    gauge = families["celery_exporter_web_config_last_reload_success_timestamp_seconds"]
    assert gauge.samples[0].value == 1000.0
    with pytest.raises(WebConfigError, match="basic_auth_users"):
        load_web_config(str(path))
