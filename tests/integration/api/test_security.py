"""Authentication across REST, GraphQL and subscriptions; TLS."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import urllib.parse

import pytest
import websockets

from skygraph.api.auth import add_user

GQL = {"query": "{ status }"}


def ws_connect(url: str, params: dict | None, context: ssl.SSLContext | None = None) -> str:
    """connection_init over graphql-transport-ws; the server's answer (type or close code)."""
    async def go() -> str:
        ws_url = url.replace("http", "ws", 1) + "/graphql"
        async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"],
                                      ssl=context) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": params or {}}))
            try:
                return str(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
            except websockets.ConnectionClosed as exc:
                return f"closed {exc.rcvd.code if exc.rcvd else '?'}"
    return asyncio.run(go())


def test_auth_off_by_default(analyzer_at):
    with analyzer_at() as a:
        assert a.request("POST", "/graphql", GQL).status == 200
        assert a.request("GET", "/api/capture").status == 200
        assert ws_connect(a.url, None) == "connection_ack"
        assert a.url.startswith("http://127.0.0.1:")  # loopback by default


def test_token_and_users_protect_everything(analyzer_at, tmp_path):
    users = tmp_path / "users"
    add_user(str(users), "ops", "pw")
    yaml = f"analyzer:\n  auth:\n    token: t0ken\n    users_file: {users}\n"
    with analyzer_at(yaml) as a:
        for method, path, body in (("POST", "/graphql", GQL), ("GET", "/api/capture", None),
                                   ("POST", "/api/topology", {"GremlinQuery": "G.V()"}),
                                   ("GET", "/api/status", None), ("GET", "/api", None)):
            r = a.request(method, path, body)
            assert r.status == 401, path
            assert "Bearer" in r.headers["www-authenticate"]
        assert a.request("GET", "/health").status == 200
        page = a.request("GET", "/graphql", headers={"Accept": "text/html"})
        assert page.status == 200 and b"<html" in page.body.lower()
        sneaky = a.request("GET", "/graphql?query=%7Bstatus%7D", headers={"Accept": "text/html"})
        assert sneaky.status == 401
        asset = a.request("GET", "/graphql/static/graphiql.min.css")
        assert asset.status == 200 and asset.headers["content-type"].startswith("text/css")

        bearer = {"Authorization": "Bearer t0ken"}
        assert a.request("POST", "/graphql", GQL, bearer).status == 200
        assert a.request("POST", "/graphql", GQL, {"Authorization": "Bearer nope"}).status == 401
        basic = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
        assert a.request("GET", "/api/capture", headers=basic).status == 200

        form = urllib.parse.urlencode({"username": "ops", "password": "pw"}).encode()
        login = a.request("POST", "/login", raw=form,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert login.status == 200 and login.json()["Token"]
        cookie = login.headers["set-cookie"].split(";")[0]
        assert cookie.startswith("authtoken=") and "HttpOnly" in login.headers["set-cookie"]
        assert a.request("GET", "/api/capture", headers={"Cookie": cookie}).status == 200
        bad = urllib.parse.urlencode({"username": "ops", "password": "x"}).encode()
        assert a.request("POST", "/login", raw=bad, headers={
            "Content-Type": "application/x-www-form-urlencoded"}).status == 401

        assert ws_connect(a.url, None).startswith("closed 44")
        assert ws_connect(a.url, {"Authorization": "Bearer wrong"}).startswith("closed 44")
        assert ws_connect(a.url, {"Authorization": "Bearer t0ken"}) == "connection_ack"
        token = login.json()["Token"]
        assert ws_connect(a.url, {"token": token}) == "connection_ack"


def test_bad_users_file_is_a_clear_error(bolt_server, tmp_path):
    from tests.integration.api.conftest import analyzer_config, running
    users = tmp_path / "users"
    users.write_text("root:hunter2\n")
    cfg = analyzer_config(bolt_server, tmp_path, f"analyzer:\n  auth:\n    users_file: {users}\n")
    with pytest.raises(ValueError, match=r"users:1: expected name:pbkdf2"), running(cfg):
        pass


@pytest.mark.slow
def test_tls(analyzer_at, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(cafile=str(cert))
    yaml = f"analyzer:\n  tls:\n    cert_file: {cert}\n    key_file: {key}\n"
    with analyzer_at(yaml, context) as a:
        assert a.url.startswith("https://")
        assert a.request("GET", "/api").status == 200
        assert a.request("POST", "/graphql", GQL).status == 200
        assert ws_connect(a.url, None, context) == "connection_ack"
        plain = type(a)(a.url.replace("https", "http"))
        with pytest.raises(Exception):  # noqa: B017 - plain HTTP on a TLS port fails
            plain.request("GET", "/api")
