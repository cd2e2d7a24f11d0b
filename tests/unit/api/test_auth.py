"""API authentication: password hashes, users file, tokens, sessions."""

from __future__ import annotations

import base64

import pytest

from skygraph.api.auth import (
    AuthConfigError,
    Authenticator,
    add_user,
    hash_password,
    read_users,
    verify_password,
)


def test_password_hash_round_trip():
    h = hash_password("s3cret", iterations=1000)
    assert h.startswith("pbkdf2_sha256$1000$")
    assert verify_password("s3cret", h) and not verify_password("s3cre", h)
    assert not verify_password("s3cret", "md5$x$y$z") and not verify_password("x", "garbage")
    assert hash_password("s3cret", 1000) != h  # salted


def test_users_file(tmp_path):
    path = tmp_path / "users"
    add_user(str(path), "alice", "pw1")
    add_user(str(path), "bob", "pw2")
    add_user(str(path), "alice", "pw3")
    users = read_users(str(path))
    assert set(users) == {"alice", "bob"} and verify_password("pw3", users["alice"])
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("# users\n\nalice:plaintext\n")
    with pytest.raises(AuthConfigError, match=r"users:3: expected name:pbkdf2"):
        read_users(str(path))
    with pytest.raises(AuthConfigError, match="cannot read"):
        read_users(str(tmp_path / "missing"))
    with pytest.raises(AuthConfigError, match="no colon"):
        add_user(str(path), "a:b", "x")


def test_credentials():
    clock = [0.0]
    auth = Authenticator("tok", {"alice": hash_password("pw", 1000)}, session_ttl=60,
                         clock=lambda: clock[0])
    assert auth.enabled and not Authenticator().enabled
    assert auth.check_authorization("Bearer tok") and not auth.check_authorization("Bearer x")
    basic = base64.b64encode(b"alice:pw").decode()
    assert auth.check_authorization(f"Basic {basic}")
    assert not auth.check_authorization("Basic " + base64.b64encode(b"alice:no").decode())
    assert not auth.check_authorization("Basic !!!") and not auth.check_authorization("tok")
    assert auth.login("alice", "nope") is None and auth.login("eve", "pw") is None
    session = auth.login("alice", "pw")
    assert session and auth.check_request([(b"cookie", f"a=b; authtoken={session}".encode())])
    assert auth.check_params({"Authorization": f"Bearer {session}"})
    assert auth.check_params({"token": "tok"}) and not auth.check_params({})
    assert not auth.check_params({"token": 5})
    clock[0] = 61.0
    assert not auth.check_token(session)  # expired
    assert Authenticator().check_params(None)
