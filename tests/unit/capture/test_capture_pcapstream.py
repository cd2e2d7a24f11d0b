"""PcapStream: a classic pcap parsed from arbitrary chunks gives the file's records."""

from __future__ import annotations

import io
import struct

import pytest

from skygraph.capture import pcapfile
from skygraph.capture.pcapfile import Frame, PcapError
from skygraph.capture.pcapstream import PcapStream
from tests.conftest import PCAPS

TRACE = PCAPS / "eth-ip4-arp-dns-req-http-google.pcap"


def records(stream: PcapStream, data: bytes, step: int) -> list[tuple[int, int, bytes]]:
    out = []
    for i in range(0, len(data), step):
        block = stream.feed(data[i:i + step])
        if block is None:
            continue
        assert stream.info is not None
        order = stream.info.byte_order
        scale = 1 if stream.info.nanosecond else 1000
        for off in block.offsets.tolist():
            sec, frac, incl, orig = struct.unpack_from(order + "IIII", block.data, off)
            out.append((sec * 10**9 + frac * scale, orig, block.data[off + 16:off + 16 + incl]))
    stream.end()
    return out


@pytest.mark.parametrize("step", [1, 5, 24, 1000, 1 << 20])
def test_any_chunking_gives_the_file_records(step: int) -> None:
    data = TRACE.read_bytes()
    expected = [(f.ts_ns, f.wire_length, f.data) for f in pcapfile.read(TRACE)[1]]
    stream = PcapStream()
    assert records(stream, data, step) == expected
    assert stream.records == len(expected) and stream.info is not None
    assert stream.info.link_type == 1


def test_big_endian_nanosecond_stream() -> None:
    head = struct.pack(">IHHiIII", pcapfile.PCAP_MAGIC_NS, 2, 4, 0, 0, 65535, 101)
    rec = struct.pack(">IIII", 7, 123, 4, 60) + b"\x45\x00\x00\x3c"
    stream = PcapStream()
    assert records(stream, head + rec + rec, 3) == [(7 * 10**9 + 123, 60, b"\x45\x00\x00\x3c")] * 2
    assert stream.info is not None and stream.info.link_type == 101


def test_written_by_pcapfile_round_trips() -> None:
    buf = io.BytesIO()
    pcapfile.write(buf, 1, [Frame(1_500_000_000_000, b"x" * 20, 64)])
    assert records(PcapStream(), buf.getvalue(), 9) == [(1_500_000_000_000, 64, b"x" * 20)]


def test_bad_streams_name_the_problem() -> None:
    with pytest.raises(PcapError, match="not a pcap or pcapng file"):
        PcapStream("s").feed(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    pcapng = struct.pack("<IIII", pcapfile.PCAPNG_SHB, 28, pcapfile.PCAPNG_BOM, 1) + bytes(12)
    with pytest.raises(PcapError, match="pcapng is not supported"):
        PcapStream("s").feed(pcapng)
    head = TRACE.read_bytes()[:24]
    with pytest.raises(PcapError, match="record at byte 24 announces 4294967295 bytes"):
        PcapStream("s").feed(head + struct.pack("<IIII", 1, 0, 0xFFFFFFFF, 10))
    cut = PcapStream("s")
    cut.feed(TRACE.read_bytes()[:-3])
    with pytest.raises(PcapError, match=r"s: record at byte \d+ truncated"):
        cut.end()
    short = PcapStream("s")
    short.feed(b"\xd4\xc3")
    with pytest.raises(PcapError, match="ended inside the pcap header"):
        short.end()
    PcapStream("s").end()  # an empty stream is no error
