"""Keep broker credentials out of logs, errors and pages."""

from __future__ import annotations

import re

# scheme://user:password@host  or  scheme://:password@host  or  scheme://token@host
# The userinfo runs to the last "@" before the host: passwords may contain "@" themselves,
# and "/" after the ":" (an AWS secret key pasted into sqs:// without URL-quoting).
_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s;:@]*:[^\s;]+|[^/\s;]+)@"
)


def _mask(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    user, sep, _password = userinfo.partition(":")
    if sep:
        masked = f"{user}:***" if user else ":***"
    else:
        # A lone userinfo part is a password for Redis (redis://secret@host).
        masked = "***"
    return f"{match.group('scheme')}{masked}@"


def redact_text(text: str) -> str:
    """Mask the credentials of every URL inside ``text``."""
    if "@" not in text:
        return text
    return _CREDENTIALS.sub(_mask, text)


def redact_url(url: str) -> str:
    """Mask the credentials of a broker URL (or a ``;``-separated list of them)."""
    return redact_text(url)
