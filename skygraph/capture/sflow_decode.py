"""sFlow v5 datagrams (sflow.org/sflow_version_5.txt), decoded: ours, scapy has none.

Owns the wire format as declared tables (`Layout`s: datagram header, the
four sample kinds, raw packet header records, the counter records skygraph
reads: generic interface, Ethernet, VLAN, host-sflow application resources,
Open vSwitch datapath) and `decode(data) -> Datagram`, which never raises:
a malformed datagram gives what was decoded before the fault plus `error`
(what and at which byte); unknown sample and record formats are skipped and
counted.  Every length is checked against its container, so no count in the
datagram can make the decoder read or loop past its bytes.  Pure.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

SFLOW_VERSION = 5
# sample data_format (enterprise 0 << 12 | format)
FLOW_SAMPLE, COUNTER_SAMPLE, EXPANDED_FLOW_SAMPLE, EXPANDED_COUNTER_SAMPLE = 1, 2, 3, 4
# flow record formats
RAW_PACKET_HEADER = 1
# counter record formats
GENERIC_INTERFACE, ETHERNET_INTERFACE, VLAN_COUNTERS = 1, 2, 5
APP_RESOURCES, OVS_DP = 2203, 2207
# raw packet header_protocol -> pcap link type
HEADER_LINK_TYPES: Mapping[int, int] = {1: 1, 11: 228, 12: 229}  # ISO 802.3, IPv4, IPv6


class Layout:
    """A run of big-endian XDR fields as a declared table: (name, struct format)."""

    def __init__(self, name: str, fields: tuple[tuple[str, str], ...]) -> None:
        self.name = name
        self.names = tuple(n for n, _ in fields)
        self.struct = struct.Struct("!" + "".join(f for _, f in fields))

    @property
    def size(self) -> int:
        return self.struct.size

    def unpack(self, data: bytes | memoryview, offset: int) -> dict[str, int]:
        return dict(zip(self.names, self.struct.unpack_from(data, offset), strict=True))


DATAGRAM = Layout("datagram", (("version", "I"), ("agent_address_type", "I")))
DATAGRAM_TAIL = Layout("datagram", (("sub_agent_id", "I"), ("sequence_number", "I"),
                                    ("uptime", "I"), ("num_samples", "I")))
TAG = Layout("data format", (("format", "I"), ("length", "I")))
COMPACT_FLOW = Layout("flow sample", (
    ("sequence_number", "I"), ("source_id", "I"), ("sampling_rate", "I"), ("sample_pool", "I"),
    ("drops", "I"), ("input", "I"), ("output", "I"), ("num_records", "I")))
EXPANDED_FLOW = Layout("expanded flow sample", (
    ("sequence_number", "I"), ("source_id_type", "I"), ("source_id_index", "I"),
    ("sampling_rate", "I"), ("sample_pool", "I"), ("drops", "I"), ("input_format", "I"),
    ("input", "I"), ("output_format", "I"), ("output", "I"), ("num_records", "I")))
COMPACT_COUNTERS = Layout("counters sample", (
    ("sequence_number", "I"), ("source_id", "I"), ("num_records", "I")))
EXPANDED_COUNTERS = Layout("expanded counters sample", (
    ("sequence_number", "I"), ("source_id_type", "I"), ("source_id_index", "I"),
    ("num_records", "I")))
RAW_HEADER = Layout("raw packet header", (
    ("header_protocol", "I"), ("frame_length", "I"), ("stripped", "I"), ("header_length", "I")))
# Counter records; field names are Skydive's SFMetric names where it keeps them.
COUNTER_RECORDS: Mapping[int, Layout] = {
    GENERIC_INTERFACE: Layout("generic interface counters", (
        ("ifIndex", "I"), ("ifType", "I"), ("ifSpeed", "Q"), ("ifDirection", "I"),
        ("ifStatus", "I"), ("IfInOctets", "Q"), ("IfInUcastPkts", "I"),
        ("IfInMulticastPkts", "I"), ("IfInBroadcastPkts", "I"), ("IfInDiscards", "I"),
        ("IfInErrors", "I"), ("IfInUnknownProtos", "I"), ("IfOutOctets", "Q"),
        ("IfOutUcastPkts", "I"), ("IfOutMulticastPkts", "I"), ("IfOutBroadcastPkts", "I"),
        ("IfOutDiscards", "I"), ("IfOutErrors", "I"), ("ifPromiscuousMode", "I"))),
    ETHERNET_INTERFACE: Layout("ethernet interface counters", (
        ("EthAlignmentErrors", "I"), ("EthFCSErrors", "I"), ("EthSingleCollisionFrames", "I"),
        ("EthMultipleCollisionFrames", "I"), ("EthSQETestErrors", "I"),
        ("EthDeferredTransmissions", "I"), ("EthLateCollisions", "I"),
        ("EthExcessiveCollisions", "I"), ("EthInternalMacTransmitErrors", "I"),
        ("EthCarrierSenseErrors", "I"), ("EthFrameTooLongs", "I"),
        ("EthInternalMacReceiveErrors", "I"), ("EthSymbolErrors", "I"))),
    VLAN_COUNTERS: Layout("vlan counters", (
        ("vlan_id", "I"), ("VlanOctets", "Q"), ("VlanUcastPkts", "I"),
        ("VlanMulticastPkts", "I"), ("VlanBroadcastPkts", "I"), ("VlanDiscards", "I"))),
    APP_RESOURCES: Layout("application resources", (
        ("user_time", "I"), ("system_time", "I"), ("OvsAppMemUsed", "Q"),
        ("OvsAppMemMax", "Q"), ("OvsAppFdOpen", "I"), ("OvsAppFdMax", "I"),
        ("OvsAppConnOpen", "I"), ("OvsAppConnMax", "I"))),
    OVS_DP: Layout("ovs datapath", (
        ("OvsDpNHit", "I"), ("OvsDpNMissed", "I"), ("OvsDpNLost", "I"), ("OvsDpNMaskHit", "I"),
        ("OvsDpNFlows", "I"), ("OvsDpNMasks", "I"))),
}
MAX_HEADER = 1 << 16


class RawHeader(NamedTuple):
    """A sampled packet: its first bytes and its length on the wire."""

    protocol: int  # header_protocol (1 Ethernet, 11 IPv4, 12 IPv6, ...)
    frame_length: int
    stripped: int  # bytes removed from the frame before sampling (e.g. FCS)
    header: bytes

    @property
    def wire_length(self) -> int:
        """Skydive's packet length: FrameLength - PayloadRemoved."""
        return max(self.frame_length - self.stripped, len(self.header))


class FlowSample(NamedTuple):
    sequence_number: int
    source_id_type: int
    source_id_index: int
    sampling_rate: int
    sample_pool: int
    drops: int
    input: int
    output: int
    headers: tuple[RawHeader, ...]


class CounterRecord(NamedTuple):
    format: int
    values: dict[str, int]


class CounterSample(NamedTuple):
    sequence_number: int
    source_id_type: int
    source_id_index: int
    records: tuple[CounterRecord, ...]


@dataclass(slots=True)
class Datagram:
    version: int = 0
    agent: str = ""
    sub_agent_id: int = 0
    sequence_number: int = 0
    uptime: int = 0  # ms
    num_samples: int = 0  # as announced
    flow_samples: list[FlowSample] = field(default_factory=list)
    counter_samples: list[CounterSample] = field(default_factory=list)
    skipped: int = 0  # samples and records of formats skygraph does not read
    error: str = ""  # the first fault ("" when the datagram decoded fully)


class _Fault(Exception):
    pass


def _need(end: int, at: int, size: int, what: str) -> None:
    if at + size > end:
        raise _Fault(f"{what} at byte {at} needs {size} bytes, {max(end - at, 0)} left")


def _read(layout: Layout, data: memoryview, at: int, end: int) -> dict[str, int]:
    _need(end, at, layout.size, layout.name)
    return layout.unpack(data, at)


def decode(data: bytes | memoryview) -> Datagram:
    """One sFlow v5 datagram; never raises (see `Datagram.error`)."""
    buf = memoryview(data)
    out = Datagram()
    try:
        _decode(buf, out)
    except _Fault as exc:
        out.error = str(exc)
    except (struct.error, ValueError, IndexError) as exc:  # defensive: a bug, not the input
        out.error = f"malformed datagram: {exc}"
    return out


def _decode(buf: memoryview, out: Datagram) -> None:
    end = len(buf)
    head = _read(DATAGRAM, buf, 0, end)
    out.version = head["version"]
    if out.version != SFLOW_VERSION:
        raise _Fault(f"sFlow version {out.version}, not 5")
    at = DATAGRAM.size
    kind = head["agent_address_type"]
    if kind == 1:
        _need(end, at, 4, "agent IPv4 address")
        out.agent = str(ipaddress.IPv4Address(bytes(buf[at:at + 4])))
        at += 4
    elif kind == 2:
        _need(end, at, 16, "agent IPv6 address")
        out.agent = str(ipaddress.IPv6Address(bytes(buf[at:at + 16])))
        at += 16
    else:
        raise _Fault(f"agent address type {kind} at byte 4 is not 1 (IPv4) or 2 (IPv6)")
    tail = _read(DATAGRAM_TAIL, buf, at, end)
    at += DATAGRAM_TAIL.size
    out.sub_agent_id, out.sequence_number = tail["sub_agent_id"], tail["sequence_number"]
    out.uptime, out.num_samples = tail["uptime"], tail["num_samples"]
    for _ in range(out.num_samples):
        if at >= end:
            raise _Fault(f"{out.num_samples} samples announced, the datagram ends at byte "
                         f"{end} after {len(out.flow_samples) + len(out.counter_samples)}")
        tag = _read(TAG, buf, at, end)
        body = at + TAG.size
        _need(end, body, tag["length"], f"sample (format {tag['format']})")
        sample_end = body + tag["length"]
        fmt = tag["format"]
        if fmt in (FLOW_SAMPLE, EXPANDED_FLOW_SAMPLE):
            out.flow_samples.append(_flow_sample(buf, body, sample_end, fmt, out))
        elif fmt in (COUNTER_SAMPLE, EXPANDED_COUNTER_SAMPLE):
            out.counter_samples.append(_counter_sample(buf, body, sample_end, fmt, out))
        else:
            out.skipped += 1
        at = sample_end


def _records(buf: memoryview, at: int, end: int, count: int,
             what: str) -> list[tuple[int, int, int]]:
    """(format, body offset, body end) of each record of a sample."""
    found: list[tuple[int, int, int]] = []
    for _ in range(count):
        if at >= end:
            raise _Fault(f"{what}: {count} records announced, the sample ends at byte {end} "
                         f"after {len(found)}")
        tag = _read(TAG, buf, at, end)
        body = at + TAG.size
        _need(end, body, tag["length"], f"{what} record (format {tag['format']})")
        found.append((tag["format"], body, body + tag["length"]))
        at = body + tag["length"]
    return found


def _flow_sample(buf: memoryview, at: int, end: int, fmt: int, out: Datagram) -> FlowSample:
    if fmt == FLOW_SAMPLE:
        s = _read(COMPACT_FLOW, buf, at, end)
        at += COMPACT_FLOW.size
        source_type, source_index = s["source_id"] >> 24, s["source_id"] & 0xFFFFFF
    else:
        s = _read(EXPANDED_FLOW, buf, at, end)
        at += EXPANDED_FLOW.size
        source_type, source_index = s["source_id_type"], s["source_id_index"]
    headers = []
    for rec_fmt, body, rec_end in _records(buf, at, end, s["num_records"], "flow sample"):
        if rec_fmt != RAW_PACKET_HEADER:
            out.skipped += 1
            continue
        h = _read(RAW_HEADER, buf, body, rec_end)
        size = h["header_length"]
        start = body + RAW_HEADER.size
        if size > MAX_HEADER:
            raise _Fault(f"raw packet header at byte {body} announces {size} bytes")
        _need(rec_end, start, size, "sampled header")
        headers.append(RawHeader(h["header_protocol"], h["frame_length"], h["stripped"],
                                 bytes(buf[start:start + size])))
    return FlowSample(s["sequence_number"], source_type, source_index, s["sampling_rate"],
                      s["sample_pool"], s["drops"], s["input"], s["output"], tuple(headers))


def _counter_sample(buf: memoryview, at: int, end: int, fmt: int,
                    out: Datagram) -> CounterSample:
    if fmt == COUNTER_SAMPLE:
        s = _read(COMPACT_COUNTERS, buf, at, end)
        at += COMPACT_COUNTERS.size
        source_type, source_index = s["source_id"] >> 24, s["source_id"] & 0xFFFFFF
    else:
        s = _read(EXPANDED_COUNTERS, buf, at, end)
        at += EXPANDED_COUNTERS.size
        source_type, source_index = s["source_id_type"], s["source_id_index"]
    records = []
    for rec_fmt, body, rec_end in _records(buf, at, end, s["num_records"], "counters sample"):
        layout = COUNTER_RECORDS.get(rec_fmt)
        if layout is None:
            out.skipped += 1
            continue
        records.append(CounterRecord(rec_fmt, _read(layout, buf, body, rec_end)))
    return CounterSample(s["sequence_number"], source_type, source_index, tuple(records))
