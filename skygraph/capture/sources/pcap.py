"""The `pcap` capture type: a libpcap live handle on the node's interface.

Owns the handle's life for one capture: opened (`pcap_create`/`activate`) by
a thread inside the node's namespace, snaplen = the capture's `HeaderSize`,
nanosecond timestamps, the effective BPF (the user's filter with skygraph's
own traffic excluded) compiled and set by libpcap itself (a filter libpcap
rejects is refused with libpcap's message), and the reader: packets
dispatched in batches into a block of pcap records for the pipeline's batch
path, libpcap's `ps_recv`/`ps_drop`/`ps_ifdrop` as the counters.  Node
requirements are afpacket's (SPEC §1b).

libpcap reads its interface counters (`ps_ifdrop`) from /sys/class/net,
which shows the agent's namespace: for an interface in another namespace
that counter stays 0.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import time
from typing import Any

import numpy as np

from skygraph.capture.afpacket import NATIVE_ORDER
from skygraph.capture.libpcap import Handle, PcapError
from skygraph.capture.pcapfile import Block, PcapInfo
from skygraph.capture.sources.base import CaptureNode, SourceContext, effective_filter
from skygraph.capture.sources.pipeline import Pipeline, Reader, WakePipe, excluded, open_target
from skygraph.topology.netns import run_in

RETIRE_MS = 20  # libpcap's read timeout: how long a packet may wait in a ring block
MAX_DISPATCH = 64  # dispatch rounds per read before looking at the clock
_RECORD = struct.Struct(NATIVE_ORDER + "IIII")


class PcapSource(Reader):
    """One libpcap capture on one node."""

    kind = "pcap"

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.node = CaptureNode.from_metadata(ctx.node_id, ctx.metadata, ctx.netns, self.kind)
        self.exclude = excluded(ctx)
        self.bpf = effective_filter(self.spec.bpf_filter, self.exclude)
        self._handle: Handle | None = None
        self._info: PcapInfo | None = None
        self._final: tuple[int, int, int] | None = None
        self._wake = WakePipe()
        self._poll: Any = None
        self._parts: list[bytes] = []
        self._offsets: list[int] = []
        self._size = 0
        self._gone: str | None = None

    def thread_name(self) -> str:
        return f"capture {self.spec.id[:8]} pcap {self.node.name}"

    # ---- Reader --------------------------------------------------------------------
    def _open(self) -> None:
        netns = self.node.netns
        if netns is not None and not os.path.exists(netns):
            raise self._fail(f"its namespace {netns} is gone")
        try:
            handle = run_in(netns, lambda: Handle.open(self.node.name, self.spec.header_size,
                                                       RETIRE_MS))
        except PcapError as exc:
            raise self._fail(str(exc)) from exc
        except OSError as exc:
            raise self._fail(f"{exc.strerror or exc}") from exc
        try:
            try:
                handle.set_filter(self.bpf)
            except PcapError as exc:
                raise self._fail(f"BPF filter {self.bpf!r}: {exc}") from exc
            target = open_target(self.ctx, self.node, handle.link_type)
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        self._info = PcapInfo(handle.link_type, self.spec.header_size, nanosecond=True,
                              byte_order=NATIVE_ORDER, header_size=0)
        self.pipeline = Pipeline(self.ctx, self.node.tid, handle.link_type, target)
        self._wake.open()
        self._poll = select.poll()
        self._poll.register(handle.fileno(), select.POLLIN | select.POLLERR)
        self._poll.register(self._wake.fd, select.POLLIN)

    def _collect(self, ts_ns: int, data: bytes, wire_length: int) -> None:
        sec, nsec = divmod(ts_ns, 1_000_000_000)
        self._offsets.append(self._size)
        self._parts.append(_RECORD.pack(sec, nsec, len(data), wire_length))
        self._parts.append(data)
        self._size += _RECORD.size + len(data)

    def _read(self) -> None:
        handle = self._handle
        assert handle is not None and self.pipeline is not None and self._info is not None
        try:
            for _ in range(MAX_DISPATCH):
                if handle.dispatch(self._collect) == 0:
                    break
        except PcapError as exc:  # e.g. the interface went down or away
            self._gone = f"libpcap: {exc}"
        if self._offsets:
            block = Block(b"".join(self._parts), np.array(self._offsets, dtype=np.int64))
            self._parts, self._offsets, self._size = [], [], 0
            self.pipeline.feed_block(block, self._info)

    def _wait(self, timeout_ms: int) -> None:
        for fd, _events in self._poll.poll(max(0, timeout_ms)):
            if fd == self._wake.fd:
                self._wake.drain()

    def _ended(self) -> str | None:
        return self._gone

    def _drain_final(self) -> None:
        time.sleep(2 * RETIRE_MS / 1000 + 0.005)  # the last ring block is retired by then
        self._read()

    def _wakeup(self) -> None:
        self._wake.wake()

    def _close(self) -> None:
        handle = self._handle
        if handle is not None and not handle.closed:
            with contextlib.suppress(OSError):
                self._final = handle.stats()
            handle.close()
        self._wake.close()

    def _counters(self) -> tuple[int, int, int] | None:
        handle = self._handle
        if handle is None:
            return None
        if handle.closed:
            return self._final
        return handle.stats()


def make(ctx: SourceContext) -> PcapSource:
    return PcapSource(ctx)
