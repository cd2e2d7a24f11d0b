"""Packet sequences: a decoded frame split into tunnel sub-packets, and their views.

Owns Skydive's `PacketSeqFromGoPacket` split rule (after GRE -- after MPLS
when MPLS follows GRE --, VXLAN, Geneve, MPLS-over-UDP; the ERSPAN header
skipped) with each sub-packet's length (outer wire length minus the header
bytes before it), and `View`, the fast access to the layers a flow is built
from (first Ethernet, first IP, first transport, ICMP, VLAN and tunnel ids).
Pure.
"""

from __future__ import annotations

from typing import NamedTuple

from skygraph.capture.decoder import (
    Dot1QInfo,
    EchoInfo,
    EthernetInfo,
    GREInfo,
    ICMPInfo,
    IPv4Info,
    IPv6Info,
    Layer,
    MPLSInfo,
    PortsInfo,
    TCPInfo,
    TunnelInfo,
)

TUNNEL_LAYERS = frozenset({"VXLAN", "Geneve"})


class SubPacket(NamedTuple):
    layers: list[Layer]
    start: int  # offset of the sub-packet's first header in the frame
    length: int  # Skydive's Packet.Length: bytes from this header to the end of the frame


def outer_length(layers: list[Layer], wire_length: int) -> int:
    """Length accounted to the outermost sub-packet (Skydive `outerLength`)."""
    if not layers:
        return wire_length
    first = layers[0].info
    if isinstance(first, IPv4Info) and layers[0].start == 0:
        return first.length
    if isinstance(first, IPv6Info) and layers[0].start == 0:
        return first.length
    return wire_length


def _splits_after(layers: list[Layer], i: int) -> bool:
    layer = layers[i]
    name = layer.name
    if name in TUNNEL_LAYERS:
        return True
    if name == "GRE":
        return not (i + 1 < len(layers) and layers[i + 1].name == "MPLS")
    if name == "MPLS":
        # One split per label stack, after its bottom entry, whether it rides
        # on GRE or UDP: a middle label alone would be a flow without endpoints.
        return isinstance(layer.info, MPLSInfo) and layer.info.bottom
    return False


def split(layers: list[Layer], wire_length: int) -> list[SubPacket]:
    """Split a decoded frame into its tunnel sub-packets, outermost first."""
    length = outer_length(layers, wire_length)
    out: list[SubPacket] = []
    top, top_length = 0, length
    for i, layer in enumerate(layers):
        length -= layer.length
        if _splits_after(layers, i) and i + 1 < len(layers):
            out.append(SubPacket(layers[top:i + 1], layers[top].start, top_length))
            top, top_length = i + 1, length
    if top < len(layers):
        out.append(SubPacket(layers[top:], layers[top].start, top_length))
    return out


class View(NamedTuple):
    """The layers of one sub-packet a flow reads (first of each kind)."""

    ethernet: EthernetInfo | None
    ip: IPv4Info | IPv6Info | None
    transport: PortsInfo | TCPInfo | None
    transport_name: str  # "UDP", "TCP", "SCTP" or ""
    icmpv4: ICMPInfo | None
    icmpv6: ICMPInfo | None
    icmpv6_echo: EchoInfo | None
    last: str  # name of the last layer
    vlan_id: int  # Dot1Q ids packed innermost..outermost
    network_id: int  # innermost VXLAN/Geneve VNI or GRE key


def view(layers: list[Layer]) -> View:
    ethernet: EthernetInfo | None = None
    ip: IPv4Info | IPv6Info | None = None
    udp: PortsInfo | None = None
    tcp: TCPInfo | None = None
    sctp: PortsInfo | None = None
    icmpv4 = icmpv6 = None
    echo: EchoInfo | None = None
    vlans: list[int] = []
    network_id = 0
    for layer in layers:
        info = layer.info
        name = layer.name
        if isinstance(info, EthernetInfo):
            if ethernet is None:
                ethernet = info
        elif isinstance(info, Dot1QInfo):
            vlans.append(info.vlan)
        elif isinstance(info, IPv4Info | IPv6Info):
            if ip is None:
                ip = info
        elif isinstance(info, TCPInfo):
            if tcp is None:
                tcp = info
        elif isinstance(info, PortsInfo):
            if name == "UDP" and udp is None:
                udp = info
            elif name == "SCTP" and sctp is None:
                sctp = info
        elif isinstance(info, ICMPInfo):
            if name == "ICMPv4" and icmpv4 is None:
                icmpv4 = info
            elif name == "ICMPv6" and icmpv6 is None:
                icmpv6 = info
        elif isinstance(info, EchoInfo):
            if echo is None:
                echo = info
        elif isinstance(info, GREInfo):
            network_id = info.key
        elif isinstance(info, TunnelInfo):
            network_id = info.vni
    vlan_id = 0
    for vlan in reversed(vlans):
        vlan_id = (vlan_id << 12) | vlan
    transport: PortsInfo | TCPInfo | None
    if udp is not None:
        transport, tname = udp, "UDP"
    elif tcp is not None:
        transport, tname = tcp, "TCP"
    elif sctp is not None:
        transport, tname = sctp, "SCTP"
    else:
        transport, tname = None, ""
    last = layers[-1].name if layers else ""
    return View(ethernet, ip, transport, tname, icmpv4, icmpv6, echo, last, vlan_id,
                network_id)


def layers_path(layers: list[Layer]) -> str:
    """`/`-joined gopacket names, LinuxSLL skipped (Skydive `LayersPath`)."""
    return "/".join(layer.name for layer in layers if layer.name != "LinuxSLL")
