"""Live capture: one afpacket capture on one node, packets in, flows out on ticks.

Owns what a capture asks of a node before it starts (SPEC §1b: up, `Name`,
`EncapType`, `TID`, a capture-capable `Type`; errors name the node and the
reason), the capture's first layer from `EncapType`, the effective BPF that
keeps skygraph's own traffic out (`(<user BPF>) and not (host A and port P)
...`), and the reader thread: TPACKET_V3 blocks from the ring (`afpacket`)
fed to the capture's flow table in batches (`fastpath`), the table ticked
by the wall clock so flows leave on update/expire ticks, never per packet.

Threads: `start()` opens the ring (from a thread inside the node's network
namespace) and starts one reader thread per capture.  The `sink` is called
*from the reader thread* with every batch of flows the table emits (update
and expire ticks, and the final flush when the capture stops); a caller on an
event loop hops back to it (`loop.call_soon_threadsafe`).  `stop()` blocks
until the reader has flushed the table into the sink and closed the ring.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skygraph.capture.afpacket import Batch, Ring, RingError, RingGeometry, pcap_info
from skygraph.capture.bpf import BPFError, compile_filter
from skygraph.capture.decoder import LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW
from skygraph.capture.fastpath import FastPath
from skygraph.capture.options import CaptureOptions, OptionError, TableSettings
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow
from skygraph.topology.netns import run_in

log = logging.getLogger("skygraph.capture.live")

DEFAULT_CAPTURE_LENGTH = 256  # HeaderSize 0 (flow/probes DefaultCaptureLength)
MIN_CAPTURE_LENGTH, MAX_CAPTURE_LENGTH = 14, 4096
# Capture types served by the TPACKET ring: afpacket, and pcap (on Linux libpcap
# itself reads a TPACKET_V3 ring); "" is the default type of these nodes.
LIVE_TYPES = frozenset({"", "afpacket", "pcap"})
# Node types afpacket can capture on (flow/probes/probes.go, SPEC §1b).
CAPTURE_NODE_TYPES = frozenset({
    "internal", "veth", "tun", "bridge", "dummy", "gre", "bond", "can", "hsr", "ifb", "macvlan",
    "macvtap", "vlan", "vxlan", "gretap", "ip6gretap", "geneve", "ipoib", "vcan", "ipip",
    "ipvlan", "lowpan", "ip6tnl", "ip6gre", "sit", "device",
})
# EncapType -> pcap link type of the first layer (flow/probes/afpacket.go).
ENCAP_LINK_TYPES: Mapping[str, int] = {
    "ether": LINKTYPE_ETHERNET,
    "none": LINKTYPE_RAW, "gre": LINKTYPE_RAW,  # raw IP: v4/v6 by version nibble, else ARP
    "sit": LINKTYPE_IPV4, "ipip": LINKTYPE_IPV4,
    "tunnel6": LINKTYPE_IPV6, "gre6": LINKTYPE_IPV6,
}
NODE_DOWN = "Can't start capture on node down"
MAX_WAIT_MS = 500  # longest sleep of the reader between two looks at the clock

Sink = Callable[[list[Flow]], None]
Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class CaptureError(Exception):
    """A capture could not start or run on a node; the message names node and reason."""

    def __init__(self, node_id: str, name: str, reason: str) -> None:
        where = f"node {node_id}" + (f" ({name})" if name else "")
        super().__init__(f"capture on {where}: {reason}")
        self.node_id = node_id
        self.reason = reason


# ---- pure parts --------------------------------------------------------------------
def link_type_for(encap_type: str) -> int:
    """First layer of a capture from the node's `EncapType` (unknown: Ethernet)."""
    return ENCAP_LINK_TYPES.get(encap_type, LINKTYPE_ETHERNET)


def effective_filter(user: str, exclude: Sequence[tuple[str, int]],
                     inbound_only: bool = False) -> str:
    """The user's BPF with skygraph's own connections excluded (flow/probes/bpf.go):
    `not (host A and port P)` per endpoint, `not host A` when its port is 0.
    `inbound_only` (loopback): AF_PACKET sees every loopback packet twice, going
    out and coming in; keep one, as libpcap does (`inbound` = the kernel's
    pkt_type is not PACKET_OUTGOING)."""
    parts = [f"({user})"] if user.strip() else []
    for host, port in exclude:
        parts.append(f"not host {host}" if not port else f"not (host {host} and port {port})")
    if inbound_only:
        parts.append("inbound")
    return " and ".join(parts)


def parse_target(target: str) -> tuple[str, int] | None:
    """A capture `Target` (`ip:port`, `[v6]:port`) as an excluded endpoint."""
    target = target.strip()
    if not target:
        return None
    host, sep, port = target.rpartition(":")
    if not sep:
        return target, 0
    host = host.strip("[]")
    try:
        return host, int(port)
    except ValueError:
        return target, 0


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """What a live capture uses of a Skydive Capture JSON object."""

    id: str
    type: str
    name: str = ""
    description: str = ""
    bpf_filter: str = ""
    header_size: int = DEFAULT_CAPTURE_LENGTH
    target: str = ""
    options: CaptureOptions = dataclasses.field(default_factory=CaptureOptions)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], base: CaptureOptions | None = None) -> CaptureSpec:
        """Read a Capture; `base` carries the agent's defaults (layer key mode,
        application ports, ...).  Raises `OptionError` naming the bad field."""
        base = base or CaptureOptions()
        ident = str(data.get("UUID") or data.get("ID") or "")
        if not ident:
            raise OptionError("UUID: a capture needs an id")
        size = int(data.get("HeaderSize") or 0)
        if size == 0:
            size = DEFAULT_CAPTURE_LENGTH
        if not MIN_CAPTURE_LENGTH <= size <= MAX_CAPTURE_LENGTH:
            raise OptionError(f"HeaderSize: {size} is outside 0 or "
                              f"{MIN_CAPTURE_LENGTH}..{MAX_CAPTURE_LENGTH}")
        options = dataclasses.replace(
            base,
            layer_key_mode=str(data.get("LayerKeyMode") or base.layer_key_mode),
            extra_layers=int(data.get("ExtraLayers") or 0),
            extra_tcp_metric=bool(data.get("ExtraTCPMetric", False)),
            ip_defrag=bool(data.get("IPDefrag", False)),
            reassemble_tcp=bool(data.get("ReassembleTCP", False)),
            raw_packet_limit=int(data.get("RawPacketLimit") or 0))
        return cls(id=ident, type=str(data.get("Type") or ""), name=str(data.get("Name") or ""),
                   description=str(data.get("Description") or ""),
                   bpf_filter=str(data.get("BPFFilter") or ""), header_size=size,
                   target=str(data.get("Target") or ""), options=options)

    @property
    def effective_type(self) -> str:
        return self.type or "afpacket"


@dataclass(frozen=True, slots=True)
class CaptureNode:
    """The node a capture runs on: what the capture needs of its metadata."""

    id: str
    name: str
    type: str
    encap_type: str
    tid: str
    if_index: int  # 0: unknown, looked up by name in the namespace
    netns: str | None  # namespace file; None: the agent's own namespace

    @classmethod
    def from_metadata(cls, node_id: str, metadata: Mapping[str, Any],
                      netns: str | None) -> CaptureNode:
        """Check the node can be captured on (SPEC §1b) or raise `CaptureError`."""
        name = str(metadata.get("Name") or "")

        def refuse(reason: str) -> CaptureError:
            return CaptureError(node_id, name, reason)

        for key in ("Name", "EncapType", "TID"):
            if not metadata.get(key):
                raise refuse(f"the node has no {key}")
        node_type = str(metadata.get("Type") or "")
        if node_type not in CAPTURE_NODE_TYPES:
            raise refuse(f"afpacket cannot capture on a node of Type {node_type!r}")
        flags = metadata.get("LinkFlags") or []
        if not isinstance(flags, (list, tuple)) or "UP" not in flags:
            raise refuse(NODE_DOWN)
        try:
            if_index = int(metadata.get("IfIndex") or 0)
        except (TypeError, ValueError):
            if_index = 0
        return cls(node_id, name, node_type, str(metadata["EncapType"]), str(metadata["TID"]),
                   if_index, netns)


@dataclass(frozen=True, slots=True)
class CaptureStats:
    packets_received: int = 0  # kernel: passed the filter (drops included, like libpcap)
    packets_dropped: int = 0  # kernel: ring full
    packets_if_dropped: int = 0  # interface drops: not reported by afpacket
    flow_dropped: int = 0  # flows evicted by the table's LRU cap
    flow_count: int = 0


# ---- the capture ------------------------------------------------------------------------
class LiveCapture:
    """One afpacket capture on one node.  Construct (checks the spec and the node),
    `start()` (opens the ring, starts the reader), `stop()` (final flows, close)."""

    def __init__(self, capture: Mapping[str, Any] | CaptureSpec, node_id: str,
                 metadata: Mapping[str, Any], netns: str | None, settings: TableSettings,
                 exclude: Sequence[tuple[str, int]], sink: Sink, *,
                 options: CaptureOptions | None = None, clock: Clock = wall_clock_ms,
                 geometry: RingGeometry | None = None) -> None:
        name = str(metadata.get("Name") or "")
        try:
            self.spec = (capture if isinstance(capture, CaptureSpec)
                         else CaptureSpec.from_json(capture, options))
        except (OptionError, TypeError, ValueError) as exc:
            raise CaptureError(node_id, name, str(exc)) from exc
        if self.spec.type not in LIVE_TYPES:
            raise CaptureError(node_id, name, f"capture type {self.spec.type!r} is not served "
                                              f"by the afpacket ring")
        self.node = CaptureNode.from_metadata(node_id, metadata, netns)
        self.settings = settings
        self.link_type = link_type_for(self.node.encap_type)
        target = parse_target(self.spec.target)
        self.exclude = [*exclude, *([target] if target else [])]
        self.bpf = effective_filter(self.spec.bpf_filter, self.exclude,
                                    inbound_only=self.node.encap_type == "loopback")
        self.error: str | None = None  # why the reader ended early (None: it did not)
        self._sink = sink
        self._clock = clock
        self._geometry = geometry or RingGeometry()
        self._table = FlowTable(self.spec.options, settings, self.node.tid, self.link_type)
        self._fast = FastPath(self._table)
        self._info = pcap_info(self.link_type, self.spec.header_size)
        self._ring: Ring | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._last = CaptureStats()

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _fail(self, reason: str) -> CaptureError:
        return CaptureError(self.node.id, self.node.name, reason)

    # ---- start / stop --------------------------------------------------------
    def start(self) -> None:
        """Compile the BPF, open the ring in the node's namespace, start the reader
        (blocking: a subprocess and a namespace switch).  Raises `CaptureError`."""
        if self._thread is not None:
            return
        try:
            program = compile_filter(self.bpf, self.link_type, self.spec.header_size)
        except BPFError as exc:
            raise self._fail(str(exc)) from exc
        except (OSError, subprocess.SubprocessError) as exc:
            raise self._fail(f"BPF filter {self.bpf!r} not compiled: {exc}") from exc
        netns = self.node.netns
        if netns is not None and not os.path.exists(netns):
            raise self._fail(f"its namespace {netns} is gone")
        try:
            ifindex = run_in(netns, self._resolve_index)
            self._ring = Ring.open(netns, ifindex, program.pack(), self._geometry,
                                   link_header=self.link_type == LINKTYPE_ETHERNET)
        except CaptureError:
            raise
        except RingError as exc:
            raise self._fail(f"cannot open the capture ring: {exc.strerror}") from exc
        except OSError as exc:
            where = f" in namespace {netns}" if netns else ""
            raise self._fail(f"{exc.strerror or exc}{where}") from exc
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"capture {self.spec.id[:8]} {self.node.name}")
        self._thread.start()

    def _resolve_index(self) -> int:
        """The interface's index in its namespace (called inside that namespace)."""
        name = self.node.name
        where = f"namespace {self.node.netns}" if self.node.netns else "the agent's namespace"
        if self.node.if_index:
            try:
                if socket.if_indextoname(self.node.if_index) == name:
                    return self.node.if_index
            except OSError:
                pass
        try:
            return socket.if_nametoindex(name)
        except OSError:
            raise self._fail(f"no interface {name} in {where}") from None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, emit the table's remaining flows to the sink, close the ring."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        if self._ring is not None:
            self._ring.wakeup()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("capture %s on %s: reader still running after %.0fs",
                            self.spec.id, self.node.id, timeout)

    # ---- statistics ------------------------------------------------------------
    def stats(self) -> CaptureStats:
        ring = self._ring
        if ring is not None:
            try:
                k = ring.stats()
                self._last = CaptureStats(k.packets, k.drops, 0, self._table.dropped,
                                          len(self._table))
            except OSError:
                pass
        return self._last

    # ---- the reader thread --------------------------------------------------------
    def _emit(self, flows: list[Flow]) -> None:
        if not flows:
            return
        for f in flows:
            f.capture_id = self.spec.id
        try:
            self._sink(flows)
        except Exception:
            log.exception("capture %s on %s: flow sink failed", self.spec.id, self.node.id)

    def _feed(self, batch: Batch) -> None:
        if batch.count:
            self._fast.run_blocks((batch.block,), self._info, self._emit)

    def _drain(self, ring: Ring) -> None:
        """Read the ready blocks, at most one ring's worth (then look at the clock)."""
        for _ in range(self._geometry.block_nr):
            batch = ring.next_batch()
            if batch is None:
                return
            self._feed(batch)

    def _run(self) -> None:
        ring = self._ring
        assert ring is not None
        table = self._table
        clock = self._clock
        try:
            table.tick(clock())  # arms the update/expire ticks from now
            while not self._stopping.is_set():
                self._drain(ring)
                now = clock()
                due = table.next_due()
                if due is not None and now >= due:
                    self._emit(table.tick(now))
                    continue
                wait = MAX_WAIT_MS if due is None else min(due - now, MAX_WAIT_MS)
                ring.wait(wait)
                # ENETDOWN comes when the interface goes down; its removal later only
                # unbinds the socket (no second error), so look again on every round.
                if ring.socket_error and ring.interface_gone():
                    self.error = f"interface {self.node.name} was removed"
                    break
            # Packets sit in the kernel's current block until it is retired (at most
            # two retire periods once it holds a packet): wait for it, then read it.
            time.sleep(2 * self._geometry.retire_ms / 1000 + 0.005)
            self._drain(ring)
        except Exception as exc:
            log.exception("capture %s on %s: reader failed", self.spec.id, self.node.id)
            self.error = f"capture failed: {exc}"
        finally:
            try:
                self._emit(table.flush())
            finally:
                ring.close()
                self.stats()
