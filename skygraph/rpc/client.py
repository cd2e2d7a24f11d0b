"""The agent's end of the link: one stream to an analyzer (`agent.proto`), kept
up for as long as the agent runs.

On every (re)connect the client says Hello, waits for Welcome, sends the
agent's whole graph (`snapshot()`, taken at that moment) and then streams,
in this priority: topology mutations, capture statistics, flows. Failures
reconnect with exponential backoff and jitter, rotating through the given
analyzer addresses. A rejection (bad token, unsupported version) is final:
`run()` raises `AnalyzerRejected` with the analyzer's reason.

What is kept while the analyzer is unreachable, and why it is enough:
- mutations are dropped: the next Sync carries the full state (and a backlog
  beyond `max_queued_mutations` while connected is replaced by a Sync too);
- the latest statistics per (capture, node) are kept;
- flows are kept, up to `max_buffered_flows` not yet acknowledged by the
  analyzer; beyond that the oldest are dropped and counted
  (`counters.flows_dropped`, `dropped_flows(capture_id)`). Batches sent but
  not acknowledged when a stream breaks are sent again after the next Sync,
  so within the bound no accepted flow is lost (at-least-once delivery).
Commands from the analyzer reach `on_command` one at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from skygraph import __version__
from skygraph.rpc import agent_pb2 as pb
from skygraph.rpc import agent_pb2_grpc as pb_grpc
from skygraph.rpc import codec
from skygraph.rpc.model import PROTOCOL_VERSION, CaptureStats, Command
from skygraph.rpc.tls import ClientTLS
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import StoreMutation

log = logging.getLogger("skygraph.rpc.client")

Snapshot = Callable[[], tuple[list[Node], list[Edge]]]
COMMANDS = frozenset({"start_capture", "stop_capture", "inject_packet", "stop_injection"})
OnCommand = Callable[[Command], Awaitable[None]]
Call = grpc.aio.StreamStreamCall[pb.AgentMessage, pb.AnalyzerMessage]

SOFTWARE = f"skygraph {__version__}"
OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", codec.MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),      # find a vanished analyzer within ~15 s
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# Final answers to a Hello: retrying cannot help until the configuration changes.
REJECTIONS = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT})
MAX_FLOWS_PER_MESSAGE = 10_000
MAX_MUTATIONS_PER_MESSAGE = 1_000


class AnalyzerRejected(Exception):
    """The analyzer refused this agent; the message is the analyzer's reason."""

    def __init__(self, address: str, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(f"analyzer {address} rejected this agent ({code.name}): {reason}")
        self.address = address
        self.code = code
        self.reason = reason


@dataclass
class ClientCounters:
    connects: int = 0
    syncs: int = 0
    mutations_sent: int = 0
    mutations_dropped: int = 0       # while disconnected: the next Sync carries them
    forced_resyncs: int = 0          # backlog over max_queued_mutations replaced by a Sync
    flows_sent: int = 0              # includes re-sends after a reconnect
    flows_acked: int = 0
    flows_dropped: int = 0           # over max_buffered_flows: oldest first
    dropped_by_capture: dict[str, int] = field(default_factory=dict)
    last_error: str = ""


@dataclass
class _Batch:
    seq: int
    capture_id: str
    flows: deque[bytes]


class AnalyzerClient:
    def __init__(self, address: str | Sequence[str], host_id: str, *, snapshot: Snapshot,
                 on_command: OnCommand, token: str = "", tls: ClientTLS | None = None,
                 max_buffered_flows: int = 100_000, backoff: tuple[float, float] = (0.2, 5.0),
                 max_queued_mutations: int = 10_000, connect_timeout: float = 10.0,
                 rng: random.Random | None = None) -> None:
        self.addresses = [address] if isinstance(address, str) else list(address)
        if not self.addresses:
            raise ValueError("analyzers: at least one analyzer address is needed")
        if max_buffered_flows < 1:
            raise ValueError(f"max_buffered_flows: must be positive, got {max_buffered_flows}")
        self.host_id = host_id
        self.snapshot = snapshot
        self.on_command = on_command
        self.token = token
        self.tls = tls
        self.max_buffered_flows = max_buffered_flows
        self.backoff = backoff
        self.max_queued_mutations = max_queued_mutations
        self.connect_timeout = connect_timeout
        self.counters = ClientCounters()
        self.address = ""                  # of the analyzer connected to, when connected
        self._rng = rng or random.Random()
        self._next_address = 0
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()
        self._accepting = False            # mutations are queued (a Sync will precede them)
        self._resync = False
        self._mutations: deque[StoreMutation] = deque()
        self._stats: dict[tuple[str, str], CaptureStats] = {}
        self._flows: deque[tuple[str, bytes]] = deque()
        self._inflight: deque[_Batch] = deque()
        self._held = 0                     # flows not yet acknowledged (queued + in flight)
        self._commands: asyncio.Queue[Command] = asyncio.Queue()
        self._running = False
        self._session_task: asyncio.Task[None] | None = None
        self._was_welcomed = False         # the last stream got as far as the Welcome

    # ------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def buffered_flows(self) -> int:
        """Flows accepted and not yet acknowledged by the analyzer."""
        return self._held

    def dropped_flows(self, capture_id: str) -> int:
        return self.counters.dropped_by_capture.get(capture_id, 0)

    # ------------------------------------------------------------ producers
    async def mutation(self, m: StoreMutation) -> None:
        """Send a change of the agent's graph (dropped while disconnected: the Sync made on
        reconnect carries the state)."""
        if not self._accepting:
            self.counters.mutations_dropped += 1
            return
        if len(self._mutations) >= self.max_queued_mutations:
            self._mutations.clear()
            self._resync = True
            self.counters.forced_resyncs += 1
        else:
            self._mutations.append(m)
        self._wake.set()

    def flows(self, capture_id: str, flows: Sequence[Mapping[str, Any]]) -> None:
        """Queue one update tick's flows (Skydive flow JSON) of a capture."""
        for f in flows:
            self._flows.append((capture_id, codec.encode_flow(f)))
            self._held += 1
        while self._held > self.max_buffered_flows:
            self._drop_oldest()
        self._wake.set()

    def stats(self, s: CaptureStats) -> None:
        """Report a capture's counters on a node (only the latest per node is kept)."""
        self._stats[(s.capture_id, s.node_id)] = s
        self._wake.set()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every flow is acknowledged and every queued message sent."""
        deadline = time.monotonic() + timeout
        while self._held or self._mutations or self._stats or self._resync:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _drop_oldest(self) -> None:
        if self._inflight:
            batch = self._inflight[0]
            batch.flows.popleft()
            capture_id = batch.capture_id
            if not batch.flows:
                self._inflight.popleft()
        else:
            capture_id, _ = self._flows.popleft()
        self._held -= 1
        self.counters.flows_dropped += 1
        by = self.counters.dropped_by_capture
        by[capture_id] = by.get(capture_id, 0) + 1

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Stay connected until `close()`; raises AnalyzerRejected when refused."""
        self._running = True
        self._stopped.clear()
        dispatcher = asyncio.create_task(self._dispatch_commands(), name="analyzer commands")
        failures = 0
        try:
            while not self._closing.is_set():
                address = self.addresses[self._next_address % len(self.addresses)]
                self._next_address += 1
                # A task of its own, so that close() can interrupt it anywhere (a write
                # before the connection is up ignores the call's cancellation).
                self._session_task = asyncio.create_task(self._session(address))
                try:
                    await self._session_task
                except AnalyzerRejected as exc:
                    self.counters.last_error = str(exc)
                    log.error("agent %s: %s", self.host_id, exc)
                    raise
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._closing.is_set() and (task is None or not task.cancelling()):
                        break
                    raise
                except Exception as exc:
                    if self._closing.is_set():
                        break
                    self.counters.last_error = f"{address}: {_describe(exc)}"
                    if self._was_welcomed:
                        log.warning("agent %s: link to analyzer %s lost: %s; reconnecting",
                                    self.host_id, address, _describe(exc))
                    elif failures % 20 == 0:
                        log.warning("agent %s: cannot reach analyzer %s: %s (retrying)",
                                    self.host_id, address, _describe(exc))
                    # A stream replaced by another one: an agent with our host id; no flapping.
                    failures = 10 if _replaced(exc) else 0 if self._was_welcomed else failures + 1
                await self._pause(failures)
        finally:
            self._session_task = None
            self._running = False
            self._stopped.set()
            dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)

    async def close(self) -> None:
        """Stop: end the stream, stop reconnecting; returns once `run()` is over."""
        self._closing.set()
        self._wake.set()
        if self._session_task is not None:
            self._session_task.cancel()
        if self._running:
            await self._stopped.wait()

    async def _pause(self, failures: int) -> None:
        lo, hi = self.backoff
        delay = min(hi, lo * 2 ** max(0, failures - 1)) if failures else lo
        delay *= 0.5 + self._rng.random() / 2
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    # ------------------------------------------------------------ one stream
    async def _session(self, address: str) -> None:
        """One connection, until it fails (raises) or the client closes (returns)."""
        self._was_welcomed = False
        options = list(OPTIONS)
        if self.tls is not None:
            if self.tls.server_name:
                options.append(("grpc.ssl_target_name_override", self.tls.server_name))
            channel = grpc.aio.secure_channel(address, self.tls.credentials(), options)
        else:
            channel = grpc.aio.insecure_channel(address, options)
        call: Call = pb_grpc.AnalyzerStub(channel).Connect()
        try:
            await asyncio.wait_for(self._handshake(address, call), self.connect_timeout)
            self._was_welcomed = True
            tasks = {asyncio.create_task(self._send(call)), asyncio.create_task(self._receive(call))}
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if self._closing.is_set():
                return
            for t in done:
                if t.cancelled():
                    raise ConnectionError("the stream was cancelled")
                t.result()
        finally:
            self._lost()
            call.cancel()
            await channel.close()

    async def _handshake(self, address: str, call: Call) -> None:
        try:
            await call.write(codec.hello_message(PROTOCOL_VERSION, self.host_id, self.token, SOFTWARE))
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            if exc.code() in REJECTIONS:
                raise AnalyzerRejected(address, exc.code(), exc.details() or "") from None
            raise
        if first is grpc.aio.EOF or not isinstance(first, pb.AnalyzerMessage):
            raise ConnectionError("the analyzer ended the stream before its Welcome")
        if first.WhichOneof("body") != "welcome":
            raise ConnectionError(f"expected Welcome, got {first.WhichOneof('body')}")
        self.address = address
        self.counters.connects += 1
        # From here on the graph's changes are queued; the Sync (made by the sender
        # before any of them) carries everything up to that moment.
        self._mutations.clear()
        self._accepting = True
        self._resync = True
        self._connected.set()
        log.info("agent %s: connected to analyzer %s (%s)", self.host_id, address,
                 first.welcome.software or "unknown software")

    def _lost(self) -> None:
        """The stream is over: stop queueing mutations; re-queue unacknowledged flows first."""
        self._accepting = False
        self._connected.clear()
        self.address = ""
        self._mutations.clear()
        again = [(b.capture_id, f) for b in self._inflight for f in b.flows]
        self._inflight.clear()
        self._flows.extendleft(reversed(again))

    async def _send(self, call: Call) -> None:
        seq = 0
        while True:
            if self._resync:
                self._resync = False
                nodes, edges = self.snapshot()
                self._mutations.clear()
                for msg in codec.sync_messages(nodes, edges):
                    await call.write(msg)
                self.counters.syncs += 1
            elif self._mutations:
                changes = [self._mutations.popleft()
                           for _ in range(min(len(self._mutations), MAX_MUTATIONS_PER_MESSAGE))]
                for msg in codec.mutations_messages(changes):
                    await call.write(msg)
                self.counters.mutations_sent += len(changes)
            elif self._stats:
                stats = list(self._stats.values())
                self._stats.clear()
                for s in stats:
                    await call.write(codec.stats_message(s))
            elif self._flows:
                seq += 1
                batch = self._take_flows(seq)
                self._inflight.append(batch)
                self.counters.flows_sent += len(batch.flows)
                await call.write(codec.flows_message(seq, batch.capture_id, list(batch.flows)))
            else:
                self._wake.clear()
                await self._wake.wait()

    def _take_flows(self, seq: int) -> _Batch:
        """The next flows of one capture, up to one message's worth."""
        capture_id = self._flows[0][0]
        out: deque[bytes] = deque()
        size = 0
        while (self._flows and self._flows[0][0] == capture_id and len(out) < MAX_FLOWS_PER_MESSAGE
               and (not out or size + len(self._flows[0][1]) <= codec.CHUNK_BYTES)):
            data = self._flows.popleft()[1]
            out.append(data)
            size += len(data) + 4
        return _Batch(seq, capture_id, out)

    async def _receive(self, call: Call) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF or not isinstance(msg, pb.AnalyzerMessage):
                raise ConnectionError("the analyzer ended the stream")
            kind = msg.WhichOneof("body")
            if kind == "flows_ack":
                self._ack(msg.flows_ack.seq)
            elif kind in COMMANDS:
                try:
                    self._commands.put_nowait(codec.command_from_pb(msg))
                except codec.CodecError as exc:
                    log.warning("agent %s: bad command from analyzer %s: %s", self.host_id,
                                self.address, exc)

    def _ack(self, seq: int) -> None:
        while self._inflight and self._inflight[0].seq <= seq:
            batch = self._inflight.popleft()
            self._held -= len(batch.flows)
            self.counters.flows_acked += len(batch.flows)

    async def _dispatch_commands(self) -> None:
        while True:
            command = await self._commands.get()
            try:
                await self.on_command(command)
            except Exception:
                log.exception("agent %s: command %s failed", self.host_id, command)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _replaced(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.ABORTED
