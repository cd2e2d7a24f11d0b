"""Batch path of the flow table: blocks of pcap records, the common case summed per flow.

Owns the driving of a `FlowTable` by blocks of classic pcap records.  The
common case -- Ethernet/IPv4/{TCP,UDP,ICMPv4} without IP options or
fragments, optionally inside one VXLAN tunnel -- of a flow the table already
holds only adds to counters, flags and `Last`: the C extension `_fastflow`
walks the records (without the GIL while it only sums), computes each
packet's flow key (xxHash64, byte-exact) and sums those packets per flow.
What needs Python comes back here in file order, as the extension's named
records (`Step`, `Record`, `NewFlow`, `TcpEvent`, `EchoEvent`, `Sums`) --
queued with the next result, or as the result itself -- and takes the exact
path of `FlowTable`: records outside the common case and those creating a
flow (the C side builds their View and Keys), TCP SYN/FIN/RST and ICMP echo
until the RTT is known (their state events, `tcp_flags`/`echo_rtt`), a flow's
first RawPacketLimit packets (kept by the extension as `flowstate.keep_raw`
keeps them), and the
update/expire ticks, cut exactly where the per-packet path has them.  The
sums are applied before every tick, before an insertion that could make the
LRU evict, and at the end of each `run_blocks`, leaving the LRU order the
per-packet path would.  Results are identical to the per-packet path (the
tests run both).  Without the extension (`scripts/install.sh` always builds
it; a stale build is not used) every record takes the per-packet path.
"""

from __future__ import annotations

import gc
import struct
from array import array
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from skygraph.capture.decoder import (
    LINKTYPE_ETHERNET,
    MAX_LAYERS,
    UDP_PORT_NEXT,
    EthernetInfo,
    ICMPInfo,
    IPv4Info,
    PortsInfo,
    TCPInfo,
)
from skygraph.capture.flowkey import Keys
from skygraph.capture.flowstate import FlowState, echo_rtt, tcp_flags
from skygraph.capture.packet import View
from skygraph.capture.pcapfile import Block, PcapInfo
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow, RawPacket, icmpv4_type

if TYPE_CHECKING:
    from skygraph.capture._fastflow import EchoEvent, Record, Tracker

NATIVE_VERSION = 7  # FASTFLOW_VERSION of the _fastflow.c this module drives
BLOCK = 1 << 20  # bytes of pcap per block with the extension (fits in a core's cache)
TOUCHES_MAX = 1 << 15  # exact-path touches kept before the sums are applied
PROMOTE_AFTER = 20_000  # objects a run allocated from which they go to the oldest GC generation
# ICMPv4 type -> folded ICMPType value (flow/icmp.go), as the key hashes it
ICMP_FOLD = bytes(int(icmpv4_type(t)) for t in range(256))
PATHS = {6: "Ethernet/IPv4/TCP", 17: "Ethernet/IPv4/UDP", 1: "Ethernet/IPv4/ICMPv4"}
# What the extension builds for a common-case record creating its flow (common_view, keys)
TYPES = (EthernetInfo, IPv4Info, TCPInfo, PortsInfo, ICMPInfo, View, Keys)
STRINGS = (PATHS[6], PATHS[17], PATHS[1], "TCP", "UDP", "ICMPv4", "")


def _load_native() -> ModuleType | None:
    try:
        from skygraph.capture import _fastflow
    except ImportError:
        return None
    # A stale build (the C source changed since the install) is not used.
    return _fastflow if getattr(_fastflow, "VERSION", None) == NATIVE_VERSION else None


native = _load_native()  # the extension, or None: the per-packet path
if native is not None:
    END, TICK, EXACT, EVENT, FLUSH = native.END, native.TICK, native.EXACT, native.EVENT, native.FLUSH
    TcpEvent, NewFlow = native.TcpEvent, native.NewFlow


class FastPath:
    def __init__(self, table: FlowTable, share: int = 0, shares: int = 1) -> None:
        """`share` of `shares`: the table takes only the flows of that share of the
        records (the extension's `share`: by IP addresses, both directions and a
        tunnel's inner flows together), ticking on every record's time; needs the
        extension."""
        self.table = table
        opts = table.opts
        self.enabled = (table.link_type == LINKTYPE_ETHERNET and table.packet_filter is None
                        and not opts.ip_defrag)
        self._batched = 0  # packets accounted by per-flow sums rather than one by one
        self._tracker: Tracker | None = None
        if native is not None:
            self._tracker = native.Tracker(table.get, opts.l2_mode, not opts.reassemble_tcp,
                                           not self.enabled, opts.mpls_udp_port,
                                           sorted(UDP_PORT_NEXT), ICMP_FOLD, TYPES, STRINGS,
                                           opts.raw_packet_limit, RawPacket, share, shares)
        elif shares > 1:
            raise ValueError("reading a share of a file needs the C extension _fastflow "
                             "(scripts/install.sh builds it)")
        # id(FlowState) -> ((record index, sub-packet depth), state): the exact path's
        # touches since the last flush, ordered with the summed ones when applied.
        self._touches: dict[int, tuple[tuple[int, int], FlowState]] = {}
        self._pending = False  # sums left in the extension by `run_blocks(settle=False)`

    @property
    def native(self) -> bool:
        """Whether the C extension runs the common case (else the per-packet path)."""
        return self._tracker is not None

    @property
    def batched(self) -> int:
        """Packets accounted by per-flow sums rather than one by one."""
        return self._batched

    def settle(self) -> None:
        """Apply the sums a `run_blocks(settle=False)` left pending: the table is then
        exact for any other use (ticks, flush, per-packet feeding, reading flows)."""
        if self._pending:
            self._pending = False
            self._flush()

    def block_size(self) -> int:
        """Bytes of pcap per block."""
        return BLOCK

    # ---- driving ------------------------------------------------------------
    def run_blocks(self, blocks: Iterable[Block], info: PcapInfo,
                   collect: Callable[[list[Flow]], None], settle: bool = True) -> None:
        """Feed blocks of records to the table; `collect` gets what the ticks send.

        `settle=False` (a live reader, called again and again): the per-flow sums stay
        in the extension after the call, applied at the next tick, eviction risk or
        `settle()` -- Python then touches a busy flow once per tick, not once per call.
        Whoever uses the table between two calls must `settle()` first."""
        # Flows are long-lived and hold no cycles: the cyclic GC would only walk the
        # growing table again and again while they are created, and once more in the
        # young generations after.  After a run that created many objects, they are
        # moved straight to the oldest generation (freeze + unfreeze), where a full
        # collection still finds any cycle.
        enabled = gc.isenabled()
        gc.disable()
        try:
            if self._tracker is None:
                self._run_per_packet(blocks, info, collect)
            else:
                done = False
                try:
                    self._run_blocks(blocks, info, collect)
                    done = True
                finally:
                    if settle or not done:
                        self._flush()
                        self._pending = False
                    else:
                        self._pending = True
        finally:
            if enabled:
                if gc.get_count()[0] > PROMOTE_AFTER:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()

    def _run_per_packet(self, blocks: Iterable[Block], info: PcapInfo,
                        collect: Callable[[list[Flow]], None]) -> None:
        """Without the extension: every record through `FlowTable.feed`, ticking on
        packet time before it, as offline."""
        table = self.table
        rec = struct.Struct(info.byte_order + "IIII")
        scale = 1 if info.nanosecond else 1000
        for block in blocks:
            data = block.data
            for off in block.offsets:
                sec, frac, incl, orig = rec.unpack_from(data, off)
                ts = sec * 1_000_000_000 + frac * scale
                sent = table.tick(ts // 1_000_000)
                if sent:
                    collect(sent)
                table.feed(bytes(data[off + 16:off + 16 + incl]), ts, orig)

    def _run_blocks(self, blocks: Iterable[Block], info: PcapInfo,
                    collect: Callable[[list[Flow]], None]) -> None:
        tracker = self._tracker
        assert tracker is not None
        if not self._pending:
            # The table may have changed since the last call (ticks, flush, other feeds);
            # with sums pending it has not (`settle` comes first).
            tracker.invalidate()
            self._sweep()
        little, ns = info.byte_order == "<", info.nanosecond
        try:
            for block in blocks:
                if len(block.offsets):
                    tracker.load(block.data, _int64(block.offsets), little, ns)
                    self._run(tracker, collect)
        finally:
            tracker.release()

    def _run(self, tracker: Tracker, collect: Callable[[list[Flow]], None]) -> None:
        """The loaded block, handing what needs Python to the table in file order."""
        table = self.table
        crowded = table.settings.max_entries - MAX_LAYERS
        due = table.next_due()
        step = tracker.run(0, -1 if due is None else due, max(crowded - len(table), 0))
        while True:
            if step.queue is not None:
                self._queued(step.queue)
            if len(self._touches) > TOUCHES_MAX:
                self._flush()  # bounded memory: the sums may be applied at any time
            kind, slot, mode = step.kind, -1, 0
            if kind == END:
                return
            if kind == EVENT:
                assert step.event is not None
                slot, mode = self._echo(step.event)
            elif kind == EXACT:
                assert step.record is not None
                self._exact(tracker, step.record, crowded)
            elif kind == TICK:
                self._tick(tracker, step.tick_ms, collect)
            elif kind == FLUSH:
                self._flush()
            due = table.next_due()
            step = tracker.run(step.pos, -1 if due is None else due,
                               max(crowded - len(table), 0), slot, mode)

    def _queued(self, queue: list[Any]) -> None:
        """What the extension queued before its result, in file order."""
        table = self.table
        opts, feed, feed_view = table.opts, table.feed, table.feed_view
        touches = self._touches
        for item in queue:
            kind = type(item)
            if kind is TcpEvent:
                tcp_flags(item.state, item.flags, item.ab, item.ts, item.ttl, opts)
            elif kind is NewFlow:
                st = feed_view(item.view, item.path, item.orig, item.ts, item.frame, item.keys)
                touches[id(st)] = ((item.number, 0), st)
            else:  # a Record: the tracker is exact only
                feed(item.frame, item.ts, item.orig)

    @staticmethod
    def _echo(event: EchoEvent) -> tuple[int, int]:
        """An ICMP echo while the RTT is unknown: the slot's next mode (1 requests,
        2 replies, 0 no more events)."""
        st = event.state
        echo_rtt(st, event.icmp_type, event.ts)
        return event.slot, 0 if st.flow.metric.rtt else 2 if st.rtt_start else 1

    def _exact(self, tracker: Tracker, record: Record, crowded: int) -> None:
        """A record outside the common case (or of a flow to create when the table is
        full): the per-packet path."""
        table = self.table
        if len(table) > crowded:
            self._flush()  # the LRU may evict: its order must be exact
        dropped = table.dropped
        fast = record.fast
        if fast is None:
            states = table.feed(record.frame, record.ts, record.orig)
        else:
            states = [table.feed_view(fast[0], fast[2], record.orig, record.ts, record.frame,
                                      fast[1])]
        touches = self._touches
        for depth, s in enumerate(states):
            touches[id(s)] = ((record.number, depth), s)
            tracker.stale(s.key)
        if table.dropped != dropped:
            tracker.invalidate()

    def _tick(self, tracker: Tracker, now_ms: int, collect: Callable[[list[Flow]], None]) -> None:
        self._flush()
        collect(self.table.tick(now_ms))
        tracker.invalidate()
        self._sweep()

    def _sweep(self) -> None:
        """Forget cached flows that left the table, once they are many."""
        tracker = self._tracker
        assert tracker is not None
        if tracker.cached > len(self.table) * 5 // 4 + 1024:
            tracker.sweep()

    def _flush(self) -> None:
        """Apply the per-flow sums, then the LRU order of every touch since the last flush."""
        tracker = self._tracker
        assert tracker is not None
        sums, counted = tracker.flush()
        touches = self._touches
        for st, abp, abb, bap, bab, abf, baf, index, depth, ms in sums:
            f = st.flow
            m = f.metric
            m.ab_packets += abp
            m.ab_bytes += abb
            m.ba_packets += bap
            m.ba_bytes += bab
            f.ab_tcp_flags |= abf
            f.ba_tcp_flags |= baf
            sid = id(st)
            seen = touches.get(sid)
            if seen is None or index > seen[0][0]:
                f.last = m.last = ms
                touches[sid] = ((index, depth), st)
            st.updated = True
        if touches:
            table = self.table
            get, move = table.get, table.touch
            for _, st in sorted(touches.values(), key=_order):
                if get(st.key) is st:
                    move(st.key)
            touches.clear()
        self.table.packets += counted
        self._batched += counted


def _int64(offsets: Any) -> memoryview:
    """Record offsets as a contiguous buffer of native 64-bit integers (what the
    extension reads)."""
    view = memoryview(offsets)
    if view.itemsize == 8 and view.format.lstrip("@=") in ("q", "l") and view.c_contiguous:
        return view
    return memoryview(array("q", [int(o) for o in offsets]))


def _order(touch: tuple[tuple[int, int], FlowState]) -> tuple[int, int]:
    return touch[0]


def common_view(frame: bytes, total: int, sport: int, dport: int, word: int, flags: int,
                ttl: int, is_tcp: bool) -> View:
    """The View of a common-case frame, from its decoded header fields."""
    proto = frame[23]
    ip = IPv4Info(frame[26:30], frame[30:34], total, ttl, proto, 0, False, 0, 20)
    eth = EthernetInfo(frame[6:12], frame[0:6], 0x0800)
    if proto == 1:
        icmp = ICMPInfo(frame[34], frame[35], word & 0xFFFF)
        return View(eth, ip, None, "", icmp, None, None, "ICMPv4", 0, 0)
    if is_tcp:
        doff = (frame[46] >> 4) * 4
        tcp = TCPInfo(sport, dport, 0, 0, flags | ((frame[46] & 1) << 8),
                      max(min(len(frame), 14 + total) - 34 - doff, 0))
        return View(eth, ip, tcp, "TCP", None, None, None, "TCP", 0, 0)
    return View(eth, ip, PortsInfo(sport, dport), "UDP", None, None, None, "UDP", 0, 0)
