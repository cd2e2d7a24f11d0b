"""Extra layers, the MPLS-over-UDP port, §3 fix 8 and TCP reassembly counters."""

from __future__ import annotations

from scapy.contrib.mpls import MPLS
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import LLC, SNAP, STP, Dot3, Ether
from scapy.layers.vrrp import VRRP
from scapy.packet import Packet, Raw

from skygraph.capture.options import CaptureOptions
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow

T = 1_700_000_000_000_000_000


def run(packets: list[Packet], **opts: object) -> list[Flow]:
    table = FlowTable(CaptureOptions(**opts))  # type: ignore[arg-type]
    for i, p in enumerate(packets):
        table.feed(bytes(p), T + i * 1_000_000)
    return table.flows()


def test_spanning_tree_and_snap_behind_llc() -> None:
    bpdu = Dot3(src="02:00:00:00:00:01", dst="01:80:c2:00:00:00") / LLC() / STP()
    (f,) = run([bpdu])
    assert f.layers_path == "Ethernet/LLC/STP" and f.application == "STP"
    assert f.network is None and f.metric.ab_bytes == len(bpdu)
    snap = Dot3(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / LLC() / SNAP(
        code=0x0800) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
    (g,) = run([snap])
    assert g.layers_path == "Ethernet/LLC/SNAP/IPv4/ICMPv4"


def test_dhcpv4_extra_layer() -> None:
    p = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / IP(
        src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) / BOOTP(
        secs=3, flags=0x8000, sname=b"boot-server", file=b"pxelinux.0") / DHCP(
        options=[("message-type", "discover"), "end"])
    (plain,) = run([p])
    assert plain.layers_path == "Ethernet/IPv4/UDP/DHCPv4" and plain.dhcpv4 is None
    (f,) = run([p], extra_layers=4)
    assert f.dhcpv4 is not None
    assert (f.dhcpv4["Secs"], f.dhcpv4["Flags"], f.dhcpv4["HardwareLen"]) == (3, 0x8000, 6)
    assert (f.dhcpv4["ServerName"], f.dhcpv4["File"]) == ("boot-server", "pxelinux.0")


def test_vrrp_extra_layer() -> None:
    p = Ether(src="00:00:5e:00:01:07", dst="01:00:5e:00:00:12") / IP(
        src="10.0.0.2", dst="224.0.0.18", ttl=255) / VRRP(vrid=7, priority=200,
                                                           addrlist=["10.0.0.1"])
    (f,) = run([p], extra_layers=1)
    assert f.layers_path == "Ethernet/IPv4/VRRP" and f.application == "VRRP"
    assert f.vrrpv2 is not None
    assert (f.vrrpv2["VirtualRtrID"], f.vrrpv2["Priority"]) == (7, 200)
    assert f.vrrpv2["IPAddress"] == ["10.0.0.1"]


def test_mpls_udp_port_is_configurable() -> None:
    inner = IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
    p = Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=6635) / MPLS(
        label=9, s=1) / inner
    assert [f.layers_path for f in run([p])] == ["Ethernet/IPv4/UDP"]
    assert [f.layers_path for f in run([p], mpls_udp_port=6635)] == [
        "Ethernet/IPv4/UDP/MPLS", "IPv4/ICMPv4"]


def test_l3_tracking_id_is_ordered_by_ip_in_l2_mode() -> None:
    # §3 fix 8: MAC order and IP order disagree here; Skydive would order the IPs
    # by MAC and give another L3TrackingID than an L3-mode capture of the same packet.
    fwd = Ether(src="fe:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
        src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=80)
    rev = Ether(src="02:00:00:00:00:02", dst="fe:00:00:00:00:01") / IP(
        src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=1000)
    (l2,) = run([fwd, rev])
    (l3,) = run([fwd, rev], layer_key_mode="L3")
    assert l2.l3_tracking_id == l3.l3_tracking_id == l3.tracking_id
    assert l2.tracking_id != l2.l3_tracking_id
    # Another hop rewrites the MACs: same L3TrackingID, different TrackingID.
    hop = Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:08") / fwd[IP]
    (other,) = run([hop])
    assert other.l3_tracking_id == l2.l3_tracking_id and other.tracking_id != l2.tracking_id


def test_tcp_reassembly_counts_skipped_and_out_of_order_segments() -> None:
    a = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
        src="10.0.0.1", dst="10.0.0.2")

    def seg(seq: int, size: int, flags: str = "A") -> Packet:
        return a / TCP(sport=1000, dport=80, seq=seq, flags=flags) / Raw(b"x" * size)

    syn = a / TCP(sport=1000, dport=80, seq=99, flags="S")
    packets = [syn, seg(100, 10), seg(120, 10), seg(110, 10), seg(130, 5, "FA")]
    (f,) = run(packets, reassemble_tcp=True)
    tm = f.tcp_metric
    assert tm is not None
    assert (tm.ab_saw_start, tm.ab_saw_end) == (1, 1)
    assert (tm.ab_segment_skipped, tm.ab_segment_skipped_bytes) == (1, 10)
    assert tm.ab_segment_out_of_order == 1
    assert (tm.ab_packets, tm.ab_bytes) == (3, 25)
    assert tm.ab_syn_start == 0  # SYN times need ExtraTCPMetric
