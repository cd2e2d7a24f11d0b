"""NetFlow v5 datagrams, decoded: what the receiver of `ovsnetflow` captures reads.

Owns the v5 wire format as declared tables (24-byte header, 48-byte
records; Cisco's layout, which OVS, softflowd and skygraph's own exporter
write) and `decode(data) -> Datagram`, which never raises: a datagram that
is not v5, shorter than its header or than its `count` says, gives the
records that are whole plus `error` (what and at which byte).  Addresses
come out as dotted quads, every other field as the integer on the wire.
Pure.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

VERSION = 5
MAX_RECORDS = 30  # what an exporter may put in one datagram (Cisco; OVS flushes at 30)


class Layout:
    """A run of big-endian fields as a declared table: (name, struct format)."""

    def __init__(self, name: str, *fields: tuple[str, str]) -> None:
        self.name = name
        self.names = tuple(n for n, _ in fields)
        self.struct = struct.Struct("!" + "".join(f for _, f in fields))
        self.size = self.struct.size

    def unpack(self, data: bytes | memoryview, offset: int) -> dict[str, int | bytes]:
        return dict(zip(self.names, self.struct.unpack_from(data, offset), strict=True))


HEADER = Layout(
    "header",
    ("version", "H"), ("count", "H"),
    ("sys_uptime", "I"),  # ms since the exporter started
    ("unix_secs", "I"), ("unix_nsecs", "I"),  # export time
    ("flow_sequence", "I"),  # records the exporter sent before this datagram
    ("engine_type", "B"), ("engine_id", "B"),
    ("sampling_interval", "H"),  # 2-bit mode, 14-bit interval
)
RECORD = Layout(
    "record",
    ("srcaddr", "4s"), ("dstaddr", "4s"), ("nexthop", "4s"),
    ("input", "H"), ("output", "H"),  # SNMP ifIndex (OVS: engine id << 9 | OpenFlow port)
    ("packets", "I"), ("octets", "I"),  # dPkts, dOctets (IP layer and up)
    ("first", "I"), ("last", "I"),  # sysUptime at the first and last packet
    ("srcport", "H"), ("dstport", "H"),  # ICMP: 0 and type << 8 | code
    ("pad1", "B"), ("tcp_flags", "B"), ("protocol", "B"), ("tos", "B"),
    ("src_as", "H"), ("dst_as", "H"), ("src_mask", "B"), ("dst_mask", "B"),
    ("pad2", "H"),
)
assert HEADER.size == 24 and RECORD.size == 48


@dataclass(frozen=True, slots=True)
class Record:
    """One unidirectional flow record."""

    srcaddr: str
    dstaddr: str
    nexthop: str
    input: int
    output: int
    packets: int
    octets: int
    first: int  # sysUptime, ms
    last: int
    srcport: int
    dstport: int
    tcp_flags: int
    protocol: int
    tos: int
    src_as: int = 0
    dst_as: int = 0
    src_mask: int = 0
    dst_mask: int = 0


@dataclass(frozen=True, slots=True)
class Datagram:
    version: int = 0
    count: int = 0
    sys_uptime: int = 0
    unix_secs: int = 0
    unix_nsecs: int = 0
    flow_sequence: int = 0
    engine_type: int = 0
    engine_id: int = 0
    sampling_interval: int = 0
    records: tuple[Record, ...] = ()
    error: str = ""  # "": the datagram was well formed


def _ip(raw: int | bytes) -> str:
    assert isinstance(raw, bytes)
    return socket.inet_ntoa(raw)


def _record(data: bytes | memoryview, offset: int) -> Record:
    f = RECORD.unpack(data, offset)
    return Record(
        srcaddr=_ip(f["srcaddr"]), dstaddr=_ip(f["dstaddr"]), nexthop=_ip(f["nexthop"]),
        input=int(f["input"]), output=int(f["output"]), packets=int(f["packets"]),
        octets=int(f["octets"]), first=int(f["first"]), last=int(f["last"]),
        srcport=int(f["srcport"]), dstport=int(f["dstport"]), tcp_flags=int(f["tcp_flags"]),
        protocol=int(f["protocol"]), tos=int(f["tos"]), src_as=int(f["src_as"]),
        dst_as=int(f["dst_as"]), src_mask=int(f["src_mask"]), dst_mask=int(f["dst_mask"]))


def decode(data: bytes | bytearray | memoryview) -> Datagram:
    """One NetFlow v5 datagram; never raises (see the module docstring)."""
    view = memoryview(bytes(data)) if not isinstance(data, bytes) else memoryview(data)
    size = len(view)
    if size < HEADER.size:
        return Datagram(error=f"header: {size} bytes, a NetFlow v5 header takes {HEADER.size}")
    head = {k: int(v) for k, v in HEADER.unpack(view, 0).items()}
    if head["version"] != VERSION:
        return Datagram(version=head["version"], count=head["count"],
                        error=f"version at byte 0: {head['version']}, not {VERSION}")
    count = head["count"]
    whole = (size - HEADER.size) // RECORD.size
    records = tuple(_record(view, HEADER.size + i * RECORD.size) for i in range(min(count, whole)))
    error = ""
    if whole < count:
        at = HEADER.size + whole * RECORD.size
        error = (f"record {whole + 1} at byte {at}: the header counts {count} records, "
                 f"the datagram holds {whole} ({size} bytes)")
    elif count > MAX_RECORDS:
        error = f"count at byte 2: {count} records, v5 allows {MAX_RECORDS}"
    return Datagram(records=records, error=error, **head)
