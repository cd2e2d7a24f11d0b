"""GraphiQL works in a browser with no internet: headless Chromium, all DNS blocked but 127.0.0.1.

A test-local strawberry schema is served by uvicorn on a free loopback port in a background thread,
with the GraphQL view's ``render_graphql_ide`` returning ``skygraph.graphql.graphiql.page()`` and
``/graphql/static/<name>`` serving ``asset(name)``. Chromium runs with
``--host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"``, so any CDN asset would fail to load.

- ``test_control_cdn_page_stays_loading``: strawberry's stock page (unpkg.com assets) stays on
  "Loading..." in the same browser, so the network block is effective.
- ``test_dump_dom_renders_graphiql``: plain ``chromium --dump-dom`` shows GraphiQL's editor DOM
  (not "Loading..."), and the server saw every page asset fetched with status 200.
- ``test_query_and_subscription_from_browser`` (Playwright driving /usr/bin/chromium): a query
  prefilled with ``?q=`` runs from the execute button and its result appears in the result
  pane, with the ``?token=`` sent as ``Authorization: Bearer``; after a reload without ``?token=``
  (token from localStorage) a subscription runs over graphql-transport-ws with the token in its
  connection params; the explorer plugin opens; every request the browser made went to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL

from skygraph.graphql.graphiql import asset, page
from skygraph.topology.embedded import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STATIC_PREFIX = "/graphql/static"
OFFLINE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

PAGE_ASSETS = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphiql.min.css",
    "graphiql-plugin-explorer.umd.js",
    "graphiql-plugin-explorer.css",
)

# scripts/install.sh installs Debian's chromium: its absence is a failure, not a skip.
assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (scripts/install.sh installs it)"
pytestmark = [pytest.mark.slow]


# --- the test-local GraphQL server ------------------------------------------------------------


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str = "world") -> str:
        return f"Hello, {name}"

    @strawberry.field
    def whoami(self, info: strawberry.Info) -> str | None:
        """The Authorization header of the HTTP request (how the page's token arrives)."""
        value: str | None = info.context["request"].headers.get("authorization")
        return value


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, upto: int = 3) -> AsyncGenerator[int, None]:
        for i in range(1, upto + 1):
            await asyncio.sleep(0.05)
            yield i


@dataclass
class UIServer:
    base: str
    paths: list[tuple[str, int]] = field(default_factory=list)  # (path, status) of HTTP requests
    connection_params: list[object] = field(default_factory=list)  # of each websocket connection


class _View(GraphQL[dict[str, Any], None]):
    def __init__(self, server: UIServer) -> None:
        super().__init__(strawberry.Schema(query=Query, subscription=Subscription))
        self.server = server

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(page("/graphql", STATIC_PREFIX))

    async def on_ws_connect(self, context: dict[str, Any]) -> None:
        self.server.connection_params.append(context.get("connection_params"))
        return None


async def _static(request: Request) -> Response:
    found = asset(request.path_params["name"])
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(found[0], media_type=found[1])


def _recorder(app: ASGIApp, server: UIServer) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                server.paths.append((scope["path"], int(message["status"])))
            await send(message)

        await app(scope, receive, send_recording)

    return wrapped


@pytest.fixture(scope="module")
def ui_server() -> Iterator[UIServer]:
    port = free_port()
    server = UIServer(base=f"http://127.0.0.1:{port}")
    view = _View(server)
    app = Starlette(
        routes=[
            Route(STATIC_PREFIX + "/{name}", _static),
            Route("/graphql", view, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", view),
            Route("/cdn-graphql", GraphQL(strawberry.Schema(query=Query))),  # strawberry's stock page
        ]
    )
    config = uvicorn.Config(
        _recorder(app, server), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name="graphiql-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not uv.started:
            assert thread.is_alive(), "uvicorn died on start"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield server
    finally:
        uv.should_exit = True
        thread.join(10)


def _graphiql_url(server: UIServer, **params: str) -> str:
    return f"{server.base}/graphql?{urllib.parse.urlencode(params)}" if params else f"{server.base}/graphql"


# --- 1. plain chromium --dump-dom ---------------------------------------------------------------


def _dump_dom(url: str) -> str:
    """The DOM of `url` after its scripts ran, from an offline headless chromium (always killed)."""
    with tempfile.TemporaryDirectory(prefix="sg-chromium-") as profile:
        cmd = [
            CHROMIUM,
            "--headless",
            *OFFLINE_ARGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",  # let React render (and the introspection query run)
            "--dump-dom",
            url,
        ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            dom, stderr = proc.communicate(timeout=90)
        finally:
            with contextlib.suppress(ProcessLookupError):  # its helper processes share its group
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, stderr[-2000:]
    return dom


def test_control_cdn_page_stays_loading(ui_server: UIServer) -> None:
    """Strawberry's stock page (assets on unpkg.com) cannot render in this browser: the block works."""
    dom = _dump_dom(f"{ui_server.base}/cdn-graphql")
    assert "unpkg.com" in dom
    assert '<div id="graphiql" class="graphiql-container">Loading...</div>' in dom


def test_dump_dom_renders_graphiql(ui_server: UIServer) -> None:
    expected_assets = {f"{STATIC_PREFIX}/{name}" for name in PAGE_ASSETS}
    ui_server.paths.clear()
    dom = _dump_dom(_graphiql_url(ui_server, q="{ hello }"))
    # React replaced "Loading..." with GraphiQL's component tree
    assert re.search(r'<div id="graphiql"><div [^>]*class="graphiql-container"', dom), dom[:2000]
    for marker in ("graphiql-query-editor", "graphiql-execute-button", "result-window", "CodeMirror"):
        assert marker in dom, f"{marker} missing from the rendered DOM"
    assert "Loading..." not in dom
    # the ?q= prefill reached the query editor (CodeMirror renders it as spans)
    editor = dom[dom.index("graphiql-query-editor") : dom.index("graphiql-editor-tools")]
    assert "hello" in re.sub(r"<[^>]+>", "", editor)
    served = {path: status for path, status in ui_server.paths}
    assert expected_assets <= served.keys(), f"assets not fetched: {expected_assets - served.keys()}"
    assert all(served[p] == 200 for p in expected_assets), served
    assert served.get("/graphql") == 200


# --- 2. Playwright: a query and a subscription from the browser ---------------------------------


def _result_text(pw_page: Any) -> str:
    text: str = pw_page.locator(".graphiql-response .result-window").inner_text()
    return text.replace("\xa0", " ")  # CodeMirror renders indentation as no-break spaces


def _wait_result(pw_page: Any, needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = _result_text(pw_page)
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared in the result pane; last text: {text!r}")


def test_query_and_subscription_from_browser(ui_server: UIServer) -> None:
    from playwright import sync_api
    requests: list[str] = []  # every URL the browser asked for (HTTP and websocket)
    failed: list[str] = []
    errors: list[str] = []
    token = "t0k3n-offline"

    with tempfile.TemporaryDirectory(prefix="sg-chromium-") as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=OFFLINE_ARGS
        )
        try:
            tab = context.new_page()
            tab.on("request", lambda r: requests.append(r.url))
            tab.on("websocket", lambda ws: requests.append(ws.url))
            tab.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # (a) a prefilled query, run with the execute button; token from ?token=
            query = '{ hello(name: "offline") whoami }'
            tab.goto(_graphiql_url(ui_server, q=query, token=token))
            tab.wait_for_selector(".graphiql-container .graphiql-query-editor .CodeMirror", timeout=30_000)
            assert "Loading..." not in tab.inner_text("#graphiql")
            tab.click(".graphiql-execute-button")
            text = _wait_result(tab, "Hello, offline")
            result = json.loads(text[text.index("{") :])  # the pane shows the JSON response
            assert result == {"data": {"hello": "Hello, offline", "whoami": f"Bearer {token}"}}
            # the token is remembered and taken out of the address bar
            assert "token" not in urllib.parse.parse_qs(urllib.parse.urlsplit(tab.url).query)
            assert tab.evaluate("localStorage.getItem('skygraph.graphql.token')") == token

            # (b) after a reload without ?token=: a subscription over graphql-transport-ws
            ui_server.connection_params.clear()
            tab.goto(_graphiql_url(ui_server, q="subscription { count(upto: 3) }"))
            tab.wait_for_selector(".graphiql-container .graphiql-query-editor .CodeMirror", timeout=30_000)
            tab.click(".graphiql-execute-button")
            text = _wait_result(tab, '"count": 3')
            assert json.loads(text[text.index("{") :]) == {"data": {"count": 3}}
            assert ui_server.connection_params == [{"Authorization": f"Bearer {token}"}]

            # (c) the explorer plugin is there: it shows the operation with the schema's fields
            tab.click('button[aria-label="Show GraphiQL Explorer"]')
            tab.wait_for_selector(".graphiql-explorer-root", timeout=10_000)
            explorer = tab.inner_text(".graphiql-explorer-root").split()
            assert {"count", "upto:", "Query", "Subscription"} <= set(explorer), explorer

            # control: the resolver rules do block the internet in this browser
            probe = context.new_page()
            with pytest.raises(sync_api.Error, match="ERR_NAME_NOT_RESOLVED"):
                probe.goto("https://unpkg.com/graphiql@3.8.3/graphiql.min.css", timeout=15_000)
            probe.close()
        finally:
            context.close()

    assert requests, "no request recorded"
    port = urllib.parse.urlsplit(ui_server.base).port
    hosts = {urllib.parse.urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, f"requests left 127.0.0.1: {sorted(set(requests))}"
    assert f"ws://127.0.0.1:{port}/graphql" in requests, "no websocket to the endpoint"
    assets = {f"{ui_server.base}{STATIC_PREFIX}/{name}" for name in PAGE_ASSETS}
    assert assets <= set(requests), assets - set(requests)
    assert not failed, failed
    assert not errors, errors
    assert not Path(profile).exists()
