"""The batch path without the C extension: blocks of pcap records summed per flow with numpy.

Owns the fallback of `fastpath.FastPath` when `_fastflow` is not built: the
split of a block into the common case -- Ethernet/IPv4/{TCP,UDP,ICMPv4}
without IP options or fragments, optionally inside one VXLAN tunnel --
decoded column-wise with numpy, and everything else.  Only what needs order
is handled packet by packet, in file order: the packet that creates a flow
and every packet outside the common case go through the exact path of
`FlowTable`; TCP SYN/FIN/RST and ICMP echo (until the RTT is known) update
the flow's state from the decoded columns.  The remaining packets only add
to counters and move `Last`: they are summed per flow with `bincount` and
applied once per batch.  Results are identical to the per-packet path (the
tests run both).  Batches are cut where a tick is due, so update/expire
behave as in per-packet processing; a batch that could make the LRU evict
goes packet by packet, and the LRU order a batch leaves is the per-packet
one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from skygraph.capture.decoder import MAX_LAYERS, UDP_PORT_NEXT
from skygraph.capture.fastpath import ICMP_FOLD, PATHS, common_view
from skygraph.capture.flowstate import FlowState, echo_rtt, tcp_flags
from skygraph.capture.pcapfile import Block, PcapInfo
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow

Array = np.ndarray[Any, Any]
U64 = np.uint64
VXLAN_PORTS = np.array([4789, 8472], dtype=U64)
VXLAN_HEADERS = 14 + 20 + 8 + 8
WINDOW = VXLAN_HEADERS + 14 + 20 + 20  # deepest common-case header byte
PAD = WINDOW
TCP_EVENTS = 0x07  # FIN, SYN, RST
ROW = 6 * 8  # bytes of a flow identity row
LARGE_BLOCK, SMALL_BLOCK = 16 << 20, 4 << 20
LARGE_TABLE = 20_000  # flows from which blocks are small
KEY_CACHE = 1 << 16  # group identities remembered between batches
MAX_SUBPACKETS = MAX_LAYERS  # flows one packet outside the common case may create (a bound)
ECHO_REQUESTS = np.array([8, 128], dtype=np.uint8)  # flowstate.ECHO_REQUESTS / _REPLIES
ECHO_REPLIES = np.array([0, 129], dtype=np.uint8)

# ICMPv4 type -> folded ICMPType value (flow/icmp.go)
_ICMP_FOLD = np.frombuffer(ICMP_FOLD, dtype=np.uint8).astype(U64)


def _be(h: Array, c: int, size: int) -> Array:
    """Big-endian unsigned field of `size` bytes at column `c` of every row, as uint64."""
    out = h[:, c].astype(U64)
    for i in range(1, size):
        out = (out << U64(8)) | h[:, c + i]
    return out


def _fields(c: int) -> np.dtype[Any]:
    """Big-endian header fields of Ethernet/IPv4/L4 at byte `c` of a WINDOW-byte row."""
    ip, l4 = c + 14, c + 34
    spec = {"dst_hi": (">u2", c), "dst_lo": (">u4", c + 2), "src_hi": (">u2", c + 6),
            "src_lo": (">u4", c + 8), "ethertype": (">u2", c + 12), "vihl": ("u1", ip),
            "total": (">u2", ip + 2), "frag": (">u2", ip + 6), "ttl": ("u1", ip + 8),
            "proto": ("u1", ip + 9), "src_ip": (">u4", ip + 12), "dst_ip": (">u4", ip + 16),
            "sport": (">u2", l4), "dport": (">u2", l4 + 2), "itype": ("u1", l4),
            "icode": ("u1", l4 + 1), "icmp_id": (">u2", l4 + 4), "doff": ("u1", l4 + 12),
            "flags": ("u1", l4 + 13)}
    return np.dtype({"names": list(spec), "formats": [f for f, _ in spec.values()],
                     "offsets": [o for _, o in spec.values()], "itemsize": WINDOW})


class _Cols:
    """Ethernet/IPv4/{TCP,UDP,ICMPv4} header fields at byte `c` of the header window."""

    def __init__(self, h: Array, c: int, avail: Array) -> None:
        r = h.view(_FIELDS[c]).reshape(-1)
        self.src_mac = (r["src_hi"].astype(U64) << U64(32)) | r["src_lo"]
        self.dst_mac = (r["dst_hi"].astype(U64) << U64(32)) | r["dst_lo"]
        self.total = r["total"].astype(U64)
        self.ttl = r["ttl"]
        self.proto = r["proto"].astype(U64)
        self.src_ip = r["src_ip"].astype(U64)
        self.dst_ip = r["dst_ip"].astype(U64)
        self.sport = r["sport"].astype(U64)
        self.dport = r["dport"].astype(U64)
        self.flags = r["flags"]
        itype = r["itype"]
        self.icmp_type = itype
        self.icmp_word = (_ICMP_FOLD[itype] << U64(24)) | (
            r["icode"].astype(U64) << U64(16)) | r["icmp_id"]
        self.is_tcp = self.proto == 6
        self.is_udp = self.proto == 17
        self.is_icmp = self.proto == 1
        doff = (r["doff"] >> 4).astype(np.int64) * 4
        l4_size = np.where(self.is_tcp, doff, 8)
        self.ok = ((r["ethertype"] == 0x0800) & (r["vihl"] == 0x45)
                   & ((r["frag"] & 0x3FFF) == 0)
                   & (self.src_mac != self.dst_mac) & (self.src_ip != self.dst_ip)
                   & (avail >= 34 + l4_size) & (self.total >= (20 + l4_size).astype(U64))
                   & ((self.is_tcp & (doff >= 20)) | self.is_udp | self.is_icmp))

    def ports_in(self, ports: Array) -> Array:
        return np.isin(self.sport, ports) | np.isin(self.dport, ports)

    def rows(self, idx: Array, l2: bool) -> Array:
        """Direction-free identity of each selected packet's flow (len(idx) x 6 uint64)."""
        rows = np.zeros((len(idx), 6), dtype=U64)
        src_ip, dst_ip = self.src_ip[idx], self.dst_ip[idx]
        if l2:
            src_mac, dst_mac = self.src_mac[idx], self.dst_mac[idx]
            rows[:, 0] = np.minimum(src_mac, dst_mac)
            rows[:, 1] = np.maximum(src_mac, dst_mac)
        rows[:, 2] = (np.minimum(src_ip, dst_ip) << U64(32)) | np.maximum(src_ip, dst_ip)
        sport, dport = self.sport[idx], self.dport[idx]
        swap = src_ip > dst_ip
        ports = np.where(swap, (dport << U64(16)) | sport, (sport << U64(16)) | dport)
        rows[:, 3] = np.where(self.is_icmp[idx], self.icmp_word[idx], ports)
        rows[:, 4] = self.proto[idx]
        return rows


def _group(rows: Array) -> tuple[Array, Array] | None:
    """Group identical rows: (first index of each group, group of each row), or None on
    a hash collision (the caller then takes the per-packet path)."""
    h = np.zeros(len(rows), dtype=U64)
    for c in range(rows.shape[1]):
        h = (h ^ rows[:, c]) * U64(0x9E3779B97F4A7C15)
        h ^= h >> U64(29)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(rows[first[inverse]], rows):
        return None
    return first, inverse


def _identities(rows: Array) -> list[bytes]:
    # Fixed-width 'S' strings drop trailing NULs, which keeps them distinct.
    ids: list[bytes] = np.ascontiguousarray(rows).view(f"S{ROW}").ravel().tolist()
    return ids


_FIELDS = {0: _fields(0), VXLAN_HEADERS: _fields(VXLAN_HEADERS)}


class NumpyBatch:
    def __init__(self, table: FlowTable, enabled: bool) -> None:
        self.table = table
        self._keys: dict[bytes, int] = {}  # group identity (+ parent UUID) -> table key
        self.batched = 0  # packets accounted by per-flow sums rather than one by one
        opts = table.opts
        self.enabled = enabled
        self._mpls = opts.mpls_udp_port
        specials = {*UDP_PORT_NEXT, opts.mpls_udp_port}
        self._special = np.array(sorted(specials), dtype=U64)
        self._vx_special = np.array(sorted(specials - {4789, 8472}), dtype=U64)
        self._tcp_fast = not opts.reassemble_tcp

    def block_size(self) -> int:
        """Bytes of pcap per block: large blocks amortise the per-flow work of a batch,
        small ones bound the arrays when the table itself holds many flows."""
        return LARGE_BLOCK if len(self.table) < LARGE_TABLE else SMALL_BLOCK

    # ---- driving ------------------------------------------------------------
    def run_blocks(self, blocks: Iterable[Block], info: PcapInfo,
                   collect: Callable[[list[Flow]], None]) -> None:
        for block in blocks:
            self._block(block, info, collect)

    def _block(self, block: Block, info: PcapInfo,
               collect: Callable[[list[Flow]], None]) -> None:
        data = bytes(block.data)  # frames are sliced from it: bytes, as the decoder gets
        a = np.frombuffer(data + bytes(PAD), dtype=np.uint8)
        rec = np.asarray(block.offsets, dtype=np.int64)
        hdr = np.lib.stride_tricks.sliding_window_view(a, 16)[rec]
        if info.byte_order == "<":
            hdr = hdr.reshape(-1, 4, 4)[:, :, ::-1].reshape(-1, 16)
        fields = _be(hdr, 0, 4), _be(hdr, 4, 4), _be(hdr, 8, 4), _be(hdr, 12, 4)
        sec, frac, incl, orig = (f.astype(np.int64) for f in fields)
        ts = sec * 1_000_000_000 + frac * (1 if info.nanosecond else 1000)
        ts_ms = ts // 1_000_000
        table = self.table
        start, n = 0, len(rec)
        while start < n:
            due = table.next_due()
            if due is None:
                collect(table.tick(int(ts_ms[start])))
                continue
            later = np.nonzero(ts_ms[start:] >= due)[0]
            stop = start + int(later[0]) if len(later) else n
            if stop > start:
                sl = slice(start, stop)
                if self.enabled:
                    self._batch(a, data, rec[sl], ts[sl], incl[sl], orig[sl])
                else:
                    self._exact(data, rec[sl], ts[sl], incl[sl], orig[sl])
            if stop < n:
                collect(table.tick(int(ts_ms[stop])))
            start = stop

    def _exact(self, data: bytes, rec: Array, ts: Array, incl: Array, orig: Array) -> None:
        feed = self.table.feed
        for r, t, c, w in zip(rec.tolist(), ts.tolist(), incl.tolist(), orig.tolist(),
                              strict=True):
            feed(data[r + 16:r + 16 + c], t, w)

    # ---- one batch ------------------------------------------------------------
    def _batch(self, a: Array, data: bytes, rec: Array, ts: Array, incl: Array,
               orig: Array) -> None:
        table = self.table
        l2 = table.opts.l2_mode
        n = len(rec)
        h = np.lib.stride_tricks.sliding_window_view(a, WINDOW)[rec + 16]
        p = _Cols(h, 0, incl)
        if not self._tcp_fast:
            p.ok &= ~p.is_tcp
        plain = p.ok & ~(p.is_udp & p.ports_in(self._special))
        # VXLAN: UDP to 4789/8472 carrying a common-case packet, whose headers must
        # fit in the capture and in the outer IP length.
        cand = np.nonzero(p.ok & p.is_udp & np.isin(p.dport, VXLAN_PORTS)
                          & (p.dport != U64(self._mpls)) & ~p.ports_in(self._vx_special))[0]
        inner_avail = np.minimum(incl[cand], p.total[cand].astype(np.int64) + 14)
        inner = _Cols(h[cand], VXLAN_HEADERS, inner_avail - VXLAN_HEADERS)
        inner_ok = inner.ok & ~(inner.is_udp & inner.ports_in(self._special))
        if not self._tcp_fast:
            inner_ok &= ~inner.is_tcp
        vsel = np.nonzero(inner_ok)[0]  # rows of `inner` that are fast
        vidx = cand[vsel]  # their packet indexes
        is_vx = np.zeros(n, dtype=bool)
        is_vx[vidx] = True
        fast = plain | is_vx
        fidx = np.nonzero(fast)[0]
        if len(fidx) == 0:
            self._exact(data, rec, ts, incl, orig)
            return

        rows = p.rows(fidx, l2)
        # VXLAN outer flows: VNI and destination port, not the (entropy) source port.
        vx_f = is_vx[fidx]
        vni = _be(h, 46, 4)[fidx] >> U64(8)
        rows[vx_f, 3] = (vni[vx_f] << U64(16)) | p.dport[fidx][vx_f]
        rows[vx_f, 5] = U64(1 << 40) | vni[vx_f]
        grouped = _group(rows)
        if grouped is None:
            self._exact(data, rec, ts, incl, orig)
            return
        ofirst, oinv = grouped
        group_of = np.full(n, -1, dtype=np.int64)
        group_of[fidx] = oinv
        irows = inner.rows(vsel, l2)
        irows[:, 5] = group_of[vidx].astype(U64)
        igrouped = _group(irows) if len(vidx) else (np.zeros(0, np.int64),
                                                     np.zeros(0, np.int64))
        if igrouped is None:
            self._exact(data, rec, ts, incl, orig)
            return
        ifirst, iinv = igrouped
        inner_of = np.full(n, -1, dtype=np.int64)
        inner_of[vidx] = iinv

        # Resolve each group to its flow (None: not in the table yet).
        keys = self._keys
        get = table.get
        o_ids = _identities(rows[ofirst])
        o_states: list[FlowState | None] = [get(keys.get(i, -1)) for i in o_ids]
        i_ids = _identities(np.where(np.arange(6) == 5, U64(0), irows[ifirst]))
        i_parent = irows[ifirst, 5].tolist()
        i_states: list[FlowState | None] = []
        for ident, og in zip(i_ids, i_parent, strict=True):
            parent = o_states[og]
            i_states.append(get(keys.get(ident + parent.flow.uuid.encode(), -1))
                            if parent is not None else None)

        # What needs order, in file order.
        exact = ~fast
        new_o = np.array([s is None for s in o_states], dtype=bool)
        new_i = np.array([s is None for s in i_states], dtype=bool)
        # LRU evictions must happen exactly where the per-packet path has them: a
        # batch that could fill the table is processed packet by packet.
        could_create = int(new_o.sum() + new_i.sum()) + MAX_SUBPACKETS * int(exact.sum())
        if len(table) + could_create > table.settings.max_entries:
            self._exact(data, rec, ts, incl, orig)
            return
        exact[fidx[ofirst[new_o]]] = True
        exact[vidx[ifirst[new_i]]] = True
        # Per packet: the columns of the flow's own headers (inner for VXLAN).
        outer_flags = np.where(p.is_tcp, p.flags, 0)
        own_flags = outer_flags.copy()
        own_flags[vidx] = np.where(inner.is_tcp[vsel], inner.flags[vsel], 0)
        own_type = _merge(p.icmp_type, inner.icmp_type, vsel, is_vx, n)
        own_icmp = (p.is_icmp & plain) | _scatter(inner.is_icmp[vsel], vidx, n)
        # RTT: every echo of a flow whose RTT is not known yet (exact packets of the
        # same flow may start or end the measurement in the middle of the batch).
        flow_of = np.where(is_vx, len(o_states) + inner_of, group_of)
        known = np.array([s is not None and s.flow.metric.rtt != 0
                          for s in (*o_states, *i_states)] + [True], dtype=bool)
        echo = np.isin(own_type, ECHO_REQUESTS) | np.isin(own_type, ECHO_REPLIES)
        rtt_events = own_icmp & fast & ~known[flow_of] & echo
        event = fast & (((own_flags & TCP_EVENTS) != 0) | rtt_events)
        todo = np.nonzero(exact | event)[0]

        exact_fed = np.zeros(n, dtype=bool)
        # id(FlowState) -> ((packet index, sub-packet depth), state) of its last touch
        touches: dict[int, tuple[tuple[int, int], FlowState]] = {}
        if len(todo):
            self._ordered(todo, exact, data, rec, ts, incl, orig, p, inner, vsel, is_vx,
                          group_of, inner_of, o_states, i_states, o_ids, i_ids, l2,
                          exact_fed, touches)
        last_exact = {k: v[0][0] for k, v in touches.items()}

        # Everything else: counters summed per flow, applied once.
        agg = fast & ~exact_fed
        aidx = np.nonzero(agg)[0]
        if len(aidx):
            self._apply(aidx, group_of[aidx], o_states, p.src_mac if l2 else p.src_ip, ts,
                        orig, outer_flags, l2, last_exact, touches, 0)
            vpos = np.nonzero(agg[vidx])[0]
            if len(vpos):
                src = inner.src_mac if l2 else inner.src_ip
                full_src = np.zeros(n, dtype=U64)
                full_src[vidx] = src[vsel]
                vagg = vidx[vpos]
                self._apply(vagg, inner_of[vagg], i_states, full_src, ts,
                            orig - VXLAN_HEADERS, own_flags, l2, last_exact, touches, 1)
            table.packets += len(aidx)
            self.batched += len(aidx)
        # Least recently used order as if every packet had been fed one by one.
        move = table.touch
        for _, st in sorted(touches.values(), key=lambda t: t[0]):
            move(st.key)
        if len(keys) > KEY_CACHE:
            # A cache only: a group it misses takes the exact path once, which finds
            # the flow by its Skydive key and registers it again.
            self._keys = {}

    def _ordered(self, todo: Array, exact: Array, data: bytes, rec: Array, ts: Array,
                 incl: Array, orig: Array, p: _Cols, inner: _Cols, vsel: Array,
                 is_vx: Array, group_of: Array, inner_of: Array,
                 o_states: list[FlowState | None], i_states: list[FlowState | None],
                 o_ids: list[bytes], i_ids: list[bytes], l2: bool, exact_fed: Array,
                 touches: dict[int, tuple[tuple[int, int], FlowState]]) -> None:
        """Exact feeds and state events, in file order."""
        table = self.table
        opts = table.opts
        n = len(rec)

        def own(col_p: Array, col_i: Array) -> list[Any]:
            out: list[Any] = _merge(col_p, col_i, vsel, is_vx, n)[todo].tolist()
            return out

        flags, itype, is_tcp, ttl = (own(p.flags, inner.flags), own(p.icmp_type, inner.icmp_type),
                                     own(p.is_tcp, inner.is_tcp), own(p.ttl, inner.ttl))
        src = own(p.src_mac, inner.src_mac) if l2 else own(p.src_ip, inner.src_ip)
        columns = [c[todo].tolist() for c in (is_vx, group_of, inner_of, exact, ts, rec, incl,
                                               orig, p.total, p.sport, p.dport, p.icmp_word)]
        keys = self._keys
        get = table.get
        for j, (vx, og, ig, needs_exact, t, r, c, w, total, sport, dport, word) in enumerate(
                zip(*columns, strict=True)):
            i = int(todo[j]) if needs_exact else -1
            st = None if og < 0 else (i_states[ig] if vx else o_states[og])
            if not needs_exact and st is not None and _alive(get(st.key), st):
                ab = st.a_num == src[j]
                if is_tcp[j]:
                    tcp_flags(st, flags[j], ab, t, ttl[j], opts)
                else:
                    echo_rtt(st, itype[j], t)
                continue
            i = int(todo[j])
            frame = data[r + 16:r + 16 + c]
            if og >= 0 and not vx and o_states[og] is None:
                # A common-case packet creating its flow: no need to decode it again.
                st = table.feed_view(common_view(frame, total, sport, dport, word, flags[j],
                                                 ttl[j], is_tcp[j]),
                                     PATHS[frame[23]], w, t, frame)
                states = [st]
            else:
                states = table.feed(frame, t, w)
            for depth, s_ in enumerate(states):
                touches[id(s_)] = ((i, depth), s_)
            if og < 0:
                continue
            exact_fed[i] = True
            if states and o_states[og] is None:
                o_states[og] = states[0]
                keys[o_ids[og]] = states[0].key
            if ig >= 0 and len(states) > 1 and i_states[ig] is None:
                i_states[ig] = states[1]
                keys[i_ids[ig] + states[0].flow.uuid.encode()] = states[1].key

    def _apply(self, idx: Array, groups: Array, states: list[FlowState | None], src: Array,
               ts: Array, size: Array, flags: Array, l2: bool, last_exact: dict[int, int],
               touches: dict[int, tuple[tuple[int, int], FlowState]], depth: int) -> None:
        ngroups = len(states)
        a_val = np.array([-1 if st is None else st.a_num for st in states],
                         dtype=np.int64).astype(U64)
        ab = src[idx] == a_val[groups]
        sizes = size[idx].astype(np.float64)
        abp = np.bincount(groups, weights=ab, minlength=ngroups).astype(np.int64)
        abb = np.bincount(groups, weights=sizes * ab, minlength=ngroups).astype(np.int64)
        tot = np.bincount(groups, minlength=ngroups)
        totb = np.bincount(groups, weights=sizes, minlength=ngroups).astype(np.int64)
        last_idx = np.full(ngroups, -1, dtype=np.int64)
        np.maximum.at(last_idx, groups, idx)
        own = flags[idx].astype(np.int64) & 0xFF
        ab_tcp = np.zeros(ngroups, dtype=np.int64)
        np.bitwise_or.at(ab_tcp, groups, np.where(ab, own, 0))
        ba_tcp = np.zeros(ngroups, dtype=np.int64)
        np.bitwise_or.at(ba_tcp, groups, np.where(ab, 0, own))
        touched = np.nonzero(tot)[0]
        last_ms = (ts[last_idx[touched]] // 1_000_000).tolist()
        for g, pk, by, t, tb, li, ms, abf, baf in zip(
                touched.tolist(), abp[touched].tolist(), abb[touched].tolist(),
                tot[touched].tolist(), totb[touched].tolist(), last_idx[touched].tolist(),
                last_ms, ab_tcp[touched].tolist(), ba_tcp[touched].tolist(), strict=True):
            st = states[g]
            assert st is not None
            m = st.flow.metric
            m.ab_packets += pk
            m.ab_bytes += by
            m.ba_packets += t - pk
            m.ba_bytes += tb - by
            st.flow.ab_tcp_flags |= abf
            st.flow.ba_tcp_flags |= baf
            sid = id(st)
            if li > last_exact.get(sid, -1):
                st.flow.last = m.last = ms
                touches[sid] = ((li, depth), st)
            st.updated = True


def _alive(current: FlowState | None, st: FlowState) -> bool:
    """Whether `st` is still the table's flow for its key (not evicted or expired)."""
    return current is st


def _scatter(values: Array, idx: Array, n: int) -> Array:
    out = np.zeros(n, dtype=values.dtype)
    out[idx] = values
    return out


def _merge(outer: Array, inner: Array, vsel: Array, is_vx: Array, n: int) -> Array:
    """Per packet: the inner column for VXLAN packets, the outer one otherwise."""
    out = outer.copy()
    out[is_vx] = inner[vsel]
    return out
