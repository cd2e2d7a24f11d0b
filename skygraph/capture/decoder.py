"""Packet decoder: frame bytes -> gopacket-named layers.

Owns the wire formats (declared `struct` tables below) and the decoding
order of every protocol skygraph understands, producing gopacket's layer
names so that `LayersPath` matches Skydive's.  Pure: no I/O, no clock, never
raises on malformed input -- a header that does not fit or does not validate
ends the layer list there, as gopacket's DecodeFailure ends Skydive's path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from skygraph.capture import extralayer

# pcap link types understood as a first layer.
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_BSD = 12
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

DEFAULT_MPLS_UDP_PORT = 51234
MAX_LAYERS = 64

# ---- wire formats ----------------------------------------------------------
ETHERNET = struct.Struct("!6s6sH")  # dst, src, ethertype/length
DOT1Q = struct.Struct("!HH")  # TCI, ethertype
SNAP = struct.Struct("!3sH")  # OUI, ethertype
STP_MIN = 35  # configuration BPDU
LINUX_SLL = struct.Struct("!HHH8sH")  # pkt type, arphrd, addr len, addr, protocol
LINUX_SLL2 = struct.Struct("!HHIHBB8s")  # protocol, reserved, ifindex, arphrd, type, alen, addr
ARP = struct.Struct("!HHBBH")  # htype, ptype, hlen, plen, op
IPV4 = struct.Struct("!BBHHHBBH4s4s")  # vihl, tos, len, id, flags|frag, ttl, proto, csum, src, dst
IPV6 = struct.Struct("!IHBB16s16s")  # v|tc|flow, payload len, next header, hop limit, src, dst
IPV6_EXT = struct.Struct("!BB")  # next header, hdr ext len (8-octet units, excluding the first)
IPV6_FRAGMENT = struct.Struct("!BBHI")  # next header, reserved, offset|M, identification
TCP = struct.Struct("!HHIIBBHHH")  # sport, dport, seq, ack, data offset, flags, win, csum, urg
UDP = struct.Struct("!HHHH")  # sport, dport, length, csum
SCTP = struct.Struct("!HHII")  # sport, dport, verification tag, csum
SCTP_CHUNK = struct.Struct("!BBH")  # type, flags, length
ICMPV4 = struct.Struct("!BBHHH")  # type, code, csum, id, seq
ICMPV6 = struct.Struct("!BBH")  # type, code, csum
ICMPV6_ECHO = struct.Struct("!HH")  # identifier, sequence
GRE = struct.Struct("!HH")  # flags|version, protocol
VXLAN = struct.Struct("!BxxxI")  # flags, VNI<<8|reserved
GENEVE = struct.Struct("!BBHI")  # ver|optlen, O|C, protocol, VNI<<8|reserved
MPLS = struct.Struct("!I")  # label:20 TC:3 S:1 TTL:8
U32 = struct.Struct("!I")

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
ETH_DOT1Q = 0x8100
ETH_QINQ = 0x88A8
ETH_MPLS_UNICAST = 0x8847
ETH_MPLS_MULTICAST = 0x8848
ETH_TEB = 0x6558  # transparent Ethernet bridging
ETH_ERSPAN_II = 0x88BE
ETH_ERSPAN_III = 0x22EB

ETHERNET_NEXT: dict[int, str] = {
    ETH_IPV4: "IPv4", ETH_IPV6: "IPv6", ETH_ARP: "ARP",
    ETH_DOT1Q: "Dot1Q", ETH_QINQ: "Dot1Q",
    ETH_MPLS_UNICAST: "MPLS", ETH_MPLS_MULTICAST: "MPLS",
    ETH_TEB: "Ethernet", ETH_ERSPAN_II: "ERSPANII", ETH_ERSPAN_III: "ERSPANIII",
}
IP_PROTOCOL_NEXT: dict[int, str] = {
    1: "ICMPv4", 4: "IPv4", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE",
    58: "ICMPv6", 112: "VRRP", 132: "SCTP",
}
IPV6_EXTENSIONS: dict[int, str] = {
    0: "IPv6HopByHop", 43: "IPv6Routing", 60: "IPv6Destination",
}
UDP_PORT_NEXT: dict[int, str] = {
    53: "DNS", 5353: "DNS", 67: "DHCPv4", 68: "DHCPv4",
    4789: "VXLAN", 8472: "VXLAN", 6081: "Geneve",
}
ICMPV6_NEXT: dict[int, tuple[str, int]] = {  # type -> (gopacket layer, minimum length)
    128: ("ICMPv6Echo", 4), 129: ("ICMPv6Echo", 4),
    133: ("ICMPv6RouterSolicitation", 4), 134: ("ICMPv6RouterAdvertisement", 12),
    135: ("ICMPv6NeighborSolicitation", 20), 136: ("ICMPv6NeighborAdvertisement", 20),
    137: ("ICMPv6Redirect", 36),
}
SCTP_CHUNKS: dict[int, str] = {
    0: "SCTPData", 1: "SCTPInit", 2: "SCTPInitAck", 3: "SCTPSack", 4: "SCTPHeartbeat",
    5: "SCTPHeartbeatAck", 6: "SCTPError", 7: "SCTPShutdown", 8: "SCTPShutdownAck",
    9: "SCTPError", 10: "SCTPCookieEcho", 11: "SCTPCookieAck", 14: "SCTPShutdownComplete",
}

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


# ---- decoded layers --------------------------------------------------------
class EthernetInfo(NamedTuple):
    src: bytes
    dst: bytes
    ethertype: int


class Dot1QInfo(NamedTuple):
    vlan: int
    ethertype: int


class ARPInfo(NamedTuple):
    operation: int


class IPv4Info(NamedTuple):
    src: bytes
    dst: bytes
    length: int  # total length field
    ttl: int
    protocol: int
    ident: int
    more_fragments: bool
    frag_offset: int  # in bytes
    header_length: int


class IPv6Info(NamedTuple):
    src: bytes
    dst: bytes
    length: int  # payload length field
    hop_limit: int
    next_header: int


class IPv6FragmentInfo(NamedTuple):
    ident: int
    frag_offset: int
    more_fragments: bool


class TCPInfo(NamedTuple):
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    payload: int  # payload length in this capture


class PortsInfo(NamedTuple):
    """UDP and SCTP."""

    src_port: int
    dst_port: int


class ICMPInfo(NamedTuple):
    """ICMPv4 (with id) or ICMPv6 (id 0; the echo id is in ICMPv6Echo)."""

    type: int
    code: int
    id: int


class EchoInfo(NamedTuple):
    id: int
    seq: int


class GREInfo(NamedTuple):
    protocol: int
    key: int
    seq: int


class TunnelInfo(NamedTuple):
    """VXLAN and Geneve."""

    vni: int


class MPLSInfo(NamedTuple):
    label: int
    bottom: bool
    ttl: int


class AppInfo(NamedTuple):
    """Extra layers (DNS, DHCPv4, VRRP), decoded to Skydive's JSON shape."""

    fields: dict[str, object]


class NoInfo(NamedTuple):
    pass


LayerInfo = (EthernetInfo | Dot1QInfo | ARPInfo | IPv4Info | IPv6Info | IPv6FragmentInfo
             | TCPInfo | PortsInfo | ICMPInfo | EchoInfo | GREInfo | TunnelInfo | MPLSInfo
             | AppInfo | NoInfo)
NO_INFO = NoInfo()


class Layer(NamedTuple):
    name: str
    start: int  # offset of the header in the frame
    length: int  # header bytes (gopacket's LayerContents)
    info: LayerInfo


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    mpls_udp_port: int = DEFAULT_MPLS_UDP_PORT


DEFAULT_CONFIG = DecoderConfig()

# A step decodes one header at `off` (frame ends at `end`) and returns the
# layer, the next decoder's name (None: stop), and the new offset and end.
Step = tuple[Layer, str | None, int, int]
Decoder = Callable[[bytes, int, int, DecoderConfig], Step | None]


def _ethernet(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 14:
        return None
    dst, src, ethertype = ETHERNET.unpack_from(data, off)
    if ethertype < 0x0600:  # 802.3 length: LLC follows
        layer = Layer("Ethernet", off, 14, EthernetInfo(src, dst, ethertype))
        return layer, "LLC", off + 14, min(end, off + 14 + ethertype)
    return (Layer("Ethernet", off, 14, EthernetInfo(src, dst, ethertype)),
            ETHERNET_NEXT.get(ethertype), off + 14, end)


def _llc(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 3:
        return None
    dsap, ssap = data[off], data[off + 1]
    # gopacket: 0x42/0x42 is spanning tree, 0xAA/0xAA a SNAP header.
    nxt = "STP" if dsap == ssap == 0x42 else "SNAP" if dsap == ssap == 0xAA else None
    return Layer("LLC", off, 3, NO_INFO), nxt, off + 3, end


def _snap(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 5:
        return None
    ethertype = SNAP.unpack_from(data, off)[1]
    return Layer("SNAP", off, 5, NO_INFO), ETHERNET_NEXT.get(ethertype), off + 5, end


def _stp(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < STP_MIN:
        return None
    return Layer("STP", off, end - off, NO_INFO), None, end, end


def _dot1q(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 4:
        return None
    tci, ethertype = DOT1Q.unpack_from(data, off)
    return (Layer("Dot1Q", off, 4, Dot1QInfo(tci & 0x0FFF, ethertype)),
            ETHERNET_NEXT.get(ethertype), off + 4, end)


def _linux_sll(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 16:
        return None
    protocol = LINUX_SLL.unpack_from(data, off)[4]
    return Layer("LinuxSLL", off, 16, NO_INFO), ETHERNET_NEXT.get(protocol), off + 16, end


def _linux_sll2(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 20:
        return None
    protocol = LINUX_SLL2.unpack_from(data, off)[0]
    return Layer("LinuxSLL", off, 20, NO_INFO), ETHERNET_NEXT.get(protocol), off + 20, end


def _raw_ip(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    # Skydive's LayerTypeRawIP: IPv4/IPv6 by first nibble, else ARP.
    if end <= off:
        return None
    version = data[off] >> 4
    step = _DECODERS["IPv4" if version == 4 else "IPv6" if version == 6 else "ARP"]
    return step(data, off, end, cfg)


def _ip_or_ethernet(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    # Skydive's MPLS payload decoder: IP by first nibble if it decodes, else Ethernet.
    if end > off and data[off] >> 4 in (4, 6):
        step = (_ipv4 if data[off] >> 4 == 4 else _ipv6)(data, off, end, cfg)
        if step is not None:
            return step
    return _ethernet(data, off, end, cfg)


def _arp(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 8:
        return None
    _, _, hlen, plen, op = ARP.unpack_from(data, off)
    size = 8 + 2 * (hlen + plen)
    if end - off < size:
        return None
    return Layer("ARP", off, size, ARPInfo(op)), None, off + size, end


def _ipv4(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 20:
        return None
    vihl, _, length, ident, frag, ttl, proto, _, src, dst = IPV4.unpack_from(data, off)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20:
        return None
    if length == 0:  # TSO: the kernel leaves the length to the NIC
        length = end - off
    if length < ihl or end - off < ihl:
        return None
    end = min(end, off + length)  # drop Ethernet padding; keep truncated captures
    more = bool(frag & 0x2000)
    frag_offset = (frag & 0x1FFF) * 8
    info = IPv4Info(src, dst, length, ttl, proto, ident, more, frag_offset, ihl)
    nxt = "Fragment" if more or frag_offset else IP_PROTOCOL_NEXT.get(proto)
    return Layer("IPv4", off, ihl, info), nxt, off + ihl, end


def _ipv6(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 40:
        return None
    vtc, length, nh, hop, src, dst = IPV6.unpack_from(data, off)
    if vtc >> 28 != 6:
        return None
    end = min(end, off + 40 + length)
    info = IPv6Info(src, dst, length, hop, nh)
    return Layer("IPv6", off, 40, info), _ipv6_next(nh), off + 40, end


def _ipv6_next(nh: int) -> str | None:
    if nh == 44:
        return "IPv6Fragment"
    return IPV6_EXTENSIONS.get(nh) or IP_PROTOCOL_NEXT.get(nh)


def _ipv6_extension(name: str) -> Decoder:
    def step(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
        if end - off < 8:
            return None
        nh, ext_len = IPV6_EXT.unpack_from(data, off)
        size = (ext_len + 1) * 8
        if end - off < size:
            return None
        return Layer(name, off, size, NO_INFO), _ipv6_next(nh), off + size, end
    return step


def _ipv6_fragment(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 8:
        return None
    nh, _, offm, ident = IPV6_FRAGMENT.unpack_from(data, off)
    info = IPv6FragmentInfo(ident, offm & 0xFFF8, bool(offm & 1))
    nxt = "Fragment" if info.frag_offset or info.more_fragments else _ipv6_next(nh)
    return Layer("IPv6Fragment", off, 8, info), nxt, off + 8, end


def _fragment(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    return Layer("Fragment", off, max(end - off, 0), NO_INFO), None, end, end


def _tcp(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 20:
        return None
    sport, dport, seq, ack, doff, flags, _, _, _ = TCP.unpack_from(data, off)
    size = (doff >> 4) * 4
    if size < 20 or end - off < size:
        return None
    info = TCPInfo(sport, dport, seq, ack, flags | ((doff & 1) << 8), end - off - size)
    return Layer("TCP", off, size, info), None, off + size, end


def _udp(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 8:
        return None
    sport, dport, _, _ = UDP.unpack_from(data, off)
    nxt: str | None = None
    if end - off > 8:
        for port in (dport, sport):  # gopacket: destination port first
            if port == cfg.mpls_udp_port:
                nxt = "MPLS"
                break
            nxt = UDP_PORT_NEXT.get(port)
            if nxt is not None:
                break
    return Layer("UDP", off, 8, PortsInfo(sport, dport)), nxt, off + 8, end


def _sctp(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 12:
        return None
    sport, dport, _, _ = SCTP.unpack_from(data, off)
    nxt = "SCTPChunk" if end - off >= 16 else None
    return Layer("SCTP", off, 12, PortsInfo(sport, dport)), nxt, off + 12, end


def _sctp_chunk(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 4:
        return None
    ctype, _, length = SCTP_CHUNK.unpack_from(data, off)
    size = (length + 3) & ~3
    if length < 4 or end - off < length:
        return None
    name = SCTP_CHUNKS.get(ctype, "SCTPUnknownChunkType")
    nxt = None if ctype == 0 or end - off - size < 4 else "SCTPChunk"
    return Layer(name, off, min(size, end - off), NO_INFO), nxt, off + size, end


def _icmpv4(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 8:
        return None
    itype, code, _, ident, _ = ICMPV4.unpack_from(data, off)
    return Layer("ICMPv4", off, 8, ICMPInfo(itype, code, ident)), None, off + 8, end


def _icmpv6(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 4:
        return None
    itype, code, _ = ICMPV6.unpack_from(data, off)
    nxt = ICMPV6_NEXT.get(itype)
    next_name = nxt[0] if nxt is not None and end - off - 4 >= nxt[1] else None
    return Layer("ICMPv6", off, 4, ICMPInfo(itype, code, 0)), next_name, off + 4, end


def _icmpv6_echo(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    ident, seq = ICMPV6_ECHO.unpack_from(data, off)
    return Layer("ICMPv6Echo", off, 4, EchoInfo(ident, seq)), None, off + 4, end


def _icmpv6_nd(name: str, size: int) -> Decoder:
    def step(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
        if end - off < size:
            return None
        return Layer(name, off, end - off, NO_INFO), None, end, end
    return step


def _gre(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 4:
        return None
    flags, proto = GRE.unpack_from(data, off)
    size = 4
    key = seq = 0
    if flags & 0xC000:  # checksum or routing present: checksum + offset word
        size += 4
    if flags & 0x2000:
        if end - off < size + 4:
            return None
        key = U32.unpack_from(data, off + size)[0]
        size += 4
    if flags & 0x1000:
        if end - off < size + 4:
            return None
        seq = U32.unpack_from(data, off + size)[0]
        size += 4
    if end - off < size:
        return None
    nxt = ETHERNET_NEXT.get(proto)
    return Layer("GRE", off, size, GREInfo(proto, key, seq)), nxt, off + size, end


def _erspan_ii(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    # Skydive skips the 8-byte Type II header; it is not a layer of its own.
    return _ethernet(data, off + 8, end, cfg)


def _erspan_iii(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 12:
        return None
    size = 20 if data[off + 11] & 1 else 12  # O flag: 8-byte platform sub-header
    return _ethernet(data, off + size, end, cfg)


def _vxlan(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 8:
        return None
    _, vni = VXLAN.unpack_from(data, off)
    return Layer("VXLAN", off, 8, TunnelInfo(vni >> 8)), "Ethernet", off + 8, end


def _geneve(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 8:
        return None
    veropt, _, proto, vni = GENEVE.unpack_from(data, off)
    size = 8 + (veropt & 0x3F) * 4
    if end - off < size:
        return None
    nxt = ETHERNET_NEXT.get(proto)
    return Layer("Geneve", off, size, TunnelInfo(vni >> 8)), nxt, off + size, end


def _mpls(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
    if end - off < 4:
        return None
    word = MPLS.unpack_from(data, off)[0]
    bottom = bool(word & 0x100)
    info = MPLSInfo(word >> 12, bottom, word & 0xFF)
    nxt = "IPOrEthernet" if bottom else "MPLS"
    return Layer("MPLS", off, 4, info), nxt, off + 4, end


def _app(name: str, parse: Callable[[bytes], dict[str, object] | None]) -> Decoder:
    def step(data: bytes, off: int, end: int, cfg: DecoderConfig) -> Step | None:
        fields = parse(data[off:end])
        if fields is None:
            return None
        return Layer(name, off, end - off, AppInfo(fields)), None, end, end
    return step


_DECODERS: dict[str, Decoder] = {
    "Ethernet": _ethernet, "LLC": _llc, "SNAP": _snap, "STP": _stp, "Dot1Q": _dot1q, "LinuxSLL": _linux_sll,
    "LinuxSLL2": _linux_sll2, "RawIP": _raw_ip, "IPOrEthernet": _ip_or_ethernet,
    "ARP": _arp, "IPv4": _ipv4, "IPv6": _ipv6, "IPv6Fragment": _ipv6_fragment,
    "IPv6HopByHop": _ipv6_extension("IPv6HopByHop"),
    "IPv6Routing": _ipv6_extension("IPv6Routing"),
    "IPv6Destination": _ipv6_extension("IPv6Destination"), "Fragment": _fragment,
    "TCP": _tcp, "UDP": _udp, "SCTP": _sctp, "SCTPChunk": _sctp_chunk,
    "ICMPv4": _icmpv4, "ICMPv6": _icmpv6, "ICMPv6Echo": _icmpv6_echo,
    "GRE": _gre, "ERSPANII": _erspan_ii, "ERSPANIII": _erspan_iii,
    "VXLAN": _vxlan, "Geneve": _geneve, "MPLS": _mpls,
    "DNS": _app("DNS", extralayer.parse_dns),
    "DHCPv4": _app("DHCPv4", extralayer.parse_dhcpv4),
    "VRRP": _app("VRRP", extralayer.parse_vrrp),
}
for _t, (_name, _size) in ICMPV6_NEXT.items():
    if _name != "ICMPv6Echo":
        _DECODERS[_name] = _icmpv6_nd(_name, _size)

FIRST_LAYER: dict[int, str] = {
    LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "RawIP", LINKTYPE_RAW_BSD: "RawIP",
    LINKTYPE_IPV4: "IPv4", LINKTYPE_IPV6: "IPv6",
    LINKTYPE_LINUX_SLL: "LinuxSLL", LINKTYPE_LINUX_SLL2: "LinuxSLL2",
}


def first_layer(link_type: int) -> str:
    """Name of the first decoder for a pcap link type (unknown: Ethernet, like Skydive)."""
    return FIRST_LAYER.get(link_type, "Ethernet")


def decode(data: bytes, link_type: int = LINKTYPE_ETHERNET,
           cfg: DecoderConfig = DEFAULT_CONFIG, first: str | None = None) -> list[Layer]:
    """Decode `data` as far as it goes; the list stops where decoding fails."""
    layers: list[Layer] = []
    nxt: str | None = first or first_layer(link_type)
    off, end = 0, len(data)
    while nxt is not None and len(layers) < MAX_LAYERS:
        step = _DECODERS[nxt](data, off, end, cfg)
        if step is None:
            break
        layer, nxt, off, end = step
        layers.append(layer)
    return layers

