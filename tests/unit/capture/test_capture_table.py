"""Flow table lifecycle, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import json

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from skygraph.capture.options import CaptureOptions, TableSettings, application_ports
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import FinishType, Flow

T = 1_600_000_000_000  # ms
MS = 1_000_000  # ns per ms
A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def ab(p: Packet) -> Packet:
    return Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / p


def ba(p: Packet) -> Packet:
    return Ether(src=B_MAC, dst=A_MAC) / IP(src="10.0.0.2", dst="10.0.0.1") / p


def feed(table: FlowTable, p: Packet, at_ms: int) -> None:
    table.feed(bytes(p), at_ms * MS)


def only(table: FlowTable) -> Flow:
    (f,) = table.flows()
    return f


def test_update_tick_sends_deltas_of_touched_flows() -> None:
    table = FlowTable()
    p = ab(ICMP(id=1))
    feed(table, p, T)
    (sent,) = table.update_at(T + 1000)
    assert sent.last_update_metric is not None
    assert sent.last_update_metric.ab_bytes == len(p)
    assert (sent.last_update_metric.start, sent.last_update_metric.last) == (T, T + 1000)
    # Untouched: nothing sent, zero window.
    assert table.update_at(T + 2000) == []
    lum = only(table).last_update_metric
    assert lum is not None and lum.ab_bytes == 0 and (lum.start, lum.last) == (T + 1000, T + 2000)
    for i in range(3):
        feed(table, ab(ICMP(id=1)), T + 2100 + i)
    (sent,) = table.update_at(T + 3000)
    assert sent.last_update_metric is not None
    assert sent.last_update_metric.ab_packets == 3
    assert sent.last_update_metric.start == T + 2000
    assert sent.metric.ab_packets == 4


def test_application_timeout_only_for_idle_flows_of_that_application() -> None:
    table = FlowTable(settings=TableSettings(application_timeout={"arp": 10, "dns": 20}))
    feed(table, Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2"), T)
    feed(table, ab(UDP(sport=3333, dport=53) / DNS(qd=DNSQR(qname="example.org"))), T)
    assert {f.application for f in table.update_at(T + 1000)} == {"ARP", "DNS"}
    sent = table.update_at(T + 15_000)
    assert [(f.application, f.finish_type) for f in sent] == [("ARP", FinishType.TIMEOUT)]
    assert [(f.application, f.finish_type) for f in table.flows()] == [
        ("DNS", FinishType.NOT_FINISHED)]


def tcp_closed(table: FlowTable) -> None:
    feed(table, ab(TCP(sport=1000, dport=80, flags="S")), T)
    feed(table, ba(TCP(sport=80, dport=1000, flags="SA")), T + 1)
    feed(table, ab(TCP(sport=1000, dport=80, flags="FA")), T + 2)
    assert only(table).finish_type == FinishType.NOT_FINISHED  # one FIN is not the end
    feed(table, ba(TCP(sport=80, dport=1000, flags="FA")), T + 3)


def test_finished_flow_is_held_then_removed() -> None:
    table = FlowTable()
    tcp_closed(table)
    f = only(table)
    assert f.finish_type == FinishType.TCP_FIN
    assert f.metric.rtt == 1 * MS
    assert len(table.update_at(T + 5000)) == 1 and len(table) == 1
    assert table.update_at(T + 15_003) == [] and len(table) == 0


def test_hold_does_not_remove_a_flow_whose_finish_was_reset() -> None:
    table = FlowTable()
    tcp_closed(table)
    table.update_at(T + 5000)
    only(table).finish_type = FinishType.NOT_FINISHED
    table.update_at(T + 15_003)
    assert len(table) == 1


def test_any_rst_finishes() -> None:
    table = FlowTable()
    feed(table, ab(TCP(sport=1000, dport=80, flags="S")), T)
    feed(table, ba(TCP(sport=80, dport=1000, flags="R")), T + 7)
    f = only(table)
    assert f.finish_type == FinishType.TCP_RST and f.metric.rtt == 7 * MS


def test_expire_ticks_time_out_idle_flows_between_one_and_two_periods() -> None:
    table = FlowTable(settings=TableSettings(update=60, expire=600))
    feed(table, ab(ICMP(id=1)), T)
    assert table.tick(T) == []
    assert table.tick(T + 600_000) != [] and len(table) == 1  # update only; Last == T
    sent = table.tick(T + 1_200_000)
    assert [f.finish_type for f in sent] == [FinishType.TIMEOUT] and len(table) == 0


def test_expired_flow_comes_back_with_a_new_uuid() -> None:
    table = FlowTable()
    feed(table, ab(ICMP(id=1)), T)
    first = only(table)
    table.expire_at(T + 1)  # first tick: cutoff = now - expire, nothing expires
    assert len(table) == 1
    (gone,) = table.expire_at(T + 700_000)
    assert gone.uuid == first.uuid and len(table) == 0
    feed(table, ab(ICMP(id=1)), T + 700_001)
    again = only(table)
    assert again.uuid != first.uuid and again.tracking_id == first.tracking_id


def test_lru_cap_evicts_least_recently_used_and_counts_drops() -> None:
    table = FlowTable(settings=TableSettings(max_entries=3))
    for i in range(3):
        feed(table, ab(UDP(sport=1000 + i, dport=53)), T + i)
    feed(table, ab(UDP(sport=1000, dport=53)), T + 10)  # touch the oldest
    feed(table, ab(UDP(sport=2000, dport=53)), T + 11)
    assert len(table) == 3 and table.dropped == 1
    assert sorted(f.transport.a for f in table.flows() if f.transport) == [1000, 1002, 2000]


def test_raw_packets_kept_up_to_the_limit_and_cleared_when_sent() -> None:
    table = FlowTable(CaptureOptions(raw_packet_limit=2))
    pkts = [ab(ICMP(id=1, seq=i)) for i in range(3)]
    for i, p in enumerate(pkts):
        feed(table, p, T + i)
    f = only(table)
    assert f.raw_packets_captured == 2
    assert [(r.index, r.data, r.link_type) for r in f.last_raw_packets] == [
        (1, bytes(pkts[0]), 1), (2, bytes(pkts[1]), 1)]
    (sent,) = table.update_at(T + 1000)
    assert len(sent.last_raw_packets) == 2 and only(table).last_raw_packets == ()
    assert "LastRawPackets" not in sent.to_json()


def test_application_port_map_overrides_last_layer() -> None:
    opts = CaptureOptions(tcp_applications=application_ports({8080: "http"}))
    table = FlowTable(opts)
    feed(table, ba(TCP(sport=8080, dport=5555, flags="S")), T)
    assert only(table).application == "HTTP"


def test_l3_mode_counts_non_ip_flows() -> None:
    # §3 fix 16: Skydive never counts non-IP packets in L3 mode.
    table = FlowTable(CaptureOptions(layer_key_mode="L3"))
    arp = Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2")
    feed(table, arp, T)
    assert only(table).metric.ab_packets == 1 and only(table).metric.ab_bytes == len(arp)


def test_flow_json_has_skydive_shape() -> None:
    table = FlowTable()
    feed(table, ab(ICMP(type=8, id=9)), T)
    doc = json.loads(json.dumps(only(table).to_json()))
    assert doc["ParentUUID"] == ""
    assert doc["Link"] == {"Protocol": "ETHERNET", "A": A_MAC, "B": B_MAC, "ID": 0}
    assert doc["Network"]["Protocol"] == "IPV4" and doc["Network"]["ID"] == 0
    assert doc["ICMP"] == {"Type": "ECHO", "ID": 9}
    assert doc["Metric"]["BAPackets"] == 0 and "RTT" not in doc["Metric"]
    assert doc["Start"] == doc["Last"] == T and doc["RawPacketsCaptured"] == 0
    assert "FinishType" not in doc and "Transport" not in doc


def test_identical_endpoints_count_first_packet_as_ba() -> None:
    # Kept Skydive quirk (#9): same MACs and IPs, AB iff Transport.A > packet src port.
    lo = Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") / IP(
        src="127.0.0.1", dst="127.0.0.1")
    table = FlowTable()
    feed(table, lo / TCP(sport=5000, dport=4000), T)
    feed(table, lo / TCP(sport=4000, dport=5000), T + 1)
    m = only(table).metric
    assert (m.ab_packets, m.ba_packets) == (1, 1)
    first_is_ba = FlowTable()
    feed(first_is_ba, lo / TCP(sport=5000, dport=4000), T)
    assert only(first_is_ba).metric.ba_packets == 1
