"""The Flow model and its Skydive JSON shape.

Owns the flow value types of Skydive's `flow.proto` (FlowLayer, TransportLayer,
ICMPLayer, FlowMetric, TCPMetric, IPMetric, RawPacket, Flow), their enums, and
`Flow.to_json()`, which reproduces Skydive's JSON post-processing rules:
enums as names, `ParentUUID`, every `Protocol`, ICMP `Type` and all int64
fields always present, `RTT` and other strings/uint32s omitted when empty,
`LastRawPackets` never serialized.  Imports no third-party library.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

JSONValue = object


class FlowProtocol(IntEnum):
    ETHERNET = 0
    IPV4 = 1
    TCP = 2
    UDP = 3
    SCTP = 4
    IPV6 = 5
    ICMPV4 = 6
    ICMPV6 = 7


class FinishType(IntEnum):
    NOT_FINISHED = 0
    TIMEOUT = 1
    TCP_FIN = 2
    TCP_RST = 3


class ICMPType(IntEnum):
    UNKNOWN = 0
    DESTINATION_UNREACHABLE = 1
    ECHO = 2
    NEIGHBOR = 3
    ADDRESS_MASK = 4
    INFO = 5
    PARAMETER_PROBLEM = 6
    REDIRECT = 7
    ROUTER = 8
    SOURCE_QUENCH = 9
    TIME_EXCEEDED = 10
    TIMESTAMP = 11
    PACKET_TOO_BIG = 12


# flow/icmp.go: request and reply fold to one type, so a ping is one flow.
ICMPV4_TYPES: Mapping[int, ICMPType] = {
    0: ICMPType.ECHO, 8: ICMPType.ECHO,
    3: ICMPType.DESTINATION_UNREACHABLE,
    4: ICMPType.SOURCE_QUENCH,
    5: ICMPType.REDIRECT,
    9: ICMPType.ROUTER, 10: ICMPType.ROUTER,
    11: ICMPType.TIME_EXCEEDED,
    12: ICMPType.PARAMETER_PROBLEM,
    13: ICMPType.TIMESTAMP, 14: ICMPType.TIMESTAMP,
    15: ICMPType.INFO, 16: ICMPType.INFO,
    17: ICMPType.ADDRESS_MASK, 18: ICMPType.ADDRESS_MASK,
}
ICMPV6_TYPES: Mapping[int, ICMPType] = {
    1: ICMPType.DESTINATION_UNREACHABLE,
    2: ICMPType.PACKET_TOO_BIG,
    3: ICMPType.TIME_EXCEEDED,
    4: ICMPType.PARAMETER_PROBLEM,
    128: ICMPType.ECHO, 129: ICMPType.ECHO,
    133: ICMPType.ROUTER, 134: ICMPType.ROUTER,
    135: ICMPType.NEIGHBOR, 136: ICMPType.NEIGHBOR,
    137: ICMPType.REDIRECT,
}


def icmpv4_type(t: int) -> ICMPType:
    return ICMPV4_TYPES.get(t, ICMPType.UNKNOWN)


def icmpv6_type(t: int) -> ICMPType:
    return ICMPV6_TYPES.get(t, ICMPType.UNKNOWN)


@dataclass(slots=True)
class FlowLayer:
    """Link (MACs, VLAN ids packed) or Network (IPs, tunnel id) endpoints."""

    protocol: FlowProtocol
    a: str = ""
    b: str = ""
    id: int = 0

    def to_json(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {"Protocol": self.protocol.name}
        if self.a:
            out["A"] = self.a
        if self.b:
            out["B"] = self.b
        out["ID"] = self.id
        return out


@dataclass(slots=True)
class TransportLayer:
    protocol: FlowProtocol
    a: int = 0
    b: int = 0
    id: int = 0

    def to_json(self) -> dict[str, JSONValue]:
        return {"Protocol": self.protocol.name, "A": self.a, "B": self.b, "ID": self.id}


@dataclass(slots=True)
class ICMPLayer:
    type: ICMPType
    code: int = 0
    id: int = 0

    def to_json(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {"Type": self.type.name}
        if self.code:
            out["Code"] = self.code
        if self.id:
            out["ID"] = self.id
        return out


@dataclass(slots=True)
class FlowMetric:
    ab_packets: int = 0
    ab_bytes: int = 0
    ba_packets: int = 0
    ba_bytes: int = 0
    start: int = 0
    last: int = 0
    rtt: int = 0

    def copy(self) -> FlowMetric:
        return FlowMetric(self.ab_packets, self.ab_bytes, self.ba_packets, self.ba_bytes,
                          self.start, self.last, self.rtt)

    def minus(self, other: FlowMetric) -> FlowMetric:
        """Counter delta `self - other` (Start/Last left to the caller)."""
        return FlowMetric(self.ab_packets - other.ab_packets, self.ab_bytes - other.ab_bytes,
                          self.ba_packets - other.ba_packets, self.ba_bytes - other.ba_bytes)

    def to_json(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {
            "ABPackets": self.ab_packets, "ABBytes": self.ab_bytes,
            "BAPackets": self.ba_packets, "BABytes": self.ba_bytes,
            "Start": self.start, "Last": self.last,
        }
        if self.rtt:
            out["RTT"] = self.rtt
        return out


# (JSON name, attribute, always emitted) in flow.proto field order.
_TCP_METRIC_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("ABSynStart", "ab_syn_start", True), ("BASynStart", "ba_syn_start", True),
    ("ABSynTTL", "ab_syn_ttl", False), ("BASynTTL", "ba_syn_ttl", False),
    ("ABFinStart", "ab_fin_start", True), ("BAFinStart", "ba_fin_start", True),
    ("ABRstStart", "ab_rst_start", True), ("BARstStart", "ba_rst_start", True),
    ("ABSegmentOutOfOrder", "ab_segment_out_of_order", True),
    ("ABSegmentSkipped", "ab_segment_skipped", True),
    ("ABSegmentSkippedBytes", "ab_segment_skipped_bytes", True),
    ("ABPackets", "ab_packets", True), ("ABBytes", "ab_bytes", True),
    ("ABSawStart", "ab_saw_start", True), ("ABSawEnd", "ab_saw_end", True),
    ("BASegmentOutOfOrder", "ba_segment_out_of_order", True),
    ("BASegmentSkipped", "ba_segment_skipped", True),
    ("BASegmentSkippedBytes", "ba_segment_skipped_bytes", True),
    ("BAPackets", "ba_packets", True), ("BABytes", "ba_bytes", True),
    ("BASawStart", "ba_saw_start", True), ("BASawEnd", "ba_saw_end", True),
)


@dataclass(slots=True)
class TCPMetric:
    ab_syn_start: int = 0
    ba_syn_start: int = 0
    ab_syn_ttl: int = 0
    ba_syn_ttl: int = 0
    ab_fin_start: int = 0
    ba_fin_start: int = 0
    ab_rst_start: int = 0
    ba_rst_start: int = 0
    ab_segment_out_of_order: int = 0
    ab_segment_skipped: int = 0
    ab_segment_skipped_bytes: int = 0
    ab_packets: int = 0
    ab_bytes: int = 0
    ab_saw_start: int = 0
    ab_saw_end: int = 0
    ba_segment_out_of_order: int = 0
    ba_segment_skipped: int = 0
    ba_segment_skipped_bytes: int = 0
    ba_packets: int = 0
    ba_bytes: int = 0
    ba_saw_start: int = 0
    ba_saw_end: int = 0

    def to_json(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {}
        for name, attr, always in _TCP_METRIC_FIELDS:
            value = getattr(self, attr)
            if always or value:
                out[name] = value
        return out


@dataclass(slots=True)
class IPMetric:
    fragments: int = 0
    fragment_errors: int = 0

    def to_json(self) -> dict[str, JSONValue]:
        return {"Fragments": self.fragments, "FragmentErrors": self.fragment_errors}


class RawPacket(NamedTuple):
    """One kept packet: immutable, and a tuple so that the capture's C extension
    builds it without a Python call (100,000 of them for 10,000 flows kept 10 each)."""

    timestamp: int  # ms
    # 1-based per flow (Skydive's RawPacket.Index); hides tuple.index, unused here
    index: int  # type: ignore[assignment]
    data: bytes
    link_type: int  # pcap LINKTYPE_* value

    def to_json(self) -> dict[str, JSONValue]:
        return {"Timestamp": self.timestamp, "Index": self.index,
                "Data": base64.b64encode(self.data).decode("ascii"),
                "LinkType": self.link_type}


@dataclass(slots=True)
class Flow:
    uuid: str = ""
    layers_path: str = ""
    application: str = ""
    link: FlowLayer | None = None
    network: FlowLayer | None = None
    transport: TransportLayer | None = None
    icmp: ICMPLayer | None = None
    dhcpv4: dict[str, JSONValue] | None = None
    dns: dict[str, JSONValue] | None = None
    vrrpv2: dict[str, JSONValue] | None = None
    last_update_metric: FlowMetric | None = None
    metric: FlowMetric = field(default_factory=FlowMetric)
    tcp_metric: TCPMetric | None = None
    ip_metric: IPMetric | None = None
    start: int = 0
    last: int = 0
    tracking_id: str = ""
    l3_tracking_id: str = ""
    parent_uuid: str = ""
    node_tid: str = ""
    capture_id: str = ""
    last_raw_packets: tuple[RawPacket, ...] = ()
    raw_packets_captured: int = 0
    finish_type: FinishType = FinishType.NOT_FINISHED
    # OR of the TCP flags (low 8 bits) of the packets A->B and B->A: NetFlow's
    # tcp_flags (SPEC §3 fix 3).  Not part of Skydive's flow JSON.
    ab_tcp_flags: int = 0
    ba_tcp_flags: int = 0

    def snapshot(self) -> Flow:
        """An independent copy, as a table sends a flow it goes on updating: the same
        values as `copy.deepcopy`, about ten times faster (every field below is
        scalar but the messages copied here)."""
        out = copy.copy(self)
        out.metric = self.metric.copy()
        if self.last_update_metric is not None:
            out.last_update_metric = self.last_update_metric.copy()
        for name in ("link", "network", "transport", "icmp", "tcp_metric", "ip_metric"):
            value = getattr(self, name)
            if value is not None:
                setattr(out, name, copy.copy(value))
        for name in ("dhcpv4", "dns", "vrrpv2"):
            value = getattr(self, name)
            if value is not None:
                setattr(out, name, copy.deepcopy(value))
        return out

    def to_json(self) -> dict[str, JSONValue]:
        """Skydive's flow JSON (keys in flow.proto order)."""
        out: dict[str, JSONValue] = {}
        if self.uuid:
            out["UUID"] = self.uuid
        if self.layers_path:
            out["LayersPath"] = self.layers_path
        if self.application:
            out["Application"] = self.application
        if self.link is not None:
            out["Link"] = self.link.to_json()
        if self.network is not None:
            out["Network"] = self.network.to_json()
        if self.transport is not None:
            out["Transport"] = self.transport.to_json()
        if self.icmp is not None:
            out["ICMP"] = self.icmp.to_json()
        if self.dhcpv4 is not None:
            out["DHCPv4"] = self.dhcpv4
        if self.dns is not None:
            out["DNS"] = self.dns
        if self.vrrpv2 is not None:
            out["VRRPv2"] = self.vrrpv2
        if self.last_update_metric is not None:
            out["LastUpdateMetric"] = self.last_update_metric.to_json()
        out["Metric"] = self.metric.to_json()
        if self.tcp_metric is not None:
            out["TCPMetric"] = self.tcp_metric.to_json()
        if self.ip_metric is not None:
            out["IPMetric"] = self.ip_metric.to_json()
        out["Start"] = self.start
        out["Last"] = self.last
        if self.tracking_id:
            out["TrackingID"] = self.tracking_id
        if self.l3_tracking_id:
            out["L3TrackingID"] = self.l3_tracking_id
        out["ParentUUID"] = self.parent_uuid
        if self.node_tid:
            out["NodeTID"] = self.node_tid
        if self.capture_id:
            out["CaptureID"] = self.capture_id
        out["RawPacketsCaptured"] = self.raw_packets_captured
        if self.finish_type:
            out["FinishType"] = self.finish_type.name
        return out

    def link_type(self) -> int:
        """pcap link type of this flow's raw packets (Ethernet, else raw IPv4/IPv6)."""
        if self.link is not None:
            return LINKTYPE_ETHERNET
        if self.network is not None and self.network.protocol == FlowProtocol.IPV6:
            return LINKTYPE_IPV6
        return LINKTYPE_IPV4


LINKTYPE_ETHERNET = 1
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
