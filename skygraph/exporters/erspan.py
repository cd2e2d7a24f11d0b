"""ERSPAN export: every captured frame mirrored in GRE + ERSPAN to a remote IP.

Owns the GRE header with a sequence number (RFC 2890), ERSPAN Type II
(`erspanv1`, GRE protocol 0x88BE, 8-byte header with the session id and the
captured interface's index) and Type III (`erspanv2`, 0x22EB, 12-byte header
plus the 8-byte platform sub-header 7 carrying the interface index and the
upper half of a 64-bit 100 ns timestamp), as pure encoders, and
`ERSPANTarget`, which sends one GRE packet per frame from a raw IPPROTO_GRE
socket (the kernel adds the IP header; large frames are fragmented, not
refused).  Frames go out as captured: no FCS is appended (Skydive appended a
CRC32; Linux and Open vSwitch ERSPAN do not, and Wireshark dissects the
inner frame as Ethernet without FCS).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Sequence

from skygraph.exporters.layout import BitWord, Layout
from skygraph.exporters.target import LINKTYPE_ETHERNET, Endpoint, TargetNode
from skygraph.topology.flow import Flow

log = logging.getLogger(__name__)

IPPROTO_GRE = 47
GRE_ERSPAN_II = 0x88BE
GRE_ERSPAN_III = 0x22EB
MAX_SESSION_ID = 0x3FF  # 10 bits
MAX_INDEX = 0xFFFFF  # 20 bits
ENCAP_VLAN_PRESERVED = 3  # Type II "En": frames go out as captured, tags included
GRANULARITY_100NS = 1
PLATFORM_SOURCE_INDEX = 7  # Type III sub-header: 20-bit source index + upper timestamp
FRAME_ETHERNET = 0
U32 = 0xFFFFFFFF
ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
# <linux/in.h>, <linux/in6.h>: not in Python's socket module.
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 23, 0

GRE_FLAGS = BitWord("GRE flags and version", 16,
                    ("checksum", 1), ("routing", 1), ("key", 1), ("sequence", 1),
                    ("strict_route", 1), ("recursion", 3), ("ack", 1), ("flags", 4),
                    ("version", 3))
GRE = Layout("GRE header with sequence number",
             ("flags_version", "H"), ("protocol", "H"), ("sequence_number", "I"))

ERSPAN_II_VERSION = BitWord("ERSPAN II word 0", 16, ("version", 4), ("vlan", 12))
ERSPAN_II_SESSION = BitWord("ERSPAN II word 1", 16,
                            ("cos", 3), ("encap", 2), ("truncated", 1), ("session_id", 10))
ERSPAN_II_INDEX = BitWord("ERSPAN II word 2", 32, ("reserved", 12), ("index", 20))
ERSPAN_II = Layout("ERSPAN Type II header",
                   ("version_vlan", "H"), ("session", "H"), ("index", "I"))

ERSPAN_III_SESSION = BitWord("ERSPAN III word 1", 16,
                             ("cos", 3), ("bso", 2), ("truncated", 1), ("session_id", 10))
ERSPAN_III_FRAME = BitWord("ERSPAN III word 3", 16,
                           ("pdu", 1), ("frame_type", 5), ("hw_id", 6), ("direction", 1),
                           ("granularity", 2), ("optional", 1))
ERSPAN_III_PLATFORM = BitWord("ERSPAN III platform sub-header word 0", 32,
                              ("platform_id", 6), ("reserved", 6), ("source_index", 20))
ERSPAN_III = Layout("ERSPAN Type III header with platform sub-header",
                    ("version_vlan", "H"), ("session", "H"), ("timestamp", "I"),
                    ("sgt", "H"), ("frame", "H"), ("platform", "I"), ("timestamp_high", "I"))

ETHERNET = Layout("Ethernet header", ("dst", "6s"), ("src", "6s"), ("ethertype", "H"))
_SEQ = struct.Struct("!I")


# ---- pure encoding -----------------------------------------------------------------------
def gre_header(protocol: int, sequence_number: int) -> bytes:
    return GRE.pack(flags_version=GRE_FLAGS.pack(sequence=1), protocol=protocol,
                    sequence_number=sequence_number & U32)


def erspan2_header(session_id: int, index: int, truncated: bool) -> bytes:
    return ERSPAN_II.pack(
        version_vlan=ERSPAN_II_VERSION.pack(version=1, vlan=0),
        session=ERSPAN_II_SESSION.pack(cos=0, encap=ENCAP_VLAN_PRESERVED,
                                       truncated=int(truncated), session_id=session_id),
        index=ERSPAN_II_INDEX.pack(index=index & MAX_INDEX))


def erspan3_header(session_id: int, index: int, truncated: bool, timestamp: int,
                   egress: bool) -> bytes:
    """`timestamp` in 100 ns units (64 bits: the low half in the header, the high half
    in the platform sub-header); `egress`: the frame left the captured interface."""
    return ERSPAN_III.pack(
        version_vlan=ERSPAN_II_VERSION.pack(version=2, vlan=0),
        session=ERSPAN_III_SESSION.pack(cos=0, bso=0, truncated=int(truncated),
                                        session_id=session_id),
        timestamp=timestamp & U32, sgt=0,
        frame=ERSPAN_III_FRAME.pack(pdu=0, frame_type=FRAME_ETHERNET, hw_id=0,
                                    direction=int(egress), granularity=GRANULARITY_100NS,
                                    optional=1),
        platform=ERSPAN_III_PLATFORM.pack(platform_id=PLATFORM_SOURCE_INDEX,
                                          source_index=index & MAX_INDEX),
        timestamp_high=(timestamp >> 32) & U32)


def ethernet_for_ip(packet: bytes, src_mac: bytes) -> bytes:
    """A raw IP packet (a capture without link layer) given an Ethernet header, so the
    receiver can dissect it: ERSPAN carries Ethernet frames."""
    ethertype = ETHERTYPE_IPV6 if packet[:1] and packet[0] >> 4 == 6 else ETHERTYPE_IPV4
    return ETHERNET.pack(dst=bytes(6), src=src_mac, ethertype=ethertype) + packet


def encapsulate(version: int, sequence_number: int, session_id: int, index: int,
                frame: bytes, wire_length: int, ts_ns: int = 0, egress: bool = False) -> bytes:
    """GRE + ERSPAN (`version` 2 = Type II, 3 = Type III) + the frame."""
    truncated = wire_length > len(frame)
    if version == 2:
        return (gre_header(GRE_ERSPAN_II, sequence_number)
                + erspan2_header(session_id, index, truncated) + frame)
    return (gre_header(GRE_ERSPAN_III, sequence_number)
            + erspan3_header(session_id, index, truncated, ts_ns // 100, egress) + frame)


def _mac(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:
        return bytes(6)
    return raw if len(raw) == 6 else bytes(6)


# ---- the sender ------------------------------------------------------------------------------
class ERSPANTarget:
    """Mirrors every frame a capture sees to `endpoint` (an IP; no port) in GRE + ERSPAN
    Type II (`version` 2) or Type III (`version` 3)."""

    wants_packets = True
    wants_flows = False

    def __init__(self, endpoint: Endpoint, node: TargetNode, *, version: int, session_id: int,
                 link_type: int) -> None:
        if version not in (2, 3):
            raise ValueError(f"ERSPAN Type {version}: only II and III")
        self.endpoint = endpoint
        self.node = node
        self.version = version
        self.session_id = session_id
        self.link_type = link_type
        self.index = node.if_index & MAX_INDEX
        self._mac = _mac(node.mac)
        self._ethernet = link_type == LINKTYPE_ETHERNET
        self._sock = socket.socket(endpoint.family, socket.SOCK_RAW, IPPROTO_GRE)
        if endpoint.family == socket.AF_INET:
            self._sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        else:
            self._sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IP_PMTUDISC_DONT)
        self._address = (endpoint.host, 0)
        self._lock = threading.Lock()
        self._closed = False
        self._sequence = 0
        # Per packet only the sequence, the truncated and direction bits and the
        # timestamp change: the header words are built once (erspan*_header's values).
        protocol = GRE_ERSPAN_II if version == 2 else GRE_ERSPAN_III
        self._gre = GRE.pack(flags_version=GRE_FLAGS.pack(sequence=1), protocol=protocol,
                             sequence_number=0)[:4]
        self._type2 = (erspan2_header(session_id, self.index, False),
                       erspan2_header(session_id, self.index, True))
        self._w0 = ERSPAN_II_VERSION.pack(version=2, vlan=0)
        self._w1 = tuple(ERSPAN_III_SESSION.pack(truncated=t, session_id=session_id)
                         for t in (0, 1))
        self._w3 = tuple(ERSPAN_III_FRAME.pack(frame_type=FRAME_ETHERNET, direction=d,
                                               granularity=GRANULARITY_100NS, optional=1)
                         for d in (0, 1))
        self._platform = ERSPAN_III_PLATFORM.pack(platform_id=PLATFORM_SOURCE_INDEX,
                                                  source_index=self.index)
        self._stats = {"Datagrams": 0, "Records": 0, "Truncated": 0, "Errors": 0}

    def packets(self, frames: Sequence[tuple[int, int, bytes]]) -> None:
        try:
            self._packets(frames)
        except Exception:  # never into the capture's reader thread
            log.exception("erspan target %s: frames not mirrored", self.endpoint.host)
            with self._lock:
                self._stats["Errors"] += 1

    def _packets(self, frames: Sequence[tuple[int, int, bytes]]) -> None:
        with self._lock:
            if self._closed:
                return
            sock, address, gre, stats = self._sock, self._address, self._gre, self._stats
            type3 = ERSPAN_III.struct.pack
            w0, w1, w3, platform = self._w0, self._w1, self._w3, self._platform
            for ts_ns, wire, data in frames:
                if not self._ethernet:
                    data = ethernet_for_ip(data, self._mac)
                    wire += 14
                truncated = wire > len(data)
                seq = self._sequence
                self._sequence = (seq + 1) & U32
                if self.version == 2:
                    header = self._type2[truncated]
                else:
                    ts = ts_ns // 100
                    egress = self._ethernet and data[6:12] == self._mac
                    # ERSPAN_III's fields in order (see erspan3_header).
                    header = type3(w0, w1[truncated], ts & U32, 0, w3[egress], platform,
                                   (ts >> 32) & U32)
                try:
                    sock.sendto(gre + _SEQ.pack(seq) + header + data, address)
                except OSError as exc:
                    stats["Errors"] += 1
                    log.debug("erspan target %s: %s", self.endpoint.host, exc)
                    continue
                stats["Datagrams"] += 1
                stats["Records"] += 1
                if truncated:
                    stats["Truncated"] += 1

    def flows(self, flows: Sequence[Flow], now_ms: int) -> None:
        """Not used: ERSPAN mirrors frames."""

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._sock.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)
