"""The kernel flow table of the `ebpf` capture type, and its entries as flows.

Owns two things, kept apart:

* `KernelFlows` (pure): kernel map entries -> flows of a `FlowTable` in L3
  key mode.  Each entry carries the first bytes of its first packet; they
  go through the same decoder, `keys()` and `FlowTable.feed_view` as an
  afpacket capture's packets, so TrackingID, L3TrackingID, LayersPath,
  Link/Network/Transport/ICMP and Application are afpacket's, and the UUID
  too when the first packet lands in the same millisecond.  The kernel's
  later counters are added as deltas per direction; several entries may
  feed one flow (ICMP request/reply types the kernel keys apart, VXLAN
  source ports), each mapped to AB/BA with `is_ab` on its own first packet.
  SYN/FIN/RST times, TTLs and RTT marks become RTT, FinishType and
  `TCPMetric`, by `flowstate`'s rules.
* `EbpfProbe` (I/O): the maps and the socket program (`ebpf_prog`) loaded
  through the bpf() system call (`ebpf_sys`), attached with SO_ATTACH_BPF to
  an AF_PACKET socket opened in the node's namespace and bound to the
  interface (the program returns 0: nothing is ever queued to it); `poll`
  reads the map into `KernelFlows`, removing (read and deleted in one step)
  entries idle for `idle_ms` and those whose flow left the table; `counters`
  sums the per-CPU statistics.

The capture type around it (node checks, reader thread, ticks, stats) is
`skygraph.capture.sources.ebpf`.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from skygraph.capture.decoder import LINKTYPE_ETHERNET, DecoderConfig, decode, first_layer
from skygraph.capture.ebpf_asm import Program
from skygraph.capture.ebpf_prog import FLOW_KEY, FLOW_VALUE, STAT_COUNT, STAT_MAP_FULL, STAT_PACKETS
from skygraph.capture.ebpf_sys import (
    F_NO_PREALLOC,
    MAP_TYPE_HASH,
    MAP_TYPE_PERCPU_ARRAY,
    EBPFError,
    Map,
    attach_socket,
    load_program,
    per_cpu_sum,
)
from skygraph.capture.flowkey import keys
from skygraph.capture.flowstate import FlowState, is_ab
from skygraph.capture.packet import View, layers_path, split, view
from skygraph.capture.table import LINK_OR_NETWORK, FlowTable
from skygraph.topology.flow import FinishType
from skygraph.topology.netns import run_in

DEFAULT_IDLE_MS = 5_000  # a kernel entry unchanged this long is read one last time and removed
DEFAULT_KERNEL_ENTRIES = 65_536
ETH_P_ALL = 0x0003
_VLAN_TAG = struct.Struct("!HH")
_U32 = struct.Struct("=I")
_LAST_NS = struct.Struct("=Q")
LAST_NS_AT = FLOW_VALUE.offset("last_ns")
SIGNATURE = FLOW_VALUE.offset("syn0")  # packets, bytes, first and last times

# Builds the socket program from the flow map's and the statistics map's descriptors.
ProgramBuilder = Callable[[int, int], Program]


# ---- pure: kernel entries -> flows ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class KernelEntry:
    """One `flow_value` of the kernel map (index = direction; 0: sent by the key's
    `lo` endpoint).  Times are CLOCK_MONOTONIC nanoseconds."""

    packets: tuple[int, int]
    octets: tuple[int, int]  # bytes
    first_ns: int
    last_ns: int
    syn: tuple[int, int]
    fin: tuple[int, int]
    rst: tuple[int, int]
    rtt_start: int
    rtt_end: int
    syn_ttl: tuple[int, int]
    first_dir: int
    vlan_present: bool
    vlan_tci: int
    vlan_proto: int  # network order as the kernel keeps it
    first_len: int
    tcp_flags: tuple[int, int]
    head: bytes

    @classmethod
    def unpack(cls, raw: bytes) -> KernelEntry:
        (p0, p1, b0, b1, first, last, syn0, syn1, fin0, fin1, rst0, rst1, rtt_start, rtt_end,
         ttl0, ttl1, first_dir, vlan_present, vlan_tci, vlan_proto, head_len, first_len,
         flags0, flags1, head) = FLOW_VALUE.struct.unpack_from(raw)
        return cls((p0, p1), (b0, b1), first, last, (syn0, syn1), (fin0, fin1), (rst0, rst1),
                   rtt_start, rtt_end, (ttl0, ttl1), first_dir & 1, bool(vlan_present),
                   vlan_tci, vlan_proto, first_len, (flags0, flags1), head[:head_len])

    def frame(self, ethernet: bool) -> bytes:
        """The first packet's captured bytes, with a tag the device kept out of the
        frame put back after the MAC addresses (as afpacket does)."""
        if not (ethernet and self.vlan_present and len(self.head) >= 12):
            return self.head
        tpid = socket.ntohs(self.vlan_proto) or 0x8100
        return self.head[:12] + _VLAN_TAG.pack(tpid, self.vlan_tci & 0xFFFF) + self.head[12:]


@dataclass(slots=True)
class _Tracked:
    """What user space remembers of one kernel entry."""

    key: int  # the flow-table key of its flow
    view: View
    path: str
    frame: bytes
    first_ns: int
    ab: tuple[bool, bool] | None = None  # direction d counted AB? (None: not mapped yet)
    seen: tuple[int, int, int, int] = (0, 0, 0, 0)  # packets0/1, bytes0/1 already counted
    last_ns: int = 0
    signature: bytes = b""  # the value's counters and times when last applied


def reverse(v: View) -> View:
    """The view of a packet going the other way (addresses and ports swapped)."""
    eth, ip, t = v.ethernet, v.ip, v.transport
    return v._replace(
        ethernet=eth._replace(src=eth.dst, dst=eth.src) if eth is not None else None,
        ip=ip._replace(src=ip.dst, dst=ip.src) if ip is not None else None,
        transport=t._replace(src_port=t.dst_port, dst_port=t.src_port) if t is not None else None)


class KernelFlows:
    """Kernel entries (key bytes -> `KernelEntry`) accounted into `table` (L3 mode)."""

    def __init__(self, table: FlowTable, link_type: int = LINKTYPE_ETHERNET) -> None:
        if table.opts.l2_mode:
            raise ValueError("eBPF flows are keyed in L3 mode: the table must be too")
        self.table = table
        self.link_type = link_type
        self.undecoded = 0  # entries whose first packet has neither link nor network layer
        self._cfg = DecoderConfig(table.opts.mpls_udp_port)
        self._first = first_layer(link_type)
        self._tracked: dict[bytes, _Tracked] = {}

    def __len__(self) -> int:
        return len(self._tracked)

    def _track(self, entry: KernelEntry) -> _Tracked | None:
        frame = entry.frame(self.link_type == LINKTYPE_ETHERNET)
        layers = decode(frame, self.link_type, self._cfg, self._first)
        if not any(layer.name in LINK_OR_NETWORK for layer in layers):
            return None
        sub = split(layers, entry.first_len)[0]  # the outer flow: the kernel keys on it
        v = view(sub.layers)
        return _Tracked(keys(v, "", False).key, v, layers_path(sub.layers), frame,
                        entry.first_ns)

    def apply(self, kkey: bytes, entry: KernelEntry, offset_ns: int) -> FlowState | None:
        """Account the entry's news; `offset_ns` turns its monotonic times into wall
        clock nanoseconds.  Returns the flow (None: not a flow, or nothing new)."""
        t = self._tracked.get(kkey)
        if t is None or t.first_ns != entry.first_ns:
            t = self._track(entry)
            if t is None:
                self.undecoded += 1
                return None
            self._tracked[kkey] = t
        if entry.packets == t.seen[:2] and entry.last_ns == t.last_ns:
            return None
        table = self.table
        st = table.get(t.key)
        if st is None:
            st = self._create(t, entry, offset_ns)
        if t.ab is None:
            t.ab = self._directions(st, t.view, entry.first_dir)
        f = st.flow
        m = f.metric
        for d in (0, 1):
            packets, octets = entry.packets[d] - t.seen[d], entry.octets[d] - t.seen[2 + d]
            if t.ab[d]:
                m.ab_packets += packets
                m.ab_bytes += octets
            else:
                m.ba_packets += packets
                m.ba_bytes += octets
        last = (entry.last_ns + offset_ns) // 1_000_000
        if last > f.last:
            f.last = m.last = last
        self._marks(st, entry, t.ab, offset_ns)
        st.updated = True
        table.touch(t.key)
        t.seen = (*entry.packets, *entry.octets)
        t.last_ns = entry.last_ns
        return st

    def _directions(self, st: FlowState, v: View, first_dir: int) -> tuple[bool, bool]:
        """Which of an entry's two directions count AB in flow `st`: `is_ab` on its
        first packet and on that packet reversed (so identical endpoints follow
        afpacket's rules too)."""
        opts = self.table.opts
        first, other = is_ab(st, v, opts), is_ab(st, reverse(v), opts)
        return (first, other) if first_dir == 0 else (other, first)

    def _create(self, t: _Tracked, entry: KernelEntry, offset_ns: int) -> FlowState:
        """A flow from the entry's first packet, as afpacket creates one from a packet."""
        table = self.table
        t.ab = None
        if t.seen == (0, 0, 0, 0):  # the entry is new: its first packet starts the flow
            st = table.feed_view(t.view, t.path, entry.first_len, entry.first_ns + offset_ns,
                                 t.frame)
            d = entry.first_dir
            t.seen = (int(d == 0), int(d == 1), entry.first_len * (d == 0),
                      entry.first_len * (d == 1))
        else:
            # The table dropped the flow (expired, evicted) while its entry lived on:
            # a new flow from the entry's headers, counting only what comes next.
            st = table.feed_view(t.view, t.path, 0, t.last_ns + offset_ns, t.frame)
            m = st.flow.metric
            m.ab_packets = m.ab_bytes = m.ba_packets = m.ba_bytes = 0
        return st

    def _marks(self, st: FlowState, entry: KernelEntry, ab: tuple[bool, bool],
               offset_ns: int) -> None:
        """TCP flags ORed per direction, SYN/FIN/RST times, RTT and FinishType
        (flowstate.tcp_flags' rules)."""
        f = st.flow
        tm = f.tcp_metric if self.table.opts.extra_tcp_metric else None

        def ms(ns: int) -> int:
            return (ns + offset_ns) // 1_000_000

        for d in (0, 1):
            side = "ab" if ab[d] else "ba"
            if side == "ab":
                f.ab_tcp_flags |= entry.tcp_flags[d] & 0xFF
            else:
                f.ba_tcp_flags |= entry.tcp_flags[d] & 0xFF
            if entry.fin[d]:
                if side == "ab":
                    st.fin_ab = True
                else:
                    st.fin_ba = True
            if entry.rst[d]:
                f.finish_type = FinishType.TCP_RST
            if tm is None:
                continue
            if entry.syn[d] and not getattr(tm, f"{side}_syn_start"):
                setattr(tm, f"{side}_syn_start", ms(entry.syn[d]))
                setattr(tm, f"{side}_syn_ttl", entry.syn_ttl[d])
            if entry.fin[d] and not getattr(tm, f"{side}_fin_start"):
                setattr(tm, f"{side}_fin_start", ms(entry.fin[d]))
            if entry.rst[d] and not getattr(tm, f"{side}_rst_start"):
                setattr(tm, f"{side}_rst_start", ms(entry.rst[d]))
        if st.fin_ab and st.fin_ba and f.finish_type == FinishType.NOT_FINISHED:
            f.finish_type = FinishType.TCP_FIN
        if f.metric.rtt == 0 and entry.rtt_start and entry.rtt_end > entry.rtt_start:
            f.metric.rtt = entry.rtt_end - entry.rtt_start

    def apply_raw(self, kkey: bytes, raw: bytes, offset_ns: int) -> FlowState | None:
        """`apply` on a raw map value, skipping (without decoding it) a value whose
        counters and times did not change since the last call."""
        t = self._tracked.get(kkey)
        signature = raw[:SIGNATURE]
        if t is not None and t.signature == signature:
            return None
        st = self.apply(kkey, KernelEntry.unpack(raw), offset_ns)
        t = self._tracked.get(kkey)
        if t is not None:
            t.signature = signature
        return st

    def orphans(self) -> list[bytes]:
        """Kernel keys whose flow is no longer in the table (expired, evicted)."""
        table = self.table
        return [k for k, t in self._tracked.items()
                if t.ab is not None and table.get(t.key) is None]

    def forget(self, kkey: bytes) -> None:
        self._tracked.pop(kkey, None)


# ---- the kernel side ---------------------------------------------------------------------
class ProbeError(Exception):
    """The probe could not be set up; the message says what and why."""


class EbpfProbe:
    """The maps, the program and the socket it is attached to, on one interface.
    `poll` belongs to one reader thread; `wakeup` and `counters` to any thread."""

    def __init__(self, flows: Map, stats: Map, prog_fd: int, sock: socket.socket) -> None:
        self.flows = flows
        self.stats = stats
        self.prog_fd = prog_fd
        self.sock: socket.socket | None = sock
        self.socket_error = 0  # last SO_ERROR seen (ENETDOWN: interface went down)
        self._lock = threading.Lock()
        self._packets = 0
        self._map_full = 0
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLERR)
        self._poller.register(self._wake_r, select.POLLIN)

    @classmethod
    def open(cls, netns: str | None, ifname: str, build: ProgramBuilder,
             kernel_entries: int = DEFAULT_KERNEL_ENTRIES) -> EbpfProbe:
        """Create the maps, load `build(flows_fd, stats_fd)`, attach it to an AF_PACKET
        socket bound to `ifname` in namespace `netns` (None: ours)."""
        flows = stats = None
        prog_fd = -1
        try:
            flows = Map.create("sg_flows", MAP_TYPE_HASH, FLOW_KEY.size, FLOW_VALUE.size,
                               kernel_entries, F_NO_PREALLOC)
            stats = Map.create("sg_flow_stats", MAP_TYPE_PERCPU_ARRAY, 4, 8, STAT_COUNT)
            try:
                insns = build(flows.fd, stats.fd).assemble()
            except ValueError as exc:  # the assembler
                raise ProbeError(f"eBPF program not assembled: {exc}") from exc
            prog_fd = load_program(insns, "sg_flow_table")
            sock = run_in(netns, lambda: _bound_socket(netns, ifname, prog_fd))
        except EBPFError as exc:
            _close_all(flows, stats, prog_fd)
            raise ProbeError(exc.strerror or str(exc)) from exc
        except OSError as exc:
            _close_all(flows, stats, prog_fd)
            where = f" in namespace {netns}" if netns else ""
            raise ProbeError(f"cannot attach the eBPF program to {ifname}{where}: "
                             f"{exc.strerror or exc}") from exc
        except BaseException:
            _close_all(flows, stats, prog_fd)
            raise
        return cls(flows, stats, prog_fd, sock)

    def poll(self, kernel: KernelFlows, idle_ms: int) -> None:
        """Every entry of the flow map into `kernel`; entries idle for `idle_ms`,
        and those whose flow left the table, read a last time and removed."""
        flows = self.flows
        offset = time.time_ns() - time.monotonic_ns()
        idle_before = time.monotonic_ns() - idle_ms * 1_000_000
        idle: list[bytes] = []
        # The whole map first: removing entries while walking it restarts the walk.
        for kkey, raw in list(flows.items()):
            if _LAST_NS.unpack_from(raw, LAST_NS_AT)[0] < idle_before:
                idle.append(kkey)
            else:
                kernel.apply_raw(kkey, raw, offset)
        for kkey in idle + kernel.orphans():
            last = flows.lookup_and_delete(kkey)
            if last is not None:  # for an orphan: what came since the last poll, a new flow
                kernel.apply_raw(kkey, last, offset)
            kernel.forget(kkey)

    def detach(self) -> None:
        """Stop counting: closing the socket waits for the programs running on it."""
        with self._lock:
            if self.sock is not None:
                self._poller.unregister(self.sock.fileno())
                self.sock.close()
                self.sock = None

    def wait(self, timeout_ms: int) -> None:
        """Sleep until `wakeup`, a socket error (interface down) or the timeout."""
        for fd, events in self._poller.poll(max(0, timeout_ms)):
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 64):
                        pass
            elif events & select.POLLERR and self.sock is not None:
                self.socket_error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def wakeup(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"\0")

    def interface_gone(self) -> bool:
        """The bound interface was unregistered (the kernel unbinds the socket)."""
        sock = self.sock
        if sock is None:
            return False
        try:
            return not sock.getsockname()[0]
        except OSError:
            return True

    def counters(self) -> tuple[int, int]:
        """(packets the program saw, packets a full map could not count), summed
        over CPUs; the last values once closed."""
        with self._lock:
            if not self._closed:
                values = []
                for index in (STAT_PACKETS, STAT_MAP_FULL):
                    raw = self.stats.lookup(_U32.pack(index))
                    values.append(per_cpu_sum(raw) if raw is not None else 0)
                self._packets, self._map_full = values
            return self._packets, self._map_full

    def close(self) -> None:
        self.detach()
        with contextlib.suppress(OSError):
            self.counters()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _close_all(self.flows, self.stats, self.prog_fd)
            os.close(self._wake_r)
            os.close(self._wake_w)


def _bound_socket(netns: str | None, ifname: str, prog_fd: int) -> socket.socket:
    """AF_PACKET with protocol 0 (no packet hook until bind), the program attached,
    then bound to the interface (called inside the namespace)."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        where = f"namespace {netns}" if netns else "the agent's namespace"
        raise ProbeError(f"no interface {ifname} in {where}") from None
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        attach_socket(sock, prog_fd)
        sock.bind((ifname, ETH_P_ALL))
    except BaseException:
        sock.close()
        raise
    return sock


def _close_all(flows: Map | None, stats: Map | None, prog_fd: int) -> None:
    for m in (flows, stats):
        if m is not None:
            m.close()
    if prog_fd >= 0:
        os.close(prog_fd)
