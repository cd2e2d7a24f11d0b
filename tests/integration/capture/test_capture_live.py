"""Live afpacket captures on veths and a tun device inside network namespaces:
real packets, kernel BPF, snap length, kernel counters, refusals, final flows."""

from __future__ import annotations

import fcntl
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP

from skygraph.capture.afpacket import Ring, RingGeometry
from skygraph.capture.bpf import compile_filter
from skygraph.capture.live import NODE_DOWN, CaptureError, LiveCapture
from skygraph.capture.options import TableSettings
from skygraph.topology.flow import Flow, ICMPType
from skygraph.topology.netns import run_in
from tests.integration.capture.conftest import Collector, VethPair, sh

pytestmark = pytest.mark.root

SETTINGS = TableSettings(update=1, expire=600)


@contextmanager
def capture(spec: dict[str, Any], meta: dict[str, Any], netns: str | None,
            exclude: list[tuple[str, int]] | None = None,
            **kwargs: Any) -> Iterator[tuple[LiveCapture, Collector]]:
    sink = Collector()
    live = LiveCapture({"UUID": "cap-1", **spec}, "node-1", meta, netns, SETTINGS,
                       exclude or [], sink, **kwargs)
    live.start()
    try:
        yield live, sink
    finally:
        live.stop()


def echo_flows(latest: dict[str, Flow]) -> list[Flow]:
    return [f for f in latest.values() if f.icmp is not None and f.icmp.type == ICMPType.ECHO]


def wait_stats(live: LiveCapture, packets: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while live.stats().packets_received < packets and time.monotonic() < deadline:
        time.sleep(0.05)


def test_ping_in_namespace_gives_one_echo_flow_with_exact_counts(pair: VethPair) -> None:
    spec = {"BPFFilter": "icmp", "HeaderSize": 64, "RawPacketLimit": 3}
    with capture(spec, pair.metadata(), pair.a) as (live, sink), pair.listen_udp(9999):
        pair.udp(9999, count=20)  # kept out by the kernel filter
        pair.ping(5)
        latest = sink.wait(lambda fl: sum(f.metric.ab_packets + f.metric.ba_packets
                                          for f in echo_flows(fl)) == 10)
        (flow,) = echo_flows(latest)
        assert (flow.metric.ab_packets, flow.metric.ba_packets) == (5, 5)
        assert flow.metric.ab_bytes == flow.metric.ba_bytes == 5 * 98  # wire length
        assert flow.layers_path == "Ethernet/IPv4/ICMPv4"
        assert (flow.network.a, flow.network.b) == (pair.a_ip, pair.b_ip)  # type: ignore[union-attr]
        assert flow.node_tid == f"tid-{pair.a_if}" and flow.capture_id == "cap-1"
        assert all(f.transport is None for f in sink.flows()), "UDP reached the table"
        # Snap length: raw packets hold at most HeaderSize bytes.
        raw = [p for f in sink.flows() if f.uuid == flow.uuid for p in f.last_raw_packets]
        assert len(raw) == 3 and all(len(p.data) == 64 for p in raw)
        # Kernel counters: only what the filter accepted.
        wait_stats(live, 10)
        stats = live.stats()
        assert (stats.packets_received, stats.packets_dropped) == (10, 0)
        assert stats.flow_count == 1 and stats.flow_dropped == 0
        # Flows come out on update ticks, from the reader thread, not per packet.
        assert len(sink.batches) <= 3 and sink.threads == {live._thread.name}  # type: ignore[union-attr]


def test_stop_emits_the_final_flows(pair: VethPair) -> None:
    settings = TableSettings(update=3600, expire=7200)
    sink = Collector()
    live = LiveCapture({"UUID": "cap-final", "BPFFilter": "icmp"}, "node-1", pair.metadata(),
                       pair.a, settings, [], sink)
    live.start()
    try:
        pair.ping(3)
        assert sink.flows() == []  # no tick yet: nothing sent per packet
    finally:
        live.stop()
    assert not live.running
    (flow,) = echo_flows(sink.latest())
    assert (flow.metric.ab_packets, flow.metric.ba_packets) == (3, 3)
    assert flow.capture_id == "cap-final" and flow.node_tid == f"tid-{pair.a_if}"
    assert live.stats().packets_received == 6


def test_exclude_list_keeps_agent_traffic_out(pair: VethPair) -> None:
    exclude = [(pair.b_ip, 7777)]
    with capture({"BPFFilter": "udp"}, pair.metadata(), pair.a, exclude) as (live, sink), \
            pair.listen_udp(7777), pair.listen_udp(7778):
        assert live.bpf == f"(udp) and not (host {pair.b_ip} and port 7777)"
        pair.udp(7777, count=4)
        pair.udp(7778, count=2)
        latest = sink.wait(lambda fl: any(f.transport is not None for f in fl.values()))
        ports = {f.transport.b for f in latest.values() if f.transport is not None}
        assert ports == {7778}
        wait_stats(live, 2)
        assert live.stats().packets_received == 2


def test_exclude_host_with_port_zero(pair: VethPair) -> None:
    with capture({}, pair.metadata(), pair.a, [(pair.b_ip, 0)]) as (live, sink):
        assert live.bpf == f"not host {pair.b_ip}"
        pair.ping(2)
        pair.udp(5000, count=2)
        time.sleep(1.5)
        hosts = {(f.network.a, f.network.b) for f in sink.flows() if f.network is not None}
        assert not any(pair.b_ip in h for h in hosts)


def test_kernel_drops_are_counted() -> None:
    """A ring nobody reads: packets past its two blocks are dropped by the kernel."""
    base = f"/tmp/{os.getpid()}-drops"
    os.makedirs(base, exist_ok=True)
    path = f"{base}/ns"
    open(path, "w").close()
    try:
        sh(f"unshare --net={path} true")
        sh("ip link set lo up && ip addr add 127.0.0.2/8 dev lo", path, check=False)
        prog = compile_filter("udp port 6000", 1, 256)
        ring = Ring.open(path, 1, prog.pack(), RingGeometry(block_size=4096, block_nr=2))
        try:
            def send() -> None:
                import socket
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    for _ in range(300):
                        s.sendto(b"x" * 200, ("127.0.0.1", 6000))
                    s.sendto(b"y", ("127.0.0.1", 6001))  # not matching
            run_in(path, send)
            time.sleep(0.1)
            stats = ring.stats()
            # lo: each datagram is seen once outgoing and once incoming.
            assert stats.packets == 600
            assert 0 < stats.drops < 600
            assert ring.stats() == stats  # running totals, not reset by reading
        finally:
            ring.close()
        assert ring.stats() == stats
    finally:
        sh(f"umount {path}", check=False)
        os.unlink(path)
        os.rmdir(base)


def test_refuses_down_interface_and_missing_ones(pair: VethPair) -> None:
    sh(f"ip link set {pair.a_if} down", pair.a)
    meta = pair.metadata(LinkFlags=["BROADCAST", "MULTICAST"])
    with pytest.raises(CaptureError) as info:
        LiveCapture({"UUID": "c"}, "node-down", meta, pair.a, SETTINGS, [], Collector())
    assert str(info.value) == f"capture on node node-down ({pair.a_if}): {NODE_DOWN}"
    gone = {**pair.metadata(), "Name": "nosuch0", "IfIndex": 999}
    live = LiveCapture({"UUID": "c"}, "node-x", gone, pair.a, SETTINGS, [], Collector())
    with pytest.raises(CaptureError, match=f"node node-x \\(nosuch0\\): no interface nosuch0 "
                                           f"in namespace {pair.a}"):
        live.start()
    live = LiveCapture({"UUID": "c"}, "node-y", pair.metadata(), pair.a + "-vanished",
                       SETTINGS, [], Collector())
    with pytest.raises(CaptureError, match=r"namespace .*-vanished is gone"):
        live.start()


def test_interface_removed_ends_the_capture_with_final_flows(pair: VethPair) -> None:
    settings = TableSettings(update=3600, expire=7200)
    sink = Collector()
    live = LiveCapture({"UUID": "c", "BPFFilter": "icmp"}, "node-1", pair.metadata(), pair.a,
                       settings, [], sink)
    live.start()
    try:
        pair.ping(2)
        time.sleep(0.1)
        sh(f"ip link del {pair.a_if}", pair.a)
        deadline = time.monotonic() + 5
        while live.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not live.running
        assert live.error == f"interface {pair.a_if} was removed"
        (flow,) = echo_flows(sink.latest())
        assert flow.metric.ab_packets == 2
    finally:
        live.stop()


# ---- a raw-IP device (EncapType none): tun ------------------------------------------
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def open_tun(ns: str, name: str) -> int:
    def make() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
        return fd
    return run_in(ns, make)


def test_raw_ip_device_flows_start_at_ip(pair: VethPair) -> None:
    name = pair.name("tun")
    fd = open_tun(pair.a, name)
    try:
        sh(f"ip addr add 10.78.0.1/24 dev {name} && ip link set {name} up", pair.a)
        meta = {**pair.metadata(name=name), "Type": "tun", "EncapType": "none"}
        with capture({"BPFFilter": "icmp"}, meta, pair.a) as (_, sink):
            for seq in range(3):  # echo requests "received" on the tun; the kernel replies
                os.write(fd, bytes(IP(src="10.78.0.2", dst="10.78.0.1")
                                   / ICMP(id=77, seq=seq) / (b"p" * 32)))
                time.sleep(0.05)
            latest = sink.wait(lambda fl: any(f.metric.ba_packets == 3 for f in fl.values()))
            (flow,) = latest.values()
            assert flow.layers_path == "IPv4/ICMPv4" and flow.link is None
            assert (flow.metric.ab_packets, flow.metric.ba_packets) == (3, 3)
            assert flow.metric.ab_bytes == 3 * 60  # IP total length: no link header
            assert (flow.network.a, flow.network.b) == ("10.78.0.2", "10.78.0.1")  # type: ignore[union-attr]
    finally:
        os.close(fd)
