"""What a packet injection sends (SPEC §1g): the frames, built with scapy from
the injection's resolved parameters (the analyzer has already turned the
`Src`/`Dst` queries into addresses), or replayed from a pcap; and the
`TrackingID` of the flow the first frame starts, computed with the flow
table so that it is the ID a capture on the path reports.

Pure: no sockets, no clock; randomness comes in as a `random.Random`.

- `Mode` `unique`: every frame of the injection belongs to one flow (one ICMP
  id, one source port); `random`: each frame gets its own random ICMP id or
  source port, so each is a flow of its own.
- `IncrementPayload`: frame i carries the payload plus i more bytes.
- ICMP echo requests carry sequence numbers 1..Count; TCP frames are SYNs
  with sequence numbers counting up.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from scapy.error import Scapy_Exception
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap

from skygraph.capture.table import FlowTable

TYPES = ("icmp4", "icmp6", "tcp4", "tcp6", "udp4", "udp6")
MODES = ("unique", "random")
MAX_COUNT = 1_000_000
MAX_PAYLOAD = 9000


class InjectionError(ValueError):
    """An injection that cannot be built; the message names the field."""


@dataclass(frozen=True, slots=True)
class Injection:
    """A resolved injection: everything needed to build its frames."""

    id: str
    type: str = "icmp4"
    src_mac: str = ""
    dst_mac: str = ""
    src_ip: str = ""
    dst_ip: str = ""
    src_port: int = 0
    dst_port: int = 0
    icmp_id: int = 0
    ttl: int = 64
    payload: bytes = b""
    increment: bool = False
    mode: str = "unique"
    count: int = 1
    interval_ms: int = 0
    pcap: bytes = b""            # set: replay these frames instead of building

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Injection:
        """From the resolved injection JSON the analyzer sends (Skydive field names)."""
        try:
            pcap = base64.b64decode(str(data.get("Pcap") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise InjectionError("Pcap: not base64") from None
        inj = cls(id=str(data.get("UUID") or ""), type=str(data.get("Type") or "icmp4"),
                  src_mac=str(data.get("SrcMAC") or ""), dst_mac=str(data.get("DstMAC") or ""),
                  src_ip=str(data.get("SrcIP") or ""), dst_ip=str(data.get("DstIP") or ""),
                  src_port=_int(data, "SrcPort"), dst_port=_int(data, "DstPort"),
                  icmp_id=_int(data, "ICMPID"), ttl=_int(data, "TTL", 64),
                  payload=str(data.get("Payload") or "").encode(),
                  increment=bool(data.get("IncrementPayload") or data.get("Increment")),
                  mode=str(data.get("Mode") or "unique"), count=_int(data, "Count", 1),
                  interval_ms=_int(data, "Interval"), pcap=pcap)
        inj.check()
        return inj

    @property
    def ipv6(self) -> bool:
        return self.type.endswith("6")

    def check(self) -> None:
        if self.type not in TYPES:
            raise InjectionError(f"Type: {self.type!r} is not one of {', '.join(TYPES)}")
        if self.mode not in MODES:
            raise InjectionError(f"Mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if not 1 <= self.count <= MAX_COUNT:
            raise InjectionError(f"Count: {self.count} is outside 1..{MAX_COUNT}")
        if self.interval_ms < 0:
            raise InjectionError(f"Interval: {self.interval_ms} is negative")
        if not 1 <= self.ttl <= 255:
            raise InjectionError(f"TTL: {self.ttl} is outside 1..255")
        for name, port in (("SrcPort", self.src_port), ("DstPort", self.dst_port)):
            if not 0 <= port <= 65535:
                raise InjectionError(f"{name}: {port} is outside 0..65535")
        if not 0 <= self.icmp_id <= 65535:
            raise InjectionError(f"ICMPID: {self.icmp_id} is outside 0..65535")
        if len(self.payload) + (self.count - 1 if self.increment else 0) > MAX_PAYLOAD:
            raise InjectionError(f"Payload: more than {MAX_PAYLOAD} bytes")
        if self.pcap:
            return
        version = 6 if self.ipv6 else 4
        for name, ip in (("SrcIP", self.src_ip), ("DstIP", self.dst_ip)):
            try:
                parsed = ipaddress.ip_address(ip)
            except ValueError:
                raise InjectionError(f"{name}: {ip!r} is not an IP address") from None
            if parsed.version != version:
                raise InjectionError(f"{name}: {ip} is not an IPv{version} address "
                                     f"(Type {self.type})")
        for name, mac in (("SrcMAC", self.src_mac), ("DstMAC", self.dst_mac)):
            if not _is_mac(mac):
                raise InjectionError(f"{name}: {mac!r} is not a MAC address")


def _int(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InjectionError(f"{key}: {value!r} is not an integer") from None


def _is_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                   for p in parts)


def frames(inj: Injection, rng: random.Random) -> Iterator[bytes]:
    """The `Count` frames of the injection, in sending order (a pcap replays its frames,
    `Count` times over)."""
    if inj.pcap:
        recorded = pcap_frames(inj.pcap)
        for _ in range(inj.count):
            yield from recorded
        return
    icmp_id = inj.icmp_id or rng.randrange(1, 65536)
    src_port = inj.src_port or rng.randrange(32768, 61000)
    for i in range(inj.count):
        if inj.mode == "random" and i:   # the first frame is the announced flow
            icmp_id, src_port = rng.randrange(1, 65536), rng.randrange(32768, 61000)
        payload = inj.payload + (b"x" * i if inj.increment else b"")
        yield bytes(_frame(inj, i, icmp_id, src_port, payload))


def _frame(inj: Injection, i: int, icmp_id: int, src_port: int, payload: bytes) -> Packet:
    l2 = Ether(src=inj.src_mac, dst=inj.dst_mac)
    l3: Packet = (IPv6(src=inj.src_ip, dst=inj.dst_ip, hlim=inj.ttl) if inj.ipv6
                  else IP(src=inj.src_ip, dst=inj.dst_ip, ttl=inj.ttl))
    kind = inj.type[:-1]
    l4: Packet
    if kind == "icmp":
        l4 = (ICMPv6EchoRequest(id=icmp_id, seq=i + 1) if inj.ipv6
              else ICMP(type=8, id=icmp_id, seq=i + 1))
    elif kind == "tcp":
        l4 = TCP(sport=src_port, dport=inj.dst_port, flags="S", seq=1000 + i)
    else:
        l4 = UDP(sport=src_port, dport=inj.dst_port)
    pkt: Packet = l2 / l3 / l4
    if payload:
        pkt = pkt / Raw(payload)
    return pkt


def pcap_frames(data: bytes) -> list[bytes]:
    """The frames of a pcap or pcapng file given as bytes."""
    try:
        return [bytes(p) for p in rdpcap(io.BytesIO(data))]
    except (Scapy_Exception, EOFError, ValueError, OSError) as exc:
        raise InjectionError(f"Pcap: not a readable pcap file: {exc}") from None


def tracking_id(frame: bytes, ts_ns: int = 0) -> str:
    """`TrackingID` of the flow `frame` starts (L2 key mode, as captures default to)."""
    table = FlowTable()
    table.feed(frame, ts_ns)
    flows = table.flows()
    return flows[-1].tracking_id if flows else ""
