"""``basic_auth_users``: user name -> bcrypt hash, checked on each request (``BasicAuth``).

Errors never quote a password or a hash: a value that is not a bcrypt hash may be a password
pasted by mistake.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Mapping
from typing import Any

import bcrypt

from exporter.webconfig.fields import _error, _mapping

# $2a$, $2b$ or $2y$, a two-digit cost, then 53 characters of bcrypt's base64 (salt + hash).
_BCRYPT_HASH = re.compile(rb"^\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}$")
REALM = "celery-metrics-exporter"
# Why a request was refused: no Authorization header, one that is not Basic user:password in
# base64, a user not in basic_auth_users, a wrong password.
AUTH_FAILURE_REASONS = ("missing", "malformed", "unknown_user", "wrong_password")


class BasicAuth:
    """Checks ``Authorization: Basic`` credentials against bcrypt hashes.

    A bcrypt check costs ~50-100 ms of CPU at cost 10, and Prometheus sends the same credentials
    on every scrape, so the last password that passed bcrypt is remembered per user, as an HMAC
    under a key of this process (never the password itself) and compared in constant time. Only
    passwords that passed bcrypt are remembered; a wrong one always costs a full bcrypt check,
    and so does an unknown user (against a dummy hash of the same cost), so the response time
    does not tell whether a user exists.
    """

    def __init__(self, users: Mapping[bytes, bytes]) -> None:
        self._users = dict(users)
        cost = max(int(_BCRYPT_HASH.match(h).group("cost")) for h in users.values())  # type: ignore[union-attr]
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        self._key = secrets.token_bytes(32)
        self._good: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        # One bcrypt check at a time (as the toolkit): a flood of wrong passwords takes one core.
        self._bcrypt_lock = threading.Lock()

    def check(self, user: bytes, password: bytes) -> bool:
        return self.verify(user, password) is None

    def verify(self, user: bytes, password: bytes) -> str | None:
        """None when the credentials are good, else why not: ``unknown_user`` or
        ``wrong_password`` (a reason for a counter, after the same bcrypt work either way)."""
        mac = hmac.new(self._key, len(user).to_bytes(4, "big") + user + password, hashlib.sha256)
        digest = mac.digest()
        with self._lock:
            remembered = self._good.get(user)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return None
        hashed = self._users.get(user)
        wrong = "unknown_user" if hashed is None else "wrong_password"
        if len(password) > 72:
            # bcrypt reads 72 bytes: bcrypt 4 would compare a prefix, bcrypt 5 raises. A longer
            # password was never hashed whole, so it is wrong, for every user alike.
            return wrong
        try:
            with self._bcrypt_lock:
                matches = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy)
        except ValueError:  # a hash bcrypt cannot read (checked at load: should not happen)
            matches = False
        if not matches or hashed is None:
            return wrong
        with self._lock:
            self._good[user] = digest
        return None

    def check_header(self, header: str | None) -> bool:
        """True when ``header`` (the Authorization header's value) holds good credentials."""
        return self.failure(header) is None

    def failure(self, header: str | None) -> str | None:
        """None when ``header`` holds good credentials, else the reason it does not (one of
        ``AUTH_FAILURE_REASONS``)."""
        if not header:
            return "missing"
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return "malformed"
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return "malformed"
        user, sep, password = decoded.partition(b":")
        if not sep:
            return "malformed"
        return self.verify(user, password)


def _users(value: Any) -> dict[bytes, bytes]:
    where = "basic_auth_users"
    users: dict[bytes, bytes] = {}
    for user, hashed in _mapping(value, where).items():
        if not isinstance(user, str) or not user:
            raise _error(where, f"user name {user!r} must be a non-empty string (quote it)")
        if ":" in user:
            raise _error(where, f"user name {user!r} cannot contain ':'")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed.encode()):
            # Never quote the value: it is a hash, or a password pasted by mistake.
            raise _error(where, f"the password of user {user!r} is not a bcrypt hash")
        cost = int(_BCRYPT_HASH.match(hashed.encode()).group("cost"))  # type: ignore[union-attr]
        if not 4 <= cost <= 31:
            raise _error(where, f"the bcrypt hash of user {user!r} has an invalid cost")
        users[user.encode()] = hashed.encode()
    return users
