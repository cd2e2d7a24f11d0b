"""sFlow v5: datagram, flow sample and counter sample encoders field by field (read
back with a decoder written here from the specification's XDR), sampling 1 in
N with its pool and drops, interface counters, datagram packing, on a real
loopback UDP socket."""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from skygraph.exporters import TargetNode, parse_endpoint
from skygraph.exporters.sflow import (
    MAX_DATAGRAM,
    FlowSample,
    InterfaceCounters,
    SFlowTarget,
    batches,
    encode_counters_sample,
    encode_datagram,
    encode_flow_sample,
)

OWN, PEER = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
NODE = TargetNode(if_index=9, name="eth0", agent_ip="192.0.2.10", mac=OWN)


# ---- a decoder from the specification (sflow_version_5.txt), independent of ours ------------
class XDR:
    def __init__(self, data: bytes) -> None:
        self.data, self.off = data, 0

    def u32(self) -> int:
        (v,) = struct.unpack_from("!I", self.data, self.off)
        self.off += 4
        return int(v)

    def u64(self) -> int:
        (v,) = struct.unpack_from("!Q", self.data, self.off)
        self.off += 8
        return int(v)

    def raw(self, n: int) -> bytes:
        out = self.data[self.off:self.off + n]
        self.off += n + (-n % 4)
        return out


def decode(data: bytes) -> dict[str, Any]:
    x = XDR(data)
    d: dict[str, Any] = {"version": x.u32(), "agent_type": x.u32()}
    d["agent"] = socket.inet_ntop(socket.AF_INET if d["agent_type"] == 1 else socket.AF_INET6,
                                  x.raw(4 if d["agent_type"] == 1 else 16))
    d.update(sub_agent=x.u32(), sequence=x.u32(), uptime=x.u32())
    d["samples"] = []
    for _ in range(x.u32()):
        fmt, length = x.u32(), x.u32()
        end = x.off + length
        if fmt == 1:
            s: dict[str, Any] = {"kind": "flow", "sequence": x.u32(), "source": x.u32(),
                                 "rate": x.u32(), "pool": x.u32(), "drops": x.u32(),
                                 "input": x.u32(), "output": x.u32()}
            (n,) = [x.u32()]
            assert n == 1
            rfmt, rlen = x.u32(), x.u32()
            assert (rfmt, rlen % 4) == (1, 0)
            s.update(protocol=x.u32(), frame_length=x.u32(), stripped=x.u32())
            s["header"] = x.raw(x.u32())
        else:
            assert fmt == 2
            s = {"kind": "counters", "sequence": x.u32(), "source": x.u32()}
            assert x.u32() == 1
            rfmt, rlen = x.u32(), x.u32()
            assert (rfmt, rlen) == (1, 88)
            names = ["if_index", "if_type", "if_speed", "if_direction", "if_status",
                     "in_octets", "in_ucast", "in_multicast", "in_broadcast", "in_discards",
                     "in_errors", "in_unknown", "out_octets", "out_ucast", "out_multicast",
                     "out_broadcast", "out_discards", "out_errors", "promiscuous"]
            wide = {"if_speed", "in_octets", "out_octets"}
            s.update({n: x.u64() if n in wide else x.u32() for n in names})
        assert x.off == end, "sample length field disagrees with its content"
        d["samples"].append(s)
    assert x.off == len(data)
    return d


# ---- encoders -------------------------------------------------------------------------------------
def test_datagram_header_fields() -> None:
    sample = encode_counters_sample(1, InterfaceCounters(9))
    d = decode(encode_datagram("192.0.2.10", 3, 77, 123456, [sample, sample]))
    assert (d["version"], d["agent_type"], d["agent"], d["sub_agent"], d["sequence"],
            d["uptime"], len(d["samples"])) == (5, 1, "192.0.2.10", 3, 77, 123456, 2)
    d6 = decode(encode_datagram("fd00::10", 1, 1, 0, [sample]))
    assert (d6["agent_type"], d6["agent"]) == (2, "fd00::10")


def test_flow_sample_fields() -> None:
    header = bytes(range(37))  # not a multiple of 4: padded on the wire
    raw = encode_flow_sample(FlowSample(sequence_number=5, if_index=9, sampling_rate=10,
                                       sample_pool=50, drops=2, input=9, output=0,
                                       header_protocol=1, frame_length=1518, stripped=4,
                                       header=header))
    (s,) = decode(encode_datagram("192.0.2.10", 1, 1, 0, [raw]))["samples"]
    assert s == {"kind": "flow", "sequence": 5, "source": 9, "rate": 10, "pool": 50,
                 "drops": 2, "input": 9, "output": 0, "protocol": 1, "frame_length": 1518,
                 "stripped": 4, "header": header}


def test_counter_sample_fields() -> None:
    c = InterfaceCounters(9, 6, in_octets=1 << 40, in_ucast=3, in_multicast=4, in_broadcast=5,
                          out_octets=600, out_ucast=7, out_multicast=8, out_broadcast=1)
    (s,) = decode(encode_datagram("192.0.2.10", 1, 1, 0,
                                  [encode_counters_sample(12, c)]))["samples"]
    unknown = 0xFFFFFFFF
    assert s == {"kind": "counters", "sequence": 12, "source": 9, "if_index": 9, "if_type": 6,
                 "if_speed": 0, "if_direction": 0, "if_status": 3, "in_octets": 1 << 40,
                 "in_ucast": 3, "in_multicast": 4, "in_broadcast": 5, "in_discards": unknown,
                 "in_errors": unknown, "in_unknown": unknown, "out_octets": 600,
                 "out_ucast": 7, "out_multicast": 8, "out_broadcast": 1,
                 "out_discards": unknown, "out_errors": unknown, "promiscuous": 0}


def test_batches_fill_the_room_and_keep_order() -> None:
    samples = [bytes(n) for n in (500, 500, 500, 2000, 10, 10)]
    assert [[len(s) for s in b] for b in batches(samples, 1200)] == [
        [500, 500], [500], [2000], [10, 10]]
    assert batches([], 1200) == []


# ---- the sender ----------------------------------------------------------------------------------
@pytest.fixture
def collector() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    try:
        yield s
    finally:
        s.close()


def make(sock: socket.socket, rate: int = 1, header_size: int = 128, link_type: int = 1,
         seed: int = 1, node: TargetNode = NODE) -> SFlowTarget:
    ep = parse_endpoint(f"127.0.0.1:{sock.getsockname()[1]}", "sflow", default_port=6343)
    return SFlowTarget(ep, node, header_size=header_size, sampling_rate=rate,
                       polling_interval=0, link_type=link_type, rng=random.Random(seed))


def frame(out: bool, size: int = 100, dst: str | None = None) -> tuple[int, int, bytes]:
    eth = Ether(src=OWN if out else PEER, dst=dst or (PEER if out else OWN))
    p = bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2)
              / bytes(size))
    return (1_700_000_000_000_000_000, len(p), p)


def drain(sock: socket.socket) -> list[dict[str, Any]]:
    sock.settimeout(0.5)
    out = []
    try:
        while True:
            out.append(decode(sock.recv(65535)))
    except TimeoutError:
        return out


def test_every_frame_sampled_at_rate_1(collector: socket.socket) -> None:
    t = make(collector)
    frames = [frame(out=i % 2 == 0, size=200 + i) for i in range(10)]
    try:
        t.packets(frames)
        got = drain(collector)
    finally:
        t.close()
    samples = [s for d in got for s in d["samples"]]
    assert [s["sequence"] for s in samples] == list(range(1, 11))
    assert [s["pool"] for s in samples] == list(range(1, 11))
    for s, (_, wire, data) in zip(samples, frames, strict=True):
        assert s["header"] == data[:128]
        assert (s["frame_length"], s["stripped"], s["protocol"]) == (wire + 4, 4, 1)
        assert s["source"] == 9 and s["rate"] == 1 and s["drops"] == 0
    # Sent frames: output is the interface; received ones: input.
    assert (samples[0]["input"], samples[0]["output"]) == (0, 9)
    assert (samples[1]["input"], samples[1]["output"]) == (9, 0)
    # Datagrams numbered, within the size limit, agent = the capture host.
    assert [d["sequence"] for d in got] == list(range(1, len(got) + 1))
    assert all(d["agent"] == "192.0.2.10" and d["sub_agent"] == t.sub_agent_id for d in got)
    assert t.stats()["Records"] == 10 and t.stats()["Pool"] == 10


def test_one_in_n_sampling_reports_rate_and_pool(collector: socket.socket) -> None:
    t = make(collector, rate=10, seed=7)
    try:
        for _ in range(20):
            t.packets([frame(out=False)] * 100)
        samples = [s for d in drain(collector) for s in d["samples"]]
    finally:
        t.close()
    # Random skips averaging 10: about 200 samples out of 2000 frames.
    assert 140 < len(samples) < 260
    assert all(s["rate"] == 10 for s in samples)
    pools = [s["pool"] for s in samples]
    assert pools == sorted(pools) and pools[-1] <= 2000
    gaps = [b - a for a, b in zip([0, *pools], pools, strict=False)]
    assert min(gaps) >= 1 and max(gaps) <= 19
    assert t.stats()["Pool"] == 2000


def test_no_flow_samples_below_rate_1(collector: socket.socket) -> None:
    t = make(collector, rate=0)
    try:
        t.packets([frame(out=False)] * 5)
        t.poll()
        got = drain(collector)
    finally:
        t.close()
    assert [s["kind"] for d in got for s in d["samples"]] == ["counters"]


def test_counters_count_what_the_capture_saw(collector: socket.socket) -> None:
    t = make(collector, rate=0)
    try:
        t.packets([frame(out=True, size=100), frame(out=True, size=100, dst="ff:ff:ff:ff:ff:ff"),
                   frame(out=False, size=50), frame(out=False, dst="01:00:5e:00:00:01"),
                   frame(out=False, dst="ff:ff:ff:ff:ff:ff")])
        t.poll()
        t.poll()
        first, second = (s for d in drain(collector) for s in d["samples"])
    finally:
        t.close()
    out_len = len(frame(True, 100)[2])
    assert (first["out_octets"], first["out_ucast"], first["out_broadcast"]) == (2 * out_len, 1, 1)
    assert (first["in_ucast"], first["in_multicast"], first["in_broadcast"]) == (1, 1, 1)
    assert first["in_octets"] == len(frame(False, 50)[2]) + 2 * len(frame(False)[2])
    assert (first["sequence"], second["sequence"]) == (1, 2)
    assert t.stats()["Counters"] == 2


def test_samples_packed_within_1400_bytes(collector: socket.socket) -> None:
    t = make(collector, header_size=256)
    try:
        t.packets([frame(out=False, size=400)] * 12)
        got = drain(collector)
    finally:
        t.close()
    assert sum(len(d["samples"]) for d in got) == 12
    assert len(got) > 1
    assert t.stats()["Datagrams"] == len(got)
    for d in got:
        size = len(encode_datagram("192.0.2.10", 1, 1, 0, [])) + sum(
            8 + 32 + 8 + 16 + len(s["header"]) + (-len(s["header"]) % 4) for s in d["samples"])
        assert size <= MAX_DATAGRAM


def test_raw_ip_captures_sample_ip_headers(collector: socket.socket) -> None:
    t = make(collector, link_type=101)
    pkt = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP())
    try:
        t.packets([(0, len(pkt), pkt)])
        ((s,),) = [d["samples"] for d in drain(collector)]
    finally:
        t.close()
    assert (s["protocol"], s["frame_length"], s["stripped"], s["header"]) == (11, len(pkt), 0,
                                                                             pkt)


def test_timer_sends_counter_samples(collector: socket.socket) -> None:
    ep = parse_endpoint(f"127.0.0.1:{collector.getsockname()[1]}", "sflow", default_port=6343)
    t = SFlowTarget(ep, NODE, header_size=128, sampling_rate=1, polling_interval=1, link_type=1)
    try:
        collector.settimeout(5)
        d = decode(collector.recv(65535))
    finally:
        t.close()
    assert [s["kind"] for s in d["samples"]] == ["counters"]


def test_lost_datagrams_become_drops(collector: socket.socket) -> None:
    t = make(collector)
    try:
        t._sock.close()  # the socket dies under the sender
        t.packets([frame(out=False)] * 3)
        assert t.stats()["Drops"] == 3 and t.stats()["Errors"] == 1
    finally:
        t.close()


def test_odd_frames_never_raise(collector: socket.socket) -> None:
    t = make(collector)
    try:
        t.packets([(0, 0, b""), (0, 100, memoryview(frame(out=False)[2])),
                   (0, 3, b"\x01\x02\x03")])
        samples = [s for d in drain(collector) for s in d["samples"]]
    finally:
        t.close()
    assert len(samples) == 3 and t.stats()["Errors"] == 0
    assert samples[0]["header"] == b"" and samples[2]["frame_length"] == 3 + 4
