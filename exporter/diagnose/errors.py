"""What a broker connection error means, in plain words."""

from __future__ import annotations

import socket
import ssl

from exporter.redact import redact_text


def explain_connection_error(exc: BaseException) -> tuple[str, str]:
    """(kind, plain explanation) for an exception raised while connecting."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    lowered = text.lower()
    detail = redact_text(f"{type(exc).__name__}: {exc}")
    is_tls = any(isinstance(e, ssl.SSLError) for e in chain)
    if is_tls or "certificate" in lowered or "ssl" in lowered:
        return "tls", (
            "the TLS handshake failed (certificate not trusted, wrong host name, or TLS "
            f"spoken to a plain port): check the --broker-ssl-option values. ({detail})"
        )
    if any(isinstance(e, socket.gaierror) for e in chain) or "name or service not known" in lowered:
        return "dns", f"the broker's host name does not resolve: check the URL's host. ({detail})"
    auth_words = ("access_refused", "authentication", "wrongpass", "noauth", "invalid password",
                  "access refused", "login was refused")  # fmt: skip
    if any(word in lowered for word in auth_words):
        return "auth", (
            f"the broker refused the credentials: check user and password in the URL. ({detail})"
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in lowered:
        return "refused", (
            "nothing listens at that address (connection refused): is the broker running, "
            f"and is the port right? ({detail})"
        )
    if any(isinstance(e, (TimeoutError, socket.timeout)) for e in chain) or "timed out" in lowered:
        return "timeout", (
            "the broker did not answer in time: a firewall dropping packets, or the wrong "
            f"host. ({detail})"
        )
    if "cannot assign requested address" in lowered:
        return "address", (
            "the local network cannot reach that address ('Cannot assign requested "
            f"address'): check the host; is this environment allowed out? ({detail})"
        )
    return "error", f"the connection failed: {detail}"
