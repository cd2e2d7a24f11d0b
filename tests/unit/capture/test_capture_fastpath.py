"""The batch path -- the C extension, and the per-packet path it falls back to
without it -- gives exactly the per-packet path's flows, and indexes pcaps exactly."""

from __future__ import annotations

import functools
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, wrpcap

from skygraph.capture import fastpath, pcapfile
from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions, TableSettings
from skygraph.capture.pcapindex import index_records
from tests.conftest import PCAPS


@pytest.fixture(params=["c", "fallback"], autouse=True)
def batch_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the C extension and as if it were not built (blocks of
    records through the per-packet path, the numpy record index)."""
    if request.param == "fallback":  # as if the extension were not built
        monkeypatch.setattr(fastpath, "native", None)
        monkeypatch.setattr(pcapfile, "_native_index", None)
    else:
        assert fastpath.native is not None, "the _fastflow extension is not built"
    return str(request.param)


@functools.lru_cache(maxsize=8)
def mixed_traffic(seed: int, flows: int = 36, per_flow: int = 20,
                  kinds: tuple[str, ...] = ("tcp", "udp", "icmp", "vxlan", "dns", "odd"),
                  ) -> list[Packet]:
    """Interleaved flows of every kind the batch path takes or hands over."""
    rng = random.Random(seed)
    convs = []
    for i in range(flows):
        a, b = f"10.0.{i // 200}.{i % 200 + 1}", f"10.9.{i // 200}.{i % 200 + 1}"
        ma, mb = f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", f"04:00:00:00:{i // 256:02x}:01"
        kind = kinds[i % len(kinds)]
        convs.append((kind, a, b, ma, mb, 1000 + i))
    order = [i for i in range(flows) for _ in range(per_flow)]
    rng.shuffle(order)
    sent = [0] * flows
    out: list[Packet] = []
    for i in order:
        kind, a, b, ma, mb, port = convs[i]
        k = sent[i]
        sent[i] += 1
        fwd = rng.random() < 0.6
        src, dst, smac, dmac = (a, b, ma, mb) if fwd else (b, a, mb, ma)
        eth = Ether(src=smac, dst=dmac)
        payload = Raw(b"p" * rng.randrange(0, 40))
        if kind == "tcp":
            flags = "S" if k == 0 else "SA" if k == 1 else "FA" if k >= per_flow - 2 else "PA"
            sp, dp = (port, 80) if fwd else (80, port)
            p = eth / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags) / payload
        elif kind == "udp":
            sp, dp = (port, 9999) if fwd else (9999, port)
            p = eth / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / payload
        elif kind == "icmp":
            p = eth / IP(src=src, dst=dst) / ICMP(type=8 if fwd else 0, id=port) / payload
        elif kind == "vxlan":
            inner = Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) / (
                TCP(sport=port, dport=22, flags="S" if k == 0 else "A") if k % 3
                else ICMP(type=8 if fwd else 0, id=port))
            p = Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02") / IP(
                src="172.16.0.1", dst="172.16.0.2") / UDP(
                sport=rng.randrange(49152, 65535), dport=4789) / VXLAN(vni=port % 3) / inner
        elif kind == "dns":
            p = eth / IP(src=src, dst=dst) / UDP(sport=port, dport=53) / DNS(
                qd=DNSQR(qname="example.org"))
        else:
            choice = k % 4
            if choice == 0:
                p = eth / Dot1Q(vlan=7) / IP(src=src, dst=dst) / UDP(sport=port, dport=7)
            elif choice == 1:
                p = eth / IP(src=src, dst=dst, options=b"\x01\x01\x01\x00") / UDP(
                    sport=port, dport=7)
            elif choice == 2:
                p = fragment(eth / IP(src=src, dst=dst) / UDP(sport=port, dport=7)
                             / Raw(b"f" * 60), fragsize=32)[0]  # type: ignore[no-untyped-call]
            else:
                p = eth / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=port, dport=7)
        out.append(p)
    return out


def write(path: Path, packets: list[Packet], start: float, gap: float) -> Path:
    for i, p in enumerate(packets):
        p.time = start + i * gap
    wrpcap(str(path), packets)
    return path


def both(path: Path, block_size: int = 2048, batched: bool = True,
         **kw: object) -> tuple[list[object], list[object]]:
    opts = CaptureOptions(**{k: v for k, v in kw.items() if k != "settings"})  # type: ignore[arg-type]
    settings = kw.get("settings")
    assert settings is None or isinstance(settings, TableSettings)
    fast = process_file(path, opts, settings=settings, fast=True, block_size=block_size)
    slow = process_file(path, opts, settings=settings, fast=False)
    assert fast.packets == slow.packets and fast.dropped == slow.dropped
    assert slow.batched == 0
    if batched and fastpath.native is not None:  # the batch path really summed packets
        assert fast.batched > 0
    return ([f.to_json() for f in fast.flows], [f.to_json() for f in slow.flows])


@pytest.mark.parametrize("name", sorted(p.name for p in PCAPS.glob("*.pcap")))
@pytest.mark.parametrize("mode", ["L2", "L3"])
def test_shared_pcaps_same_flows(name: str, mode: str) -> None:
    fast, slow = both(PCAPS / name, layer_key_mode=mode, batched=False)
    assert fast == slow


@pytest.mark.parametrize("mode", ["L2", "L3"])
def test_mixed_traffic_same_flows(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path / "mixed.pcap", mixed_traffic(1), 1_700_000_000.0, 0.001)
    fast, slow = both(path, layer_key_mode=mode, extra_tcp_metric=True)
    assert len(fast) > 36 and fast == slow


def test_ticks_expiry_and_timeouts_inside_batches(tmp_path: Path) -> None:
    # 720 packets 1 s apart: update ticks every 60 s, expiry, DNS timeouts, all of
    # which cut batches in the middle of blocks.
    path = write(tmp_path / "slow.pcap", mixed_traffic(1), 1_700_000_000.0, 1.0)
    fast, slow = both(path, block_size=1 << 20)
    assert fast == slow
    assert any(f["FinishType"] == "TIMEOUT" for f in fast if isinstance(f, dict)
               and "FinishType" in f)


@pytest.mark.parametrize("cap", [7, 30])
def test_lru_eviction_inside_batches(tmp_path: Path, cap: int) -> None:
    # Only common-case flows: at the cap, batches without new flows stay batched and
    # must leave the LRU order the per-packet path would.
    packets = mixed_traffic(3, kinds=("tcp", "udp", "icmp", "vxlan"))
    path = write(tmp_path / "lru.pcap", packets, 1_700_000_000.0, 0.001)
    fast, slow = both(path, settings=TableSettings(max_entries=cap), block_size=1024,
                      batched=cap > 7)
    assert fast == slow


def test_reassembly_mode_same_flows(tmp_path: Path) -> None:
    path = write(tmp_path / "tcp.pcap", mixed_traffic(1), 1_700_000_000.0, 0.001)
    fast, slow = both(path, reassemble_tcp=True, extra_tcp_metric=True)
    assert fast == slow


def test_pcapng_reads_like_pcap(tmp_path: Path) -> None:
    packets = mixed_traffic(2, flows=12, per_flow=5)
    pcap = write(tmp_path / "a.pcap", packets, 1_700_000_000.0, 0.5)
    with PcapNgWriter(str(tmp_path / "a.pcapng")) as w:
        for p in packets:
            w.write(p)
    a = process_file(pcap, CaptureOptions())
    b = process_file(tmp_path / "a.pcapng", CaptureOptions())
    assert [f.to_json() for f in a.flows] == [f.to_json() for f in b.flows]


def sequential(data: bytes, little: bool) -> tuple[list[int], int]:
    u32 = struct.Struct("<I" if little else ">I")
    out, off = [], 0
    while off + 16 <= len(data):
        end = off + 16 + u32.unpack_from(data, off + 8)[0]
        if end > len(data):
            break
        out.append(off)
        off = end
    return out, off


@pytest.mark.parametrize("little", [True, False])
def test_record_index_matches_sequential_scan(little: bool) -> None:
    rng = random.Random(7)
    fmt = "<IIII" if little else ">IIII"
    parts = []
    for i in range(20000):
        size = rng.choice([0, 14, 60, 61, 333, 1514, rng.randrange(0, 2000)])
        body = rng.randbytes(size)
        parts.append(struct.pack(fmt, 1_700_000_000 + i // 1000, i, size, size + i % 3) + body)
    data = b"".join(parts)
    for cut in (len(data), len(data) - 5, len(data) // 3 + 11):
        found = index_records(data[:cut], little)
        assert found is not None
        offsets, end = found
        expected, expected_end = sequential(data[:cut], little)
        assert np.array_equal(offsets, np.array(expected)) and end == expected_end


def test_nanosecond_and_big_endian_pcaps(tmp_path: Path) -> None:
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
        src="10.0.0.1", dst="10.0.0.2") / ICMP())
    for magic, order, frac in ((0xA1B23C4D, ">", 123_456_789), (0xA1B2C3D4, ">", 123_456)):
        path = tmp_path / f"{magic:x}.pcap"
        path.write_bytes(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
                         + struct.pack(order + "IIII", 1_700_000_000, frac, len(frame),
                                       len(frame)) + frame)
        info, frames = pcapfile.read(path)
        assert (info.nanosecond, info.byte_order, info.link_type) == (
            magic == 0xA1B23C4D, ">", 1)
        (fr,) = list(frames)
        assert fr.ts_ns == 1_700_000_000_123_456_000 + (789 if magic == 0xA1B23C4D else 0)
        (f,) = process_file(path, CaptureOptions()).flows
        assert f.start == 1_700_000_000_123
