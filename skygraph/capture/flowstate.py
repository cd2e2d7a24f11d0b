"""One flow's life inside a table: creation from a sub-packet and per-packet update.

Owns Skydive's `initFromPacket`/`Update`: the Link/Network/Transport/ICMP
layers and their ids, `Application` (last layer, overridden by the port
map), AB/BA accounting on wire length, RTT (ICMP echo, TCP SYN -> SYN/ACK),
TCPMetric (SYN/FIN/RST times and TTLs, segment counters), FinishType
(§3 fix 7: FIN seen both ways, or any RST), extra layers and raw packets.
Pure: timestamps come with the packet.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from skygraph.capture.decoder import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, AppInfo, IPv4Info, TCPInfo
from skygraph.capture.flowkey import Keys, flow_uuid, hex_id
from skygraph.capture.options import CaptureOptions
from skygraph.capture.packet import SubPacket, View, layers_path
from skygraph.topology.flow import (
    FinishType,
    Flow,
    FlowLayer,
    FlowMetric,
    FlowProtocol,
    ICMPLayer,
    ICMPType,
    IPMetric,
    RawPacket,
    TCPMetric,
    TransportLayer,
    icmpv4_type,
    icmpv6_type,
)

TRANSPORT_PROTOCOL = {"TCP": FlowProtocol.TCP, "UDP": FlowProtocol.UDP,
                      "SCTP": FlowProtocol.SCTP}
EXTRA_LAYER_FIELDS = (("DHCPv4", "dhcpv4"), ("DNS", "dns"), ("VRRP", "vrrpv2"))
ECHO_REQUESTS = frozenset({8, 128})
ECHO_REPLIES = frozenset({0, 129})


def mac_str(mac: bytes) -> str:
    return mac.hex(":")


def ip_str(addr: bytes) -> str:
    """Go's `net.IP.String()`: dotted quad, RFC 5952 IPv6, IPv4-mapped as IPv4."""
    if len(addr) == 4:
        return socket.inet_ntoa(addr)
    if addr[:10] == bytes(10):
        if addr[10:12] == b"\xff\xff":
            return socket.inet_ntoa(addr[12:])
        return str(ipaddress.IPv6Address(addr))  # glibc would embed a dotted quad
    return socket.inet_ntop(socket.AF_INET6, addr)


class FlowState:
    """A flow plus what the table needs to update it."""

    __slots__ = ("a_ip", "a_mac", "a_num", "fin_ab", "fin_ba", "flow", "key", "last_metric",
                 "next_seq", "rtt_start", "updated")

    def __init__(self, flow: Flow, key: int, a_mac: bytes | None, a_ip: bytes | None,
                 l2_mode: bool = True) -> None:
        self.flow = flow
        self.key = key
        self.a_mac = a_mac
        self.a_ip = a_ip
        # The A endpoint as a number (MAC in L2 mode, else IP), for batch comparisons.
        a = a_mac if l2_mode and a_mac is not None else a_ip
        self.a_num = int.from_bytes(a, "big") if a is not None else -1
        self.rtt_start = 0  # ns timestamp of the SYN / echo request
        self.fin_ab = self.fin_ba = False
        self.updated = True  # touched since the last update tick
        self.last_metric: FlowMetric | None = None
        self.next_seq: list[int | None] | None = None  # TCP reassembly, AB and BA


def new_flow(sub: SubPacket, v: View, ts_ns: int, k: Keys, parent_uuid: str, node_tid: str,
             opts: CaptureOptions, ip_metric: IPMetric | None = None,
             path: str | None = None) -> FlowState:
    now = ts_ns // 1_000_000
    f = Flow(start=now, last=now, node_tid=node_tid, parent_uuid=parent_uuid)
    f.metric.start = f.metric.last = now
    if path is None:
        path = layers_path(sub.layers)
    f.layers_path = sys.intern(path)
    f.application = sys.intern(path.rsplit("/", 1)[-1])
    eth = v.ethernet
    if eth is not None:
        f.link = FlowLayer(FlowProtocol.ETHERNET, mac_str(eth.src), mac_str(eth.dst), v.vlan_id)
    ip = v.ip
    if ip is not None:
        proto = FlowProtocol.IPV4 if isinstance(ip, IPv4Info) else FlowProtocol.IPV6
        f.network = FlowLayer(proto, ip_str(ip.src), ip_str(ip.dst), v.network_id)
        if v.icmpv4 is not None:
            f.icmp = ICMPLayer(icmpv4_type(v.icmpv4.type), v.icmpv4.code, v.icmpv4.id)
        elif v.icmpv6 is not None:
            t = icmpv6_type(v.icmpv6.type)
            echo_id = v.icmpv6_echo.id if t == ICMPType.ECHO and v.icmpv6_echo else 0
            f.icmp = ICMPLayer(t, v.icmpv6.code, echo_id)
        t_ = v.transport
        if t_ is not None:
            f.transport = TransportLayer(TRANSPORT_PROTOCOL[v.transport_name],
                                         t_.src_port, t_.dst_port)
            ports = (opts.tcp_applications if v.transport_name == "TCP"
                     else opts.udp_applications if v.transport_name == "UDP" else {})
            app = ports.get(t_.src_port) or ports.get(t_.dst_port)
            if app:
                f.application = app
            if v.transport_name == "TCP" and (opts.extra_tcp_metric or opts.reassemble_tcp):
                f.tcp_metric = TCPMetric()
        if opts.ip_defrag:
            f.ip_metric = ip_metric or IPMetric()
    f.tracking_id = hex_id(k.l2)
    f.l3_tracking_id = hex_id(k.l3)
    f.uuid = flow_uuid(k.key, now, node_tid)
    return FlowState(f, k.key, eth.src if eth is not None else None,
                     ip.src if ip is not None else None, opts.l2_mode)


def is_ab(st: FlowState, v: View, opts: CaptureOptions) -> bool:
    """Direction of a packet relative to the flow's first packet (SPEC §1d)."""
    eth, ip = v.ethernet, v.ip
    if st.a_mac is not None and eth is not None and eth.src != eth.dst and (
            opts.l2_mode or ip is None):
        return eth.src == st.a_mac
    if ip is not None and st.a_ip is not None:
        if ip.src != ip.dst:
            return ip.src == st.a_ip
        f = st.flow
        # Kept Skydive quirk (#9): identical endpoints compare ports / ICMP types.
        if v.transport is not None and f.transport is not None:
            return f.transport.a > v.transport.src_port
        if f.icmp is not None:
            word = v.icmpv4 or v.icmpv6
            if word is not None:
                fold = icmpv4_type if v.icmpv4 is not None else icmpv6_type
                return f.icmp.type > fold(word.type)
    return True


def packet_bytes(sub: SubPacket, v: View, opts: CaptureOptions) -> int:
    # Without Ethernet, Skydive counts the IP length field (IPv6: payload length).
    if v.ethernet is None and v.ip is not None:
        return v.ip.length
    return sub.length


def update(st: FlowState, sub: SubPacket, v: View, ts_ns: int, frame: bytes,
           opts: CaptureOptions) -> None:
    f = st.flow
    now = ts_ns // 1_000_000
    f.last = now
    m = f.metric
    m.last = now
    ab = is_ab(st, v, opts)
    size = packet_bytes(sub, v, opts)
    if ab:
        m.ab_packets += 1
        m.ab_bytes += size
    else:
        m.ba_packets += 1
        m.ba_bytes += size
    st.updated = True
    t = v.transport
    if isinstance(t, TCPInfo) and v.transport_name == "TCP":
        ttl = v.ip.ttl if isinstance(v.ip, IPv4Info) else v.ip.hop_limit if v.ip else 0
        tcp_flags(st, t.flags, ab, ts_ns, ttl, opts)
        if opts.reassemble_tcp and f.tcp_metric is not None:
            _reassembly(st, f.tcp_metric, t, ab)
    elif v.icmpv4 is not None or v.icmpv6 is not None:
        icmp = v.icmpv4 or v.icmpv6
        assert icmp is not None
        echo_rtt(st, icmp.type, ts_ns)
    if opts.extra_layers:
        _extra_layers(f, sub, now, opts)
    if opts.raw_packet_limit and f.raw_packets_captured < opts.raw_packet_limit:
        keep_raw(f, ts_ns, bytes(frame[sub.start:]))


def keep_raw(f: Flow, ts_ns: int, data: bytes) -> None:
    """One more of the flow's raw packets (RawPacketLimit: the caller checked)."""
    f.raw_packets_captured += 1
    f.last_raw_packets = (*f.last_raw_packets, RawPacket(
        ts_ns // 1_000_000, f.raw_packets_captured, data, f.link_type()))


def echo_rtt(st: FlowState, icmp_type: int, ts_ns: int) -> None:
    """RTT from the first echo request to the first reply after it."""
    if icmp_type in ECHO_REQUESTS:
        if st.rtt_start == 0:
            st.rtt_start = ts_ns
    elif icmp_type in ECHO_REPLIES and st.rtt_start and st.flow.metric.rtt == 0:
        st.flow.metric.rtt = ts_ns - st.rtt_start


def tcp_flags(st: FlowState, flags: int, ab: bool, ts_ns: int, ttl: int,
              opts: CaptureOptions) -> None:
    """What SYN/FIN/RST do to a flow: RTT, FinishType (§3 fix 7), TCPMetric times;
    every packet's flags are ORed into `Flow.ab_tcp_flags` / `ba_tcp_flags`."""
    f = st.flow
    if ab:
        f.ab_tcp_flags |= flags & 0xFF
    else:
        f.ba_tcp_flags |= flags & 0xFF
    if not flags & (TCP_SYN | TCP_FIN | TCP_RST):
        return
    now = ts_ns // 1_000_000
    if flags & TCP_SYN and not flags & TCP_ACK:
        if st.rtt_start == 0:
            st.rtt_start = ts_ns
    elif flags & (TCP_SYN | TCP_RST) and st.rtt_start and f.metric.rtt == 0:
        f.metric.rtt = ts_ns - st.rtt_start
    if flags & TCP_RST:
        f.finish_type = FinishType.TCP_RST
    elif flags & TCP_FIN:
        if ab:
            st.fin_ab = True
        else:
            st.fin_ba = True
        if st.fin_ab and st.fin_ba and f.finish_type == FinishType.NOT_FINISHED:
            f.finish_type = FinishType.TCP_FIN
    tm = f.tcp_metric
    if tm is None or not opts.extra_tcp_metric:
        return
    if flags & TCP_SYN:
        if ab and tm.ab_syn_start == 0:
            tm.ab_syn_start, tm.ab_syn_ttl = now, ttl
        elif not ab and tm.ba_syn_start == 0:
            tm.ba_syn_start, tm.ba_syn_ttl = now, ttl
    elif flags & TCP_FIN:
        if ab:
            tm.ab_fin_start = now
        else:
            tm.ba_fin_start = now
    elif flags & TCP_RST:
        if ab:
            tm.ab_rst_start = now
        else:
            tm.ba_rst_start = now


def _reassembly(st: FlowState, tm: TCPMetric, t: TCPInfo, ab: bool) -> None:
    """Segment counters of a one-pass TCP reassembler (gopacket's stream stats)."""
    d = 0 if ab else 1
    prefix = "ab_" if ab else "ba_"
    if st.next_seq is None:
        st.next_seq = [None, None]
    if t.flags & TCP_SYN:
        setattr(tm, prefix + "saw_start", 1)
        st.next_seq[d] = (t.seq + 1) & 0xFFFFFFFF
    if t.flags & (TCP_FIN | TCP_RST):
        setattr(tm, prefix + "saw_end", 1)
    if t.payload == 0:
        return
    expected = st.next_seq[d]
    if expected is not None:
        gap = (t.seq - expected) & 0xFFFFFFFF
        if gap and gap < 0x80000000:
            setattr(tm, prefix + "segment_skipped", getattr(tm, prefix + "segment_skipped") + 1)
            setattr(tm, prefix + "segment_skipped_bytes",
                    getattr(tm, prefix + "segment_skipped_bytes") + gap)
        elif gap:
            setattr(tm, prefix + "segment_out_of_order",
                    getattr(tm, prefix + "segment_out_of_order") + 1)
            return
    setattr(tm, prefix + "packets", getattr(tm, prefix + "packets") + 1)
    setattr(tm, prefix + "bytes", getattr(tm, prefix + "bytes") + t.payload)
    st.next_seq[d] = (t.seq + t.payload) & 0xFFFFFFFF


def _extra_layers(f: Flow, sub: SubPacket, now: int, opts: CaptureOptions) -> None:
    for layer in sub.layers:
        if not isinstance(layer.info, AppInfo):
            continue
        for name, attr in EXTRA_LAYER_FIELDS:
            if layer.name == name and opts.wants(name):
                fields = dict(layer.info.fields)
                if name == "DNS":
                    fields["Timestamp"] = now
                setattr(f, attr, fields)
