"""The `pcapsocket` capture type: the agent accepts pcap streams on a TCP port.

Owns the listener (the agent's `agent.capture.pcapsocket_bind`, the first
free port of `agent.capture.pcapsocket_ports`, Skydive's 127.0.0.1 and
8100..8132; published as `Captures[].PCAPSocket`), and the reader: one
connection at a time (others wait in the backlog), each a classic pcap
stream (`cat file.pcap | nc host port`) run through the capture's BPF, in
userspace, into a flow table of its own, driven by the packets' timestamps
as `skygraph flows FILE.pcap` is, so a streamed file gives the flows the
offline path gives; the stream's flows go to the sink when it closes.
(Skydive replays the stream in real time and rewrites the timestamps to
now; skygraph keeps the trace's time, as its pcap import does.)  A corrupt
stream is dropped with a log line; the capture keeps listening.

`PacketsReceived` counts the packets read from streams (before the BPF).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
from typing import Any

from skygraph.capture.decoder import LINKTYPE_ETHERNET
from skygraph.capture.pcapfile import PcapError
from skygraph.capture.pcapstream import PcapStream
from skygraph.capture.sources.base import CaptureNode, SourceContext, Target
from skygraph.capture.sources.pipeline import MAX_WAIT_MS, Pipeline, Reader, WakePipe, open_target
from skygraph.capture.table import PacketFilter

log = logging.getLogger("skygraph.capture.pcapsocket")

RECV_SIZE = 1 << 20
BACKLOG = 8


def listen_tcp(address: str, ports: tuple[int, int]) -> socket.socket:
    """A TCP listener on the first free port of `ports` (inclusive); OSError when
    none is free, naming the range."""
    first, last = ports
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for port in range(first, last + 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise OSError(exc.errno, f"{address}:{port}: {exc.strerror}") from None
        return sock
    raise OSError(errno.EADDRINUSE, f"no free TCP port on {address} in {first}-{last}")


def format_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PcapSocketSource(Reader):
    """One pcapsocket capture: a TCP listener fed with pcap streams."""

    kind = "pcapsocket"

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        # Skydive asks only for a TID: the node is where the flows are attached.
        self.node = CaptureNode.from_metadata(ctx.node_id, ctx.metadata, ctx.netns, self.kind,
                                              require=("TID",), node_types=None,
                                              require_up=False)
        self.address = ""
        self.streams = 0  # streams completed
        self.stream_errors = 0
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._stream: PcapStream | None = None
        self._target: Target | None = None
        self._packets = 0
        self._wake = WakePipe()

    def thread_name(self) -> str:
        return f"capture {self.spec.id[:8]} pcapsocket {self.address}"

    def metadata(self) -> dict[str, Any]:
        return {"PCAPSocket": self.address} if self.address else {}

    # ---- Reader ------------------------------------------------------------------
    def _open(self) -> None:
        self._program(LINKTYPE_ETHERNET)  # a bad filter is refused now, not per stream
        agent = self.ctx.agent
        try:
            listener = listen_tcp(agent.pcapsocket_bind, agent.pcapsocket_ports)
        except OSError as exc:
            raise self._fail(f"pcapsocket listener (agent.capture.pcapsocket_bind/_ports): "
                             f"{exc.strerror or exc}") from exc
        try:
            self._target = open_target(self.ctx, self.node, LINKTYPE_ETHERNET)
        except BaseException:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self.address = format_address(listener)
        self._wake.open()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wait(MAX_WAIT_MS)
        except Exception as exc:
            log.exception("capture %s on %s: pcapsocket reader failed", self.spec.id,
                          self.ctx.node_id)
            self.error = f"capture failed: {exc}"
        finally:
            self._end_stream(complete=False)
            self._close()

    def _wait(self, timeout_ms: int) -> None:
        listener = self._listener
        assert listener is not None
        sock = self._conn if self._conn is not None else listener
        watched = [self._wake.fd, sock.fileno()]
        ready, _, _ = select.select(watched, [], [], timeout_ms / 1000)
        if self._wake.fd in ready:
            self._wake.drain()
        if self._stopping.is_set():
            return
        if sock.fileno() not in ready:
            return
        if self._conn is None:
            self._accept(listener)
        else:
            self._receive(self._conn)

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self._conn = conn
        self._stream = PcapStream(f"pcap stream from {peer[0]}:{peer[1]}")
        log.info("capture %s: pcap stream from %s:%s", self.spec.id, peer[0], peer[1])

    def _receive(self, conn: socket.socket) -> None:
        stream = self._stream
        assert stream is not None
        try:
            chunk = conn.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("capture %s: %s: %s", self.spec.id, stream.name, exc)
            self._end_stream(complete=False)
            return
        if not chunk:
            self._end_stream(complete=True)
            return
        try:
            block = stream.feed(chunk)
            if block is not None:
                assert stream.info is not None
                if self.pipeline is None:
                    self.pipeline = Pipeline(self.ctx, self.node.tid, stream.info.link_type,
                                             self._target, self._filter(stream.info.link_type))
                self._packets += len(block.offsets)
                self.pipeline.feed_block(block, stream.info)
        except PcapError as exc:
            log.warning("capture %s: %s", self.spec.id, exc)
            self.stream_errors += 1
            self._end_stream(complete=False)

    def _filter(self, link_type: int) -> PacketFilter | None:
        try:
            program = self._program(link_type)
        except Exception as exc:  # this link type has no filter: nothing passes
            log.warning("capture %s: %s", self.spec.id, exc)
            return lambda data: False
        return program.matches if program is not None else None

    def _end_stream(self, complete: bool) -> None:
        """The stream's flows go out; the connection is closed."""
        stream, conn, pipe = self._stream, self._conn, self.pipeline
        self._stream = self._conn = None
        if stream is not None and complete:
            try:
                stream.end()
                self.streams += 1
            except PcapError as exc:
                log.warning("capture %s: %s", self.spec.id, exc)
                self.stream_errors += 1
        if pipe is not None:
            pipe.flush()
            self.pipeline = None  # the next stream gets a fresh table (and its link type)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def _wakeup(self) -> None:
        self._wake.wake()

    def _close(self) -> None:
        if self._target is not None:
            try:
                self._target.close()
            except Exception:
                log.exception("capture %s: target close failed", self.spec.id)
            self._target = None
        if self._listener is not None:
            self._listener.close()
        self._wake.close()

    def _counters(self) -> tuple[int, int, int] | None:
        return self._packets, 0, 0


def make(ctx: SourceContext) -> PcapSocketSource:
    return PcapSocketSource(ctx)
