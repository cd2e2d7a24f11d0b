"""The `sflow` capture type: the agent is an sFlow v5 collector for the node.

Owns the collector of one capture (flow/probes/sflow, SPEC §1b): a UDP
socket opened in the node's namespace on the node's IPv4 address (0.0.0.0
when it has several) and the capture's `Port` (default 6343), published as
`Captures[].SFlowSocket`; and the reader: each datagram decoded
(`sflow_decode`, never raising), the raw packet headers of its flow samples
cut to `HeaderSize`, passed through the capture's BPF (userspace, per header
protocol) and fed to the flow table with their wire length (FrameLength -
PayloadRemoved) and the time of arrival, through the same decoder and
tunnel splitting as any capture; counter samples accumulated into the
node's `SFlow` metadata (`sflow_counters`), written at most once a second
and removed when the capture stops.  Malformed datagrams are counted
(`decode_errors`, `last_error`) and logged at most every 10 s.

`PacketsReceived` counts the sampled packet headers received.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
from typing import Any

from skygraph.capture.decoder import LINKTYPE_ETHERNET
from skygraph.capture.sflow_counters import SFlowCounters
from skygraph.capture.sflow_decode import HEADER_LINK_TYPES, decode
from skygraph.capture.sources.base import CAPTURE_NODE_TYPES, CaptureNode, SourceContext
from skygraph.capture.sources.pipeline import Pipeline, Reader, WakePipe, open_target
from skygraph.topology.netns import run_in

log = logging.getLogger("skygraph.capture.sflow")

MAX_DATAGRAM = 65535
MAX_BATCH = 256  # datagrams per read before looking at the clock
PUBLISH_MS = 1000  # at most one `SFlow` metadata write per second
LOG_EVERY_MS = 10_000
RECV_BUFFER = 4 << 20


def listen_address(node: CaptureNode) -> str:
    """The node's IPv4 address when it has exactly one, else 0.0.0.0 (Skydive)."""
    if len(node.ipv4) == 1:
        return node.ipv4[0].split("/")[0]
    return "0.0.0.0"


class SFlowSource(Reader):
    """One sFlow collector capture on one node."""

    kind = "sflow"

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.node = CaptureNode.from_metadata(ctx.node_id, ctx.metadata, ctx.netns, self.kind,
                                              require=("TID",), node_types=CAPTURE_NODE_TYPES,
                                              require_up=False)
        if not self.node.ipv4:
            raise ctx.error("the node has no IPV4 address for the sFlow collector to listen on")
        self.address = ""
        self.counters = SFlowCounters()
        self.datagrams = 0
        self.flow_samples = 0
        self.counter_samples = 0
        self.decode_errors = 0
        self.skipped = 0  # samples, records and headers of formats not read
        self.last_error = ""
        self._headers = 0
        self._sock: socket.socket | None = None
        self._dirty = False
        self._published = 0
        self._logged_errors = 0
        self._logged_at = 0
        self._wake = WakePipe()
        self._unfilterable: set[int] = set()  # first layers the user's BPF cannot compile for

    def thread_name(self) -> str:
        return f"capture {self.spec.id[:8]} sflow {self.address}"

    def metadata(self) -> dict[str, Any]:
        return {"SFlowSocket": self.address} if self.address else {}

    # ---- Reader ------------------------------------------------------------------------
    def _open(self) -> None:
        self._program(LINKTYPE_ETHERNET)  # a bad filter is refused now
        host = listen_address(self.node)
        port = self.spec.port or self.ctx.agent.sflow_default_port
        netns = self.node.netns
        if netns is not None and not os.path.exists(netns):
            raise self._fail(f"its namespace {netns} is gone")

        def bind() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
                sock.bind((host, port))
            except BaseException:
                sock.close()
                raise
            return sock

        try:
            sock = run_in(netns, bind)
        except OSError as exc:
            where = f" in namespace {netns}" if netns else ""
            raise self._fail(f"sFlow collector on {host}:{port}{where}: "
                             f"{exc.strerror or exc}") from exc
        try:
            target = open_target(self.ctx, self.node, LINKTYPE_ETHERNET)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self.address = f"{host}:{sock.getsockname()[1]}"
        self.pipeline = Pipeline(self.ctx, self.node.tid, LINKTYPE_ETHERNET, target)
        self._wake.open()

    def _read(self) -> None:
        sock, pipe = self._sock, self.pipeline
        assert sock is not None and pipe is not None
        clock = self.ctx.clock
        for _ in range(MAX_BATCH):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            now = clock()
            self._datagram(data, now, pipe)
        self._publish(clock())

    def _datagram(self, data: bytes, now_ms: int, pipe: Pipeline) -> None:
        self.datagrams += 1
        dgram = decode(data)
        self.skipped += dgram.skipped
        if dgram.error:
            self.decode_errors += 1
            self.last_error = dgram.error
            self._log_errors(now_ms)
        self.flow_samples += len(dgram.flow_samples)
        self.counter_samples += len(dgram.counter_samples)
        ts_ns = now_ms * 1_000_000
        size = self.spec.header_size
        for sample in dgram.flow_samples:
            for header in sample.headers:
                link_type = HEADER_LINK_TYPES.get(header.protocol)
                if link_type is None:
                    self.skipped += 1
                    continue
                self._headers += 1
                frame = header.header[:size]
                wire = header.wire_length
                if link_type in self._unfilterable:
                    continue
                try:
                    program = self._program(link_type)
                except Exception as exc:  # no filter for this first layer: nothing passes
                    log.warning("capture %s: %s", self.spec.id, exc)
                    self._unfilterable.add(link_type)
                    continue
                if program is not None and not program.matches(frame, wire):
                    continue
                pipe.feed(frame, ts_ns, wire, link_type)
        if dgram.counter_samples and self.counters.update(dgram.counter_samples, now_ms):
            self._dirty = True

    def _log_errors(self, now_ms: int) -> None:
        if now_ms - self._logged_at < LOG_EVERY_MS:
            return
        log.warning("capture %s: %d malformed sFlow datagrams (%d in all; last: %s)",
                    self.spec.id, self.decode_errors - self._logged_errors, self.decode_errors,
                    self.last_error)
        self._logged_at, self._logged_errors = now_ms, self.decode_errors

    def _publish(self, now_ms: int) -> None:
        if self._dirty and now_ms - self._published >= PUBLISH_MS:
            self._dirty = False
            self._published = now_ms
            self.ctx.set_metadata("SFlow", self.counters.metadata())

    def _wait(self, timeout_ms: int) -> None:
        assert self._sock is not None
        ready, _, _ = select.select([self._sock.fileno(), self._wake.fd], [], [],
                                    max(timeout_ms, 0) / 1000)
        if self._wake.fd in ready:
            self._wake.drain()

    def _wakeup(self) -> None:
        self._wake.wake()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._wake.close()
        if self._published or self._dirty:
            self.ctx.set_metadata("SFlow", None)  # Skydive removes it with the collector

    def _counters(self) -> tuple[int, int, int] | None:
        return self._headers, 0, 0


def make(ctx: SourceContext) -> SFlowSource:
    return SFlowSource(ctx)
