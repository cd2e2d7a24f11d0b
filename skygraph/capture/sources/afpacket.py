"""The `afpacket` capture type: a TPACKET_V3 ring on the node's interface.

Owns what afpacket asks of a node before it starts (SPEC §1b: up, `Name`,
`EncapType`, `TID`, a capture-capable `Type`), the first layer from
`EncapType`, the kernel BPF (the user's filter with skygraph's own traffic
excluded; on loopback only inbound packets, as libpcap keeps one copy), and
the reader: ring blocks fed to the pipeline in batches (`fastpath`), kernel
counters from `PACKET_STATISTICS`.  The ring itself is `capture.afpacket`.

A capture may run on several readers (`Workers`, else `agent.capture.workers`):
one ring and thread each, in one PACKET_FANOUT group whose hash
(`capture.fanout`) gives all the packets of a flow -- both directions, and a
tunnel's inner flows with their outer one -- to the same reader, so each
reader's flow table is a shard holding whole flows (`flow.max_entries` split
between them) and their flows go to the sink as they are, no merge needed.
The first reader starts the group and owns the others (its peers): it starts,
stops and counts for all.  A capture with a target keeps one reader (one
exporter and its sequence numbers).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from typing import Any

from skygraph.capture.afpacket import NEW_GROUP, Ring, RingError, RingGeometry, pcap_info
from skygraph.capture.bpf import BPFError, compile_filter
from skygraph.capture.decoder import LINKTYPE_ETHERNET
from skygraph.capture.sources.base import (
    CaptureError,
    CaptureNode,
    CaptureStats,
    SourceContext,
    effective_filter,
    effective_workers,
    link_type_for,
)
from skygraph.capture.sources.pipeline import Pipeline, Reader, excluded, open_target
from skygraph.topology.netns import run_in

TAKE_BLOCKS = 4  # ring blocks handed to the batch path per call (then given back)
# Capture types served by the TPACKET ring ("" is the default type of these nodes).
RING_TYPES = frozenset({"", "afpacket"})


def interface_index(node: CaptureNode, fail: type[CaptureError] | None = None) -> int:
    """The interface's index in its namespace (call inside that namespace): the
    node's `IfIndex` when it still names this interface, else looked up by name."""
    name = node.name
    if node.if_index:
        try:
            if socket.if_indextoname(node.if_index) == name:
                return node.if_index
        except OSError:
            pass
    try:
        return socket.if_nametoindex(name)
    except OSError:
        where = f"namespace {node.netns}" if node.netns else "the agent's namespace"
        raise CaptureError(node.id, name, f"no interface {name} in {where}") from None


class AfpacketSource(Reader):
    """One afpacket capture on one node.  Construct (checks the spec and the node),
    `start()` (opens the ring, starts the reader), `stop()` (final flows, close)."""

    kind = "afpacket"

    def __init__(self, ctx: SourceContext, geometry: RingGeometry | None = None,
                 shard: int = 0, group: int | None = None) -> None:
        # shard > 0: a peer of the first reader, joining its fanout group `group`
        self.shard = shard
        self.workers = readers(ctx) if shard == 0 else 1
        if self.workers > 1:  # each reader's table holds its share of the flows
            per = -(-ctx.settings.max_entries // self.workers)
            ctx = dataclasses.replace(
                ctx, settings=dataclasses.replace(ctx.settings, max_entries=per))
        self._error: str | None = None
        super().__init__(ctx)
        self._group = group
        self._peers: list[AfpacketSource] = []
        if self.spec.type not in RING_TYPES:
            raise ctx.error(f"capture type {self.spec.type!r} is not served by the afpacket ring")
        self.node = CaptureNode.from_metadata(ctx.node_id, ctx.metadata, ctx.netns, self.kind)
        self.settings = ctx.settings
        self.link_type = link_type_for(self.node.encap_type)
        self.exclude = excluded(ctx)
        self.bpf = effective_filter(self.spec.bpf_filter, self.exclude,
                                    inbound_only=self.node.encap_type == "loopback")
        geo = geometry or ctx.extra.get("geometry")
        self._geometry = (geo if isinstance(geo, RingGeometry)
                          else RingGeometry(block_nr=ctx.agent.ring_blocks))
        self._info = pcap_info(self.link_type, self.spec.header_size)
        self._ring: Ring | None = None

    def thread_name(self) -> str:
        worker = f" #{self.shard}" if self.workers > 1 or self.shard else ""
        return f"capture {self.spec.id[:8]} {self.node.name}{worker}"

    # ---- several readers -------------------------------------------------------------
    @property
    def error(self) -> str | None:
        return self._error or next((p.error for p in self._peers if p.error), None)

    @error.setter
    def error(self, value: str | None) -> None:
        self._error = value

    @property
    def running(self) -> bool:
        return super().running and all(p.running for p in self._peers)

    def start(self) -> None:
        super().start()
        if self.workers == 1:
            return
        assert self._ring is not None
        try:
            for shard in range(1, self.workers):
                peer = AfpacketSource(self.ctx, self._geometry, shard, self._ring.fanout_group)
                self._peers.append(peer)
                peer.start()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        for peer in self._peers:  # all readers stop at once: their final reads overlap
            peer._stopping.set()
            peer._wakeup()
        super().stop(timeout)
        for peer in self._peers:
            peer.stop(timeout)

    def stats(self) -> CaptureStats:
        own = super().stats()
        if not self._peers:
            return own
        total = [dataclasses.astuple(own), *(dataclasses.astuple(p.stats()) for p in self._peers)]
        return CaptureStats(*(sum(column) for column in zip(*total, strict=True)))

    # ---- Reader ----------------------------------------------------------------
    def _open(self) -> None:
        """Compile the BPF, open the ring in the node's namespace (blocking: a
        subprocess and a namespace switch).  Raises `CaptureError`."""
        try:
            program = compile_filter(self.bpf, self.link_type, self.spec.header_size)
        except BPFError as exc:
            raise self._fail(str(exc)) from exc
        except (OSError, subprocess.SubprocessError) as exc:
            raise self._fail(f"BPF filter {self.bpf!r} not compiled: {exc}") from exc
        netns = self.node.netns
        if netns is not None and not os.path.exists(netns):
            raise self._fail(f"its namespace {netns} is gone")
        target = open_target(self.ctx, self.node, self.link_type)
        try:
            ifindex = run_in(netns, lambda: interface_index(self.node))
            fanout = self._group if self.shard else NEW_GROUP if self.workers > 1 else None
            self._ring = Ring.open(netns, ifindex, program.pack(), self._geometry,
                                   link_header=self.link_type == LINKTYPE_ETHERNET,
                                   fanout=fanout)
        except BaseException as exc:
            if target is not None:
                target.close()
            if isinstance(exc, CaptureError):
                raise
            if isinstance(exc, RingError):
                raise self._fail(f"cannot open the capture ring: {exc.strerror}") from exc
            if isinstance(exc, OSError):
                where = f" in namespace {netns}" if netns else ""
                raise self._fail(f"{exc.strerror or exc}{where}") from exc
            raise
        self.pipeline = Pipeline(self.ctx, self.node.tid, self.link_type, target)

    def _read(self) -> None:
        """Read the ready blocks, at most one ring's worth (then look at the clock), a
        few at a time: blocks go back to the kernel as soon as the batch path has
        summed them (a block the reader holds is one the kernel cannot fill), while
        each call's fixed cost is spread over several blocks."""
        ring = self._ring
        assert ring is not None and self.pipeline is not None
        left = self._geometry.block_nr
        while left > 0:
            taken = ring.take(min(left, TAKE_BLOCKS))
            if not taken.taken:
                return
            left -= taken.taken
            try:
                if taken.blocks:
                    self.pipeline.feed_blocks(taken.blocks, self._info)
            finally:
                ring.give_back(taken)

    def _wait(self, timeout_ms: int) -> None:
        assert self._ring is not None
        self._ring.wait(timeout_ms)

    def _ended(self) -> str | None:
        # ENETDOWN comes when the interface goes down; its removal later only
        # unbinds the socket (no second error), so look again on every round.
        ring = self._ring
        if ring is not None and ring.socket_error and ring.interface_gone():
            return f"interface {self.node.name} was removed"
        return None

    def _drain_final(self) -> None:
        # Packets sit in the kernel's current block until it is retired (at most
        # two retire periods once it holds a packet): wait for it, then read it.
        time.sleep(2 * self._geometry.retire_ms / 1000 + 0.005)
        self._read()

    def _wakeup(self) -> None:
        if self._ring is not None:
            self._ring.wakeup()

    def _close(self) -> None:
        if self._ring is not None:
            self._ring.close()

    def _counters(self) -> tuple[int, int, int] | None:
        ring = self._ring
        if ring is None:
            return None
        k = ring.stats()
        return k.packets, k.drops, 0

    def metadata(self) -> dict[str, Any]:
        return {}


def readers(ctx: SourceContext) -> int:
    """How many readers a capture runs on (a capture with a target: one)."""
    return 1 if ctx.spec.has_target else effective_workers(ctx.spec, ctx.agent)


def make(ctx: SourceContext) -> AfpacketSource:
    return AfpacketSource(ctx)
