"""The C extension of the batch path (`_fastflow`): byte-exact flow keys, the same flows
as the per-packet path and the fallback without it (blocks of records fed one by one) on
the benchmark's traffic and on the cases it hands back to Python, block reading."""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import xxhash
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from skygraph.capture import fastpath, pcapfile
from skygraph.capture.fastpath import FastPath
from skygraph.capture.offline import Result, process_file
from skygraph.capture.options import CaptureOptions, TableSettings
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow
from tests.conftest import PCAPS

REPO = Path(__file__).resolve().parents[3]


def native() -> ModuleType:
    assert fastpath.native is not None, "the _fastflow extension is not built"
    return fastpath.native


def benchmark_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flowtable_bench",
                                                  REPO / "benchmarks" / "flowtable.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flows_json(result: Result) -> list[object]:
    return [f.to_json() for f in result.flows]


def three_ways(path: Path, monkeypatch: pytest.MonkeyPatch, opts: CaptureOptions,
               settings: TableSettings | None = None,
               block_size: int | None = None) -> tuple[Result, Result, Result]:
    """(C, without the extension, per-packet) results of one file."""
    c = process_file(path, opts, settings=settings, block_size=block_size)
    with monkeypatch.context() as m:  # as if the extension were not built
        m.setattr(fastpath, "native", None)
        m.setattr(pcapfile, "_native_index", None)
        fallback = process_file(path, opts, settings=settings, block_size=block_size)
    slow = process_file(path, opts, settings=settings, fast=False)
    for r in (c, fallback):
        assert (r.packets, r.dropped) == (slow.packets, slow.dropped)
    return c, fallback, slow


def test_the_extension_is_built() -> None:
    # scripts/install.sh builds it (pip install -e .); a stale build is not used.
    assert native().VERSION == fastpath.NATIVE_VERSION
    assert FastPath(FlowTable()).native


def test_a_stale_build_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native(), "VERSION", fastpath.NATIVE_VERSION - 1)
    assert fastpath._load_native() is None


def test_xxh64_is_xxhash() -> None:
    rng = random.Random(5)
    for size in [*range(0, 100), 127, 128, 1000, 4096]:
        data = rng.randbytes(size)
        seed = rng.getrandbits(64) if size % 2 else 0
        assert native().xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed=seed)


@pytest.mark.parametrize("name", sorted(p.name for p in PCAPS.glob("*.pcap")))
@pytest.mark.parametrize("mode", ["L2", "L3"])
def test_shared_pcaps_c_fallback_and_per_packet(name: str, mode: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    c, fallback, slow = three_ways(PCAPS / name, monkeypatch, CaptureOptions(layer_key_mode=mode))
    assert flows_json(c) == flows_json(fallback) == flows_json(slow)


@pytest.mark.parametrize("mode", ["L2", "L3"])
def test_benchmark_traffic_same_flows(tmp_path: Path, mode: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # benchmarks/flowtable.py's generator: TCP sessions, UDP, ICMP echo, 10 % VXLAN
    path = tmp_path / "bench.pcap"
    benchmark_module().generate(path, 24_000, 400)
    c, fallback, slow = three_ways(path, monkeypatch, CaptureOptions(layer_key_mode=mode),
                              block_size=64 << 10)
    assert flows_json(c) == flows_json(fallback) == flows_json(slow)
    # 400 conversations plus the VXLAN outer flows; almost every packet summed in C
    vxlan = [f for f in c.flows if f.layers_path == "Ethernet/IPv4/UDP/VXLAN"]
    assert len(c.flows) == 400 + len(vxlan) and vxlan
    assert all(f.parent_uuid in {v.uuid for v in vxlan} for f in c.flows
               if f.parent_uuid)
    assert c.batched > 0.9 * c.packets
    tcp = [f for f in c.flows if f.transport is not None and f.layers_path.endswith("TCP")]
    assert tcp and all(f.metric.rtt > 0 and f.finish_type.name == "TCP_FIN" for f in tcp)


@pytest.mark.parametrize("limit", [1, 3])
def test_raw_packets_kept_by_the_extension_as_by_the_per_packet_path(
        tmp_path: Path, limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # RawPacketLimit on the batch path: each flow's first packets (a VXLAN inner flow's
    # from its Ethernet header), numbered and timed as the per-packet path keeps them,
    # with the packets the exact path takes in between (a flow's first, IP options)
    path = tmp_path / "bench.pcap"
    benchmark_module().generate(path, 24_000, 400)
    opts = CaptureOptions(raw_packet_limit=limit)
    c, fallback, slow = three_ways(path, monkeypatch, opts, block_size=64 << 10)
    assert c.batched > 0.9 * c.packets                  # not the per-packet path in disguise
    assert flows_json(c) == flows_json(fallback) == flows_json(slow)
    def kept(r: Result) -> list[tuple[str, object]]:
        return [(f.uuid, f.last_raw_packets) for f in r.flows]
    assert kept(c) == kept(fallback) == kept(slow)
    assert c.raw == slow.raw and len(c.raw) == limit * len(c.flows)
    inner = next(f for f in c.flows if f.parent_uuid)   # starts at its own Ethernet header
    outer = next(f for f in c.flows if f.uuid == inner.parent_uuid)
    assert inner.link is not None and outer.link is not None
    assert outer.last_raw_packets[0].data[:6].hex(":") in (outer.link.a, outer.link.b)
    assert inner.last_raw_packets[0].data[:6].hex(":") in (inner.link.a, inner.link.b)
    assert all(f.raw_packets_captured == limit for f in c.flows)


def _at(packets: list[Packet], start: float = 1_700_000_000.0, gap: float = 0.001
        ) -> list[Packet]:
    for i, p in enumerate(packets):
        p.time = start + i * gap
    return packets


def test_echo_request_on_the_exact_path_then_replies_in_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The echo flow exists and is summed in C when its request comes with IP options
    # (the exact path); the reply after it, a common-case packet, ends the RTT.
    a, b = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02"), Ether(
        src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    filler = [a / IP(src="10.1.0.1", dst="10.1.0.2") / UDP(sport=1000 + i, dport=9)
              for i in range(50)]
    reply = b / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0, id=7)
    request = a / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01\x01\x01\x00") / ICMP(
        type=8, id=7)
    packets = [reply, *filler[:10], reply.copy(), *filler[10:20], request, *filler[20:45],
               reply.copy(), *filler[45:]]
    path = tmp_path / "echo.pcap"
    wrpcap(str(path), _at(packets))
    c, fallback, slow = three_ways(path, monkeypatch, CaptureOptions(), block_size=1024)
    assert flows_json(c) == flows_json(fallback) == flows_json(slow)
    (flow,) = [f for f in c.flows if f.icmp is not None]
    assert flow.metric.rtt == 26_000_000


def vxlan_traffic(count: int) -> list[Packet]:
    out = []
    for i in range(count):
        inner = Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02") / IP(
            src="10.0.0.1", dst="10.0.0.2") / TCP(sport=4000 + i % 3, dport=80,
                                                  flags="S" if i < 3 else "A")
        out.append(Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02") / IP(
            src="172.16.0.1", dst="172.16.0.2") / UDP(sport=50000 + i, dport=4789)
            / VXLAN(vni=42) / inner)
    return out


def test_mpls_over_udp_on_the_vxlan_port_is_not_vxlan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mpls.pcap"
    wrpcap(str(path), _at(vxlan_traffic(30)))
    for port in (4789, 6635):
        c, fallback, slow = three_ways(path, monkeypatch, CaptureOptions(mpls_udp_port=port),
                                  block_size=1024)
        assert flows_json(c) == flows_json(fallback) == flows_json(slow)
        paths = {f.layers_path for f in c.flows}
        assert ("Ethernet/IPv4/UDP/VXLAN" in paths) == (port != 4789)


def test_lru_eviction_with_vxlan_and_ticks(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A small table full all the time, tunnel flows and ticks cutting the blocks.
    rng = random.Random(3)
    packets: list[Packet] = vxlan_traffic(20)
    for _ in range(300):
        n = rng.randrange(40)
        packets.append(Ether(src="02:00:00:00:00:01", dst=f"02:00:00:00:00:{n + 2:02x}") / IP(
            src="10.0.0.1", dst=f"10.0.1.{n + 1}") / UDP(sport=2000, dport=3000 + n % 7)
            / Raw(b"x" * rng.randrange(30)))
    rng.shuffle(packets)
    path = tmp_path / "lru.pcap"
    wrpcap(str(path), _at(packets, gap=0.7))
    settings = TableSettings(max_entries=24, update=10, expire=30)
    c, fallback, slow = three_ways(path, monkeypatch, CaptureOptions(), settings=settings,
                              block_size=2048)
    assert c.dropped > 0
    assert flows_json(c) == flows_json(fallback) == flows_json(slow)


def records(path: Path) -> list[tuple[int, bytes, int]]:
    return [(f.ts_ns, f.data, f.wire_length) for f in pcapfile.read(path)[1]]


def stretched(path: Path, out: Path, factor: int) -> Path:
    """`path` with the time between its packets multiplied by `factor`."""
    info, frames = pcapfile.read(path)
    listed = list(frames)
    t0 = listed[0].ts_ns
    with open(out, "wb") as fh:
        pcapfile.write(fh, info.link_type, [
            pcapfile.Frame(t0 + (f.ts_ns - t0) * factor, f.data, f.wire_length)
            for f in listed])
    return out


def test_blocks_fed_one_by_one_between_outside_ticks_and_feeds(tmp_path: Path) -> None:
    # The live pipeline's use: a block at a time, the table ticked (expiring flows)
    # and fed directly in between; the flows sent and kept are the per-packet ones.
    bench = tmp_path / "bench.pcap"
    benchmark_module().generate(bench, 6_000, 60)
    frames = records(bench)
    info = pcapfile.read_info(bench)
    blocks = list(pcapfile.read_blocks(bench, info, 4096))
    settings = TableSettings(update=1, expire=2)
    fast, slow = FlowTable(settings=settings), FlowTable(settings=settings)
    extra = bytes(Ether(src="02:00:00:00:09:01", dst="02:00:00:00:09:02") / IP(
        src="10.9.0.1", dst="10.9.0.2") / UDP(sport=7, dport=7))
    sent_fast: list[Flow] = []
    sent_slow: list[Flow] = []
    path = FastPath(fast)
    done = 0
    for n, block in enumerate(blocks):
        path.run_blocks([block], info, sent_fast.extend)
        for ts, data, wire in frames[done:done + len(block.offsets)]:
            sent_slow.extend(slow.tick(ts // 1_000_000))
            slow.feed(data, ts, wire)
        done += len(block.offsets)
        last = frames[done - 1][0]
        if n % 3 == 0:  # an outside tick, as the capture's timer does
            now = last // 1_000_000 + 1500 * (n // 3 + 1)
            sent_fast.extend(fast.tick(now))
            sent_slow.extend(slow.tick(now))
        if n % 5 == 0:  # an outside feed
            fast.feed(extra, last, len(extra))
            slow.feed(extra, last, len(extra))
    assert path.batched > 0 and sent_slow
    assert any(f.finish_type.name == "TIMEOUT" for f in sent_slow)  # expired in between
    assert [f.to_json() for f in sent_fast] == [f.to_json() for f in sent_slow]
    assert [f.to_json() for f in fast.flows()] == [f.to_json() for f in slow.flows()]


@pytest.mark.parametrize("opts", [CaptureOptions(raw_packet_limit=2),
                                  CaptureOptions(ip_defrag=True)])
def test_tables_with_options_are_fed_in_order(tmp_path: Path, opts: CaptureOptions) -> None:
    # Raw packets are kept by the batch path, across update and expiry ticks; with an
    # option it does not sum (defragmentation) every record goes to the exact path.
    bench = tmp_path / "bench.pcap"
    benchmark_module().generate(bench, 3_000, 30)
    slow_file = stretched(bench, tmp_path / "slow.pcap", 1000)  # 10 ms apart
    info = pcapfile.read_info(slow_file)
    settings = TableSettings(update=1, expire=3)
    fast, slow = FlowTable(opts, settings), FlowTable(opts, settings)
    sent_fast: list[Flow] = []
    path = FastPath(fast)
    assert path.enabled == (not opts.ip_defrag) and path.native
    path.run_blocks(pcapfile.read_blocks(slow_file, info, 8192), info, sent_fast.extend)
    sent_slow: list[Flow] = []
    for ts, data, wire in records(slow_file):
        sent_slow.extend(slow.tick(ts // 1_000_000))
        slow.feed(data, ts, wire)
    assert (path.batched == 0) == opts.ip_defrag and sent_slow
    assert [f.to_json() for f in sent_fast] == [f.to_json() for f in sent_slow]
    assert [f.to_json() for f in fast.flows()] == [f.to_json() for f in slow.flows()]
    assert [f.last_raw_packets for f in sent_fast] == [f.last_raw_packets for f in sent_slow]
    assert [f.last_raw_packets for f in fast.flows()] == [
        f.last_raw_packets for f in slow.flows()]


# ---- reading blocks -------------------------------------------------------------------
def pcap_bytes(sizes: list[int]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, size in enumerate(sizes):
        out.append(struct.pack("<IIII", 1_700_000_000, i, size, size) + bytes([i % 256]) * size)
    return b"".join(out)


def block_records(blocks: Iterator[pcapfile.Block]) -> list[tuple[int, bytes]]:
    out = []
    for block in blocks:
        for off in list(block.offsets):
            frac, incl = struct.unpack_from("<I4xI", block.data, off + 4)
            out.append((frac, bytes(block.data[off + 16:off + 16 + incl])))
    return out


@pytest.mark.parametrize("block_size", [64, 1000, 1 << 20, 1 << 16])
@pytest.mark.parametrize("c_index", [True, False])
def test_read_blocks_gives_every_record_once(tmp_path: Path, block_size: int, c_index: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Records larger than a block, and blocks ending inside a header or a record; the
    # records indexed in C or with numpy.
    if not c_index:
        monkeypatch.setattr(pcapfile, "_native_index", None)
    rng = random.Random(block_size)
    sizes = [rng.choice([0, 1, 60, 333, 1514, 5000]) for _ in range(1200)]
    path = tmp_path / "a.pcap"
    path.write_bytes(pcap_bytes(sizes))
    info = pcapfile.read_info(path)
    expected = [(i, bytes([i % 256]) * size) for i, size in enumerate(sizes)]
    assert block_records(pcapfile.read_blocks(path, info, block_size)) == expected


def test_read_blocks_names_a_truncated_record(tmp_path: Path) -> None:
    data = pcap_bytes([100, 100, 100])
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-30])
    info = pcapfile.read_info(path)
    with pytest.raises(pcapfile.PcapError, match=rf"{path}: record at byte {24 + 2 * 116} "
                                                 "truncated"):
        list(pcapfile.read_blocks(path, info, 64))


def test_read_blocks_from_a_fifo(tmp_path: Path) -> None:
    sizes = [60, 1514, 0, 200] * 50
    data = pcap_bytes(sizes)
    fifo = tmp_path / "stream.pcap"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "wb") as out:
            out.write(data)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        info = pcapfile.parse_info(data[:64], fifo)
        got = block_records(pcapfile.read_blocks(fifo, info, 1000))
    finally:
        thread.join()
    assert got == [(i, bytes([i % 256]) * size) for i, size in enumerate(sizes)]


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_random_mixes_tables_and_blocks(tmp_path: Path, seed: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every kind of traffic interleaved, a table from tiny to roomy, ticks every few
    # packets or never, blocks of a few records or many.
    from tests.unit.capture.test_capture_fastpath import mixed_traffic, write
    rng = random.Random(seed)
    path = write(tmp_path / "mix.pcap", mixed_traffic(seed, flows=30, per_flow=12),
                 1_700_000_000.0, rng.choice([0.001, 0.3, 2.0]))
    settings = TableSettings(max_entries=rng.choice([5, 17, 500_000]), update=3, expire=7)
    opts = CaptureOptions(layer_key_mode=rng.choice(["L2", "L3"]),
                          extra_tcp_metric=rng.random() < 0.5)
    c, fallback, slow = three_ways(path, monkeypatch, opts, settings=settings,
                              block_size=rng.choice([512, 4096, 1 << 20]))
    assert flows_json(c) == flows_json(fallback) == flows_json(slow)


@pytest.mark.parametrize("seed", range(6))
def test_mangled_frames_same_flows(tmp_path: Path, seed: int,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Bytes flipped, frames cut short or random, wire lengths off, time going back and
    # forth: the C path decides exactly like the decoder what is its common case.
    from tests.unit.capture.test_capture_fastpath import mixed_traffic
    rng = random.Random(seed)
    frames = []
    for p in mixed_traffic(seed % 3 + 1, flows=20, per_flow=8):
        b = bytearray(bytes(p))
        r = rng.random()
        if r < 0.3:
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif r < 0.4:
            b = b[:rng.randrange(len(b) + 1)]
        elif r < 0.45:
            b = bytearray(rng.randbytes(rng.randrange(80)))
        frames.append(bytes(b))
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, f in enumerate(frames):
        orig = max(len(f) + rng.choice([0, 0, 0, 7, -3]), 0)
        out.append(struct.pack("<IIII", 1_700_000_000 + i // 100, (i * 997) % 1_000_000,
                               len(f), orig) + f)
    path = tmp_path / "mangled.pcap"
    path.write_bytes(b"".join(out))
    settings = TableSettings(max_entries=rng.choice([3, 30, 1000]), update=1, expire=2)
    c, fallback, slow = three_ways(path, monkeypatch, CaptureOptions(), settings=settings,
                              block_size=rng.choice([128, 2048]))
    assert flows_json(c) == flows_json(fallback) == flows_json(slow)
