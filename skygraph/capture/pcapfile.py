"""pcap files: reading (classic pcap in either byte order and resolution, pcapng),
reading classic pcap as blocks of records for the batch path, and writing
(classic pcap, microsecond resolution) of captured frames.

Owns the file formats only; errors name the file and the byte offset.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_EPB = 0x00000006
PCAPNG_SPB = 0x00000003
PCAPNG_BOM = 0x1A2B3C4D

GLOBAL_HEADER = "IHHiIII"  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
RECORD_HEADER = "IIII"  # ts_sec, ts_frac, incl_len, orig_len
DEFAULT_SNAPLEN = 262144


class PcapError(ValueError):
    pass


class Frame(NamedTuple):
    ts_ns: int
    data: bytes
    wire_length: int


@dataclass(frozen=True, slots=True)
class PcapInfo:
    link_type: int
    snaplen: int
    nanosecond: bool
    byte_order: str  # "<" or ">"
    header_size: int  # bytes before the first record (classic pcap)
    pcapng: bool = False


def read_info(path: Path) -> PcapInfo:
    with open(path, "rb") as f:
        head = f.read(64)
    return parse_info(head, path)


def parse_info(head: bytes, path: Path) -> PcapInfo:
    if len(head) < 24:
        raise PcapError(f"{path}: not a pcap file (only {len(head)} bytes)")
    for order in ("<", ">"):
        magic = struct.unpack_from(order + "I", head)[0]
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            _, _, _, _, _, snaplen, link_type = struct.unpack_from(order + GLOBAL_HEADER, head)
            return PcapInfo(link_type & 0x0FFFFFFF, snaplen, magic == PCAP_MAGIC_NS, order, 24)
    if struct.unpack_from("<I", head)[0] == PCAPNG_SHB:
        bom = struct.unpack_from("<I", head, 8)[0]
        order = "<" if bom == PCAPNG_BOM else ">"
        return PcapInfo(-1, DEFAULT_SNAPLEN, False, order, 0, pcapng=True)
    raise PcapError(f"{path}: not a pcap or pcapng file (magic {head[:4].hex()})")


def read(path: Path) -> tuple[PcapInfo, Iterator[Frame]]:
    """Open a capture file: its header info (link type) and an iterator of frames."""
    data = Path(path).read_bytes()
    info = parse_info(data[:64], path)
    if info.pcapng:
        link_type, frames = _read_pcapng(data, path, info.byte_order)
        return PcapInfo(link_type, info.snaplen, False, info.byte_order, 0, True), frames
    return info, _read_pcap(data, path, info)


def _read_pcap(data: bytes, path: Path, info: PcapInfo) -> Iterator[Frame]:
    rec = struct.Struct(info.byte_order + RECORD_HEADER)
    scale = 1 if info.nanosecond else 1000
    off = info.header_size
    n = len(data)
    while off + 16 <= n:
        sec, frac, incl, orig = rec.unpack_from(data, off)
        off += 16
        if off + incl > n:
            raise PcapError(f"{path}: record at byte {off - 16} truncated "
                            f"({incl} bytes announced, {n - off} left)")
        yield Frame(sec * 1_000_000_000 + frac * scale, data[off:off + incl], orig)
        off += incl
    if off != n:
        raise PcapError(f"{path}: {n - off} trailing bytes at byte {off}")


def _read_pcapng(data: bytes, path: Path, order: str) -> tuple[int, Iterator[Frame]]:
    u32 = struct.Struct(order + "I")
    blocks: list[tuple[int, int, int]] = []  # type, body offset, body length
    off = 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from(order + "II", data, off)
        if blen < 12 or off + blen > len(data):
            raise PcapError(f"{path}: pcapng block at byte {off} has bad length {blen}")
        blocks.append((btype, off + 8, blen - 12))
        off += blen
    interfaces: list[tuple[int, int]] = []  # link type, ts units per second
    for btype, body, _ in blocks:
        if btype == PCAPNG_IDB:
            interfaces.append((struct.unpack_from(order + "H", data, body)[0], 1_000_000))
    link_type = interfaces[0][0] if interfaces else 1

    def frames() -> Iterator[Frame]:
        for btype, body, _blen in blocks:
            if btype == PCAPNG_EPB:
                iface, hi, lo, incl, orig = struct.unpack_from(order + "IIIII", data, body)
                units = interfaces[iface][1] if iface < len(interfaces) else 1_000_000
                ts = (hi << 32 | lo) * 1_000_000_000 // units
                yield Frame(ts, data[body + 20:body + 20 + incl], orig)
            elif btype == PCAPNG_SPB:
                orig = u32.unpack_from(data, body)[0]
                yield Frame(0, data[body + 4:body + 4 + orig], orig)
    return link_type, frames()


def write(out: BinaryIO, link_type: int, frames: Iterable[Frame],
          snaplen: int = DEFAULT_SNAPLEN) -> int:
    """Write a classic microsecond pcap; returns the number of records written."""
    out.write(struct.pack("<" + GLOBAL_HEADER, PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, link_type))
    rec = struct.Struct("<" + RECORD_HEADER)
    count = 0
    for frame in frames:
        sec, ns = divmod(frame.ts_ns, 1_000_000_000)
        out.write(rec.pack(sec, ns // 1000, len(frame.data), max(frame.wire_length,
                                                                  len(frame.data))))
        out.write(frame.data)
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class Block:
    """A run of whole classic-pcap records: `data` holds them, `offsets` their headers."""

    data: bytes | mmap.mmap  # or the mapped ring the records lie in (capture.afpacket)
    offsets: Any  # int64 sequence (numpy array or memoryview)


def _load_index() -> Callable[[bytes, bool], tuple[bytes, int]] | None:
    try:
        from skygraph.capture._fastflow import index
    except ImportError:
        return None
    return index


_native_index = _load_index()  # C record walk, when the extension is built


def _scan(data: bytes, rec: struct.Struct) -> tuple[list[int], int]:
    offsets: list[int] = []
    off, n = 0, len(data)
    unpack = rec.unpack_from
    append = offsets.append
    while off + 16 <= n:
        end = off + 16 + unpack(data, off + 8)[0]
        if end > n:
            break
        append(off)
        off = end
    return offsets, off


def _index(data: bytes, order: str) -> tuple[Any, int]:
    """Offsets of the whole records at the start of `data`, and the offset after them."""
    if _native_index is not None:
        raw, off = _native_index(data, order == "<")
        return memoryview(raw).cast("q"), off
    import numpy as np

    from skygraph.capture.pcapindex import index_records
    found = index_records(data, order == "<")
    if found is not None:
        return found
    listed, off = _scan(data, struct.Struct(order + "I"))
    return np.array(listed, dtype=np.int64), off


def read_blocks(path: Path, info: PcapInfo,
                block_size: int | Callable[[], int] = 32 << 20) -> Iterator[Block]:
    """Classic pcap records in blocks of about `block_size` bytes (bounded memory);
    a callable is asked again before each read.  A block may end with the start of
    a record the next block holds whole."""
    with open(path, "rb") as f:
        pos = info.header_size
        if not f.seekable():  # a pipe
            f.read(pos)
            yield from _read_stream(f, path, info, pos, block_size)
            return
        f.seek(pos)
        want = 0
        while True:
            size = max(want, block_size() if callable(block_size) else block_size)
            data = f.read(size)
            if not data:
                return
            offsets, off = _index(data, info.byte_order)
            if len(data) < size:  # the end of the file
                if off != len(data):
                    raise PcapError(f"{path}: record at byte {pos + off} truncated")
                if len(offsets):
                    yield Block(data, offsets)
                return
            # The record cut by the block's end is read again with the next block.
            f.seek(off - len(data), 1)
            pos += off
            want = 0 if off else 2 * size  # a record larger than the block
            if len(offsets):
                yield Block(data, offsets)


def _read_stream(f: BinaryIO, path: Path, info: PcapInfo, pos: int,
                 block_size: int | Callable[[], int]) -> Iterator[Block]:
    carry = b""
    while True:
        chunk = f.read(block_size() if callable(block_size) else block_size)
        data = carry + chunk if carry else chunk
        if not data:
            return
        offsets, off = _index(data, info.byte_order)
        if not chunk:
            if off != len(data):
                raise PcapError(f"{path}: record at byte {pos + off} truncated")
            if len(offsets):
                yield Block(data, offsets)
            return
        pos += off
        carry = data[off:]
        if len(offsets):
            yield Block(data, offsets)
