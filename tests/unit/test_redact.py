from __future__ import annotations

import logging

from exporter.logs import _RedactingJson, _RedactingText
from exporter.redact import redact_text, redact_url


def test_redacts_user_password_and_lone_password() -> None:
    assert redact_url("amqp://admin:s3cr3t@rabbit:5672/vh") == "amqp://admin:***@rabbit:5672/vh"
    assert redact_url("redis://:s3cr3t@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://s3cr3t@redis:6379/0") == "redis://***@redis:6379/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"
    joined = "sentinel://:pw1@h1:26379;sentinel://:pw2@h2:26379"
    assert "pw1" not in redact_url(joined) and "pw2" not in redact_url(joined)
    assert redact_text("error talking to rediss://u:p@host: boom") == (
        "error talking to rediss://u:***@host: boom"
    )


def test_log_formatters_never_print_credentials() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "cannot reach %s", ("amqp://u:topsecret@h//",), None
    )
    for formatter in (_RedactingText("%(message)s"), _RedactingJson()):
        out = formatter.format(record)
        assert "topsecret" not in out
        assert "amqp://u:***@h//" in out


def test_passwords_containing_at_signs_are_masked_whole() -> None:
    assert redact_url("amqp://user:p@ss@host//") == "amqp://user:***@host//"
    # An AWS secret key pasted without URL-quoting: "/" and "+" are part of the secret.
    assert redact_url("sqs://AKIA1:ab/cd+ef/gh@") == "sqs://AKIA1:***@"
    assert redact_url("sqs://AKIA1:ab%2Fcd@127.0.0.1:4566") == "sqs://AKIA1:***@127.0.0.1:4566"
    assert "p@ss" not in redact_text("lost amqp://user:p@ss@host// and redis://:x@y@h:1/0")
