"""The PACKET_FANOUT hash (run by `bpf.run` on frames, as the kernel runs it at the
network header): both directions of a flow, every fragment, and a tunnel's inner
flows with their outer one go to one reader; flows spread over the readers."""

from __future__ import annotations

from collections import Counter

from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from skygraph.capture import fanout
from skygraph.capture.bpf import Instruction

E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def test_both_directions_and_all_fragments_go_to_one_reader() -> None:
    for readers in (2, 3, 4, 7):
        for i in range(200):
            a, b = f"10.1.{i >> 8}.{i & 255}", f"10.2.{i >> 8}.{i & 255}"
            fwd = bytes(E / IP(src=a, dst=b) / TCP(sport=1000 + i, dport=80))
            back = bytes(E / IP(src=b, dst=a) / TCP(sport=80, dport=1000 + i))
            assert fanout.reader_of(fwd, readers) == fanout.reader_of(back, readers)
        frags = fragment(IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=5, dport=6)
                         / (b"x" * 3000), fragsize=1000)
        assert len({fanout.reader_of(bytes(E / f), readers) for f in frags}) == 1
        v6 = [bytes(E / IPv6(src=s, dst=d) / UDP(sport=7, dport=8))
              for s, d in (("fd00::1", "fd00::2:3"), ("fd00::2:3", "fd00::1"))]
        assert fanout.reader_of(v6[0], readers) == fanout.reader_of(v6[1], readers)


def test_a_tunnels_inner_flows_go_with_its_outer_flow() -> None:
    readers = {fanout.reader_of(bytes(E / IP(src="10.70.0.1", dst="10.70.0.2")
                                      / UDP(sport=40000 + j, dport=4789) / VXLAN(vni=1)
                                      / Ether() / IP(src=f"192.168.0.{j}", dst="192.168.1.1")
                                      / UDP(sport=j, dport=53)), 4) for j in range(1, 50)}
    assert len(readers) == 1


def test_flows_spread_and_non_ip_goes_to_reader_zero() -> None:
    spread = Counter(fanout.reader_of(bytes(E / IP(src=f"10.1.0.{i}", dst=f"10.2.0.{i}")), 2)
                     for i in range(1, 255))
    assert min(spread.values()) > 254 * 0.35, spread  # addresses differing in one byte
    assert fanout.reader_of(bytes(E / ARP(psrc="10.0.0.1", pdst="10.0.0.2")), 2) == 0
    assert fanout.reader_of(bytes(E)[:13], 2) == 0  # too short to read: reader 0


def test_the_kernel_program_reads_at_the_network_header() -> None:
    live, offline = fanout.program().instructions, fanout.program(offline=True).instructions
    assert len(live) == len(offline)
    moved = [(a, b) for a, b in zip(live, offline, strict=True) if a != b]
    # Only the loads differ: the EtherType from SKF_AD_PROTOCOL, the addresses at SKF_NET_OFF.
    assert moved[0] == (Instruction(0x28, 0, 0, (fanout.SKF_AD_OFF + fanout.SKF_AD_PROTOCOL)
                                    & 0xFFFFFFFF), Instruction(0x28, 0, 0, 12))
    for a, b in moved[1:]:
        assert a.code == b.code == 0x20 and a.k - fanout.SKF_NET_OFF - (1 << 32) == b.k - 14
