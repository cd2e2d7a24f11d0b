"""The `ebpf` capture type on a veth inside a namespace: flows aggregated by the
kernel program match what afpacket (L3 key mode) makes of the same packets;
counters, a full kernel map, and the errors of a refused start."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from skygraph.capture.ebpf_asm import R0, R2, Program
from skygraph.capture.flowkey import flow_uuid
from skygraph.capture.sources import source_for
from skygraph.capture.sources.base import CaptureError, CaptureSource
from skygraph.capture.sources.ebpf import EbpfSource
from skygraph.topology.flow import FinishType, Flow
from skygraph.topology.netns import run_in
from tests.conftest import run
from tests.integration.capture.conftest import Collector, VethPair, context, running, sh
from tests.integration.capture.test_capture_manager import Recorder, agent_graph, manager, until

pytestmark = pytest.mark.root


@contextmanager
def ebpf(pair: VethPair, spec: dict[str, Any] | None = None,
         **extra: Any) -> Iterator[tuple[EbpfSource, Collector]]:
    sink = Collector()
    source = EbpfSource(context({"Type": "ebpf", **(spec or {})}, pair.metadata(), pair.a, sink,
                                extra=extra))
    source.start()
    try:
        yield source, sink
    finally:
        source.stop()


def tcp_exchange(pair: VethPair, port: int, request: bytes, reply: bytes) -> None:
    """One TCP connection from namespace a to b: request, reply, both sides close."""
    server = run_in(pair.b, lambda: socket.create_server((pair.b_ip, port)))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while len(data) < len(request):
                data += conn.recv(65536)
            received.append(data)
            conn.sendall(reply)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = run_in(pair.a, lambda: socket.create_connection((pair.b_ip, port), timeout=5))
        with client:
            client.sendall(request)
            got = b""
            while len(got) < len(reply):
                got += client.recv(65536)
            assert got == reply
    finally:
        thread.join(10)
        server.close()
    assert received == [request]


def send_frames(pair: VethPair, frames: list[Packet]) -> None:
    """Raw frames out of b's veth: they arrive on a's."""
    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((pair.b_if, 0))
            for frame in frames:
                s.send(bytes(frame))
    run_in(pair.b, send)


def by_tracking_id(flows: dict[str, Flow]) -> dict[str, list[Flow]]:
    out: dict[str, list[Flow]] = {}
    for f in flows.values():
        out.setdefault(f.tracking_id, []).append(f)
    return out


def assert_same_flow(ours: Flow, theirs: Flow) -> None:
    """An ebpf flow against afpacket's flow of the same packets (L3 mode)."""
    assert ours.tracking_id == theirs.tracking_id
    assert ours.l3_tracking_id == theirs.l3_tracking_id
    m, n = ours.metric, theirs.metric
    assert (m.ab_packets, m.ab_bytes, m.ba_packets, m.ba_bytes) == \
        (n.ab_packets, n.ab_bytes, n.ba_packets, n.ba_bytes), ours.layers_path
    assert ours.layers_path == theirs.layers_path
    assert ours.application == theirs.application
    assert ours.link == theirs.link and ours.network == theirs.network
    assert ours.transport == theirs.transport and ours.icmp == theirs.icmp
    assert ours.node_tid == theirs.node_tid and ours.capture_id == theirs.capture_id
    assert ours.finish_type == theirs.finish_type
    assert (ours.ab_tcp_flags, ours.ba_tcp_flags) == (theirs.ab_tcp_flags, theirs.ba_tcp_flags)
    # Same key, so the same UUID whenever the first packet has the same millisecond.
    assert abs(ours.start - theirs.start) <= 5
    if ours.start == theirs.start:
        assert ours.uuid == theirs.uuid


def flows_between(flows: dict[str, Flow], *hosts: str) -> list[Flow]:
    return [f for f in flows.values()
            if f.network is not None and {f.network.a, f.network.b} <= set(hosts)]


def test_ping_and_tcp_flows_match_afpacket_in_l3_mode(pair: VethPair) -> None:
    meta = pair.metadata()
    with running({"Type": "afpacket", "LayerKeyMode": "L3"}, meta, pair.a) as (_, af_sink), \
            ebpf(pair, {"ExtraTCPMetric": True}) as (eb, eb_sink):
        pair.ping(4)
        tcp_exchange(pair, 7070, b"q" * 3000, b"r" * 500)
    ours = {f.tracking_id: f for f in flows_between(eb_sink.latest(), pair.a_ip, pair.b_ip)}
    theirs = {f.tracking_id: f for f in flows_between(af_sink.latest(), pair.a_ip, pair.b_ip)}
    assert sorted(f.application for f in ours.values()) == ["ICMPv4", "TCP"]
    assert ours.keys() == theirs.keys()
    for tid, flow in ours.items():
        assert_same_flow(flow, theirs[tid])
    (echo,) = [f for f in ours.values() if f.application == "ICMPv4"]
    m = echo.metric
    assert (m.ab_packets, m.ba_packets, m.ab_bytes, m.ba_bytes) == (4, 4, 4 * 98, 4 * 98)
    assert (echo.network.a, echo.network.b) == (pair.a_ip, pair.b_ip)  # type: ignore[union-attr]
    assert echo.layers_path == "Ethernet/IPv4/ICMPv4" and echo.l3_tracking_id == echo.tracking_id
    assert 0 < m.rtt < 1_000_000_000
    (tcp,) = [f for f in ours.values() if f.application == "TCP"]
    assert tcp.transport is not None and tcp.transport.b == 7070
    assert tcp.finish_type == FinishType.TCP_FIN and tcp.metric.ab_packets >= 4
    tm = tcp.tcp_metric
    assert tm is not None and tm.ab_syn_start and tm.ba_syn_start and tm.ab_fin_start
    assert tm.ab_syn_ttl == 64 and tm.ba_syn_ttl == 64
    assert (tcp.ab_tcp_flags, tcp.ba_tcp_flags) == (0x1B, 0x1B)  # SYN ACK PSH FIN both ways
    assert tcp.uuid == flow_uuid(int(tcp.tracking_id, 16), tcp.start, tcp.node_tid)
    # Every packet the program saw is in a flow (none lost to a full map).
    stats = eb.stats()
    assert stats.packets_dropped == 0
    total = sum(f.metric.ab_packets + f.metric.ba_packets for f in eb_sink.latest().values())
    assert stats.packets_received == total >= 8 + tcp.metric.ab_packets
    assert stats.flow_count == 0  # the final flush emptied the table


def test_vlan_ipv6_extension_and_fragments_match_afpacket(pair: VethPair) -> None:
    """Crafted frames to addresses nobody owns (no replies): VLAN tags (the
    veth moves the outer one out of the frame), IPv6 hop-by-hop, ICMPv6 echo,
    IPv4 fragments, non-echo ICMP and UDP both ways."""
    dst = "02:00:00:00:00:0a"
    src = "02:00:00:00:00:0b"
    eth = Ether(src=src, dst=dst)
    frames: list[Packet] = []
    for i in range(3):
        frames.append(eth / Dot1Q(vlan=8) / IP(src="10.99.0.1", dst="10.99.0.2") /
                      UDP(sport=4000, dport=5000) / Raw(b"x" * (10 + i)))
        frames.append(eth / Dot1Q(vlan=8) / IP(src="10.99.0.2", dst="10.99.0.1") /
                      UDP(sport=5000, dport=4000) / Raw(b"y" * 20))
        frames.append(eth / Dot1Q(type=0x8100, vlan=10) / Dot1Q(vlan=20) /
                      IP(src="10.99.1.1", dst="10.99.1.2") / ICMP(type=8, id=77, seq=i))
        frames.append(eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() /
                      UDP(sport=53000, dport=7000) / Raw(b"z" * 30))
        frames.append(eth / IPv6(src="2001:db8::2", dst="2001:db8::1") /
                      ICMPv6EchoRequest(id=9, seq=i))
    frames.append(eth / IP(src="10.99.2.1", dst="10.99.2.2") / ICMP(type=3, code=1) /
                  IP(src="10.99.2.2", dst="10.99.2.1") / UDP(sport=1, dport=2))
    frames += [eth / f for f in fragment(IP(src="10.99.3.1", dst="10.99.3.2") /
                                         UDP(sport=1, dport=2) / Raw(b"f" * 3000), 1400)]
    meta = pair.metadata()
    with running({"Type": "afpacket", "LayerKeyMode": "L3"}, meta, pair.a) as (_, af_sink), \
            ebpf(pair) as (_, eb_sink):
        send_frames(pair, frames)
    crafted = ("10.99.", "2001:db8::")
    ours = {f.tracking_id: f for f in eb_sink.latest().values()
            if f.network is not None and f.network.a.startswith(crafted)}
    theirs = {f.tracking_id: f for f in af_sink.latest().values()
              if f.network is not None and f.network.a.startswith(crafted)}
    assert ours.keys() == theirs.keys()
    for tid, flow in ours.items():
        assert_same_flow(flow, theirs[tid])
    paths = sorted(f.layers_path for f in ours.values())
    assert paths == sorted([
        "Ethernet/Dot1Q/IPv4/UDP", "Ethernet/Dot1Q/Dot1Q/IPv4/ICMPv4",
        "Ethernet/IPv6/IPv6HopByHop/UDP", "Ethernet/IPv6/ICMPv6/ICMPv6Echo",
        "Ethernet/IPv4/ICMPv4", "Ethernet/IPv4/Fragment"])
    (udp,) = [f for f in ours.values() if f.layers_path == "Ethernet/Dot1Q/IPv4/UDP"]
    assert udp.link is not None and udp.link.id == 8
    assert (udp.metric.ab_packets, udp.metric.ba_packets) == (3, 3)
    assert udp.metric.ab_bytes == sum(len(f) for f in frames[0:15:5])
    (qinq,) = [f for f in ours.values() if "Dot1Q/Dot1Q" in f.layers_path]
    assert qinq.link is not None and qinq.link.id == (20 << 12) | 10


def test_full_kernel_map_counts_dropped_packets(pair: VethPair) -> None:
    with ebpf(pair, kernel_entries=1, idle_ms=600_000) as (eb, sink), pair.listen_udp(9000), \
            pair.listen_udp(9001), pair.listen_udp(9002):
        for port in (9000, 9001, 9002):
            pair.udp(port, count=3)
    stats = eb.stats()
    counted = sum(f.metric.ab_packets + f.metric.ba_packets for f in sink.latest().values())
    assert len(sink.latest()) == 1  # one kernel entry: the first flow only
    assert stats.packets_dropped >= 6  # at least two of the three UDP flows found no room
    assert stats.packets_received == counted + stats.packets_dropped


def test_registered_as_the_ebpf_type(pair: VethPair) -> None:
    sink = Collector()
    source: CaptureSource = source_for(context({"Type": "ebpf"}, pair.metadata(), pair.a, sink))
    assert isinstance(source, EbpfSource)
    source.start()
    try:
        pair.ping(2)
    finally:
        source.stop()
    assert [f.application for f in flows_between(sink.latest(), pair.a_ip, pair.b_ip)] == ["ICMPv4"]


def test_a_program_the_verifier_refuses_names_node_and_reason(pair: VethPair) -> None:
    def broken(flows_fd: int, stats_fd: int) -> Program:
        return Program().movr(R0, R2).exit()  # r2 is never written

    source = EbpfSource(context({"Type": "ebpf"}, pair.metadata(), pair.a, Collector(),
                                extra={"build": broken}))
    with pytest.raises(CaptureError) as info:
        source.start()
    message = str(info.value)
    assert f"node node-1 ({pair.a_if})" in message
    assert "loading BPF program sg_flow_table: the kernel's verifier refused it: " in message
    assert message.endswith("0: (bf) r0 = r2 | R2 !read_ok")
    assert not source.running


def test_a_map_the_kernel_refuses_names_node_and_reason(pair: VethPair) -> None:
    entries = (1 << 31) + 1  # more hash buckets than the kernel allows
    source = EbpfSource(context({"Type": "ebpf"}, pair.metadata(), pair.a, Collector(),
                                extra={"kernel_entries": entries}))
    with pytest.raises(CaptureError) as info:
        source.start()
    assert str(info.value) == (f"capture on node node-1 ({pair.a_if}): creating BPF map sg_flows "
                               f"({entries} entries of 48+264 bytes): Argument list too long")


def test_missing_interface_and_refused_options(pair: VethPair) -> None:
    meta = pair.metadata(Name="nosuchif0")
    source = EbpfSource(context({"Type": "ebpf"}, meta, pair.a, Collector()))
    with pytest.raises(CaptureError, match=f"no interface nosuchif0 in namespace {pair.a}"):
        source.start()
    with pytest.raises(CaptureError, match="ebpf capture type has no BPF filter"):
        EbpfSource(context({"Type": "ebpf", "BPFFilter": "icmp"}, pair.metadata(), pair.a,
                           Collector()))
    with pytest.raises(CaptureError, match="keeps no raw packets"):
        EbpfSource(context({"Type": "ebpf", "RawPacketLimit": 2}, pair.metadata(), pair.a,
                           Collector()))
    with pytest.raises(CaptureError, match="Can't start capture on node down"):
        EbpfSource(context({"Type": "ebpf"}, pair.metadata(LinkFlags=["BROADCAST"]), pair.a,
                           Collector()))


def compare_with_afpacket(pair: VethPair, meta: dict[str, Any],
                          traffic: Any) -> tuple[dict[str, Flow], dict[str, Flow]]:
    """Both captures on the node of `meta` while `traffic()` runs; flows by TrackingID."""
    with running({"Type": "afpacket", "LayerKeyMode": "L3"}, meta, pair.a) as (_, af_sink), \
            running({"Type": "ebpf"}, meta, pair.a) as (_, eb_sink):
        traffic()
    ours = {f.tracking_id: f for f in eb_sink.latest().values()}
    theirs = {f.tracking_id: f for f in af_sink.latest().values()}
    assert ours.keys() == theirs.keys()
    for tid, flow in ours.items():
        assert_same_flow(flow, theirs[tid])
    return ours, theirs


def test_loopback_counts_each_packet_once(pair: VethPair) -> None:
    meta = pair.metadata(name="lo", Type="device", EncapType="loopback")
    ours, _ = compare_with_afpacket(pair, meta, lambda: sh("ping -c 3 -i 0.2 127.0.0.1", pair.a))
    (echo,) = [f for f in ours.values() if f.application == "ICMPv4"]
    # One copy of each packet; identical endpoints count BA (Skydive's quirk, as afpacket).
    assert (echo.metric.ab_packets, echo.metric.ba_packets, echo.metric.ba_bytes) == (0, 6, 6 * 98)


TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def test_raw_ip_device_flows_start_at_ip(pair: VethPair) -> None:
    name = pair.name("tun")

    def make() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
        return fd

    fd = run_in(pair.a, make)
    try:
        sh(f"ip addr add 10.78.0.1/24 dev {name} && ip link set {name} up", pair.a)
        meta = {**pair.metadata(name=name), "Type": "tun", "EncapType": "none"}

        def traffic() -> None:
            for seq in range(3):  # echo requests "received" on the tun; the kernel replies
                os.write(fd, bytes(IP(src="10.78.0.2", dst="10.78.0.1")
                                   / ICMP(id=77, seq=seq) / (b"p" * 32)))
                time.sleep(0.05)
            time.sleep(0.2)

        ours, _ = compare_with_afpacket(pair, meta, traffic)
        (flow,) = ours.values()
        assert flow.layers_path == "IPv4/ICMPv4" and flow.link is None
        assert (flow.metric.ab_packets, flow.metric.ba_packets) == (3, 3)
        assert flow.metric.ab_bytes == 3 * 60  # IP total length: no link header
    finally:
        os.close(fd)


def test_interface_removed_ends_the_capture_with_final_flows(pair: VethPair) -> None:
    sink = Collector()
    source = EbpfSource(context({"Type": "ebpf"}, pair.metadata(), pair.a, sink,
                                extra={"poll_ms": 50}))
    source.start()
    try:
        pair.ping(2)
        sh(f"ip link del {pair.a_if}", pair.a)
        deadline = time.monotonic() + 5
        while source.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not source.running
        assert source.error == f"interface {pair.a_if} was removed"
        (echo,) = [f for f in sink.latest().values() if f.application == "ICMPv4"]
        assert (echo.metric.ab_packets, echo.metric.ba_packets) == (2, 2)
    finally:
        source.stop()


def test_the_agents_capture_manager_runs_ebpf_captures(pair: VethPair) -> None:
    g = agent_graph(pair)
    rec = Recorder()
    m = manager(g, rec)
    capture = {"UUID": "cap-e1", "GremlinQuery": "G.V().Has('Name', 'x')", "Type": "ebpf",
               "Name": "kernel flows"}

    async def scenario() -> None:
        entry = await m.start(capture, "veth-a")
        assert (entry["State"], entry["Type"], entry["Name"]) == ("active", "ebpf", "kernel flows")
        await asyncio.to_thread(pair.ping, 3)
        await until(lambda: rec.echo_packets() == 6)
        await until(lambda: (rec.last("veth-a") or [{}])[0].get("PacketsReceived", 0) >= 6)
        assert {f.capture_id for _, f in rec.flows} == {"cap-e1"}
        refused = await m.start({**capture, "UUID": "cap-e2", "BPFFilter": "icmp"}, "veth-a")
        assert refused["State"] == "error"
        assert refused["Error"] == (f"capture on node veth-a ({pair.a_if}): the ebpf capture "
                                    "type has no BPF filter (got 'icmp')")
        await m.stop_all()
        assert rec.last("veth-a") == []
    run(scenario())
