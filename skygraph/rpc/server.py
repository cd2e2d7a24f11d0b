"""The analyzer's end of the link: a grpc.aio server holding one stream per
connected agent (`agent.proto`).

It checks each agent's Hello (protocol version, host id, token), then hands
what the agent sends to a `Handler` in the order it arrived (a full sync is
reassembled from its chunks first), acknowledges each `Flows` message once
the handler has processed it, and pushes capture commands down the stream
(`send`). A second connection for a host replaces the first. If the handler
fails, the stream ends with UNAVAILABLE naming the host and the message:
the agent reconnects, resyncs and re-sends its unacknowledged flows.

Every `on_connect` is followed, once the stream is over, by one
`on_disconnect` for the same host, before that host's next `on_connect`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import grpc.aio

from skygraph import __version__
from skygraph.rpc import agent_pb2 as pb
from skygraph.rpc import agent_pb2_grpc as pb_grpc
from skygraph.rpc import codec
from skygraph.rpc.model import SUPPORTED_VERSIONS, CaptureStats, Command
from skygraph.rpc.tls import ServerTLS
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import StoreMutation

log = logging.getLogger("skygraph.rpc.server")

SOFTWARE = f"skygraph {__version__}"
OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", codec.MAX_MESSAGE_BYTES),
    # Pings find agents whose host vanished without closing the connection.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


class Handler(Protocol):
    """What the analyzer does with what agents send (skygraph.api.agents.Agents)."""

    async def on_connect(self, host_id: str, version: int, peer: str) -> None: ...

    async def on_sync(self, host_id: str, nodes: list[Node], edges: list[Edge]) -> None: ...

    async def on_mutations(self, host_id: str, mutations: list[StoreMutation]) -> None: ...

    async def on_flows(self, host_id: str, capture_id: str, flows: list[dict[str, Any]]) -> None: ...

    async def on_stats(self, host_id: str, stats: CaptureStats) -> None: ...

    async def on_disconnect(self, host_id: str) -> None: ...


class Rejected(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Session:
    host_id: str
    version: int
    peer: str
    since: float = field(default_factory=time.time)
    outbound: asyncio.Queue[pb.AnalyzerMessage] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_status: tuple[grpc.StatusCode, str] = (grpc.StatusCode.OK, "")
    done: asyncio.Event = field(default_factory=asyncio.Event)
    sync_nodes: list[Node] = field(default_factory=list)
    sync_edges: list[Edge] = field(default_factory=list)

    def close(self, code: grpc.StatusCode, message: str) -> None:
        if not self.closed.is_set():
            self.close_status = (code, message)
            self.closed.set()


class _Servicer(pb_grpc.AnalyzerServicer):
    def __init__(self, server: RpcServer) -> None:
        self._server = server

    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage],
                      context: grpc.aio.ServicerContext[pb.AgentMessage, pb.AnalyzerMessage]) -> None:
        await self._server._serve(request_iterator, context)


class RpcServer:
    def __init__(self, handler: Handler, listen: str = "127.0.0.1:8083", token: str = "",
                 tls: ServerTLS | None = None, *, hello_timeout: float = 10.0) -> None:
        self.handler = handler
        self.listen = listen
        self.token = token
        self.tls = tls
        self.hello_timeout = hello_timeout
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._sessions: dict[str, _Session] = {}
        self._cleanups: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> str:
        """Listen; return the bound HOST:PORT (a port of 0 picks a free one)."""
        server = grpc.aio.server(options=OPTIONS)
        pb_grpc.add_AnalyzerServicer_to_server(_Servicer(self), server)
        try:
            port = (server.add_secure_port(self.listen, self.tls.credentials()) if self.tls
                    else server.add_insecure_port(self.listen))
        except RuntimeError as exc:
            raise OSError(f"analyzer.rpc.listen {self.listen}: cannot listen: {exc}") from None
        await server.start()
        self._server = server
        host = self.listen.rpartition(":")[0]
        self.address = f"{host}:{port}"
        log.info("agent link listening on %s (%s, token %s)", self.address,
                 "TLS" if self.tls else "plaintext", "required" if self.token else "not required")
        return self.address

    async def stop(self, grace: float = 1.0) -> None:
        """Close every agent's stream (UNAVAILABLE), stop listening, and return once the
        handler has seen every disconnect."""
        for s in list(self._sessions.values()):
            s.close(grpc.StatusCode.UNAVAILABLE, "the analyzer is shutting down")
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=30)

    # ------------------------------------------------------------ agents
    def hosts(self) -> list[str]:
        """Hosts with a stream open now."""
        return sorted(self._sessions)

    async def send(self, host_id: str, command: Command) -> bool:
        """Queue a command on the host's stream; False when that agent is not connected."""
        session = self._sessions.get(host_id)
        if session is None or session.closed.is_set():
            return False
        session.outbound.put_nowait(codec.command_message(command))
        return True

    # ------------------------------------------------------------ one stream
    async def _serve(self, requests: AsyncIterator[pb.AgentMessage],
                     context: grpc.aio.ServicerContext[pb.AgentMessage, pb.AnalyzerMessage]) -> None:
        peer = context.peer()
        try:
            hello = await self._hello(requests, peer)
        except Rejected as exc:
            log.warning("%s", exc.message)
            await context.abort(exc.code, exc.message)
        if hello is None:
            return
        session = _Session(hello.host_id, hello.version, peer)
        old = self._sessions.get(session.host_id)
        if old is not None:
            log.info("agent %s reconnected from %s: closing its stream from %s", session.host_id,
                     peer, old.peer)
            old.close(grpc.StatusCode.ABORTED,
                      f"agent {session.host_id}: replaced by a newer connection from {peer}")
            await old.done.wait()
        self._sessions[session.host_id] = session
        try:
            await self.handler.on_connect(session.host_id, session.version, peer)
        except Exception as exc:
            del self._sessions[session.host_id]
            session.done.set()
            log.exception("agent %s: cannot accept it", session.host_id)
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"the analyzer cannot accept agent {session.host_id} now: {exc}")
        log.info("agent %s connected from %s (protocol %d, %s)", session.host_id, peer,
                 session.version, hello.software or "unknown software")
        session.outbound.put_nowait(codec.welcome_message(max(SUPPORTED_VERSIONS), SOFTWARE))
        try:
            await self._run(session, requests, context)
        finally:
            if self._sessions.get(session.host_id) is session:
                del self._sessions[session.host_id]
            # Not awaited here: the stream's task may be cancelled again (server stop).
            task = asyncio.create_task(self._disconnected(session))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _hello(self, requests: AsyncIterator[pb.AgentMessage], peer: str) -> pb.Hello | None:
        try:
            first = await asyncio.wait_for(anext(requests), self.hello_timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"agent at {peer}: no Hello within {self.hello_timeout:g}s") from None
        if first.WhichOneof("body") != "hello":
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"agent at {peer}: the first message must be Hello, got "
                           f"{first.WhichOneof('body') or 'an empty message'}")
        hello = first.hello
        who = f"agent {hello.host_id!r} at {peer}"
        if not hello.host_id:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, f"agent at {peer}: Hello without a host_id")
        if hello.version not in SUPPORTED_VERSIONS:
            raise Rejected(grpc.StatusCode.FAILED_PRECONDITION,
                           f"{who} speaks protocol version {hello.version}; this analyzer speaks "
                           f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))} ({SOFTWARE}): "
                           f"upgrade the older side")
        if self.token and not hmac.compare_digest(hello.token.encode(), self.token.encode()):
            raise Rejected(grpc.StatusCode.UNAUTHENTICATED,
                           f"{who}: {'invalid' if hello.token else 'missing'} token (the analyzer "
                           f"requires its analyzer.auth.token; set the agent's agent.token)")
        return hello

    async def _run(self, session: _Session, requests: AsyncIterator[pb.AgentMessage],
                   context: grpc.aio.ServicerContext[pb.AgentMessage, pb.AnalyzerMessage]) -> None:
        reader = asyncio.create_task(self._read(session, requests))
        writer = asyncio.create_task(self._write(session, context))
        closed = asyncio.create_task(session.closed.wait())
        tasks = {reader, writer, closed}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if session.closed.is_set():
            await context.abort(*session.close_status)
        if not reader.cancelled() and (exc := reader.exception()) is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        # The agent ended its stream, or writing to it failed (it went away).

    async def _read(self, s: _Session, requests: AsyncIterator[pb.AgentMessage]) -> None:
        async for msg in requests:
            kind = msg.WhichOneof("body")
            try:
                await self._dispatch(s, kind, msg)
            except Exception as exc:
                log.exception("agent %s: processing its %s failed", s.host_id, kind)
                raise RuntimeError(f"the analyzer failed to process {kind} from agent {s.host_id}: "
                                   f"{type(exc).__name__}: {exc}") from exc

    async def _dispatch(self, s: _Session, kind: str | None, msg: pb.AgentMessage) -> None:
        if kind == "sync":
            nodes, edges, problems = codec.decode_sync(msg.sync)
            self._problems(s, problems)
            s.sync_nodes.extend(nodes)
            s.sync_edges.extend(edges)
            if not msg.sync.more:
                nodes, edges = s.sync_nodes, s.sync_edges
                s.sync_nodes, s.sync_edges = [], []
                await self.handler.on_sync(s.host_id, nodes, edges)
        elif kind == "mutations":
            mutations, problems = codec.decode_mutations(msg.mutations)
            self._problems(s, problems)
            if mutations:
                await self.handler.on_mutations(s.host_id, mutations)
        elif kind == "flows":
            flows, problems = codec.decode_flows(msg.flows)
            self._problems(s, problems)
            if flows:
                await self.handler.on_flows(s.host_id, msg.flows.capture_id, flows)
            s.outbound.put_nowait(codec.ack_message(msg.flows.seq))
        elif kind == "stats":
            await self.handler.on_stats(s.host_id, codec.stats_from_pb(msg.stats))
        else:
            log.warning("agent %s: unexpected %s message ignored", s.host_id, kind or "empty")

    @staticmethod
    def _problems(s: _Session, problems: list[str]) -> None:
        for p in problems:
            log.warning("agent %s: %s: skipped", s.host_id, p)

    @staticmethod
    async def _write(s: _Session,
                     context: grpc.aio.ServicerContext[pb.AgentMessage, pb.AnalyzerMessage]) -> None:
        while True:
            await context.write(await s.outbound.get())

    async def _disconnected(self, s: _Session) -> None:
        try:
            log.info("agent %s disconnected (%s)", s.host_id, s.close_status[1] or "stream ended")
            await self.handler.on_disconnect(s.host_id)
        except Exception:
            log.exception("agent %s: handling its disconnect failed", s.host_id)
        finally:
            s.done.set()
