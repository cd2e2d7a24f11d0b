"""ERSPAN targets on the wire: frames sent from a raw GRE socket in one namespace
reach a raw GRE receiver in another byte for byte (fragmented when bigger than
the link MTU), and tshark dissects every packet as ERSPAN Type II / III with
the session id, index and sequence numbers, without warnings."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from skygraph.exporters import Target, TargetNode, make_target
from skygraph.topology.netns import run_in
from tests.integration.capture.conftest import VethPair, sh
from tests.integration.exporters.conftest import Sniffer, tshark, tshark_clean, tshark_fields

pytestmark = pytest.mark.root

SESSION = 42
PEER_MAC = "02:00:00:00:00:bb"
T0 = 1_700_000_000_123_456_700


def node_of(lab: VethPair) -> TargetNode:
    (link,) = json.loads(sh(f"ip -j link show dev {lab.a_if}", lab.a))
    mac = str(link["address"])
    return TargetNode(lab.ifindex(lab.a, lab.a_if), lab.a_if, lab.a_ip, mac)


def open_target(lab: VethPair, kind: str, link_type: int = 1) -> Target:
    node = node_of(lab)
    return run_in(lab.a, lambda: make_target(kind, f"{lab.b_ip}:0", node, header_size=0,
                                             sampling_rate=0, polling_interval=0,
                                             session_id=SESSION, link_type=link_type))


def receiver(lab: VethPair) -> socket.socket:
    def bind() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
        s.settimeout(5)
        return s
    return run_in(lab.b, bind)


def frames_of(mine: str) -> list[bytes]:
    out = Ether(src=mine, dst=PEER_MAC)
    back = Ether(src=PEER_MAC, dst=mine)
    return [bytes(p) for p in (
        out / IP(src="10.9.0.1", dst="10.9.0.2") / ICMP(id=9, seq=1) / (b"p" * 56),
        back / IP(src="10.9.0.2", dst="10.9.0.1") / ICMP(type=0, id=9, seq=1) / (b"p" * 56),
        out / Dot1Q(vlan=100) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=5, dport=53),
        out / IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=40000, dport=22, flags="S"),
        # A full-size frame: with its GRE, ERSPAN and IP headers it exceeds the veth MTU.
        back / IP(src="10.9.0.2", dst="10.9.0.1") / UDP(sport=9, dport=9) / (b"z" * 1472),
        out / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2) / b"v6",
        back / ARP(op=2, psrc="10.9.0.2", pdst="10.9.0.1"),
    )]


def parse(packet: bytes) -> tuple[int, int, dict[str, int], bytes]:
    """What an IPv4 raw socket reads: the IP header, then GRE (see parse_gre)."""
    return parse_gre(packet[(packet[0] & 0x0F) * 4:])


def parse_gre(packet: bytes) -> tuple[int, int, dict[str, int], bytes]:
    """(GRE protocol, GRE sequence, ERSPAN fields, mirrored frame) of a GRE packet,
    decoded by hand from RFC 2890 and the ERSPAN draft."""
    flags, proto, seq = struct.unpack_from("!HHI", packet, 0)
    assert flags == 0x1000  # only S: a sequence number, no checksum, no key
    off = 8
    w0, w1 = struct.unpack_from("!HH", packet, off)
    e = {"version": w0 >> 12, "vlan": w0 & 0xFFF, "truncated": (w1 >> 10) & 1,
         "session": w1 & 0x3FF}
    if e["version"] == 1:
        (w2,) = struct.unpack_from("!I", packet, off + 4)
        e["index"] = w2 & 0xFFFFF
        e["encap"] = (w1 >> 11) & 3
        off += 8
    else:
        low, _sgt, w3 = struct.unpack_from("!IHH", packet, off + 4)
        e.update(direction=(w3 >> 3) & 1, granularity=(w3 >> 1) & 3, optional=w3 & 1,
                 frame_type=(w3 >> 10) & 0x1F)
        off += 12
        if e["optional"]:
            plat, high = struct.unpack_from("!II", packet, off)
            e.update(platform=plat >> 26, index=plat & 0xFFFFF, timestamp=high << 32 | low)
            off += 8
    return proto, seq, e, packet[off:]


@pytest.mark.parametrize(("kind", "proto", "version"), [("erspanv1", 0x88BE, 1),
                                                         ("erspanv2", 0x22EB, 2)])
def test_receiver_recovers_every_frame_and_tshark_decodes_it(
        lab: VethPair, workdir: Path, kind: str, proto: int, version: int) -> None:
    node = node_of(lab)
    frames = frames_of(node.mac)
    pcap = workdir / f"{kind}.pcap"
    sock = receiver(lab)
    sniffer = Sniffer(lab.b, lab.b_if, "ip proto 47", pcap)
    target = open_target(lab, kind)
    try:
        target.packets([(T0 + i * 1000, len(f), f) for i, f in enumerate(frames)])
        got = [parse(sock.recv(65535)) for _ in frames]
        sniffer.wait_packets(len(frames) + 1)  # the big frame travels in two fragments
    finally:
        target.close()
        sock.close()
        sniffer.stop()
    assert target.stats() == {"Datagrams": len(frames), "Records": len(frames), "Truncated": 0,
                              "Errors": 0}
    assert [g[3] for g in got] == frames  # byte for byte, no FCS added
    assert [g[1] for g in got] == list(range(len(frames)))
    for i, (p, _, e, frame) in enumerate(got):
        assert p == proto
        assert (e["version"], e["session"], e["index"], e["truncated"], e["vlan"]) == (
            version, SESSION, node.if_index, 0, 0)
        if version == 2:
            assert (e["platform"], e["granularity"], e["frame_type"]) == (7, 1, 0)
            assert e["timestamp"] == (T0 + i * 1000) // 100
            assert e["direction"] == int(frame[6:12] == bytes.fromhex(node.mac.replace(":", "")))

    # The independent decoder: tshark dissects every GRE packet (the big one reassembled
    # from its fragments) as ERSPAN carrying the frame, without any warning.
    tshark_clean(pcap)
    index_field = "erspan.index" if version == 1 else "erspan.pid7.source_index"
    rows = tshark_fields(pcap, ["gre.proto", "gre.sequence_number", "erspan.version",
                                "erspan.spanid", index_field, "erspan.truncated",
                                "frame.protocols"], "-Y", "erspan")
    assert [int(r[1]) for r in rows] == list(range(len(frames)))
    assert {(int(r[0], 16), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows} == {
        (proto, version, SESSION, node.if_index, 0)}
    inner = [r[6].split(":erspan:", 1)[1] for r in rows]
    assert inner == ["eth:ethertype:ip:icmp:data", "eth:ethertype:ip:icmp:data",
                     "eth:ethertype:vlan:ethertype:ip:udp", "eth:ethertype:ip:tcp",
                     "eth:ethertype:ip:udp:data", "eth:ethertype:ipv6:udp:data",
                     "eth:ethertype:arp"]
    if version == 2:
        directions = [line.split()[-1] for line in tshark(
            pcap, "-Y", "erspan", "-T", "fields", "-e", "erspan.direction").splitlines()]
        assert directions == ["1", "0", "1", "1", "0", "1", "0"]


@pytest.mark.parametrize("kind", ["erspanv1", "erspanv2"])
def test_truncated_frames_are_sent_as_captured_and_flagged(
        lab: VethPair, workdir: Path, kind: str) -> None:
    frame = frames_of(node_of(lab).mac)[4]
    cut = frame[:96]  # a capture with a 96-byte snap length
    pcap = workdir / "cut.pcap"
    sock = receiver(lab)
    sniffer = Sniffer(lab.b, lab.b_if, "ip proto 47", pcap)
    target = open_target(lab, kind)
    try:
        target.packets([(time.time_ns(), len(frame), cut)])
        _, _, e, got = parse(sock.recv(65535))
        sniffer.wait_packets(1)
    finally:
        target.close()
        sock.close()
        sniffer.stop()
    assert got == cut and e["truncated"] == 1
    assert target.stats()["Truncated"] == 1
    assert tshark_fields(pcap, ["erspan.truncated"]) == [["1"]]


def test_raw_ip_captures_are_mirrored_with_an_ethernet_header(lab: VethPair) -> None:
    packet = bytes(IP(src="10.9.0.1", dst="10.9.0.2") / ICMP())
    sock = receiver(lab)
    target = open_target(lab, "erspanv1", link_type=101)  # a tun device: no link layer
    try:
        target.packets([(time.time_ns(), len(packet), packet)])
        _, _, _, frame = parse(sock.recv(65535))
    finally:
        target.close()
        sock.close()
    eth = Ether(frame)
    assert (eth.type, bytes(eth.payload)) == (0x0800, packet)


def test_two_sessions_to_one_receiver_keep_their_own_numbering(lab: VethPair) -> None:
    """Two captures mirroring to the same analyzer: each target has its session id and
    its own GRE sequence."""
    node = node_of(lab)
    frames = frames_of(node.mac)[:3]
    sock = receiver(lab)
    first = run_in(lab.a, lambda: make_target("erspanv1", lab.b_ip, node, header_size=0,
                                              sampling_rate=0, polling_interval=0,
                                              session_id=1, link_type=1))
    second = run_in(lab.a, lambda: make_target("erspanv2", f"{lab.b_ip}:0", node, header_size=0,
                                               sampling_rate=0, polling_interval=0,
                                               session_id=2, link_type=1))
    try:
        for f in frames:
            first.packets([(0, len(f), f)])
            second.packets([(0, len(f), f)])
        got = [parse(sock.recv(65535)) for _ in range(2 * len(frames))]
    finally:
        first.close()
        second.close()
        sock.close()
    by_session: dict[int, list[tuple[int, bytes]]] = {}
    for _, seq, e, frame in got:
        by_session.setdefault(e["session"], []).append((seq, frame))
    assert by_session == {s: list(enumerate(frames)) for s in (1, 2)}


@pytest.mark.parametrize("kind", ["erspanv1", "erspanv2"])
def test_ipv6_target(lab: VethPair, kind: str) -> None:
    """GRE over IPv6 (the kernel adds the IPv6 header; a raw IPv6 socket reads what
    follows it)."""
    node = node_of(lab)
    frame = frames_of(node.mac)[0]

    def bind() -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 47)
        s.settimeout(5)
        return s

    sock = run_in(lab.a, bind)
    target = run_in(lab.a, lambda: make_target(kind, "[::1]:0", node, header_size=0,
                                               sampling_rate=0, polling_interval=0,
                                               session_id=SESSION, link_type=1))
    try:
        target.packets([(T0, len(frame), frame)])
        data = sock.recv(65535)
    finally:
        target.close()
        sock.close()
    _, seq, e, got = parse_gre(data)  # a raw IPv6 socket reads no IPv6 header
    assert (seq, e["session"], e["index"], got) == (0, SESSION, node.if_index, frame)
