"""What a capture target is: the seam between a capture and its exporter.

Owns `Target` (the protocol a capture drives: frames to `packets()`, flow
table output to `flows()`), `TargetNode` (what an exporter knows of the
captured interface), `TargetError` (bad target settings, the message names
the field) and the parsing of a capture's `Target` (`ip:port`, `[v6]:port`,
`ip` alone, a host name resolved once) into an `Endpoint`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from skygraph.topology.flow import Flow

# pcap link types of the frames a capture hands over (Ethernet, or raw IP).
LINKTYPE_ETHERNET = 1
RAW_IP_LINK_TYPES = frozenset({12, 14, 101, 228, 229})


class TargetError(ValueError):
    """A capture's target settings are wrong; the message starts with the field
    (`Target: ...`, `TargetType: ...`, `SessionID: ...`)."""


@dataclass(frozen=True, slots=True)
class TargetNode:
    """The captured interface as exporters see it."""

    if_index: int  # SNMP ifIndex of the interface (0: unknown)
    name: str
    agent_ip: str  # address of the capturing host (sFlow agent address; "" = unknown)
    mac: str  # the interface's MAC ("" = unknown): tells sent frames from received ones


class Target(Protocol):
    """A capture's export.  `packets` is called from the capture's reader thread with
    (timestamp ns, wire length, captured bytes); `flows` with the flow table's
    update/expire output and the table's clock.  Neither raises: failures are
    counted in `stats()`."""

    @property
    def wants_packets(self) -> bool: ...

    @property
    def wants_flows(self) -> bool: ...

    def packets(self, frames: Sequence[tuple[int, int, bytes]]) -> None: ...

    def flows(self, flows: Sequence[Flow], now_ms: int) -> None: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A target address, resolved."""

    host: str  # IP literal
    port: int  # 0: none (ERSPAN)
    family: socket.AddressFamily

    @property
    def sockaddr(self) -> tuple[str, int]:
        return (self.host, self.port)


def parse_endpoint(target: str, kind: str, *, default_port: int | None) -> Endpoint:
    """`target` of a `kind` target.  `default_port=None`: the kind has no port (ERSPAN):
    the port must be absent or 0.  Otherwise a missing port takes the default and an
    explicit port must be 1..65535."""
    text = target.strip()
    if not text:
        raise TargetError(f"Target: a {kind} target needs an address (ip:port)")
    host, port_text = _split(text)
    if port_text is None:
        port = 0 if default_port is None else default_port
    else:
        try:
            port = int(port_text)
        except ValueError:
            raise TargetError(f"Target: {target!r}: port {port_text!r} is not a number") from None
        if default_port is None and port != 0:
            raise TargetError(f"Target: {target!r}: {kind} is carried in GRE, which has no "
                              f"port; use {host}:0")
        if default_port is not None and not 0 < port < 65536:
            raise TargetError(f"Target: {target!r}: port {port} is not in 1..65535")
    ip = _resolve(host, target)
    return Endpoint(ip, port, _family(ip))


def _split(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise TargetError(f"Target: {text!r} is not [ipv6]:port")
        return host, rest[1:] if rest else None
    if text.count(":") > 1:  # a bare IPv6 address
        return text, None
    host, sep, port = text.partition(":")
    return host, port if sep else None


def _resolve(host: str, target: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise TargetError(f"Target: {target!r}: cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    # IPv4 first: the common collector, and the only family ERSPAN's kernel path tests.
    addresses.sort(key=lambda a: ":" in a)
    return addresses[0]


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def check_link_type(link_type: int) -> None:
    if link_type != LINKTYPE_ETHERNET and link_type not in RAW_IP_LINK_TYPES:
        raise TargetError(f"LinkType: {link_type}: targets take Ethernet or raw IP frames")
