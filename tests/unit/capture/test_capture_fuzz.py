"""Fuzz: random, truncated and corrupted frames never raise anywhere on the path."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.erspan import ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.contrib.mpls import MPLS
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import GRE, Dot1Q, Ether
from scapy.layers.vrrp import VRRP
from scapy.layers.vxlan import VXLAN

from skygraph.capture.bpf import compile_filter
from skygraph.capture.decoder import decode
from skygraph.capture.options import CaptureOptions
from skygraph.capture.table import FlowTable

ALL = CaptureOptions(extra_layers=7, extra_tcp_metric=True, ip_defrag=True,
                     reassemble_tcp=True, raw_packet_limit=3)
LINK_TYPES = [1, 101, 113, 228, 229, 276, 147]

SEEDS = [bytes(p) for p in [
    Ether() / Dot1Q(vlan=3) / Dot1Q(vlan=4) / IP() / UDP(dport=4789) / VXLAN(vni=1) / Ether()
    / IP() / TCP(flags="S"),
    Ether() / IP() / GRE(key_present=1, key=5, proto=0x8847) / MPLS(s=0) / MPLS(s=1) / IP()
    / ICMP(),
    Ether() / IP() / GRE(proto=0x22EB) / ERSPAN_III() / Ether() / IPv6() / ICMPv6EchoRequest(),
    Ether() / IPv6() / UDP(dport=6081) / GENEVE(proto=0x0800) / IP(flags="MF") / UDP(),
    Ether() / IPv6() / IPv6ExtHdrFragment(m=1) / UDP(),
    Ether() / IP() / UDP(dport=53) / DNS(qd=DNSQR(qname="a.example"),
                                          an=DNSRR(rrname="a.example", rdata="1.2.3.4")),
    Ether() / IP() / UDP(sport=68, dport=67) / BOOTP() / DHCP(options=[("message-type", 1)]),
    Ether() / IP(proto=112) / VRRP(addrlist=["10.0.0.1"]),
    Ether() / IP() / UDP(dport=51234) / MPLS(s=1) / Ether() / IP() / ICMP(),
]]


def feed_all(frames: list[bytes], link_type: int = 1) -> None:
    for opts in (ALL, CaptureOptions(layer_key_mode="L3")):
        table = FlowTable(opts, link_type=link_type)
        for i, frame in enumerate(frames):
            table.feed(frame, i * 1_000_000_000, len(frame) + (i % 3))
            table.tick(i * 1000)
        for f in table.flows():
            f.to_json()
        table.update_at(10**9)
        table.expire_at(10**10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=8), st.sampled_from(LINK_TYPES))
def test_random_frames_never_raise(frames: list[bytes], link_type: int) -> None:
    feed_all(frames, link_type)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(0, 400), st.lists(
    st.tuples(st.integers(0, 399), st.integers(0, 255)), max_size=4))
def test_truncated_and_corrupted_frames_never_raise(
        seed: bytes, cut: int, flips: list[tuple[int, int]]) -> None:
    frame = bytearray(seed[:cut])
    for pos, value in flips:
        if pos < len(frame):
            frame[pos] = value
    feed_all([bytes(frame), seed])


def test_every_truncation_of_every_seed_decodes_a_prefix() -> None:
    for seed in SEEDS:
        full = [layer.name for layer in decode(seed)]
        for cut in range(len(seed) + 1):
            names = [layer.name for layer in decode(seed[:cut])]
            # Truncation only ever shortens the path -- except that an MPLS payload
            # which does not decode as IP is tried as Ethernet (Skydive's decoder).
            mpls_fallback = (names[-2:] == ["MPLS", "Ethernet"]
                             and full[len(names) - 1] != "Ethernet")
            assert names == full[:len(names)] or mpls_fallback, (full, names, cut)
            feed_all([seed[:cut]])


def test_bpf_interpreter_never_raises_on_random_frames() -> None:
    program = compile_filter("(vlan and udp port 53) or tcp[13] & 2 != 0 or ip6 or len > 60")
    rng = random.Random(5)
    for _ in range(2000):
        frame = rng.randbytes(rng.randrange(0, 120))
        program.matches(frame)
