"""An afpacket capture on several readers (PACKET_FANOUT): every flow lands whole in
one reader's table shard -- both directions (one received, one sent on the captured
veth), and a VXLAN tunnel's inner flows with their outer flow -- so the flows sent
are those one reader gives, counters exact; both readers did take packets."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet

from skygraph.capture import afpacket, fanout
from skygraph.capture.bpf import compile_filter
from skygraph.capture.live import LiveCapture
from skygraph.capture.options import TableSettings
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow
from skygraph.topology.netns import run_in
from tests.integration.capture.conftest import Collector, VethPair

pytestmark = pytest.mark.root

SETTINGS = TableSettings(update=1, expire=600)
MAC_A, MAC_B = "02:77:00:00:00:0a", "02:77:00:00:00:0b"


def conversations() -> tuple[list[Packet], list[Packet]]:
    """(requests, replies): 48 plain flows between distinct hosts (TCP, UDP, ICMP), and
    4 VXLAN tunnels carrying 5 inner UDP flows each, 3 packets each way."""
    requests: list[Packet] = []
    replies: list[Packet] = []
    for i in range(48):
        a, b = f"10.50.{i}.1", f"10.60.{i}.2"
        kind = i % 3
        for k in range(3):
            if kind == 0:
                fwd: Packet = TCP(sport=20000 + i, dport=80, flags="A", seq=k)
                back: Packet = TCP(sport=80, dport=20000 + i, flags="A", seq=k)
            elif kind == 1:
                fwd, back = UDP(sport=30000 + i, dport=53), UDP(sport=53, dport=30000 + i)
            else:
                fwd, back = ICMP(type=8, id=i, seq=k), ICMP(type=0, id=i, seq=k)
            requests.append(Ether(src=MAC_B, dst=MAC_A) / IP(src=a, dst=b) / fwd / (b"q" * k))
            replies.append(Ether(src=MAC_A, dst=MAC_B) / IP(src=b, dst=a) / back / (b"r" * k))
    for t in range(4):
        vtep_a, vtep_b = f"10.70.{t}.1", f"10.70.{t}.2"
        for j in range(5):
            inner_a, inner_b = f"192.168.{t}.{j + 1}", f"192.168.{t}.{j + 101}"
            for _ in range(3):
                requests.append(
                    Ether(src=MAC_B, dst=MAC_A) / IP(src=vtep_a, dst=vtep_b)
                    / UDP(sport=40000 + j, dport=4789) / VXLAN(vni=100 + t)
                    / Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
                    / IP(src=inner_a, dst=inner_b) / UDP(sport=5000 + j, dport=6000))
                replies.append(
                    Ether(src=MAC_A, dst=MAC_B) / IP(src=vtep_b, dst=vtep_a)
                    / UDP(sport=40000 + j, dport=4789) / VXLAN(vni=100 + t)
                    / Ether(src="02:00:00:00:01:02", dst="02:00:00:00:01:01")
                    / IP(src=inner_b, dst=inner_a) / UDP(sport=6000, dport=5000 + j))
    return requests, replies


def send_frames(ns: str, ifname: str, frames: list[bytes]) -> None:
    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            for frame in frames:
                s.send(frame)
    run_in(ns, send)


def summary(flows: list[Flow]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Flows by what they are (layers, endpoints; the UUIDs hold the start time), with
    their counters and their parent flow's identity."""
    def ident(f: Flow) -> tuple[Any, ...]:
        doc = f.to_json()
        return (doc["LayersPath"], str(doc.get("Network")), str(doc.get("Transport")),
                str(doc.get("ICMP")))
    by_uuid = {f.uuid: f for f in flows}
    out = {}
    for f in flows:
        parent = ident(by_uuid[f.parent_uuid]) if f.parent_uuid else None
        out[ident(f)] = (parent, f.metric.ab_packets, f.metric.ba_packets,
                         f.metric.ab_bytes, f.metric.ba_bytes)
    assert len(out) == len(flows)
    return out


def test_two_readers_keep_every_flow_whole(pair: VethPair) -> None:
    requests, replies = conversations()
    req = [bytes(p) for p in requests]
    rep = [bytes(p) for p in replies]
    # The hash shares these flows between two readers (else the test proves nothing).
    assert {fanout.reader_of(f, 2) for f in req} == {0, 1}
    assert all(fanout.reader_of(a, 2) == fanout.reader_of(b, 2) for a, b in zip(req, rep, strict=True))

    # What one table gives for the same frames in the same order.
    one = FlowTable(node_tid=f"tid-{pair.a_if}")
    ts = time.time_ns()
    for i, frame in enumerate(req + rep):
        one.feed(frame, ts + i * 1000, len(frame))
    expected = summary(one.flush())
    assert len(expected) == 48 + 4 * 5 + 4  # plain, inner, one outer flow per tunnel

    sink = Collector()
    live = LiveCapture({"UUID": "cap-fan", "Workers": 2, "BPFFilter": "ip"}, "node-1",
                       pair.metadata(), pair.a, SETTINGS, [], sink)
    live.start()
    try:
        assert live.workers == 2 and len(live._peers) == 1
        send_frames(pair.b, pair.b_if, req)   # received on the captured veth
        time.sleep(0.3)
        send_frames(pair.a, pair.a_if, rep)   # sent from it
        total = len(req) + len(rep)
        deadline = time.monotonic() + 10
        while live.stats().packets_received < total and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = live.stats()
        assert (stats.packets_received, stats.packets_dropped) == (total, 0)
        # Both readers' rings took part (the kernel's fanout split the packets).
        rings = [live._ring, live._peers[0]._ring]
        per_reader = [r.stats().packets for r in rings if r is not None]
        assert len(per_reader) == 2 and all(n > 0 for n in per_reader), per_reader
        assert sum(per_reader) == total
    finally:
        live.stop()
    got = summary(list(sink.latest().values()))
    assert got == expected
    assert len({t for t in sink.threads}) == 2  # each shard sent its own flows


def test_workers_default_to_one_and_a_target_keeps_one(pair: VethPair) -> None:
    live = LiveCapture({"UUID": "cap-one"}, "node-1", pair.metadata(), pair.a, SETTINGS, [],
                       Collector())
    assert live.workers == 1
    targeted = LiveCapture({"UUID": "cap-t", "Workers": 4, "TargetType": "netflowv5",
                            "Target": "127.0.0.1:2055"}, "node-1", pair.metadata(), pair.a,
                           SETTINGS, [], Collector())
    assert targeted.workers == 1


def test_a_reader_joins_the_group_whose_id_is_0(pair: VethPair) -> None:
    """The first fanout group made after boot has id 0: a peer given 0 joins that
    group (it once took 0 for "start a group" and saw every packet a second time)."""
    ifindex = run_in(pair.a, lambda: socket.if_nametoindex(pair.a_if))
    first = run_in(pair.a, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
    ring = None
    try:
        # Only the test's frames (the veth's own IPv6 chatter left out), on both sockets.
        ours = compile_filter(f"ether src {MAC_B}", 1).pack()
        afpacket.attach_filter(first, ours)
        first.bind((pair.a_if, 0x0003))  # ETH_P_ALL, once filtered
        # Group 0 of this (new) namespace, made by hand: CBPF, the capture's hash.
        first.setsockopt(afpacket.SOL_PACKET, afpacket.PACKET_FANOUT,
                         0 | afpacket.PACKET_FANOUT_CBPF << 16)
        afpacket._set_program(first, afpacket.SOL_PACKET, afpacket.PACKET_FANOUT_DATA,
                              fanout.program().pack())
        ring = afpacket.Ring.open(pair.a, ifindex, ours, fanout=0)
        assert ring.fanout_group == 0
        requests, _ = conversations()
        frames = [bytes(p) for p in requests]
        send_frames(pair.b, pair.b_if, frames)
        first.setblocking(False)
        taken = 0
        deadline = time.monotonic() + 5
        while taken + ring.stats().packets < len(frames) and time.monotonic() < deadline:
            try:
                first.recv(65535)
                taken += 1
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.2)
        with contextlib.suppress(BlockingIOError):
            while True:
                first.recv(65535)
                taken += 1
        shares = (taken, ring.stats().packets)
        assert sum(shares) == len(frames) and min(shares) > 0, shares
    finally:
        first.close()
        if ring is not None:
            ring.close()
