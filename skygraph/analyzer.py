"""`skygraph analyzer`: connects to the graph (embedded or external), bootstraps
the schema, runs the batched writer and serves HTTP on `analyzer.listen`
(uvicorn). For now HTTP serves health and status; GraphQL and the REST API
mount here as they arrive. SIGTERM/SIGINT stop it cleanly: the writer
flushes, the database connection closes, the embedded server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import asdict
from typing import Any

import uvicorn

from skygraph import __version__
from skygraph.config import Config
from skygraph.process import batch_writer, graph_connection, stop_on_signals
from skygraph.topology.connect import GraphHandle
from skygraph.topology.store import BatchWriter

log = logging.getLogger("skygraph.analyzer")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def parse_listen(listen: str, key: str = "analyzer.listen") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{key}: expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class StatusApp:
    """ASGI app: `GET /health` (200 when the graph answers, else 503) and `GET /api/status`."""

    def __init__(self, handle: GraphHandle, writer: BatchWriter) -> None:
        self.handle = handle
        self.writer = writer
        self.started = time.time()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            await _json(send, 405, {"error": f"{method} not allowed on {path}"})
        elif path == "/health":
            healthy, detail = await self.graph_health()
            await _json(send, 200 if healthy else 503,
                        {"status": "ok" if healthy else "unavailable", "graph": detail})
        elif path == "/api/status":
            await _json(send, 200, await self.status())
        else:
            await _json(send, 404, {"error": f"no such resource: {path}"})

    async def graph_health(self) -> tuple[bool, str]:
        try:
            await self.handle.store.run("RETURN 1", timeout=2.0)
            return True, "ok"
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"

    async def status(self) -> dict[str, Any]:
        healthy, detail = await self.graph_health()
        store = self.handle.store
        server = self.handle.embedded
        return {
            "Version": __version__,
            "Uptime": int(time.time() - self.started),
            "Graph": {"Backend": self.handle.backend, "URI": store.uri,
                      "Server": store.dialect.server_agent, "Healthy": healthy, "Detail": detail,
                      "Restarts": server.restarts if server else 0},
            "Writer": asdict(self.writer.stats),
        }


async def _json(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling (the analyzer stops itself cleanly)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"analyzer.listen {listen}: cannot listen: {exc.strerror}") from exc
    sock.listen(128)
    return sock


async def run(cfg: Config, ready: Callable[[str], None] | None = None) -> None:
    sock = bind(cfg.analyzer.listen)
    try:
        with stop_on_signals() as stop:
            await _serve(cfg, sock, stop, ready)
    finally:
        sock.close()


async def _serve(cfg: Config, sock: socket.socket, stop: asyncio.Event,
                 ready: Callable[[str], None] | None) -> None:
    async with graph_connection(cfg) as handle:
        writer = batch_writer(cfg, handle.store)
        await writer.start()
        server = _Server(uvicorn.Config(StatusApp(handle, writer), log_level="warning",
                                        lifespan="off", access_log=False))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        host, port = sock.getsockname()[:2]
        log.info("analyzer listening on http://%s:%d (graph: %s %s)", host, port,
                 handle.backend, handle.store.uri)
        if ready:
            ready(f"http://{host}:{port}")
        await asyncio.wait([serving, asyncio.create_task(stop.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        await writer.stop()
        log.info("analyzer stopped")
