"""The per-direction TCP flags a NetFlow export carries come from the flow table:
the packet-by-packet path and the batch path (live captures) agree."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet
from scapy.utils import wrpcap

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from skygraph.topology.flow import Flow

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
SEQUENCE = ["S", "SA", "A", "PA", "PA", "A", "PA", "FA", "FA", "A"]


def conversation(sport: int, outer: bool = False) -> list[Packet]:
    out = []
    for k, flags in enumerate(SEQUENCE):
        there = k % 2 == 0
        eth = Ether(src=A if there else B, dst=B if there else A)
        ip = IP(src="10.0.0.1", dst="10.0.0.2") if there else IP(src="10.0.0.2", dst="10.0.0.1")
        tcp = TCP(sport=sport, dport=80, flags=flags) if there else TCP(sport=80, dport=sport,
                                                                      flags=flags)
        p = eth / ip / tcp
        if outer:
            p = (Ether(src=A, dst=B) / IP(src="192.0.2.1", dst="192.0.2.2")
                 / UDP(sport=4000, dport=4789) / VXLAN(vni=5) / p)
        out.append(p)
    return out


def expected(direction: int) -> int:
    bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
    value = 0
    for flags in SEQUENCE[direction::2]:
        for c in flags:
            value |= bits[c]
    return value


def test_batch_and_packet_paths_agree_on_tcp_flags(tmp_path: Path) -> None:
    packets: list[Packet] = []
    convs = [conversation(40000 + i, outer=i % 2 == 1) for i in range(40)]
    for k in range(len(SEQUENCE)):  # interleaved, so batches mix flows
        packets.extend(c[k] for c in convs)
    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + i * 0.001
    path = tmp_path / "tcp.pcap"
    wrpcap(str(path), packets)
    fast = process_file(path, CaptureOptions(), fast=True, block_size=4096)
    slow = process_file(path, CaptureOptions(), fast=False)
    assert fast.batched > 0

    def flags(flows: list[Flow]) -> dict[str, tuple[int, int]]:
        return {f.tracking_id: (f.ab_tcp_flags, f.ba_tcp_flags)
                for f in flows if f.transport is not None and f.transport.b == 80}

    got = flags(fast.flows)
    assert got == flags(slow.flows)
    assert len(got) == 40
    assert set(got.values()) == {(expected(0), expected(1))}
    # The VXLAN outer flows are UDP: no TCP flags.
    assert all(f.ab_tcp_flags == f.ba_tcp_flags == 0 for f in fast.flows
               if f.application == "VXLAN")
