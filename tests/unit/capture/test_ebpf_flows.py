"""Kernel flow entries into the flow table (`capture.ebpf.KernelFlows`), checked
against the same packets fed one by one to a `FlowTable` in L3 key mode (the
afpacket path): same TrackingID, L3TrackingID, UUID, LayersPath and counters."""

from __future__ import annotations

import dataclasses
import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from skygraph.capture.ebpf import KernelEntry, KernelFlows
from skygraph.capture.ebpf_prog import FLOW_VALUE, HEAD_SIZE
from skygraph.capture.options import CaptureOptions, TableSettings
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import FinishType, Flow

T = 1_700_000_000_000  # wall clock ms of kernel time BOOT
MS = 1_000_000
BOOT = 5_000 * MS  # monotonic ns
OFFSET = T * MS - BOOT  # what turns kernel times into wall clock ns
A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
L3 = CaptureOptions(layer_key_mode="L3")


def ab(p: Packet) -> Packet:
    return Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / p


def ba(p: Packet) -> Packet:
    return Ether(src=B_MAC, dst=A_MAC) / IP(src="10.0.0.2", dst="10.0.0.1") / p


def at(ms: int) -> int:
    """Kernel time of wall clock T + ms."""
    return BOOT + ms * MS


def entry(first: Packet, packets: tuple[int, int], octets: tuple[int, int], first_ms: int,
          last_ms: int, first_dir: int = 0, **fields: object) -> KernelEntry:
    raw = bytes(first)
    e = KernelEntry(packets, octets, at(first_ms), at(last_ms), (0, 0), (0, 0), (0, 0), 0, 0,
                    (0, 0), first_dir, False, 0, 0, len(raw), (0, 0), raw[:HEAD_SIZE])
    return dataclasses.replace(e, **fields)  # type: ignore[arg-type]


def afpacket(packets: list[tuple[Packet, int]], opts: CaptureOptions = L3) -> Flow:
    table = FlowTable(opts, node_tid="tid-1")
    for p, ms in packets:
        table.feed(bytes(p), (T + ms) * MS)
    (f,) = table.flows()
    return f


def kernel_flows(opts: CaptureOptions = L3) -> tuple[KernelFlows, FlowTable]:
    table = FlowTable(opts, TableSettings(update=10, expire=60), node_tid="tid-1")
    return KernelFlows(table), table


def same(ours: Flow, theirs: Flow) -> None:
    assert (ours.uuid, ours.tracking_id, ours.l3_tracking_id) == \
        (theirs.uuid, theirs.tracking_id, theirs.l3_tracking_id)
    assert ours.layers_path == theirs.layers_path and ours.application == theirs.application
    assert (ours.link, ours.network, ours.transport, ours.icmp) == \
        (theirs.link, theirs.network, theirs.transport, theirs.icmp)
    assert (ours.start, ours.last) == (theirs.start, theirs.last)
    assert ours.metric == theirs.metric


def test_a_ping_in_one_entry_is_afpackets_flow() -> None:
    req = [ab(ICMP(type=8, id=7, seq=i) / Raw(b"x" * 56)) for i in range(3)]
    rep = [ba(ICMP(type=0, id=7, seq=i) / Raw(b"x" * 56)) for i in range(3)]
    packets = [(p, ms) for i in range(3) for p, ms in ((req[i], 1000 * i), (rep[i], 1000 * i + 2))]
    size = len(req[0])
    kf, table = kernel_flows()
    e = entry(req[0], (3, 3), (3 * size, 3 * size), 0, 2002, rtt_start=at(0), rtt_end=at(2))
    st = kf.apply(b"k1", e, OFFSET)
    assert st is not None and len(table) == 1
    same(st.flow, afpacket(packets))
    assert st.flow.metric.rtt == 2 * MS
    assert st.flow.tracking_id == st.flow.l3_tracking_id  # L3 mode: no MACs in the key


def test_first_packet_from_the_hi_endpoint_is_ab() -> None:
    first = ba(ICMP(type=8, id=9))
    reply = ab(ICMP(type=0, id=9))
    kf, _ = kernel_flows()
    # The kernel orders 10.0.0.1 first: direction 1 is the first packet's.
    e = entry(first, (1, 2), (len(reply), 2 * len(first)), 0, 5, first_dir=1, rtt_start=at(0),
              rtt_end=at(3))
    st = kf.apply(b"k", e, OFFSET)
    assert st is not None
    same(st.flow, afpacket([(first, 0), (reply, 3), (first, 5)]))
    assert st.flow.network is not None and st.flow.network.a == "10.0.0.2"


def test_entries_the_kernel_keys_apart_feed_one_flow() -> None:
    """Timestamp request and reply fold to one Skydive flow (ICMP TIMESTAMP) but
    are two kernel entries; the reply's entry starts with a B->A packet."""
    request = ab(ICMP(type=13, id=4))
    reply = ba(ICMP(type=14, id=4))
    kf, table = kernel_flows()
    kf.apply(b"req", entry(request, (2, 0), (2 * len(request), 0), 0, 10), OFFSET)
    kf.apply(b"rep", entry(reply, (0, 2), (0, 2 * len(reply)), 1, 11, first_dir=1), OFFSET)
    assert len(table) == 1 and len(kf) == 2
    (flow,) = table.flows()
    same(flow, afpacket([(request, 0), (reply, 1), (request, 10), (reply, 11)]))
    assert (flow.metric.ab_packets, flow.metric.ba_packets) == (2, 2)


def test_identical_endpoints_follow_afpackets_direction_rules() -> None:
    """Same address both ways: the kernel orders the ends by port (7 first), and
    the directions follow afpacket's rule (AB iff Transport.A > source port)."""
    def same_ip(sport: int, dport: int) -> Packet:
        return Ether(src=A_MAC, dst=A_MAC) / IP(src="10.0.0.1", dst="10.0.0.1") / \
            UDP(sport=sport, dport=dport) / Raw(b"u")
    first, back = same_ip(9, 7), same_ip(7, 9)
    kf, _ = kernel_flows()
    e = entry(first, (2, 3), (2 * len(back), 3 * len(first)), 0, 4, first_dir=1)
    st = kf.apply(b"k", e, OFFSET)
    assert st is not None
    same(st.flow, afpacket([(first, 0), (back, 1), (first, 2), (back, 3), (first, 4)]))


def test_polls_add_deltas_and_unchanged_entries_are_not_news() -> None:
    p = ab(ICMP(type=8, id=1))
    size = len(p)
    kf, table = kernel_flows()
    table.tick(T)
    assert kf.apply(b"k", entry(p, (2, 0), (2 * size, 0), 0, 5), OFFSET) is not None
    (sent,) = table.tick(T + 10_000)
    assert sent.last_update_metric is not None and sent.last_update_metric.ab_packets == 2
    st = kf.apply(b"k", entry(p, (5, 0), (5 * size, 0), 0, 12_000), OFFSET)
    assert st is not None and st.flow.metric.ab_packets == 5
    assert kf.apply(b"k", entry(p, (5, 0), (5 * size, 0), 0, 12_000), OFFSET) is None
    (sent,) = table.tick(T + 20_000)
    lum = sent.last_update_metric
    assert lum is not None and (lum.ab_packets, lum.ab_bytes) == (3, 3 * size)
    assert sent.last == T + 12_000
    assert table.tick(T + 30_000) == []  # untouched: nothing to send


def test_a_flow_the_table_expired_gets_only_new_packets() -> None:
    p = ab(ICMP(type=8, id=1))
    kf, table = kernel_flows()
    kf.apply(b"k", entry(p, (2, 0), (2 * len(p), 0), 0, 5), OFFSET)
    first = table.flows()[0].uuid
    table.expire_at(T + 120_000)
    assert kf.orphans() == [b"k"]
    st = kf.apply(b"k", entry(p, (3, 0), (3 * len(p), 0), 0, 130_000), OFFSET)
    assert st is not None and st.flow.uuid != first
    assert (st.flow.metric.ab_packets, st.flow.start) == (1, T + 5)
    kf.forget(b"k")
    assert len(kf) == 0


def test_a_vlan_tag_out_of_the_frame_is_put_back() -> None:
    p = ab(ICMP(type=8, id=3))
    kf, _ = kernel_flows()
    e = entry(p, (1, 0), (len(p) + 4, 0), 0, 0, vlan_present=True, vlan_tci=8,
              vlan_proto=socket.htons(0x8100))
    st = kf.apply(b"k", e, OFFSET)
    assert st is not None
    tagged = Ether(bytes(p)[:12] + b"\x81\x00\x00\x08" + bytes(p)[12:])
    same(st.flow, afpacket([(tagged, 0)]))
    assert st.flow.layers_path == "Ethernet/Dot1Q/IPv4/ICMPv4" and st.flow.link is not None
    assert st.flow.link.id == 8


def test_tcp_flag_times_give_finish_type_rtt_and_tcp_metric() -> None:
    opts = dataclasses.replace(L3, extra_tcp_metric=True)
    syn = ab(TCP(sport=40000, dport=80, flags="S"))
    synack = ba(TCP(sport=80, dport=40000, flags="SA"))
    ack = ab(TCP(sport=40000, dport=80, flags="A"))
    fin_a = ab(TCP(sport=40000, dport=80, flags="FA"))
    fin_b = ba(TCP(sport=80, dport=40000, flags="FA"))
    packets = [(syn, 0), (synack, 1), (ack, 2), (fin_a, 7), (fin_b, 8), (ack, 9)]
    kf, _ = kernel_flows(opts)
    e = entry(syn, (4, 2), (sum(len(p) for p, _ in packets if p[IP].src == "10.0.0.1"),
                            len(synack) + len(fin_b)), 0, 9,
              syn=(at(0), at(1)), fin=(at(7), at(8)), syn_ttl=(64, 63), rtt_start=at(0),
              rtt_end=at(1), tcp_flags=(0x13, 0x13))
    st = kf.apply(b"k", e, OFFSET)
    assert st is not None
    theirs = afpacket(packets, opts)
    same(st.flow, theirs)
    assert st.flow.finish_type == theirs.finish_type == FinishType.TCP_FIN
    assert (st.flow.ab_tcp_flags, st.flow.ba_tcp_flags) == \
        (theirs.ab_tcp_flags, theirs.ba_tcp_flags) == (0x13, 0x13)
    tm = st.flow.tcp_metric
    assert tm is not None and (tm.ab_syn_start, tm.ba_syn_start) == (T, T + 1)
    assert (tm.ab_syn_ttl, tm.ba_syn_ttl, tm.ab_fin_start, tm.ba_fin_start) == (64, 63, T + 7, T + 8)
    assert st.flow.metric.rtt == MS
    reset = entry(syn, (2, 1), (1, 1), 0, 3, rst=(0, at(3)))
    kf2, _ = kernel_flows(opts)
    st2 = kf2.apply(b"k", reset, OFFSET)
    assert st2 is not None and st2.flow.finish_type == FinishType.TCP_RST
    assert st2.flow.tcp_metric is not None and st2.flow.tcp_metric.ba_rst_start == T + 3


def test_an_entry_without_link_or_network_is_not_a_flow() -> None:
    kf, table = kernel_flows()
    e = entry(ab(ICMP()), (1, 0), (1, 0), 0, 0, head=b"\x01\x02")
    assert kf.apply(b"k", e, OFFSET) is None
    assert (kf.undecoded, len(table)) == (1, 0)


def test_the_table_must_be_in_l3_mode() -> None:
    with pytest.raises(ValueError, match="L3 mode"):
        KernelFlows(FlowTable(CaptureOptions(layer_key_mode="L2")))


def test_raw_values_unchanged_since_the_last_poll_are_not_decoded() -> None:
    head = bytes(ab(ICMP()))

    def raw(packets: int, last_ms: int) -> bytes:
        return FLOW_VALUE.pack(packets0=packets, bytes0=packets * len(head), first_ns=at(0),
                               last_ns=at(last_ms), head_len=len(head), first_len=len(head),
                               head=head)
    kf, _ = kernel_flows()
    assert kf.apply_raw(b"k", raw(1, 0), OFFSET) is not None
    assert kf.apply_raw(b"k", raw(1, 0), OFFSET) is None
    st = kf.apply_raw(b"k", raw(4, 30), OFFSET)
    assert st is not None and (st.flow.metric.ab_packets, st.flow.last) == (4, T + 30)


def test_entry_unpacks_the_kernel_value() -> None:
    head = bytes(ab(ICMP()))
    raw = FLOW_VALUE.pack(packets0=3, packets1=4, bytes0=300, bytes1=400, first_ns=10, last_ns=20,
                          syn1=15, rtt_start=11, rtt_end=12, syn_ttl1=63, first_dir=1,
                          vlan_present=1, vlan_tci=8, vlan_proto=0x81, head_len=len(head),
                          first_len=98, tcp_flags0=0x12, head=head)
    e = KernelEntry.unpack(raw)
    assert (e.packets, e.octets, e.first_ns, e.last_ns) == ((3, 4), (300, 400), 10, 20)
    assert (e.syn, e.syn_ttl, e.first_dir, e.vlan_present, e.vlan_tci) == \
        ((0, 15), (0, 63), 1, True, 8)
    assert (e.first_len, e.tcp_flags, e.head) == (98, (0x12, 0), head)
