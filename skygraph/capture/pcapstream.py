"""A classic pcap file arriving as a byte stream (`cat file.pcap | nc host port`).

Owns the incremental parse: bytes in any chunking, the global header read
once (byte order, resolution, link type, snaplen), then blocks of whole
records (the shape `pcapfile.read_blocks` gives, so the flow table's batch
path reads them); a partial record waits for the next chunk.  Errors name
the byte offset in the stream.  Pure: no sockets, no clocks.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from skygraph.capture.pcapfile import Block, PcapError, PcapInfo, parse_info

GLOBAL_HEADER_SIZE = 24
RECORD_HEADER_SIZE = 16
MAX_RECORD = 1 << 24  # a larger record length is a corrupt stream, not a packet


class PcapStream:
    """Feed chunks with `feed`; call `end` when the stream closes."""

    def __init__(self, name: str = "pcap stream") -> None:
        self.name = name
        self.info: PcapInfo | None = None
        self.records = 0  # records handed out
        self._buf = b""
        self._pos = 0  # stream offset of `_buf[0]`
        self._len: struct.Struct | None = None  # reads incl_len at +8 of a record header

    def feed(self, chunk: bytes) -> Block | None:
        """The whole records completed by `chunk` (None: none yet).  Raises
        `PcapError` for a stream that is not classic pcap or is corrupt."""
        buf = self._buf + chunk if self._buf else chunk
        if self.info is None:
            if len(buf) < GLOBAL_HEADER_SIZE:
                self._buf = buf
                return None
            info = parse_info(buf[:64], Path(self.name))
            if info.pcapng:
                raise PcapError(f"{self.name}: pcapng is not supported here, send a classic "
                                f"pcap (tcpdump -w, editcap -F pcap)")
            self.info = info
            self._len = struct.Struct(info.byte_order + "I")
            buf = buf[GLOBAL_HEADER_SIZE:]
            self._pos = GLOBAL_HEADER_SIZE
        assert self._len is not None
        offsets: list[int] = []
        off, n = 0, len(buf)
        unpack = self._len.unpack_from
        while off + RECORD_HEADER_SIZE <= n:
            incl = unpack(buf, off + 8)[0]
            if incl > MAX_RECORD:
                raise PcapError(f"{self.name}: record at byte {self._pos + off} announces "
                                f"{incl} bytes")
            end = off + RECORD_HEADER_SIZE + incl
            if end > n:
                break
            offsets.append(off)
            off = end
        self._buf = buf[off:]
        if not offsets:
            self._pos += off
            return None
        block = Block(buf[:off], np.array(offsets, dtype=np.int64))
        self._pos += off
        self.records += len(offsets)
        return block

    def end(self) -> None:
        """The stream closed: raises `PcapError` if it stopped inside a header or record."""
        if self.info is None:
            if self._buf:
                raise PcapError(f"{self.name}: ended inside the pcap header "
                                f"({len(self._buf)} bytes)")
            return
        if self._buf:
            raise PcapError(f"{self.name}: record at byte {self._pos} truncated "
                            f"({len(self._buf)} bytes received)")
