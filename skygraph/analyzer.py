"""`skygraph analyzer`: connects to the graph (embedded or external), bootstraps
the schema, loads the live graph, runs the batched writer and serves on
`analyzer.listen` (uvicorn; HTTPS when `analyzer.tls` is set): GraphQL and
GraphiQL under /graphql, Skydive's REST API under /api and /login, /health;
one authentication gate in front of all of them. SIGTERM/SIGINT stop it
cleanly: the writer flushes, the database connection closes, the embedded
server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skygraph import memory
from skygraph.api.agents import Agents
from skygraph.api.auth import Authenticator, AuthMiddleware, read_users
from skygraph.api.injections import Injections
from skygraph.api.orchestrator import Orchestrator
from skygraph.api.rest import rest_app
from skygraph.api.service import Api
from skygraph.config import Config
from skygraph.graphql.app import make_app
from skygraph.gremlin import Limits
from skygraph.probes import fabric
from skygraph.process import batch_writer, graph_connection, stop_on_signals
from skygraph.rpc.model import InjectPacket, StartCapture, StopCapture, StopInjection
from skygraph.rpc.server import RpcServer
from skygraph.rpc.tls import ServerTLS
from skygraph.topology.flowstore import FlowSink, FlowStore

log = logging.getLogger("skygraph.analyzer")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def parse_listen(listen: str, key: str = "analyzer.listen") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{key}: expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def health_route(api: Api) -> Route:
    """`GET /health`: 200 when the graph answers, else 503 (open without credentials)."""
    async def health(request: Request) -> Response:
        healthy, detail = await api.graph_health()
        return JSONResponse({"status": "ok" if healthy else "unavailable", "graph": detail},
                            status_code=200 if healthy else 503)
    return Route("/health", health, methods=["GET", "HEAD"])


def authenticator(cfg: Config) -> Authenticator:
    a = cfg.analyzer.auth
    users = read_users(a.users_file) if a.users_file else {}
    return Authenticator(a.token, users, a.session_ttl)


def http_app(api: Api, auth: Authenticator, cfg: Config) -> ASGIApp:
    """Everything on the analyzer port: GraphQL under /graphql, REST and /health
    elsewhere, all behind the authentication gate."""
    rest = rest_app(api, auth, [health_route(api)])
    a = cfg.analyzer.api
    graphql = make_app(api, max_depth=a.max_depth, max_page=a.max_page,
                       authorize_ws=auth.check_params if auth.enabled else None)

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        path = scope.get("path", "")
        target = graphql if path == "/graphql" or path.startswith("/graphql/") else rest
        await target(scope, receive, send)
    return AuthMiddleware(dispatch, auth)


async def _expire_captures(api: Api, every: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            for uuid in await api.captures.expire():
                log.info("capture %s deleted: its TTL passed", uuid)
        except Exception as exc:  # the database may be restarting; try again later
            log.warning("capture expiry: %s", exc)


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling (the analyzer stops itself cleanly)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP, and without it a keep-alive client waits 40 ms per response
    # (Nagle against delayed ACKs: uvicorn writes headers and body separately).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
            await serve(cfg, sock, stop, ready)
    finally:
        sock.close()


def _log_failure(what: str, tasks: set[asyncio.Task[int]]) -> Callable[[asyncio.Task[int]], None]:
    def done(task: asyncio.Task[int]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: %s", what, task.exception())
    return done


async def serve(cfg: Config, sock: socket.socket, stop: asyncio.Event,
                 ready: Callable[[str], None] | None) -> None:
    auth = authenticator(cfg)
    tls = cfg.analyzer.tls
    if tls.cert_file:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"analyzer.tls: cannot load {tls.cert_file} / {tls.key_file}: "
                             f"{exc}") from exc
    async with graph_connection(cfg) as handle:
        writer = batch_writer(cfg, handle.store)
        await writer.start()
        a = cfg.analyzer.api
        server_info = handle.embedded

        async def extra() -> dict[str, Any]:
            doc: dict[str, Any] = {"Agents": agents.status(), "Flows": sink.status(),
                                   "Captures": {"Errors": orchestrator.errors}}
            if server_info:
                doc["Embedded"] = {"Restarts": server_info.restarts}
            return doc
        api = Api(handle.store, writer, backend=handle.backend, status_extra=extra,
                  limits=Limits(max_results=a.max_results, timeout_s=a.query_timeout,
                                flow_expire_s=cfg.flow.expire),
                  max_raw_packets=a.max_raw_packets)
        await api.load()
        fabric_probe = fabric.FabricProbe(api, fabric.parse(cfg.analyzer.topology.fabric))
        await fabric_probe.start()
        sink = FlowSink(FlowStore(handle.store, retention_s=cfg.flow.retention,
                                  max_raw_packets=a.max_raw_packets),
                        publish=api.flow_bus.publish)
        await sink.start()

        async def put_flows(host_id: str, flows: list[dict[str, Any]]) -> None:
            await sink.put(host_id, flows)
        agents = Agents(api, put_flows)
        api.put_flows = sink.put
        rpc = RpcServer(agents, cfg.analyzer.rpc.listen, cfg.analyzer.auth.token,
                        ServerTLS.from_files(tls.cert_file, tls.key_file, tls.client_ca_file,
                                             key="analyzer.tls") if tls.cert_file else None)

        async def start(host: str, spec: dict[str, Any], node_id: str) -> bool:
            return await rpc.send(host, StartCapture(spec, node_id))

        async def stop_capture(host: str, capture_id: str, node_id: str) -> bool:
            return await rpc.send(host, StopCapture(capture_id, node_id))
        orchestrator = Orchestrator(api, start, stop_capture)

        async def inject(host: str, spec: dict[str, Any], node_id: str) -> bool:
            return await rpc.send(host, InjectPacket(spec, node_id))

        async def stop_injection(host: str, injection_id: str, node_id: str) -> bool:
            return await rpc.send(host, StopInjection(injection_id, node_id))
        api.injections = Injections(api, inject, stop_injection, agents.hosts_connected)
        agents.listeners.append(lambda host, up: orchestrator.host_connected(host) if up
                                else orchestrator.host_disconnected(host))
        marking: set[asyncio.Task[int]] = set()
        stopping = False

        def mark_flows(host: str, up: bool) -> None:
            """An agent gone (not the analyzer stopping): its live flows are marked."""
            if up or stopping:
                return
            task = asyncio.create_task(sink.agent_gone(host, cfg.flow.expire * 1000))
            marking.add(task)
            task.add_done_callback(_log_failure(f"flows of agent {host}", marking))
        agents.listeners.append(mark_flows)
        rpc_address = await rpc.start()
        await orchestrator.start()
        server = _Server(uvicorn.Config(http_app(api, auth, cfg), log_level="warning",
                                        lifespan="off", access_log=False, http="httptools",
                                        ssl_certfile=tls.cert_file or None,
                                        ssl_keyfile=tls.key_file or None))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        expiry = asyncio.create_task(_expire_captures(api))
        # after a burst of flows (an import, an agent's backlog): freed heap back to
        # the system once nothing waits to be written
        trimming = asyncio.create_task(
            memory.trim_when_idle(lambda: sink.queued == 0))
        host, port = sock.getsockname()[:2]
        url = f"{'https' if tls.cert_file else 'http'}://{host}:{port}"
        log.info("analyzer listening on %s, agents on %s (graph: %s %s; auth %s)", url,
                 rpc_address, handle.backend, handle.store.uri, "on" if auth.enabled else "off")
        if ready:
            ready(url)
        try:
            await asyncio.wait([serving, asyncio.create_task(stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            expiry.cancel()
            trimming.cancel()
            await fabric_probe.stop()
            await orchestrator.stop()
            await rpc.stop()
            server.should_exit = True
            await serving
            await sink.stop()
            await writer.stop()
        log.info("analyzer stopped")
