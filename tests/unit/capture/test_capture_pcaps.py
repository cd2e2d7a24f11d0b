"""Every expectation of tests/data/pcaps/README.md, on the real Skydive traces."""

from __future__ import annotations

import pytest

from skygraph.capture.offline import Result, process_file
from skygraph.capture.options import CaptureOptions
from skygraph.topology.flow import FinishType, Flow
from tests.conftest import PCAPS


def flows_of(name: str, bpf: str = "", fast: bool = True, **opts: object) -> list[Flow]:
    result: Result = process_file(PCAPS / name, CaptureOptions(**opts), bpf,  # type: ignore[arg-type]
                                  fast=fast)
    assert_parent_chain(result.flows)
    return result.flows


def assert_parent_chain(flows: list[Flow]) -> None:
    uuids = [f.uuid for f in flows]
    for f in flows:
        if f.parent_uuid:
            assert uuids.count(f.parent_uuid) == 1, f"dangling ParentUUID of {f.layers_path}"


def metric(f: Flow) -> tuple[int, int, int, int]:
    m = f.metric
    return m.ab_packets, m.ab_bytes, m.ba_packets, m.ba_bytes


@pytest.mark.parametrize("fast", [True, False])
def test_simple_tcpv4_session(fast: bool) -> None:
    (f,) = flows_of("simple-tcpv4.pcap", fast=fast, extra_tcp_metric=True)
    assert f.layers_path == "Ethernet/IPv4/TCP"
    assert f.network is not None and f.transport is not None
    assert (f.network.a, f.transport.a, f.network.b, f.transport.b) == (
        "192.168.0.2", 36108, "192.168.0.1", 3333)
    assert metric(f) == (5, 344, 3, 206)
    assert f.metric.rtt == 33000
    tm = f.tcp_metric
    assert tm is not None
    assert tm.ab_syn_start == tm.ba_syn_start == 1490086703768
    assert tm.ab_syn_ttl == tm.ba_syn_ttl == 64
    assert tm.ab_fin_start == tm.ba_fin_start == 1490086707507
    # §3 fix 7: FIN seen in both directions finishes the flow.
    assert f.finish_type == FinishType.TCP_FIN


def test_simple_tcpv6_rtt() -> None:
    (f,) = flows_of("simple-tcpv6.pcap")
    assert f.layers_path == "Ethernet/IPv6/TCP"
    assert f.metric.rtt == 28000
    assert f.network is not None and f.network.a == "fd49:37c8:5229::2"


def test_truncated_icmp_counts_wire_length() -> None:
    (f,) = flows_of("icmpv4-truncated.pcap")
    assert f.layers_path == "Ethernet/IPv4/ICMPv4"
    assert metric(f) == (1, 1066, 1, 1066)
    assert f.metric.rtt == 13104000


def test_layer_key_mode_l3_golden_ids() -> None:
    (f,) = flows_of("layer-key-mode.pcap", layer_key_mode="L3")
    assert metric(f) == (2, 196, 2, 196)
    assert f.tracking_id == f.l3_tracking_id == "9e42a86914a043b8"
    assert f.icmp is not None and f.icmp.id == 23604 and f.icmp.type.name == "ECHO"


@pytest.mark.parametrize("fast", [True, False])
def test_layer_key_mode_l2_golden_ids(fast: bool) -> None:
    flows = flows_of("layer-key-mode.pcap", fast=fast)
    by_mac = {f.link.a: f for f in flows if f.link is not None}
    assert len(flows) == 2
    assert by_mac["f2:45:25:5b:3a:bc"].tracking_id == "a25d427a9f9dcdb8"
    assert by_mac["f2:45:25:5b:3a:ac"].tracking_id == "6952cad8cd38c63c"
    for f in flows:
        assert f.l3_tracking_id == "9e42a86914a043b8"
        assert metric(f) == (1, 98, 1, 98)


@pytest.mark.parametrize("fast", [True, False])
def test_gre_in_gre_parent_chain(fast: bool) -> None:
    outer, middle, inner = flows_of("gre-gre-icmpv4.pcap", fast=fast)
    assert outer.layers_path == "Ethernet/IPv4/GRE" and outer.parent_uuid == ""
    assert middle.layers_path == "IPv4/GRE" and middle.parent_uuid == outer.uuid
    assert inner.layers_path == "IPv4/ICMPv4" and inner.parent_uuid == middle.uuid
    assert outer.network is not None and middle.network is not None
    assert inner.network is not None
    assert (outer.network.a, outer.network.b) == ("72.205.54.70", "86.106.164.150")
    assert (middle.network.a, middle.network.b) == ("10.10.11.2", "10.10.13.2")
    assert (inner.network.a, inner.network.b) == ("10.10.25.1", "192.168.1.2")
    assert metric(outer) == (5, 810, 5, 810)
    assert metric(middle) == (5, 620, 5, 620)
    assert metric(inner) == (5, 500, 5, 500)


@pytest.mark.parametrize("fast", [True, False])
def test_vxlan_source_port_ignored(fast: bool) -> None:
    flows = flows_of("vxlan-src-port.pcap", fast=fast)
    outer = [f for f in flows if f.layers_path == "Ethernet/IPv4/UDP/VXLAN"]
    inner = [f for f in flows if f.layers_path == "Ethernet/IPv4/TCP"]
    assert len(flows) == 3 and len(outer) == 1 and len(inner) == 2
    (o,) = outer
    assert o.network is not None and (o.network.a, o.network.b, o.network.id) == (
        "172.16.0.1", "172.16.0.2", 10)
    assert metric(o) == (2, 208, 0, 0)
    assert sorted(f.transport.a for f in inner if f.transport) == [1468, 1890]
    for f in inner:
        assert f.parent_uuid == o.uuid
        assert metric(f) == (1, 54, 0, 0)
        assert f.network is not None and (f.network.a, f.network.b) == (
            "192.168.0.1", "192.168.0.2")


def test_icmp_vlan_bpf_matches_both_packets() -> None:
    (f,) = flows_of("icmp-vlan.pcap", bpf="icmp or (vlan and icmp)")
    assert f.layers_path == "Ethernet/Dot1Q/IPv4/ICMPv4"
    assert f.link is not None and f.link.id == 5
    assert f.metric.ab_packets + f.metric.ba_packets == 2


def test_icmp_symmetric_hundred_flows() -> None:
    flows = flows_of("icmpv4-symetric.pcap")
    assert len(flows) == 100
    assert len({f.uuid for f in flows}) == 100
    assert all(metric(f)[0] == metric(f)[2] == 1 for f in flows)


def test_dns_flows_hold_the_response() -> None:
    flows = flows_of("dns.pcap", extra_layers=2)
    assert len(flows) == 6
    for f in flows:
        assert f.layers_path == "Ethernet/IPv4/UDP/DNS" and f.application == "DNS"
        assert f.dns is not None
        assert f.dns["QR"] is True and f.dns["RD"] is True and f.dns["RA"] is True
        assert f.dns["ResponseCode"] == "No Error"


def test_dns_without_extra_layer_has_no_dns_field() -> None:
    flows = flows_of("dns.pcap")
    assert len(flows) == 6 and all(f.dns is None for f in flows)


@pytest.mark.parametrize("fast", [True, False])
def test_arp_dns_http(fast: bool) -> None:
    flows = flows_of("eth-ip4-arp-dns-req-http-google.pcap", fast=fast)
    assert sorted(f.application for f in flows) == ["ARP", "ARP", "DNS", "DNS", "TCP", "TCP"]
    arp = next(f for f in flows if f.link and f.link.a == "fa:16:3e:29:e0:82"
               and f.application == "ARP")
    assert arp.layers_path == "Ethernet/ARP"
    assert arp.link is not None and arp.link.b == "ff:ff:ff:ff:ff:ff"
    assert metric(arp) == (1, 42, 0, 0)
    # Non-IP flows share L3TrackingID = xxh64("").
    assert arp.l3_tracking_id == "ef46db3751d8e999"
    dns = next(f for f in flows if f.transport and f.transport.a == 37686)
    assert dns.network is not None and dns.network.b == "8.8.8.8"
    assert metric(dns) == (2, 148, 2, 256)
    tcp = next(f for f in flows if f.transport and f.transport.a == 54785)
    assert tcp.network is not None and tcp.network.b == "216.58.211.67"
    assert metric(tcp) == (20, 1475, 18, 21080)


def test_arp_dns_http_bpf_ports() -> None:
    flows = flows_of("eth-ip4-arp-dns-req-http-google.pcap", bpf="port 53 or port 80")
    assert len(flows) == 4
    assert {f.application for f in flows} == {"DNS", "TCP"}


def test_l3_key_mode_keeps_tracking_ids_equal() -> None:
    for f in flows_of("eth-ip4-arp-dns-req-http-google.pcap", layer_key_mode="L3"):
        if f.network is not None:
            assert f.tracking_id == f.l3_tracking_id


def test_the_traces_are_in_the_repository() -> None:
    """Tests parametrized over the traces must not silently run on none."""
    assert len(list(PCAPS.glob("*.pcap"))) == 10
