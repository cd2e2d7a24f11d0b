"""NetFlow v5: the encoder field by field (checked against scapy's decoder too), the
flow -> records mapping (SPEC §3 fix 3), and the sender's sequence numbers,
datagram sizes and per-export deltas, on a real loopback UDP socket."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.netflow import NetflowHeader, NetflowHeaderV5, NetflowRecordV5
from scapy.packet import Packet

from skygraph.capture.table import FlowTable
from skygraph.exporters import TargetNode, parse_endpoint
from skygraph.exporters.netflow import (
    MAX_RECORDS,
    Exported,
    Header,
    NetFlowV5Target,
    Record,
    encode_datagram,
    encode_record,
    flow_records,
    header_at,
    ip_protocol,
    link_header_bytes,
)
from skygraph.topology.flow import FinishType, Flow, FlowLayer, FlowMetric, FlowProtocol

T = 1_700_000_000_000  # ms
MS = 1_000_000
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
NODE = TargetNode(if_index=7, name="eth0", agent_ip="127.0.0.1", mac=A)


def ab(p: Packet, vlan: int = 0) -> Packet:
    eth = Ether(src=A, dst=B)
    return (eth / Dot1Q(vlan=vlan) if vlan else eth) / IP(src="10.0.0.1", dst="10.0.0.2") / p


def ba(p: Packet) -> Packet:
    return Ether(src=B, dst=A) / IP(src="10.0.0.2", dst="10.0.0.1") / p


def table_flow(*packets: tuple[Packet, int]) -> Flow:
    table = FlowTable()
    for p, at in packets:
        table.feed(bytes(p), at * MS)
    (f,) = table.flows()
    return f


# ---- encoder --------------------------------------------------------------------------------
def test_header_fields_in_order() -> None:
    rec = Record("10.0.0.1", "10.0.0.2", 1, 2, 17, 3, 4, 5, 6)
    data = encode_datagram(Header(sys_uptime=1234, unix_secs=1_700_000_000, unix_nsecs=5_000_000,
                                  flow_sequence=42), [rec, rec])
    assert len(data) == 24 + 2 * 48
    assert struct.unpack("!HHIIIIBBH", data[:24]) == (5, 2, 1234, 1_700_000_000, 5_000_000,
                                                      42, 0, 1, 0)
    # An independent decoder reads the same values.
    v5 = NetflowHeader(data)[NetflowHeaderV5]
    assert (v5.count, v5.sysUptime, v5.unixSecs, v5.unixNanoSeconds, v5.flowSequence,
            v5.engineType, v5.engineID) == (2, 1234, 1_700_000_000, 5_000_000, 42, 0, 1)


def test_record_fields_in_order() -> None:
    rec = Record("192.0.2.1", "198.51.100.7", 40000, 443, 6, 12, 3400, 100, 2100,
                 tcp_flags=0x1B, input=3, output=4)
    data = encode_record(rec)
    assert len(data) == 48
    fields = struct.unpack("!4s4s4sHHIIIIHHBBBBHHBBH", data)
    assert fields == (socket.inet_aton("192.0.2.1"), socket.inet_aton("198.51.100.7"),
                      bytes(4), 3, 4, 12, 3400, 100, 2100, 40000, 443, 0, 0x1B, 6, 0, 0, 0,
                      0, 0, 0)
    r = NetflowRecordV5(data)
    assert (r.src, r.dst, r.srcport, r.dstport, r.prot, r.dpkts, r.dOctets, r.first, r.last,
            r.tcpFlags, r.input, r.output) == ("192.0.2.1", "198.51.100.7", 40000, 443, 6, 12,
                                              3400, 100, 2100, 0x1B, 3, 4)


def test_datagram_holds_1_to_30_records() -> None:
    rec = Record("10.0.0.1", "10.0.0.2", 1, 2, 17, 1, 1, 0, 0)
    h = Header(0, 0, 0, 0)
    assert len(encode_datagram(h, [rec] * MAX_RECORDS)) == 24 + 30 * 48
    with pytest.raises(ValueError, match="31 records"):
        encode_datagram(h, [rec] * 31)
    with pytest.raises(ValueError, match="0 records"):
        encode_datagram(h, [])


def test_header_times_from_the_table_clock() -> None:
    h = header_at(T + 61_234, T, 7)
    assert (h.sys_uptime, h.unix_secs, h.unix_nsecs, h.flow_sequence) == (
        61_234, (T + 61_234) // 1000, 234_000_000, 7)


# ---- mapping ----------------------------------------------------------------------------------
def test_tcp_flow_two_records_with_real_protocol_ip_bytes_and_flags() -> None:
    syn, synack = ab(TCP(sport=40000, dport=80, flags="S")), ba(TCP(sport=80, dport=40000,
                                                                     flags="SA"))
    data = ab(TCP(sport=40000, dport=80, flags="PA") / (b"x" * 100))
    fin = ba(TCP(sport=80, dport=40000, flags="FA"))
    f = table_flow((syn, T), (synack, T + 1), (data, T + 2), (fin, T + 5))
    out, back = flow_records(f, None, boot_ms=T - 1000, if_index=7)
    assert (out.srcaddr, out.dstaddr, out.srcport, out.dstport) == ("10.0.0.1", "10.0.0.2",
                                                                    40000, 80)
    assert (back.srcaddr, back.dstaddr, back.srcport, back.dstport) == ("10.0.0.2", "10.0.0.1",
                                                                        80, 40000)
    assert out.prot == back.prot == 6  # Skydive always wrote 17
    assert (out.dpkts, back.dpkts) == (2, 2)
    # Octets at the IP layer: the frames minus their 14-byte Ethernet header.
    assert out.doctets == len(syn) + len(data) - 2 * 14
    assert back.doctets == len(synack) + len(fin) - 2 * 14
    assert out.tcp_flags == 0x02 | 0x08 | 0x10  # SYN, PSH, ACK
    assert back.tcp_flags == 0x02 | 0x10 | 0x01  # SYN, ACK, FIN
    assert (out.first, out.last) == (1000, 1005)
    assert (out.input, out.output) == (7, 7)


def test_protocols_of_udp_icmp_and_unknown_layers() -> None:
    udp = table_flow((ab(UDP(sport=5000, dport=53)), T))
    icmp = table_flow((ab(ICMP(type=8, id=3)), T))
    (r,) = flow_records(icmp, None, T)
    assert (ip_protocol(udp), ip_protocol(icmp), r.prot, r.srcport, r.dstport) == (17, 1, 1, 0, 0)
    gre = Flow(network=FlowLayer(FlowProtocol.IPV4, "10.0.0.1", "10.0.0.2"),
               layers_path="Ethernet/IPv4/GRE")
    ospf = Flow(network=FlowLayer(FlowProtocol.IPV4, "10.0.0.1", "10.0.0.2"),
                layers_path="Ethernet/IPv4")
    assert (ip_protocol(gre), ip_protocol(ospf)) == (47, 0)


def test_udp_records_carry_no_tcp_flags() -> None:
    f = table_flow((ab(UDP(sport=1, dport=2)), T))
    f.ab_tcp_flags = 0xFF  # whatever the table says, only TCP has flags
    (r,) = flow_records(f, None, T)
    assert r.tcp_flags == 0


def test_vlan_headers_are_not_ip_bytes() -> None:
    p = ab(UDP(sport=1, dport=2) / b"abcd", vlan=10)
    f = table_flow((p, T))
    assert link_header_bytes(f) == 18
    (r,) = flow_records(f, None, T)
    assert r.doctets == len(p) - 18 == 20 + 8 + 4


def test_per_export_deltas_never_count_a_packet_twice() -> None:
    table = FlowTable()
    p = ab(UDP(sport=1, dport=2))
    q = ba(UDP(sport=2, dport=1))
    table.feed(bytes(p), T * MS)
    table.feed(bytes(q), (T + 1) * MS)
    (f1,) = table.update_at(T + 1000)
    r1 = flow_records(f1, None, T)
    assert [r.dpkts for r in r1] == [1, 1]
    m = f1.metric
    sent = Exported(m.ab_packets, m.ab_bytes, m.ba_packets, m.ba_bytes, T + 1000)
    for i in range(3):
        table.feed(bytes(p), (T + 1500 + i) * MS)
    (f2,) = table.update_at(T + 2000)
    (r2,) = flow_records(f2, sent, T)  # only A->B saw packets since
    assert (r2.srcaddr, r2.dpkts, r2.doctets) == ("10.0.0.1", 3, 3 * (len(p) - 14))
    # This window's first packet came after the previous export.
    assert (r2.first, r2.last) == (1000, 1502)


def test_ipv6_and_non_ip_flows_have_no_records() -> None:
    v6 = table_flow((Ether(src=A, dst=B) / IPv6(src="fd00::1", dst="fd00::2") / UDP(), T))
    arp = table_flow((Ether(src=A, dst=B) / ARP(), T))
    assert flow_records(v6, None, T) == [] and flow_records(arp, None, T) == []


def test_times_before_the_exporter_started_are_clamped() -> None:
    f = table_flow((ab(UDP(sport=1, dport=2)), T))
    (r,) = flow_records(f, None, boot_ms=T + 5000)
    assert (r.first, r.last) == (0, 0)


def test_counters_over_32_bits_split_into_records() -> None:
    f = Flow(network=FlowLayer(FlowProtocol.IPV4, "10.0.0.1", "10.0.0.2"),
             layers_path="IPv4/UDP",
             metric=FlowMetric(ab_packets=5_000_000, ab_bytes=6_000_000_000), start=T, last=T)
    records = flow_records(f, None, T)
    assert len(records) == 2
    assert sum(r.dpkts for r in records) == 5_000_000
    assert sum(r.doctets for r in records) == 6_000_000_000
    assert all(r.doctets < 1 << 32 for r in records)


def test_large_if_index_is_unknown_in_16_bits() -> None:
    f = table_flow((ab(UDP(sport=1, dport=2)), T))
    (r,) = flow_records(f, None, T, if_index=70000)
    assert (r.input, r.output) == (0, 0)


# ---- sender -------------------------------------------------------------------------------------
@pytest.fixture
def collector() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    try:
        yield s
    finally:
        s.close()


def target_for(sock: socket.socket, boot: int = T) -> NetFlowV5Target:
    port = sock.getsockname()[1]
    return NetFlowV5Target(parse_endpoint(f"127.0.0.1:{port}", "netflowv5", default_port=2055),
                           NODE, clock=lambda: boot)


def receive(sock: socket.socket, n: int) -> list[tuple[NetflowHeaderV5, list[NetflowRecordV5]]]:
    out = []
    for _ in range(n):
        data = sock.recv(65535)
        h = NetflowHeader(data)[NetflowHeaderV5]
        records = [NetflowRecordV5(data[24 + 48 * i:24 + 48 * (i + 1)]) for i in range(h.count)]
        out.append((h, records))
    return out


def udp_flows(n: int, at: int, table: FlowTable | None = None) -> list[Flow]:
    table = table or FlowTable()
    for i in range(n):
        table.feed(bytes(ab(UDP(sport=1000 + i, dport=53))), at * MS)
    return table.flows()


def test_datagrams_of_at_most_30_records_numbered_by_flow_sequence(
        collector: socket.socket) -> None:
    target = target_for(collector)
    try:
        target.flows(udp_flows(40, T), T + 1000)
        target.flows(udp_flows(5, T + 2000), T + 3000)
        got = receive(collector, 3)
    finally:
        target.close()
    assert [h.count for h, _ in got] == [30, 10, 5]
    assert [h.flowSequence for h, _ in got] == [0, 30, 40]
    assert [h.sysUptime for h, _ in got] == [1000, 1000, 3000]
    assert got[2][0].unixSecs == (T + 3000) // 1000
    assert sorted(r.srcport for _, recs in got[:2] for r in recs) == list(range(1000, 1040))
    assert target.stats() == {"Flows": 45, "Records": 45, "Datagrams": 3, "Skipped": 0,
                              "Errors": 0}


def test_each_export_carries_only_the_new_packets(collector: socket.socket) -> None:
    table = FlowTable()
    target = target_for(collector)
    try:
        p = bytes(ab(UDP(sport=1, dport=2)))
        table.feed(p, T * MS)
        target.flows(table.update_at(T + 1000), T + 1000)
        for i in range(4):
            table.feed(p, (T + 1100 + i) * MS)
        target.flows(table.update_at(T + 2000), T + 2000)
        table.feed(p, (T + 2500) * MS)
        # The final flush hands the flow over again, with its stale LastUpdateMetric.
        target.flows(table.flush(), T + 3000)
        got = [recs[0].dpkts for _, recs in receive(collector, 3)]
    finally:
        target.close()
    assert got == [1, 4, 1]


def test_ipv6_flows_counted_as_skipped(collector: socket.socket) -> None:
    table = FlowTable()
    table.feed(bytes(Ether(src=A, dst=B) / IPv6(src="fd00::1", dst="fd00::2") / UDP()), T * MS)
    table.feed(bytes(ab(UDP(sport=1, dport=2))), T * MS)
    target = target_for(collector)
    try:
        target.flows(table.flows(), T + 1000)
        ((h, _),) = receive(collector, 1)
    finally:
        target.close()
    assert h.count == 1
    assert target.stats()["Skipped"] == 1


def test_flows_that_left_the_table_are_forgotten(collector: socket.socket) -> None:
    target = target_for(collector)
    try:
        live = udp_flows(3, T)
        target.flows(live, T + 1000)
        assert target.remembered() == 3
        live[0].finish_type = FinishType.TIMEOUT
        live[1].finish_type = FinishType.TCP_FIN
        target.flows(live[:2], T + 2000)
        assert target.remembered() == 2  # expired: gone; finished: kept while held
        target.flows([], T + 2000 + 16 * 60_000)
        assert target.remembered() == 1
    finally:
        target.close()


def test_send_failure_is_counted_not_raised() -> None:
    target = NetFlowV5Target(parse_endpoint("127.0.0.1:9", "netflowv5", default_port=2055), NODE)
    target.close()
    target.flows(udp_flows(1, T), T)  # closed: ignored
    target2 = NetFlowV5Target(parse_endpoint("127.0.0.1:9", "netflowv5", default_port=2055), NODE)
    try:
        target2._sock.close()  # the socket dies under the sender
        target2.flows(udp_flows(1, T), T)
        assert target2.stats()["Errors"] == 1
    finally:
        target2.close()


def test_ipv6_collector_and_a_bad_flow_among_good_ones() -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::1", 0))
    s.settimeout(5)
    target = NetFlowV5Target(parse_endpoint(f"[::1]:{s.getsockname()[1]}", "netflowv5",
                                            default_port=2055), NODE, clock=lambda: T)
    try:
        good = udp_flows(2, T)
        bad = Flow(uuid="bad", network=FlowLayer(FlowProtocol.IPV4, "not-an-ip", "10.0.0.2"),
                   metric=FlowMetric(ab_packets=1, ab_bytes=60))
        target.flows([good[0], bad, good[1]], T + 1000)
        ((h, records),) = receive(s, 1)
    finally:
        target.close()
        s.close()
    assert h.count == 2 and {r.srcport for r in records} == {1000, 1001}
    assert target.stats()["Errors"] == 1
