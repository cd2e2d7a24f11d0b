"""IPv4 defragmentation ahead of the flow table (capture option `IPDefrag`).

Owns the fragment buffers keyed by (src, dst, protocol, id), their
completion check, the rebuilt frame (headers before the IP layer kept, IP
header with MF/offset cleared and length fixed) and the `IPMetric` of each
reassembled datagram.  Fragments that never complete a datagram are not fed
to the flow table; buffers older than `max_age_ms` (packet time) are dropped.
Pure: time comes with the packets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from skygraph.capture.decoder import DecoderConfig, IPv4Info, Layer, decode
from skygraph.topology.flow import IPMetric

LENGTH_FIELD = struct.Struct("!H")
MAX_DATAGRAM = 65535


@dataclass(slots=True)
class _Datagram:
    first_seen: int  # ms
    parts: dict[int, tuple[bytes, bool]] = field(default_factory=dict)  # offset -> data, MF
    prefix: bytes = b""  # frame bytes up to and including the first fragment's IP header
    ip_start: int = 0
    errors: int = 0
    count: int = 0


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Defragmenter:
    def __init__(self, max_age_ms: int = 30_000, max_datagrams: int = 4096) -> None:
        self.max_age_ms = max_age_ms
        self.max_datagrams = max_datagrams
        self._pending: dict[tuple[bytes, bytes, int, int], _Datagram] = {}
        self.errors = 0

    def process(self, frame: bytes, layers: list[Layer], ts_ms: int, link_type: int,
                cfg: DecoderConfig) -> tuple[bytes, list[Layer], IPMetric] | None:
        """Pass non-fragments through; buffer fragments; return a datagram once complete."""
        ip_layer = next((la for la in layers if isinstance(la.info, IPv4Info)), None)
        if ip_layer is None:
            return frame, layers, IPMetric()
        ip = ip_layer.info
        assert isinstance(ip, IPv4Info)
        if not ip.more_fragments and ip.frag_offset == 0:
            return frame, layers, IPMetric()
        self._sweep(ts_ms)
        key = (ip.src, ip.dst, ip.protocol, ip.ident)
        dg = self._pending.get(key)
        if dg is None:
            dg = self._pending[key] = _Datagram(ts_ms)
        payload_start = ip_layer.start + ip.header_length
        payload = frame[payload_start:ip_layer.start + ip.length]
        dg.count += 1
        old = dg.parts.get(ip.frag_offset)
        if (old is not None and old[0] != payload) or ip.frag_offset + len(payload) > MAX_DATAGRAM:
            dg.errors += 1
        dg.parts[ip.frag_offset] = (payload, ip.more_fragments)
        if ip.frag_offset == 0:
            dg.prefix = frame[:payload_start]
            dg.ip_start = ip_layer.start
        rebuilt = self._complete(dg)
        if rebuilt is None:
            return None
        del self._pending[key]
        metric = IPMetric(fragments=dg.count, fragment_errors=dg.errors)
        return rebuilt, decode(rebuilt, link_type, cfg), metric

    def _complete(self, dg: _Datagram) -> bytes | None:
        if not dg.prefix:
            return None
        data = bytearray()
        for offset in sorted(dg.parts):
            chunk, more = dg.parts[offset]
            if offset > len(data):
                return None  # hole
            if offset < len(data):
                dg.errors += 0 if data[offset:offset + len(chunk)] == chunk[:len(data) - offset] \
                    else 1
            data[offset:offset + len(chunk)] = chunk
            if not more:
                break
        else:
            return None  # last fragment not seen yet
        if max(dg.parts) > offset:
            dg.errors += 1  # data announced beyond the last fragment
        ip_start = dg.ip_start
        header = bytearray(dg.prefix[ip_start:])
        LENGTH_FIELD.pack_into(header, 2, len(header) + len(data))
        header[6] &= 0x40  # keep DF, clear MF and the offset
        header[7] = 0
        header[10:12] = b"\0\0"
        LENGTH_FIELD.pack_into(header, 10, _checksum(bytes(header)))
        return bytes(dg.prefix[:ip_start]) + bytes(header) + bytes(data)

    def _sweep(self, now_ms: int) -> None:
        if len(self._pending) < self.max_datagrams and not any(
                now_ms - dg.first_seen > self.max_age_ms for dg in self._oldest()):
            return
        for key in [k for k, dg in self._pending.items()
                    if now_ms - dg.first_seen > self.max_age_ms]:
            del self._pending[key]
            self.errors += 1
        while len(self._pending) >= self.max_datagrams:
            del self._pending[next(iter(self._pending))]
            self.errors += 1

    def _oldest(self) -> list[_Datagram]:
        return [next(iter(self._pending.values()))] if self._pending else []

    @property
    def pending(self) -> int:
        return len(self._pending)
