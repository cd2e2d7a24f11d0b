"""NetFlow v5 records as flows: the flow side of the `ovsnetflow` receiver.

Owns the mapping of a decoded record (`netflow_decode.Record`) to the
fields Skydive's receiver fills (netflow/agent.go, SPEC §1b): `Network`
IPv4 A/B, `Transport` with protocol TCP, UDP, ICMPV4, IPV4 or SCTP and the
record's ports, `Application` of the same name (`ICMPv4` for ICMP, `IPV4`
for IP-in-IP); §3 fix 4: any other protocol becomes a flow whose
`Application` is the protocol number, with no `Transport`.

Where skygraph differs, because OVS exports unidirectional records that
carry the packets since the previous export:

* records add up: both directions of a conversation land in one flow (the
  key orders the endpoints; an ICMP record's type, in `dstport` as
  type << 8 | code, is folded as in flow/icmp.go, so echo requests and
  replies meet as one ECHO flow that also gets an `ICMP` layer), each
  record counted in its own direction (AB when its source is the flow's A)
  instead of halved into both, and successive exports accumulate instead
  of replacing each other;
* the key hashes the ordered address strings, the IP protocol, then the
  ordered ports or the folded ICMP word (Skydive's `SetUUIDs` over flow
  fields, with the protocol added so a TCP and a UDP conversation on the
  same ports stay apart); `TrackingID` = `L3TrackingID` (L3, no link
  layer), `UUID` from the key, `Start` and the capture node's TID.

Times: a record's sysUptime stamps become wall-clock ms against the
datagram's arrival (arrival - (header sysUptime - stamp), modulo 2^32).  A
datagram's records are taken oldest first and, at equal times (OVS stamps a
flow with when it first pushed its counters), the side that looks like the
initiator first, so the side that started a conversation is its A.  Byte
counts are the exporter's (OVS counts whole frames, Ethernet header
included).
Pure: arrival times come in as arguments.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import xxhash

from skygraph.capture.flowkey import flow_uuid, hex_id
from skygraph.capture.flowstate import FlowState
from skygraph.capture.netflow_decode import Datagram, Record
from skygraph.capture.options import CaptureOptions
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow, FlowLayer, FlowProtocol, ICMPLayer, TransportLayer, icmpv4_type

U32 = 0xFFFFFFFF
_U64 = struct.Struct("!Q")
_U32 = struct.Struct("!I")
ICMP, IPIP, TCP, UDP, SCTP = 1, 4, 6, 17, 132
# IP protocol -> (Transport.Protocol, Application, the layer's name in LayersPath)
PROTOCOLS: Mapping[int, tuple[FlowProtocol, str, str]] = {
    TCP: (FlowProtocol.TCP, "TCP", "TCP"),
    UDP: (FlowProtocol.UDP, "UDP", "UDP"),
    ICMP: (FlowProtocol.ICMPV4, "ICMPv4", "ICMPv4"),
    IPIP: (FlowProtocol.IPV4, "IPV4", "IPv4"),
    SCTP: (FlowProtocol.SCTP, "SCTP", "SCTP"),
}
PORTED = frozenset({TCP, UDP, SCTP})
ICMP_REQUESTS = frozenset({8, 10, 13, 15, 17})  # echo, router solicitation, timestamp, info, mask


def wall_ms(stamp: int, sys_uptime: int, arrival_ms: int) -> int:
    """A sysUptime stamp as wall-clock ms; stamps after the export count as the export."""
    before = (sys_uptime - stamp) & U32
    return arrival_ms - (before if before <= U32 // 2 else 0)


def icmp_word(r: Record) -> int:
    """Skydive's ICMP endpoint (folded type << 24 | code << 16; no echo id in NetFlow)."""
    return int(icmpv4_type(r.dstport >> 8)) << 24 | (r.dstport & 0xFF) << 16


def record_key(r: Record) -> int:
    """The flow key of a record; both directions of a conversation share it."""
    h = xxhash.xxh64()
    src, dst = r.srcaddr, r.dstaddr
    swap = src > dst if src != dst else r.srcport > r.dstport
    h.update((dst + src if swap else src + dst).encode())
    h.update(_U64.pack(0))  # FlowLayer.ID
    h.update(_U64.pack(r.protocol))
    if r.protocol in PORTED:
        a, b = (r.dstport, r.srcport) if swap else (r.srcport, r.dstport)
        h.update(_U32.pack(a << 16 | b))
        h.update(_U64.pack(0))  # TransportLayer.ID
    elif r.protocol == ICMP:
        h.update(_U32.pack(icmp_word(r)))
    return h.intdigest()


def new_flow(r: Record, key: int, start_ms: int, node_tid: str, opts: CaptureOptions) -> Flow:
    """The flow a conversation's first record opens (no counters yet)."""
    f = Flow(start=start_ms, last=start_ms, node_tid=node_tid)
    f.metric.start = f.metric.last = start_ms
    f.network = FlowLayer(FlowProtocol.IPV4, r.srcaddr, r.dstaddr, 0)
    known = PROTOCOLS.get(r.protocol)
    if known is None:  # §3 fix 4
        f.application = str(r.protocol)
        f.layers_path = "IPv4"
    else:
        proto, f.application, layer = known
        f.layers_path = f"IPv4/{layer}"
        f.transport = TransportLayer(proto, r.srcport, r.dstport)
        if r.protocol == ICMP:
            f.icmp = ICMPLayer(icmpv4_type(r.dstport >> 8), r.dstport & 0xFF, 0)
        ports = (opts.tcp_applications if r.protocol == TCP
                 else opts.udp_applications if r.protocol == UDP else {})
        app = ports.get(r.srcport) or ports.get(r.dstport)
        if app:
            f.application = app
    f.tracking_id = f.l3_tracking_id = hex_id(key)
    f.uuid = flow_uuid(key, start_ms, node_tid)
    return f


def initiates(r: Record) -> bool:
    """Whether a record looks like the side that opened its conversation (OVS stamps
    both directions' records with the same times): an ICMP request, a TCP SYN
    without ACK, else the higher (ephemeral) port."""
    if r.protocol == ICMP:
        return r.dstport >> 8 in ICMP_REQUESTS
    if r.protocol == TCP and r.tcp_flags & 0x12:
        return r.tcp_flags & 0x12 == 0x02
    return r.protocol in PORTED and r.srcport > r.dstport


def is_ab(f: Flow, r: Record) -> bool:
    """A record goes A->B when it leaves the flow's A (same addresses: A's port)."""
    net = f.network
    if net is None or r.srcaddr != net.a:
        return False
    if r.srcaddr != r.dstaddr or f.transport is None:
        return True
    return r.srcport == f.transport.a


def account(st: FlowState, r: Record, first_ms: int, last_ms: int) -> None:
    """Add one record's packets and bytes to its flow, in the record's direction."""
    f, m = st.flow, st.flow.metric
    if is_ab(f, r):
        m.ab_packets += r.packets
        m.ab_bytes += r.octets
        f.ab_tcp_flags |= r.tcp_flags if r.protocol == TCP else 0
    else:
        m.ba_packets += r.packets
        m.ba_bytes += r.octets
        f.ba_tcp_flags |= r.tcp_flags if r.protocol == TCP else 0
    if first_ms < f.start:
        f.start = m.start = first_ms
    if last_ms > f.last:
        f.last = m.last = last_ms
    st.updated = True


class NetFlowFlows:
    """Datagrams of one receiver -> flows of its table (which ticks and sends them)."""

    def __init__(self, table: FlowTable, opts: CaptureOptions | None = None) -> None:
        self.table = table
        self.opts = opts or table.opts
        self.records = 0  # records accounted

    def feed(self, dgram: Datagram, arrival_ms: int) -> int:
        """Account every record of a datagram; return how many packets they carried."""
        packets = 0
        up = dgram.sys_uptime
        # Oldest first, then the likely initiator: of the two directions of a new
        # conversation in one datagram, the one that started it opens the flow.
        timed = sorted(((wall_ms(r.first, up, arrival_ms), not initiates(r), i, r)
                        for i, r in enumerate(dgram.records)))
        for first, _, _, r in timed:
            last = max(wall_ms(r.last, up, arrival_ms), first)
            key = record_key(r)
            st = self.table.get(key)
            if st is None:
                f = new_flow(r, key, first, self.table.node_tid, self.opts)
                st = FlowState(f, key, None, None, l2_mode=False)
                self.table.add(st)
            else:
                self.table.touch(key)
            account(st, r, first, last)
            packets += r.packets
            self.records += 1
        return packets
