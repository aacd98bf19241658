"""--web-config-file: TLS, client certificates, basic auth, SIGHUP reloads, bad configs.

The exporter runs as users run it (a subprocess), with certificates made by ``openssl`` for the
test, and is reached with real TLS clients: Python's ssl/http.client and curl.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.support.exporter import ExporterProcess
from tests.support.metrics import parse_samples
from tests.support.tls import Pki, tls_config
from tests.support.waiting import wait_for

# Cost 4, the minimum: the tests check behaviour, not bcrypt's speed.
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "new-password-after-sighup"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
NEW_HASH = bcrypt.hashpw(NEW_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
SECRETS = (PASSWORD, NEW_PASSWORD, HASH, NEW_HASH)
WWW_AUTHENTICATE = 'Basic realm="celery-metrics-exporter", charset="UTF-8"'
CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def client_context(
    *cafiles: Path,
    cert: tuple[Path, Path] | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for cafile in cafiles:
        context.load_verify_locations(cafile=str(cafile))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    if max_version is not None:
        context.maximum_version = max_version
    return context


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: str) -> None:
        self.status, self.headers, self.body = status, headers, body


def request(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> Response:
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return Response(resp.status, resp.headers, resp.read().decode())


def https_get(
    port: int,
    path: str,
    context: ssl.SSLContext,
    headers: dict[str, str] | None = None,
) -> Response:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        return request(conn, path, headers)
    finally:
        conn.close()


def served_fingerprint(port: int) -> str:
    """SHA-256 of the certificate the server presents (not verified: we only look)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def file_fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def samples_of(body: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {
        frozenset(labels): value for (n, labels), value in parse_samples(body).items() if n == name
    }


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.fixture
def start_exporter(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., ExporterProcess]]:
    """``start_exporter(config_text, tls=..., auth=...)``: an exporter with that web config."""
    started: list[ExporterProcess] = []

    def start(
        config: str,
        tls: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
    ) -> ExporterProcess:
        path = tmp_path / "web.yml"
        path.write_text(config)
        exporter = ExporterProcess(
            redis_url,
            tmp_path / "exporters",
            ["--web-config-file", str(path)],
            tls=tls,
            auth=auth,
        )
        started.append(exporter)
        return exporter.start(wait_ready=False)

    yield start
    for exporter in started:
        exporter.stop()
    # Captured: pytest shows it only for a failed test.
    for exporter in started:
        print(f"----- log of exporter on port {exporter.port}:")
        print(exporter.log()[-6000:])


# -- TLS and basic auth over real connections ----------------------------------------------------


def test_https_with_valid_certificate_and_password(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    config = tls_config(
        pki.one,
        {"prometheus": HASH},
        extra="http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
    )
    ca = client_context(pki.one.cacert)
    exporter = start_exporter(config, tls=ca, auth=("prometheus", PASSWORD))

    ok = https_get(exporter.port, "/metrics", ca, basic("prometheus", PASSWORD))
    assert ok.status == 200
    assert "celery_exporter_broker_up" in ok.body
    assert ok.headers["X-Content-Type-Options"] == "nosniff"
    # The status page: behind the same TLS and password, with the configured headers.
    page = https_get(exporter.port, "/", ca, basic("prometheus", PASSWORD))
    assert page.status == 200 and "<h1>Celery status</h1>" in page.body
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert served_fingerprint(exporter.port) == file_fingerprint(pki.one.cert)

    # A client that trusts another CA refuses the server's certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(exporter.port, "/metrics", client_context(pki.two.cacert))

    # The reload metrics exist from the start: nothing reloaded yet, loaded at start.
    reloads = samples_of(ok.body, "celery_exporter_web_config_reloads_total")
    assert reloads == {
        frozenset({("result", "success")}): 0.0,
        frozenset({("result", "failure")}): 0.0,
    }
    assert samples_of(ok.body, "celery_exporter_web_config_last_reload_success_timestamp_seconds")
    assert_no_secrets(exporter.log())


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_right_and_wrong_password(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    ca = client_context(pki.one.cacert)
    exporter = start_exporter(
        tls_config(pki.one, {"prometheus": HASH}), tls=ca, auth=("prometheus", PASSWORD)
    )
    assert CURL is not None

    def curl(*args: str) -> str:
        result = subprocess.run(
            [CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
             "--cacert", str(pki.one.cacert), *args, f"{exporter.url}/metrics"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return result.stdout

    assert curl("-u", f"prometheus:{PASSWORD}") == "200"
    assert curl("-u", "prometheus:wrong") == "401"
    assert curl() == "401"


def test_wrong_password_unknown_user_and_no_credentials_get_401(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    ca = client_context(pki.one.cacert)
    exporter = start_exporter(
        tls_config(pki.one, {"prometheus": HASH}), tls=ca, auth=("prometheus", PASSWORD)
    )
    attempts: dict[str, dict[str, str]] = {
        "wrong password": basic("prometheus", PASSWORD + "x"),
        "unknown user": basic("nobody", PASSWORD),
        "no credentials": {},
        "not basic": {"Authorization": "Bearer " + PASSWORD},
        "not base64": {"Authorization": "Basic !!!"},
        "no colon": {"Authorization": "Basic " + base64.b64encode(b"prometheus").decode()},
    }
    for what, headers in attempts.items():
        for path in ("/metrics", "/", "/healthz", "/readyz", "/no-such-page"):
            resp = https_get(exporter.port, path, ca, headers)
            assert resp.status == 401, (what, path)
            assert resp.headers["WWW-Authenticate"] == WWW_AUTHENTICATE
            assert resp.body == "unauthorized\n"
    # The right password, twice (the second from the cache), on one kept-alive connection.
    conn = http.client.HTTPSConnection("127.0.0.1", exporter.port, context=ca, timeout=5)
    try:
        for _ in range(2):
            assert request(conn, "/healthz", basic("prometheus", PASSWORD)).status == 200
        # A wrong password after a cached good one is still refused.
        assert request(conn, "/healthz", basic("prometheus", "wrong")).status == 401
        # Every refusal is counted, by reason (5 paths per attempt above, plus that one).
        body = request(conn, "/metrics", basic("prometheus", PASSWORD)).body
    finally:
        conn.close()
    assert samples_of(body, "celery_exporter_http_auth_failures_total") == {
        frozenset({("reason", "wrong_password")}): 5 + 1,
        frozenset({("reason", "unknown_user")}): 5,
        frozenset({("reason", "missing")}): 5,
        frozenset({("reason", "malformed")}): 3 * 5,
    }
    assert_no_secrets(exporter.log())


def test_basic_auth_without_tls(
    tmp_path: Path, start_exporter: Callable[..., ExporterProcess]
) -> None:
    exporter = start_exporter(
        f"basic_auth_users:\n  prometheus: {HASH}\n", auth=("prometheus", PASSWORD)
    )
    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=5)
    try:
        assert request(conn, "/metrics").status == 401
        assert request(conn, "/metrics", basic("prometheus", PASSWORD)).status == 200
    finally:
        conn.close()


def test_healthz_open_only_when_configured(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    ca = client_context(pki.one.cacert)
    protected = start_exporter(
        tls_config(pki.one, {"prometheus": HASH}), tls=ca, auth=("prometheus", PASSWORD)
    )
    assert https_get(protected.port, "/healthz", ca).status == 401
    assert https_get(protected.port, "/readyz", ca).status == 401

    opened = start_exporter(
        tls_config(
            pki.one,
            {"prometheus": HASH},
            extra="celery_exporter_unauthenticated_paths: [/healthz]\n",
        ),
        tls=ca,
        auth=("prometheus", PASSWORD),
    )
    healthz = https_get(opened.port, "/healthz", ca)
    assert (healthz.status, healthz.body) == (200, "ok\n")
    for path in ("/readyz", "/metrics", "/"):
        assert https_get(opened.port, path, ca).status == 401, path


def test_client_certificate_required(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    extra_tls = (
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.one.cacert}\n"
    )
    good = client_context(pki.one.cacert, cert=pki.client_one)
    exporter = start_exporter(tls_config(pki.one, extra_tls=extra_tls), tls=good)

    resp = https_get(exporter.port, "/metrics", good)
    assert resp.status == 200
    # A certificate from another CA, and no certificate at all: no HTTP response.
    for context in (
        client_context(pki.one.cacert, cert=pki.client_two),
        client_context(pki.one.cacert),
    ):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(exporter.port, "/metrics", context)
    # And the server still serves the good client.
    assert https_get(exporter.port, "/healthz", good).status == 200
    assert "Traceback" not in exporter.log()


def test_client_allowed_sans(pki: Pki, start_exporter: Callable[..., ExporterProcess]) -> None:
    extra_tls = (
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.one.cacert}\n"
        "  client_allowed_sans: [client-one.example, '::1']\n"
    )
    good = client_context(pki.one.cacert, cert=pki.client_one)
    exporter = start_exporter(tls_config(pki.one, extra_tls=extra_tls), tls=good)
    assert https_get(exporter.port, "/metrics", good).status == 200
    # Same CA, but a certificate naming only other.example and ::1 (written 0:0:...:1 by
    # openssl's parser, matched in canonical form): allowed through ::1.
    other = client_context(pki.one.cacert, cert=pki.client_other)
    assert https_get(exporter.port, "/healthz", other).status == 200


def test_client_allowed_sans_refuses_other_names(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    extra_tls = (
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.one.cacert}\n"
        "  client_allowed_sans: [client-one.example]\n"
    )
    good = client_context(pki.one.cacert, cert=pki.client_one)
    exporter = start_exporter(tls_config(pki.one, extra_tls=extra_tls), tls=good)
    other = client_context(pki.one.cacert, cert=pki.client_other)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(exporter.port, "/healthz", other)
    assert https_get(exporter.port, "/healthz", good).status == 200
    assert "Traceback" not in exporter.log()


def test_client_certificate_verified_if_given(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    extra_tls = f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.one.cacert}\n"
    ca = client_context(pki.one.cacert)
    exporter = start_exporter(tls_config(pki.one, extra_tls=extra_tls), tls=ca)
    assert https_get(exporter.port, "/healthz", ca).status == 200
    good = client_context(pki.one.cacert, cert=pki.client_one)
    assert https_get(exporter.port, "/healthz", good).status == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(exporter.port, "/healthz", client_context(pki.one.cacert, cert=pki.client_two))


def test_min_version_tls13_refuses_a_tls12_client(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    ca = client_context(pki.one.cacert)
    exporter = start_exporter(tls_config(pki.one, extra_tls="  min_version: TLS13\n"), tls=ca)
    tls12_only = client_context(pki.one.cacert, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError) as refused:
        https_get(exporter.port, "/healthz", tls12_only)
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    with (
        socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as raw,
        ca.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.3"
    if CURL is not None:
        result = subprocess.run(
            [CURL, "-s", "-o", "/dev/null", "--max-time", "10", "--cacert", str(pki.one.cacert),
             "--tlsv1.2", "--tls-max", "1.2", f"{exporter.url}/healthz"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 35  # CURLE_SSL_CONNECT_ERROR: the handshake failed
    assert https_get(exporter.port, "/healthz", ca).status == 200


def test_plain_http_against_the_tls_port_is_refused_and_serving_goes_on(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    ca = client_context(pki.one.cacert)
    exporter = start_exporter(tls_config(pki.one), tls=ca)
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=5)
        try:
            resp = request(conn, "/metrics")
        finally:
            conn.close()
        assert resp.status == 400
        assert resp.body == "Client sent an HTTP request to an HTTPS server.\n"
    # Bytes that are neither TLS nor HTTP: the connection is closed without an answer.
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as raw:
        raw.sendall(b"\x00\x01\x02\x03")
        assert raw.recv(100) == b""
    assert https_get(exporter.port, "/healthz", ca).status == 200
    log = exporter.log()
    assert "Traceback" not in log
    assert " ERROR " not in log and " WARNING " not in log


def test_silent_clients_do_not_block_other_scrapes(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    ca = client_context(pki.one.cacert)
    exporter = start_exporter(tls_config(pki.one), tls=ca)
    silent = [socket.create_connection(("127.0.0.1", exporter.port), timeout=5) for _ in range(3)]
    # And one that starts a TLS record of 512 bytes, then trickles it a byte every 0.2 s: it
    # would need ~100 s, so only a deadline on the whole handshake ends it.
    trickler = socket.create_connection(("127.0.0.1", exporter.port), timeout=5)
    trickler.sendall(b"\x16\x03\x01\x02\x00")
    stop = threading.Event()
    sent = [0]

    def trickle() -> None:
        while not stop.wait(0.2) and sent[0] < 500:
            try:
                trickler.send(b"\x00")
            except OSError:
                return
            sent[0] += 1

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        # Each scrape has 5 s; one silent client alone would hold a serial accept loop 10 s.
        for _ in range(3):
            assert https_get(exporter.port, "/metrics", ca).status == 200
        # The server gives up on them after its handshake deadline (10 s) and closes them.
        for sock in silent:
            sock.settimeout(30)
            assert sock.recv(1) == b""
        trickler.settimeout(30)
        try:
            closed = trickler.recv(1) == b""
        except ConnectionResetError:  # closed with trickled bytes still unread
            closed = True
        assert closed
        assert sent[0] < 500  # closed while the client was still sending its handshake
    finally:
        stop.set()
        thread.join(timeout=5)
        for sock in [*silent, trickler]:
            sock.close()
    assert https_get(exporter.port, "/healthz", ca).status == 200


# -- SIGHUP ---------------------------------------------------------------------------------------


def reload_counts(port: int, context: ssl.SSLContext, user: str, password: str) -> dict[str, float]:
    resp = https_get(port, "/metrics", context, basic(user, password))
    assert resp.status == 200, resp.status
    samples = samples_of(resp.body, "celery_exporter_web_config_reloads_total")
    return {dict(labels)["result"]: value for labels, value in samples.items()}


def test_sighup_swaps_certificate_and_password_without_dropping_connections(
    pki: Pki, tmp_path: Path, start_exporter: Callable[..., ExporterProcess]
) -> None:
    both = client_context(pki.one.cacert, pki.two.cacert)
    exporter = start_exporter(
        tls_config(pki.one, {"prometheus": HASH}), tls=both, auth=("prometheus", PASSWORD)
    )
    assert served_fingerprint(exporter.port) == file_fingerprint(pki.one.cert)
    kept = http.client.HTTPSConnection("127.0.0.1", exporter.port, context=both, timeout=5)
    try:
        assert request(kept, "/healthz", basic("prometheus", PASSWORD)).status == 200

        (tmp_path / "web.yml").write_text(tls_config(pki.two, {"prometheus": NEW_HASH}))
        exporter.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                https_get(exporter.port, "/healthz", both, basic("prometheus", NEW_PASSWORD)).status
                == 200
            ),
            15,
            message=lambda: f"no reload; log:\n{exporter.log()}",
        )
        assert reload_counts(exporter.port, both, "prometheus", NEW_PASSWORD) == {
            "success": 1.0,
            "failure": 0.0,
        }
        assert served_fingerprint(exporter.port) == file_fingerprint(pki.two.cert)
        assert https_get(exporter.port, "/metrics", both, basic("prometheus", PASSWORD)).status == (
            401
        )
        # The connection opened before the reload is still there, and answers to the new users.
        assert request(kept, "/healthz", basic("prometheus", PASSWORD)).status == 401
        assert request(kept, "/healthz", basic("prometheus", NEW_PASSWORD)).status == 200
        assert kept.sock is not None
        peer = kept.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert hashlib.sha256(peer).hexdigest() == file_fingerprint(pki.one.cert)
    finally:
        kept.close()
    assert exporter.process.running
    assert_no_secrets(exporter.log())


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        ("tls_server_config: [unclosed\n", "not valid YAML"),
        ("PLACEHOLDER_BAD_HASH", "basic_auth_users"),
        ("PLACEHOLDER_NO_TLS", "tls_server_config cannot be added or removed"),
    ],
)
def test_broken_file_on_sighup_keeps_the_old_config(
    pki: Pki,
    tmp_path: Path,
    start_exporter: Callable[..., ExporterProcess],
    broken: str,
    named: str,
) -> None:
    ca = client_context(pki.one.cacert)
    exporter = start_exporter(
        tls_config(pki.one, {"prometheus": HASH}), tls=ca, auth=("prometheus", PASSWORD)
    )
    if broken == "PLACEHOLDER_BAD_HASH":
        # A password pasted where its hash belongs: refused, and never printed.
        broken = tls_config(pki.two, {"prometheus": NEW_PASSWORD})
    elif broken == "PLACEHOLDER_NO_TLS":
        broken = f"basic_auth_users:\n  prometheus: {NEW_HASH}\n"
    (tmp_path / "web.yml").write_text(broken)
    exporter.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: reload_counts(exporter.port, ca, "prometheus", PASSWORD)["failure"] == 1.0,
        15,
        message=lambda: f"reload failure not counted; log:\n{exporter.log()}",
    )
    assert reload_counts(exporter.port, ca, "prometheus", PASSWORD)["success"] == 0.0
    assert served_fingerprint(exporter.port) == file_fingerprint(pki.one.cert)
    errors = [line for line in exporter.log().splitlines() if "reloading the web config" in line]
    assert len(errors) == 1, errors
    assert " ERROR " in errors[0] and named in errors[0]
    assert_no_secrets(exporter.log())

    # Fixed and signalled again: loaded.
    (tmp_path / "web.yml").write_text(tls_config(pki.one, {"prometheus": NEW_HASH}))
    exporter.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: (
            https_get(exporter.port, "/healthz", ca, basic("prometheus", NEW_PASSWORD)).status
            == 200
        ),
        15,
        message=lambda: f"no reload; log:\n{exporter.log()}",
    )
    assert reload_counts(exporter.port, ca, "prometheus", NEW_PASSWORD) == {
        "success": 1.0,
        "failure": 1.0,
    }


# -- bad configurations at start --------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--broker-url", "redis://127.0.0.1:1/0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def bad_configs(pki: Pki, tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (config text, what the error must name)."""
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a certificate\n")
    good_tls = f"tls_server_config:\n  cert_file: {pki.one.cert}\n  key_file: {pki.one.key}\n"
    return {
        "bad yaml": ("tls_server_config:\n  cert_file: [\n", "not valid YAML"),
        "unknown key": (good_tls + "tls_server_confg: {}\n", "unknown key tls_server_confg"),
        "unknown tls key": (good_tls + "  min_versoin: TLS13\n", "tls_server_config.min_versoin"),
        "missing cert": (
            f"tls_server_config:\n  cert_file: {tmp}/nope.crt\n  key_file: {pki.one.key}\n",
            "tls_server_config.cert_file: cannot read",
        ),
        "cert not a cert": (
            f"tls_server_config:\n  cert_file: {garbage}\n  key_file: {pki.one.key}\n",
            "tls_server_config.cert_file",
        ),
        "key of another cert": (
            f"tls_server_config:\n  cert_file: {pki.one.cert}\n  key_file: {pki.two.key}\n",
            "tls_server_config.key_file",
        ),
        "bad tls version": (good_tls + "  min_version: TLS14\n", "min_version"),
        "min above max": (
            good_tls + "  min_version: TLS13\n  max_version: TLS12\n",
            "min_version",
        ),
        "bad client auth": (good_tls + "  client_auth_type: Sometimes\n", "client_auth_type"),
        "unsupported client auth": (
            good_tls
            + f"  client_auth_type: RequireAnyClientCert\n  client_ca_file: {pki.one.cacert}\n",
            "client_auth_type",
        ),
        "client auth without ca": (
            good_tls + "  client_auth_type: RequireAndVerifyClientCert\n",
            "client_ca_file",
        ),
        "ca without client auth": (
            good_tls + f"  client_ca_file: {pki.one.cacert}\n",
            "client_auth_type",
        ),
        "curves": (good_tls + "  curve_preferences: [X25519]\n", "curve_preferences"),
        "sans without required client certificates": (
            good_tls
            + "  client_auth_type: VerifyClientCertIfGiven\n"
            + f"  client_ca_file: {pki.one.cacert}\n"
            + "  client_allowed_sans: [a.example]\n",
            "client_allowed_sans",
        ),
        "cipher": (good_tls + "  cipher_suites: [TLS_RSA_WITH_RC4]\n", "cipher_suites"),
        "bad rate interval": ("rate_limit:\n  interval: soon\n  burst: 5\n", "rate_limit.interval"),
        "rate burst zero": ("rate_limit:\n  interval: 1s\n  burst: 0\n", "rate_limit.burst"),
        "password instead of hash": (
            f"basic_auth_users:\n  prometheus: {PASSWORD}\n",
            "basic_auth_users",
        ),
        "truncated hash": (
            f"basic_auth_users:\n  prometheus: '{HASH[:-1]}'\n",
            "basic_auth_users",
        ),
        "duplicate user": (
            f"basic_auth_users:\n  prometheus: {HASH}\n  prometheus: {NEW_HASH}\n",
            "duplicate key 'prometheus'",
        ),
        "bad header": (
            "http_server_config:\n  headers:\n    Set-Cookie: x\n",
            "http_server_config.headers",
        ),
        "open metrics": (
            f"basic_auth_users:\n  p: {HASH}\ncelery_exporter_unauthenticated_paths: [/metrics]\n",
            "celery_exporter_unauthenticated_paths",
        ),
    }


BAD_CONFIG_NAMES = [
    "bad yaml", "unknown key", "unknown tls key", "missing cert", "cert not a cert",
    "key of another cert", "bad tls version", "min above max", "bad client auth",
    "unsupported client auth", "client auth without ca", "ca without client auth", "curves",
    "sans without required client certificates", "cipher", "bad rate interval", "rate burst zero",
    "password instead of hash", "truncated hash", "duplicate user", "bad header", "open metrics",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD_CONFIG_NAMES)
def test_bad_config_is_one_line_exit_2(pki: Pki, tmp_path: Path, name: str) -> None:
    config, named = bad_configs(pki, tmp_path)[name]
    path = tmp_path / "web.yml"
    path.write_text(config)
    result = run_cli("--web-config-file", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("celery-metrics-exporter: error:")
    assert "--web-config-file" in lines[0]
    assert named in lines[0]
    assert_no_secrets(result.stderr + result.stdout)


def test_bad_config_names_cover_every_case(pki: Pki, tmp_path: Path) -> None:
    assert sorted(bad_configs(pki, tmp_path)) == sorted(BAD_CONFIG_NAMES)


def test_reload_metrics_are_documented_without_a_broker_label() -> None:
    from tests.support.promql import documented_metrics

    documented = documented_metrics()
    assert documented["celery_exporter_web_config_reloads_total"].labels == {"result"}
    assert documented["celery_exporter_web_config_reloads_total"].type == "counter"
    gauge = documented["celery_exporter_web_config_last_reload_success_timestamp_seconds"]
    assert (gauge.type, gauge.labels) == ("gauge", frozenset())
    refused = documented["celery_exporter_http_auth_failures_total"]
    assert (refused.type, refused.labels) == ("counter", {"reason"})


def test_help_lists_the_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--web-config-file PATH" in result.stdout


def test_missing_file_from_the_environment_is_one_line_exit_2(tmp_path: Path) -> None:
    env = dict(os.environ, CELERY_EXPORTER_WEB_CONFIG_FILE=str(tmp_path / "absent.yml"))
    result = run_cli(env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--web-config-file" in lines[0]
    assert f"cannot read {tmp_path / 'absent.yml'}: No such file or directory" in lines[0]


# -- the parser and the password check, in process -------------------------------------------


def indented(text: str, spaces: int = 4) -> str:
    return "".join(f"{' ' * spaces}{line}\n" for line in text.splitlines())


def test_inline_certificate_and_key(
    pki: Pki, start_exporter: Callable[..., ExporterProcess]
) -> None:
    config = (
        "tls_server_config:\n"
        f"  cert: |\n{indented(pki.two.cert.read_text())}"
        f"  key: |\n{indented(pki.two.key.read_text())}"
    )
    ca = client_context(pki.two.cacert)
    exporter = start_exporter(config, tls=ca)
    assert https_get(exporter.port, "/healthz", ca).status == 200
    assert served_fingerprint(exporter.port) == file_fingerprint(pki.two.cert)


def test_inline_key_problems_are_one_line_without_the_key(pki: Pki, tmp_path: Path) -> None:
    key_text = pki.one.key.read_text()
    key_body = key_text.splitlines()[1]  # a line of the key's base64
    cases = {
        "tls_server_config.key: give key or key_file, not both": (
            f"tls_server_config:\n  cert_file: {pki.one.cert}\n  key_file: {pki.one.key}\n"
            f"  key: |\n{indented(key_text)}"
        ),
        "tls_server_config.key: does not match the certificate": (
            f"tls_server_config:\n  cert_file: {pki.two.cert}\n  key: |\n{indented(key_text)}"
        ),
        "tls_server_config.key: holds no usable PEM private key": (
            f"tls_server_config:\n  cert_file: {pki.one.cert}\n  key: not a key\n"
        ),
        "tls_server_config.cert: holds no PEM certificate": (
            f"tls_server_config:\n  cert: not a cert\n  key: |\n{indented(key_text)}"
        ),
    }
    path = tmp_path / "web.yml"
    for expected, config in cases.items():
        path.write_text(config)
        result = run_cli("--web-config-file", str(path))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert expected in lines[0]
        assert key_body not in result.stderr + result.stdout


def test_rate_limit_answers_429_beyond_the_burst(
    start_exporter: Callable[..., ExporterProcess],
) -> None:
    # A burst of 3 and one more per hour: start() used one (its /healthz check).
    exporter = start_exporter("rate_limit:\n  interval: 1h\n  burst: 3\n")
    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=5)
    try:
        assert [request(conn, "/healthz").status for _ in range(2)] == [200, 200]
        limited = request(conn, "/metrics")
        assert (limited.status, limited.body) == (429, "too many requests\n")
    finally:
        conn.close()


# -- the README's example, end to end with a real Prometheus ------------------------------------

README = Path(__file__).resolve().parents[3] / "README.md"
README_PASSWORD = "example-password-change-me"


def readme_yaml_blocks() -> list[str]:
    """The ```yaml blocks of the README's "Securing /metrics" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Securing /metrics", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]


def test_readme_example_is_scraped_by_prometheus(pki: Pki, tmp_path: Path, redis_url: str) -> None:
    from tests.support.prometheus import PrometheusServer

    web_yml, scrape_yml = readme_yaml_blocks()
    confdir = tmp_path / "etc"
    confdir.mkdir()
    shutil.copy(pki.one.cert, confdir / "tls.crt")
    shutil.copy(pki.one.key, confdir / "tls.key")
    (confdir / "web.yml").write_text(web_yml)
    ca = client_context(pki.one.cacert)
    exporter = ExporterProcess(
        redis_url,
        tmp_path / "exporters",
        ["--web-config-file", str(confdir / "web.yml")],
        tls=ca,
        auth=("prometheus", README_PASSWORD),
    )
    try:
        exporter.start(wait_ready=True)  # /readyz is open in the example: no password needed
        assert https_get(exporter.port, "/readyz", ca).status == 200
        assert https_get(exporter.port, "/metrics", ca).status == 401
        assert https_get(exporter.port, "/metrics", ca).headers["X-Frame-Options"] == "deny"

        good, bad = tmp_path / "password", tmp_path / "wrong-password"
        good.write_text(README_PASSWORD)
        bad.write_text("not-the-password")
        job = (
            scrape_yml.replace("/etc/prometheus/celery-exporter-ca.crt", str(pki.one.cacert))
            .replace("celery-exporter.example:9808", f"127.0.0.1:{exporter.port}")
            .split("scrape_configs:\n", 1)[1]
        )
        assert "/etc/prometheus/celery-exporter-password" in job
        config = (
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
            + job.replace("/etc/prometheus/celery-exporter-password", str(good))
            + job.replace("job_name: celery", "job_name: celery-wrong-password").replace(
                "/etc/prometheus/celery-exporter-password", str(bad)
            )
        )
        with PrometheusServer(tmp_path / "prometheus", config) as prometheus:

            def settled() -> dict[str, dict[str, Any]] | None:
                targets = {t["labels"]["job"]: t for t in prometheus.targets()}
                if len(targets) == 2 and all(t["health"] != "unknown" for t in targets.values()):
                    return targets
                return None

            targets = wait_for(settled, 60, message=lambda: str(prometheus.targets()))
            assert targets["celery"]["health"] == "up", targets["celery"]
            assert targets["celery"]["scrapeUrl"].startswith("https://")
            assert targets["celery-wrong-password"]["health"] == "down"
            assert "401" in targets["celery-wrong-password"]["lastError"]
    finally:
        exporter.stop()
    assert_no_secrets(exporter.log())
    assert README_PASSWORD not in exporter.log()
