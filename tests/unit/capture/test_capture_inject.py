"""Injected frames (skygraph.capture.inject): what scapy decodes from them, the
modes, payload increments, pcap replay, the TrackingID, and field errors."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from skygraph.capture.inject import Injection, InjectionError, frames, pcap_frames, tracking_id
from skygraph.capture.table import FlowTable

BASE = {"UUID": "i1", "SrcMAC": "02:00:00:00:00:01", "DstMAC": "02:00:00:00:00:02",
        "SrcIP": "10.0.0.1", "DstIP": "10.0.0.2"}


def build(**kw: object) -> list[Ether]:
    inj = Injection.from_json({**BASE, **kw})
    return [Ether(f) for f in frames(inj, random.Random(7))]


def test_icmp4_unique_mode_is_one_flow_with_counting_sequence_numbers() -> None:
    pkts = build(Type="icmp4", Count=3, ICMPID=4242, TTL=9, Payload="ab", IncrementPayload=True)
    assert [p[Ether].dst for p in pkts] == ["02:00:00:00:00:02"] * 3
    assert [(p[IP].src, p[IP].dst, p[IP].ttl) for p in pkts] == [("10.0.0.1", "10.0.0.2", 9)] * 3
    assert [(p[ICMP].type, p[ICMP].id, p[ICMP].seq) for p in pkts] == [
        (8, 4242, 1), (8, 4242, 2), (8, 4242, 3)]
    assert [bytes(p[ICMP].payload) for p in pkts] == [b"ab", b"abx", b"abxx"]
    table = FlowTable()
    for i, p in enumerate(pkts):
        table.feed(bytes(p), i * 1_000_000)
    flows = table.flows()
    assert len(flows) == 1 and flows[0].tracking_id == tracking_id(bytes(pkts[0]))


def test_random_mode_gives_each_frame_its_own_flow_from_the_second_on() -> None:
    pkts = build(Type="udp4", Count=20, DstPort=53, SrcPort=40000, Mode="random")
    assert pkts[0][UDP].sport == 40000
    assert len({p[UDP].sport for p in pkts}) > 10
    assert {p[UDP].dport for p in pkts} == {53}


@pytest.mark.parametrize("kind,layer", [("tcp6", TCP), ("udp6", UDP), ("icmp6", ICMPv6EchoRequest)])
def test_ipv6_types(kind: str, layer: type) -> None:
    p = build(Type=kind, SrcIP="fd00::1", DstIP="fd00::2", DstPort=80, TTL=3)[0]
    assert (p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == ("fd00::1", "fd00::2", 3)
    assert layer in p
    if kind == "tcp6":
        assert p[TCP].flags == "S" and p[TCP].dport == 80


def test_pcap_replay_sends_the_recorded_frames_count_times(tmp_path: Path) -> None:
    recorded = [Ether(src="02:00:00:00:00:0a") / IP(dst="192.0.2.1") / UDP(dport=9),
                Ether(src="02:00:00:00:00:0b") / IP(dst="192.0.2.2") / UDP(dport=9)]
    wrpcap(str(tmp_path / "r.pcap"), recorded)
    data = (tmp_path / "r.pcap").read_bytes()
    inj = Injection.from_json({"UUID": "p", "Pcap": base64.b64encode(data).decode(),
                               "Count": 2})
    assert list(frames(inj, random.Random())) == [bytes(p) for p in recorded] * 2
    with pytest.raises(InjectionError, match="Pcap: not a readable pcap"):
        pcap_frames(b"not a pcap at all")


@pytest.mark.parametrize("change,message", [
    ({"Type": "icmp5"}, "Type: 'icmp5' is not one of"),
    ({"Mode": "burst"}, "Mode: 'burst'"),
    ({"Count": 0}, "Count: 0 is outside"),
    ({"TTL": 256}, "TTL: 256 is outside"),
    ({"DstPort": 70000}, "DstPort: 70000"),
    ({"SrcIP": "fd00::1"}, "SrcIP: fd00::1 is not an IPv4 address"),
    ({"DstIP": "nope"}, "DstIP: 'nope' is not an IP address"),
    ({"SrcMAC": "02:00:00"}, "SrcMAC: '02:00:00' is not a MAC"),
    ({"Count": "many"}, "Count: 'many' is not an integer"),
    ({"Pcap": "***"}, "Pcap: not base64"),
])
def test_errors_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(InjectionError, match=message):
        Injection.from_json({**BASE, **change})
