"""Tunnels, VLANs, fragments, IPv6 and odd link types, crafted with scapy."""

from __future__ import annotations

import itertools

import pytest
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import GRE, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP, SCTPChunkInit
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from skygraph.capture.options import CaptureOptions
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow

T0 = 1_700_000_000_000_000_000  # ns
INNER_A = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
    src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, id=7)
INNER_B = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IP(
    src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0, id=7)
OUTER_A = Ether(src="aa:00:00:00:00:01", dst="aa:00:00:00:00:02") / IP(
    src="192.0.2.1", dst="192.0.2.2")
OUTER_B = Ether(src="aa:00:00:00:00:02", dst="aa:00:00:00:00:01") / IP(
    src="192.0.2.2", dst="192.0.2.1")


def run(packets: list[Packet], link_type: int = 1, **opts: object) -> list[Flow]:
    table = FlowTable(CaptureOptions(**opts), link_type=link_type)  # type: ignore[arg-type]
    for i, p in enumerate(packets):
        table.feed(bytes(p), T0 + i * 1_000_000)
    flows = table.flows()
    uuids = [f.uuid for f in flows]
    for f in flows:
        assert not f.parent_uuid or uuids.count(f.parent_uuid) == 1
    return flows


def by_path(flows: list[Flow]) -> dict[str, Flow]:
    out = {f.layers_path: f for f in flows}
    assert len(out) == len(flows)
    return out


def counts(f: Flow) -> tuple[int, int, int, int]:
    m = f.metric
    return m.ab_packets, m.ab_bytes, m.ba_packets, m.ba_bytes


def bare_tracking_id(inner: Packet) -> tuple[str, str]:
    (f,) = run([inner])
    return f.tracking_id, f.l3_tracking_id


def encap_cases() -> list[tuple[str, Packet, Packet, str, str, int, int]]:
    """(name, A->B packet, B->A packet, outer path, inner path, Network.ID, header bytes)."""
    ip_a, ip_b = INNER_A[IP], INNER_B[IP]
    return [
        ("vxlan", OUTER_A / UDP(sport=1111, dport=4789) / VXLAN(vni=42) / INNER_A,
         OUTER_B / UDP(sport=2222, dport=4789) / VXLAN(vni=42) / INNER_B,
         "Ethernet/IPv4/UDP/VXLAN", "Ethernet/IPv4/ICMPv4", 42, 50),
        ("vxlan-8472", OUTER_A / UDP(sport=1111, dport=8472) / VXLAN(vni=43) / INNER_A,
         OUTER_B / UDP(sport=1111, dport=8472) / VXLAN(vni=43) / INNER_B,
         "Ethernet/IPv4/UDP/VXLAN", "Ethernet/IPv4/ICMPv4", 43, 50),
        ("geneve", OUTER_A / UDP(sport=5, dport=6081) / GENEVE(
            vni=99, proto=0x6558, options=[GeneveOptions(classid=1, type=2, data=b"abcd")])
         / INNER_A,
         OUTER_B / UDP(sport=6, dport=6081) / GENEVE(
             vni=99, proto=0x6558, options=[GeneveOptions(classid=1, type=2, data=b"abcd")])
         / INNER_B,
         "Ethernet/IPv4/UDP/Geneve", "Ethernet/IPv4/ICMPv4", 99, 58),
        ("gre-key", OUTER_A / GRE(key_present=1, key=77, seqnum_present=1, sequence_number=1)
         / ip_a, OUTER_B / GRE(key_present=1, key=77, seqnum_present=1, sequence_number=2)
         / ip_b, "Ethernet/IPv4/GRE", "IPv4/ICMPv4", 77, 46),
        ("gre-teb", OUTER_A / GRE(proto=0x6558) / INNER_A, OUTER_B / GRE(proto=0x6558) / INNER_B,
         "Ethernet/IPv4/GRE", "Ethernet/IPv4/ICMPv4", 0, 38),
        # ERSPAN: the ERSPAN header is skipped, not subtracted from inner bytes.
        ("erspan-ii", OUTER_A / GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_II(session_id=9)
         / INNER_A, OUTER_B / GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_II(session_id=9)
         / INNER_B, "Ethernet/IPv4/GRE", "Ethernet/IPv4/ICMPv4", 0, 42),
        ("erspan-iii", OUTER_A / GRE(seqnum_present=1, proto=0x22EB) / ERSPAN_III(session_id=9)
         / INNER_A, OUTER_B / GRE(seqnum_present=1, proto=0x22EB) / ERSPAN_III(session_id=9)
         / INNER_B, "Ethernet/IPv4/GRE", "Ethernet/IPv4/ICMPv4", 0, 42),
        ("mpls-gre", OUTER_A / GRE(proto=0x8847) / MPLS(label=100, s=0) / MPLS(label=200, s=1)
         / ip_a, OUTER_B / GRE(proto=0x8847) / MPLS(label=100, s=0) / MPLS(label=200, s=1)
         / ip_b, "Ethernet/IPv4/GRE/MPLS/MPLS", "IPv4/ICMPv4", 0, 46),
        ("mpls-udp-ip", OUTER_A / UDP(sport=7, dport=51234) / MPLS(label=5, s=1) / ip_a,
         OUTER_B / UDP(sport=51234, dport=7) / MPLS(label=5, s=1) / ip_b,
         "Ethernet/IPv4/UDP/MPLS", "IPv4/ICMPv4", 0, 46),
        ("mpls-udp-eth", OUTER_A / UDP(sport=7, dport=51234) / MPLS(label=5, s=1) / INNER_A,
         OUTER_B / UDP(sport=51234, dport=7) / MPLS(label=5, s=1) / INNER_B,
         "Ethernet/IPv4/UDP/MPLS", "Ethernet/IPv4/ICMPv4", 0, 46),
    ]


@pytest.mark.parametrize("case", encap_cases(), ids=lambda c: c[0])
def test_tunnel_splits_into_parent_and_inner_flow(
        case: tuple[str, Packet, Packet, str, str, int, int]) -> None:
    _, pa, pb, outer_path, inner_path, network_id, header = case
    flows = by_path(run([pa, pb, pa]))
    assert set(flows) == {outer_path, inner_path}
    outer, inner = flows[outer_path], flows[inner_path]
    assert outer.parent_uuid == "" and inner.parent_uuid == outer.uuid
    assert outer.network is not None and outer.network.id == network_id
    assert counts(outer) == (2, 2 * len(pa), 1, len(pb))
    # Inner bytes: outer wire length minus the headers before the inner packet
    # (or the inner IP length when the inner packet has no Ethernet header).
    ia, ib = len(pa) - header, len(pb) - header
    if not inner_path.startswith("Ethernet"):
        ia, ib = len(INNER_A[IP]), len(INNER_B[IP])
    assert counts(inner) == (2, 2 * ia, 1, ib)
    assert inner.network is not None and (inner.network.a, inner.network.b) == (
        "10.0.0.1", "10.0.0.2")
    assert inner.icmp is not None and inner.icmp.id == 7
    assert inner.metric.rtt == 1_000_000
    # The inner flow is recognisable where the traffic is seen decapsulated.
    bare = INNER_A if inner_path.startswith("Ethernet") else INNER_A[IP]
    link_type = 1 if inner_path.startswith("Ethernet") else 101
    (plain,) = run([bare], link_type=link_type)
    assert (inner.tracking_id, inner.l3_tracking_id) == (plain.tracking_id,
                                                          plain.l3_tracking_id)
    assert inner.uuid != plain.uuid


def test_overlay_source_port_and_direction_ignored() -> None:
    a = OUTER_A / UDP(sport=1, dport=4789) / VXLAN(vni=5) / INNER_A
    b = OUTER_B / UDP(sport=2, dport=4789) / VXLAN(vni=5) / INNER_B
    c = OUTER_A / UDP(sport=1, dport=4789) / VXLAN(vni=6) / INNER_A
    flows = run([a, b, c])
    outers = [f for f in flows if f.layers_path.endswith("VXLAN")]
    assert sorted(f.network.id for f in outers if f.network) == [5, 6]


def test_nested_tunnels_any_depth() -> None:
    level1 = OUTER_A / UDP(sport=9, dport=4789) / VXLAN(vni=1) / Ether() / IP(
        src="172.16.0.1", dst="172.16.0.2") / GRE(key_present=1, key=3) / IP(
        src="10.1.0.1", dst="10.1.0.2") / UDP(sport=9, dport=6081) / GENEVE(
        vni=7, proto=0x0800) / IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=1000, dport=80)
    flows = run([level1])
    assert [f.layers_path for f in flows] == [
        "Ethernet/IPv4/UDP/VXLAN", "Ethernet/IPv4/GRE", "IPv4/UDP/Geneve", "IPv4/TCP"]
    for parent, child in itertools.pairwise(flows):
        assert child.parent_uuid == parent.uuid
    assert [f.network.id for f in flows if f.network] == [1, 3, 7, 0]


def test_same_inner_traffic_in_two_tunnels_never_merges() -> None:
    a = OUTER_A / UDP(sport=1, dport=4789) / VXLAN(vni=1) / INNER_A
    b = OUTER_A / UDP(sport=1, dport=4789) / VXLAN(vni=2) / INNER_A
    inner = [f for f in run([a, b]) if f.parent_uuid]
    assert len(inner) == 2 and inner[0].tracking_id == inner[1].tracking_id
    assert inner[0].uuid != inner[1].uuid


@pytest.mark.parametrize(("tags", "packed"), [
    ([8], 8), ([8, 10], 40968), ([8, 10, 20], 335585288), ([8, 10, 20, 30], 2061919887368)])
def test_qinq_vlan_packing_never_splits(tags: list[int], packed: int) -> None:
    p: Packet = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x88A8)
    for i, tag in enumerate(tags):
        p = p / (Dot1AD(vlan=tag) if i == 0 and len(tags) > 1 else Dot1Q(vlan=tag))
    p = p / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
    (f,) = run([p])
    assert f.layers_path == "Ethernet/" + "Dot1Q/" * len(tags) + "IPv4/ICMPv4"
    assert f.link is not None and f.link.id == packed
    # VLAN ids are not part of the key (kept #17).
    untagged = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p[IP]
    assert f.tracking_id == run([untagged])[0].tracking_id


def fragments() -> list[Packet]:
    big = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
        src="10.0.0.1", dst="10.0.0.2", id=99) / ICMP(id=3) / Raw(b"x" * 2500)
    frags: list[Packet] = fragment(big, fragsize=1000)  # type: ignore[no-untyped-call]
    assert len(frags) == 3 and all(f.haslayer(Ether) for f in frags)
    return frags


def test_fragments_without_defrag_stop_at_fragment() -> None:
    frags = fragments()
    (f,) = run(frags)
    assert f.layers_path == "Ethernet/IPv4/Fragment"
    assert f.transport is None and f.icmp is None and f.ip_metric is None
    assert counts(f) == (len(frags), sum(len(p) for p in frags), 0, 0)


def test_ip_defrag_reassembles_and_counts_fragments() -> None:
    frags = fragments()
    shuffled = [frags[2], frags[0], frags[1]]
    (f,) = run(shuffled, ip_defrag=True)
    assert f.layers_path == "Ethernet/IPv4/ICMPv4"
    assert f.icmp is not None and f.icmp.id == 3
    assert f.ip_metric is not None and f.ip_metric.fragments == 3
    assert f.ip_metric.fragment_errors == 0
    assert counts(f)[0] == 1


def test_ip_defrag_drops_incomplete_datagrams() -> None:
    frags = fragments()
    assert run(frags[:2], ip_defrag=True) == []


def test_ipv6_echo_with_extension_header() -> None:
    req = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(
        src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(id=5)
    rep = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IPv6(
        src="fd00::2", dst="fd00::1") / ICMPv6EchoReply(id=5)
    flows = run([req, rep])
    assert len(flows) == 1
    (f,) = flows
    assert f.layers_path == "Ethernet/IPv6/IPv6HopByHop/ICMPv6/ICMPv6Echo"
    assert f.application == "ICMPv6Echo"
    assert f.icmp is not None and f.icmp.type.name == "ECHO" and f.icmp.id == 5
    assert f.network is not None and f.network.protocol.name == "IPV6"
    assert counts(f) == (1, len(req), 1, len(rep))
    assert f.metric.rtt == 1_000_000


def test_sctp_chunks_are_layers() -> None:
    (f,) = run([Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / SCTP(sport=1, dport=2)
                / SCTPChunkInit()])
    assert f.layers_path == "Ethernet/IPv4/SCTP/SCTPInit"
    assert f.transport is not None and f.transport.protocol.name == "SCTP"


def test_raw_ip_and_linux_cooked_link_types() -> None:
    ip = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S")
    (raw,) = run([ip], link_type=101)
    assert raw.layers_path == "IPv4/TCP" and raw.link is None
    assert counts(raw) == (1, len(ip), 0, 0)
    (sll,) = run([CookedLinux(proto=0x800) / ip], link_type=113)
    assert sll.layers_path == "IPv4/TCP"
    assert counts(sll) == (1, len(ip), 0, 0)
    assert sll.tracking_id == raw.tracking_id


@pytest.mark.parametrize("cut", [14, 20, 34, 41, 42, 60, 70])
def test_truncated_tunnel_decodes_as_far_as_it_can(cut: int) -> None:
    p = bytes(OUTER_A / UDP(sport=1, dport=4789) / VXLAN(vni=5) / INNER_A)
    table = FlowTable()
    table.feed(p[:cut], T0, len(p))
    paths = [f.layers_path for f in table.flows()]
    expected = {14: ["Ethernet"], 20: ["Ethernet"], 34: ["Ethernet/IPv4"],
                41: ["Ethernet/IPv4"], 42: ["Ethernet/IPv4/UDP"], 60: ["Ethernet/IPv4/UDP/VXLAN"],
                70: ["Ethernet/IPv4/UDP/VXLAN", "Ethernet"]}
    assert paths == expected[cut]
    assert table.flows()[0].metric.ab_bytes == len(p)
