"""Flow keys and IDs: Skydive's xxHash64 key, TrackingID, L3TrackingID and UUID.

Owns the byte-exact hashing of SPEC §1d (flow/flow.go `Packet.Keys`,
`setUUIDs`): one xxHash64 (seed 0) fed network, transport and ICMP
endpoints (snapshot: L3 key), then MACs (snapshot: L2 key), then the parent
UUID (snapshot: table key).  skygraph's §3 fix 8: the L3 part is always
ordered by IP (then port), so L3TrackingID is the same at every hop.
Pure.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import xxhash

from skygraph.capture.decoder import IPv4Info
from skygraph.capture.packet import TUNNEL_LAYERS, View
from skygraph.topology.flow import ICMPType, icmpv4_type, icmpv6_type

# gopacket endpoint type numbers, written as 8-byte big-endian integers.
ENDPOINT_SYNTHETIC = 0
ENDPOINT_IPV4 = 1
ENDPOINT_IPV6 = 2
ENDPOINT_MAC = 3
ENDPOINT_TCP_PORT = 4
ENDPOINT_UDP_PORT = 5
ENDPOINT_SCTP_PORT = 6

U64 = struct.Struct("!Q")
U32 = struct.Struct("!I")
U16 = struct.Struct("!H")
PORTS = struct.Struct("!HH")
VNI_PORT = struct.Struct("!IH")
INT64 = struct.Struct("!q")

TRANSPORT_ENDPOINT = {"TCP": ENDPOINT_TCP_PORT, "UDP": ENDPOINT_UDP_PORT,
                      "SCTP": ENDPOINT_SCTP_PORT}
_TYPE_BYTES = {n: U64.pack(n) for n in range(7)}


class Keys(NamedTuple):
    l2: int  # TrackingID
    l3: int  # L3TrackingID
    key: int  # flow-table key (L2 key + parent UUID)


def hex_id(value: int) -> str:
    """Go's `strconv.FormatUint(v, 16)`: lowercase, no zero padding."""
    return f"{value:x}"


def icmp_word(v: View) -> int | None:
    """The 4-byte ICMP application endpoint, or None without ICMP."""
    if v.icmpv4 is not None:
        t = icmpv4_type(v.icmpv4.type)
        return (int(t) << 24 | v.icmpv4.code << 16 | v.icmpv4.id) & 0xFFFFFFFF
    if v.icmpv6_echo is not None:
        return int(ICMPType.ECHO) << 24 | v.icmpv6_echo.id
    if v.icmpv6 is not None:
        return int(icmpv6_type(v.icmpv6.type)) << 24 | v.icmpv6.code << 16
    return None


def keys(v: View, parent_uuid: str, l2_mode: bool) -> Keys:
    h = xxhash.xxh64()
    ip = v.ip
    t = v.transport
    if ip is not None:
        src, dst = ip.src, ip.dst
        swap = src > dst if src != dst else t is not None and t.src_port > t.dst_port
        h.update(dst + src if swap else src + dst)
        h.update(_TYPE_BYTES[ENDPOINT_IPV4 if isinstance(ip, IPv4Info) else ENDPOINT_IPV6])
        if t is not None:
            if v.transport_name == "UDP" and v.last in TUNNEL_LAYERS:
                # Overlay flows ignore the (entropy) UDP source port.
                h.update(VNI_PORT.pack(v.network_id, t.dst_port))
                h.update(_TYPE_BYTES[ENDPOINT_SYNTHETIC])
            else:
                h.update(PORTS.pack(t.dst_port, t.src_port) if swap
                         else PORTS.pack(t.src_port, t.dst_port))
                h.update(_TYPE_BYTES[TRANSPORT_ENDPOINT[v.transport_name]])
    word = icmp_word(v)
    if word is not None:
        h.update(U32.pack(word))
        h.update(_TYPE_BYTES[ENDPOINT_SYNTHETIC])
    l3 = h.intdigest()
    eth = v.ethernet
    if eth is not None and (l2_mode or ip is None):
        if eth.src > eth.dst:
            h.update(eth.dst + eth.src)
        else:
            h.update(eth.src + eth.dst)
        h.update(_TYPE_BYTES[ENDPOINT_MAC])
        l2 = h.intdigest()
    else:
        l2 = l3
    if parent_uuid:
        h.update(parent_uuid.encode())
        key = h.intdigest()
    else:
        key = l2
    return Keys(l2, l3, key)


def flow_uuid(key: int, start_ms: int, node_tid: str) -> str:
    """UUID = hex(xxHash64(seed=key) over Start (8-byte BE) + NodeTID)."""
    return hex_id(xxhash.xxh64_intdigest(INT64.pack(start_ms) + node_tid.encode(), seed=key))
