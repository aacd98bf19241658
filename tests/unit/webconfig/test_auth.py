"""BasicAuth (exporter/webconfig/auth.py): bcrypt checks, the cache of good passwords,
htpasswd hashes.

The exporter as users run it, over real TLS: tests/integration/http/test_web_security.py.
"""

from __future__ import annotations

import bcrypt
import pytest

from exporter.webconfig import BasicAuth

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def test_password_check_remembers_only_good_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth({b"prometheus": HASH.encode()})
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return bool(real_checkpw(password, hashed))

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    assert auth.check(b"prometheus", PASSWORD.encode())
    assert auth.check(b"prometheus", PASSWORD.encode())
    assert len(calls) == 1  # the second came from the cache
    for _ in range(2):
        assert not auth.check(b"prometheus", b"wrong")
    assert len(calls) == 3  # a wrong password is checked by bcrypt each time
    assert auth.check(b"prometheus", PASSWORD.encode())
    assert len(calls) == 3  # and did not evict the good one
    # An unknown user costs a bcrypt check too, against a dummy hash, not against a real one.
    assert not auth.check(b"nobody", PASSWORD.encode())
    assert len(calls) == 4 and calls[-1] != HASH.encode()
    assert not auth.check(b"nobody", PASSWORD.encode())
    assert len(calls) == 5
    # The same password under another user name does not ride on the cache.
    assert not auth.check(b"prometheusx", PASSWORD.encode())
    # Beyond bcrypt's 72 bytes: refused, even when the first 72 bytes are the password.
    long_password = b"p" * 72
    long_auth = BasicAuth({b"long": bcrypt.hashpw(long_password, bcrypt.gensalt(rounds=4))})
    assert long_auth.check(b"long", long_password)
    assert not long_auth.check(b"long", long_password + b"extra")


def test_htpasswd_style_2y_hashes_are_accepted() -> None:
    hashed = HASH.replace("$2b$", "$2y$", 1).encode()
    auth = BasicAuth({b"alice": hashed})
    assert auth.check(b"alice", PASSWORD.encode())
    assert not auth.check(b"alice", b"nope")
