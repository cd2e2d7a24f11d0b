"""The kernel half of the ebpf capture on its own: the flow program loaded by the
kernel's verifier and run on crafted packets with BPF_PROG_TEST_RUN, then its
map read back.  The test run hands a socket filter the packet from its network
header on, so this is the raw-IP variant of the program (the Ethernet/VLAN
part runs on real interfaces in test_ebpf_capture)."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from skygraph.capture.ebpf import KernelEntry
from skygraph.capture.ebpf_prog import (
    FLOW_KEY,
    FLOW_VALUE,
    STAT_BYTES,
    STAT_COUNT,
    STAT_MAP_FULL,
    STAT_PACKETS,
    flow_program,
)
from skygraph.capture.ebpf_sys import (
    F_NO_PREALLOC,
    MAP_TYPE_HASH,
    MAP_TYPE_PERCPU_ARRAY,
    Map,
    load_program,
    per_cpu_sum,
    run_program,
)

pytestmark = pytest.mark.root

A, B = "10.0.0.1", "10.0.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"


@dataclass(frozen=True)
class Key:
    lo: str
    hi: str
    port_lo: int
    port_hi: int
    icmp: int
    ethertype: int
    proto: int
    fragment: int


class Kernel:
    """The flow program over its two maps."""

    def __init__(self, entries: int = 64) -> None:
        self.flows = Map.create("sg_t_flows", MAP_TYPE_HASH, FLOW_KEY.size, FLOW_VALUE.size,
                                entries, F_NO_PREALLOC)
        self.stats = Map.create("sg_t_stats", MAP_TYPE_PERCPU_ARRAY, 4, 8, STAT_COUNT)
        self.prog = load_program(flow_program(self.flows.fd, self.stats.fd, ethernet=False)
                                 .assemble(), "sg_t_flow")

    def run(self, *packets: Packet) -> None:
        for p in packets:
            assert run_program(self.prog, bytes(Ether() / p))[0] == 0  # nothing for the socket

    def entries(self) -> dict[Key, KernelEntry]:
        out = {}
        for raw_key, raw in self.flows.items():
            lo, hi, port_lo, port_hi, icmp, ethertype, proto, frag = \
                FLOW_KEY.struct.unpack(raw_key)
            family = socket.AF_INET if ethertype == 0x0800 else socket.AF_INET6
            size = 4 if family == socket.AF_INET else 16
            out[Key(socket.inet_ntop(family, lo[:size]), socket.inet_ntop(family, hi[:size]),
                    port_lo, port_hi, icmp, ethertype, proto, frag)] = KernelEntry.unpack(raw)
        return out

    def stat(self, index: int) -> int:
        raw = self.stats.lookup(struct.pack("=I", index))
        assert raw is not None
        return per_cpu_sum(raw)

    def close(self) -> None:
        os.close(self.prog)
        self.flows.close()
        self.stats.close()


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        yield k
    finally:
        k.close()


def ip_len(p: Packet) -> int:
    return len(bytes(p))


def test_both_directions_of_a_ping_share_one_entry(kernel: Kernel) -> None:
    req = IP(src=B, dst=A) / ICMP(type=8, id=0x1234) / Raw(b"p" * 56)
    rep = IP(src=A, dst=B) / ICMP(type=0, id=0x1234) / Raw(b"p" * 56)
    kernel.run(req, rep, req, rep, req)
    (key, e), = kernel.entries().items()
    # Endpoints ordered (A < B), echo request and reply folded to the request's type.
    assert key == Key(A, B, 0, 0, 8 << 24 | 0x1234, 0x0800, 1, 0)
    assert e.first_dir == 1  # the first packet came from B, the `hi` endpoint
    assert (e.packets, e.octets) == ((2, 3), (2 * ip_len(rep), 3 * ip_len(req)))
    assert 0 < e.first_ns <= e.rtt_start <= e.rtt_end <= e.last_ns
    assert e.head == bytes(req)[:len(e.head)] and e.first_len == ip_len(req)
    assert (kernel.stat(STAT_PACKETS), kernel.stat(STAT_BYTES)) == (5, 5 * ip_len(req))


def test_ports_are_ordered_with_the_addresses(kernel: Kernel) -> None:
    kernel.run(IP(src=B, dst=A) / UDP(sport=53, dport=40000),
               IP(src=A, dst=B) / UDP(sport=40000, dport=53),
               IP(src=A, dst=A) / UDP(sport=9, dport=7))  # same address: ports decide
    keys = sorted(kernel.entries(), key=lambda k: k.hi)
    assert [(k.lo, k.hi, k.port_lo, k.port_hi, k.proto) for k in keys] == [
        (A, A, 7, 9, 17), (A, B, 40000, 53, 17)]
    entries = kernel.entries()
    assert entries[keys[1]].packets == (1, 1) and entries[keys[0]].first_dir == 1


def test_tcp_flags_times_and_ttls_per_direction(kernel: Kernel) -> None:
    kernel.run(IP(src=A, dst=B, ttl=64) / TCP(sport=40000, dport=80, flags="S"),
               IP(src=B, dst=A, ttl=63) / TCP(sport=80, dport=40000, flags="SA"),
               IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="A"),
               IP(src=B, dst=A) / TCP(sport=80, dport=40000, flags="R"))
    (key, e), = kernel.entries().items()
    assert (key.port_lo, key.port_hi, key.proto) == (40000, 80, 6)
    assert e.syn[0] and e.syn[1] and e.syn[0] <= e.syn[1] and e.syn_ttl == (64, 63)
    assert e.fin == (0, 0) and e.rst[0] == 0 and e.rst[1] >= e.syn[1]
    assert e.tcp_flags == (0x02 | 0x10, 0x02 | 0x10 | 0x04)
    assert e.rtt_start == e.syn[0] and e.rtt_end == e.syn[1]  # SYN -> SYN/ACK


def test_ipv6_extension_headers_and_icmpv6_echo(kernel: Kernel) -> None:
    kernel.run(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / UDP(sport=1000, dport=2000),
               IPv6(src=B6, dst=A6) / ICMPv6EchoRequest(id=5),
               IPv6(src=A6, dst=B6) / ICMPv6EchoReply(id=5))
    entries = kernel.entries()
    udp = Key(A6, B6, 1000, 2000, 0, 0x86DD, 17, 0)
    echo = Key(A6, B6, 0, 0, 128 << 24 | 5, 0x86DD, 58, 0)
    assert set(entries) == {udp, echo}
    assert entries[echo].packets == (1, 1) and entries[echo].first_dir == 1


def test_fragments_are_keyed_without_ports_and_other_icmp_types_apart(kernel: Kernel) -> None:
    kernel.run(*fragment(IP(src=A, dst=B) / UDP(sport=1, dport=2) / Raw(b"f" * 3000), 1400))
    kernel.run(IP(src=B, dst=A) / ICMP(type=3, code=3) / IP(src=A, dst=B) / UDP(sport=1, dport=2))
    entries = kernel.entries()
    frag = Key(A, B, 0, 0, 0, 0x0800, 17, 1)
    unreachable = Key(A, B, 0, 0, 3 << 24 | 3 << 16, 0x0800, 1, 0)
    assert set(entries) == {frag, unreachable}
    assert entries[frag].packets == (3, 0)


def test_a_full_map_counts_what_it_could_not_keep() -> None:
    k = Kernel(entries=1)
    try:
        k.run(IP(src=A, dst=B) / UDP(sport=1, dport=2), IP(src=A, dst=B) / UDP(sport=1, dport=3),
              IP(src=A, dst=B) / UDP(sport=1, dport=3), IP(src=B, dst=A) / UDP(sport=2, dport=1))
        (e,) = k.entries().values()
        assert e.packets == (1, 1)
        assert (k.stat(STAT_PACKETS), k.stat(STAT_MAP_FULL)) == (4, 2)
    finally:
        k.close()


def test_the_map_is_read_in_batches_and_key_by_key_alike() -> None:
    k = Kernel(entries=1024)
    try:
        k.run(*(IP(src=A, dst=B) / UDP(sport=1000 + i, dport=53) for i in range(600)))
        batched = dict(k.flows.items(batch=64))
        assert len(batched) == 600
        assert batched == {key: k.flows.lookup(key) for key in k.flows.iter_keys()}
    finally:
        k.close()
