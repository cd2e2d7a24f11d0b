"""API authentication: one gate for REST, GraphQL and its subscriptions.

Off unless configured. When on, a request is let in with any of:
- `Authorization: Bearer <token>`: the configured API token, or a session
  token from `POST /login`;
- `Authorization: Basic ...` checked against the users file;
- the `authtoken` cookie `POST /login` sets (what skydive-client uses).
A graphql-transport-ws connection shows the same in its connection params
(`Authorization`, `token` or `authtoken`), since browsers cannot set headers
on a WebSocket. The users file holds `name:pbkdf2_sha256$<iter>$<salt>$<hash>`
lines (`skygraph user add` writes them); tokens are compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

PBKDF2_ITERATIONS = 200_000
COOKIE = "authtoken"
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class AuthConfigError(ValueError):
    """The users file is unreadable or malformed; the message names file and line."""


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return (f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def verify_password(password: str, encoded: str) -> bool:
    try:
        algo, iterations, salt, digest = encoded.split("$")
        if algo != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                  int(iterations))
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def read_users(path: str) -> dict[str, str]:
    """Parse a users file: `name:hash` lines, `#` comments and blank lines ignored."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise AuthConfigError(f"analyzer.auth.users_file {path}: cannot read: "
                              f"{exc.strerror}") from exc
    users: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        if not sep or not name or not encoded.startswith("pbkdf2_sha256$") \
                or encoded.count("$") != 3:
            raise AuthConfigError(f"{path}:{lineno}: expected name:pbkdf2_sha256$iter$salt$hash "
                                  f"(write it with `skygraph user add`)")
        users[name] = encoded
    return users


def add_user(path: str, name: str, password: str) -> None:
    """Add or replace `name` in the users file (created 0600 if missing)."""
    if not name or ":" in name or any(c.isspace() for c in name):
        raise AuthConfigError(f"user name {name!r}: no colon or whitespace allowed")
    p = Path(path)
    users = read_users(path) if p.exists() else {}
    users[name] = hash_password(password)
    p.touch(mode=0o600, exist_ok=True)
    p.write_text("".join(f"{n}:{h}\n" for n, h in users.items()))


class Authenticator:
    """Checks credentials; holds the session tokens `login` hands out (in memory:
    an analyzer restart logs sessions out, the API token and users stay valid)."""

    def __init__(self, token: str = "", users: Mapping[str, str] | None = None,
                 session_ttl: float = 86_400.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.token = token
        self.users = dict(users or {})
        self.session_ttl = session_ttl
        self.clock = clock
        self._sessions: dict[str, tuple[str, float]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.users)

    def login(self, user: str, password: str) -> str | None:
        encoded = self.users.get(user)
        if encoded is None or not verify_password(password, encoded):
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock()
        self._sessions = {t: s for t, s in self._sessions.items() if s[1] > now}
        self._sessions[token] = (user, now + self.session_ttl)
        return token

    def check_token(self, token: str) -> bool:
        if not token:
            return False
        if self.token and hmac.compare_digest(token.encode(), self.token.encode()):
            return True
        session = self._sessions.get(token)
        return session is not None and session[1] > self.clock()

    def check_authorization(self, value: str) -> bool:
        scheme, _, cred = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self.check_token(cred.strip())
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(cred.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            encoded = self.users.get(user)
            return encoded is not None and verify_password(password, encoded)
        return False

    def check_request(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name == b"authorization" and self.check_authorization(value.decode("latin-1")):
                return True
            if name == b"cookie":
                morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
                if morsel is not None and self.check_token(morsel.value):
                    return True
        return False

    def check_params(self, params: Mapping[str, Any] | None) -> bool:
        """graphql-transport-ws connection params."""
        if not self.enabled:
            return True
        params = params or {}
        for key in ("Authorization", "authorization"):
            if isinstance(params.get(key), str) and self.check_authorization(params[key]):
                return True
        return any(isinstance(params.get(k), str) and self.check_token(params[k])
                   for k in ("token", COOKIE))


class AuthMiddleware:
    """ASGI gate: 401 for HTTP requests without valid credentials, except `open_paths`
    (and the GraphiQL page/assets: GET under /graphql, so a browser can load the page
    and send its token with each query). WebSockets pass: the GraphQL app checks
    their connection params (`check_params`)."""

    def __init__(self, app: ASGIApp, auth: Authenticator,
                 open_paths: frozenset[str] = frozenset({"/health", "/login"})) -> None:
        self.app = app
        self.auth = auth
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http" and self.auth.enabled and not self._open(scope) \
                and not self.auth.check_request(scope.get("headers", [])):
            body = b'{"error": "authentication required"}'
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="skygraph", Basic realm="skygraph"')]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _open(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in self.open_paths:
            return True
        if scope["method"] in ("GET", "HEAD") and path.startswith("/graphql/static/"):
            return True
        if scope["method"] in ("GET", "HEAD") and path == "/graphql":
            # The page only: strawberry runs `?query=` even when the Accept is HTML.
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            accept = dict(scope.get("headers", [])).get(b"accept", b"")
            return b"text/html" in accept and "query" not in query
        return False
