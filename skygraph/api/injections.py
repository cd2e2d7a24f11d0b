"""Packet injection resources (SPEC §1g, `injectpacket`): Skydive's fields and
validation, the resolution of `Src`/`Dst` into what the packets carry, and
dispatch to the agent that owns the source node.

Resolution (on the analyzer's live graph):
- `Src` (Gremlin, mandatory) must match exactly one node of an agent's host
  (an interface to send from); `Dst` (Gremlin, optional) at most one node.
- Source IP: `SrcIP`, else the source node's first `IPV4`/`IPV6` address of
  the type's family; source MAC: `SrcMAC`, else the source node's `MAC`.
- Destination IP: `DstIP`, else the destination node's first address.
- Destination MAC: `DstMAC`; else the next hop: the longest prefix match over
  all the source node's `RoutingTables` (SPEC §3 fix 18), its gateway (or the
  destination itself on a direct route) looked up in the source node's
  `Neighbors`; else the destination node's `ExtID.attached-mac`, else its `MAC`.
- `IP` fields accept an address or a CIDR (the prefix is dropped).
- `ICMPID` and the source port are chosen now when not given, so the frames
  are known here and the injection's `TrackingID` (the flow its first frame
  starts, L2 key mode) is part of the answer.
- With `Pcap` (base64 pcap/pcapng) its frames are replayed instead; no
  addresses are needed.

Injections live in the analyzer's memory (they are short-lived commands,
not state to keep across a restart); the agent reports a running one in the
source node's `PacketInjections` metadata.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from skygraph.api.captures import CaptureInvalid, FieldError
from skygraph.api.service import Api
from skygraph.capture.inject import MODES, TYPES, Injection, InjectionError, frames, tracking_id
from skygraph.gremlin import GremlinError
from skygraph.topology.model import Node

log = logging.getLogger("skygraph.injections")

# (host, resolved injection JSON, node id) -> delivered? ; (host, injection id, node id)
Send = Callable[[str, dict[str, Any], str], Awaitable[bool]]
Stop = Callable[[str, str, str], Awaitable[bool]]

FIELDS = ("Src", "Dst", "SrcIP", "DstIP", "SrcMAC", "DstMAC", "SrcPort", "DstPort", "Type",
          "Payload", "ICMPID", "Count", "Interval", "Mode", "IncrementPayload", "Increment",
          "Pcap", "TTL", "UUID", "StartTime", "TrackingID")
INT_FIELDS = ("SrcPort", "DstPort", "ICMPID", "Count", "Interval", "TTL")
DEFAULTS: Mapping[str, Any] = {"Type": "icmp4", "Count": 1, "Interval": 0, "Mode": "unique",
                               "TTL": 64}


class Unavailable(RuntimeError):
    """The source node's agent is not connected."""


def _strip(ip: str) -> str:
    return ip.split("/", 1)[0].strip()


def check_spec(data: Mapping[str, Any]) -> list[FieldError]:
    """Skydive's field checks, one error per field, before any resolution."""
    errors: list[FieldError] = []
    for key in data:
        if key not in FIELDS:
            errors.append(FieldError(key, "unknown field"))
    if not str(data.get("Src") or "").strip():
        errors.append(FieldError("Src", "a Gremlin query for the source node is required"))
    for key in INT_FIELDS:
        value = data.get(key)
        if value not in (None, "") and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(FieldError(key, f"{value!r} is not an integer"))
    ranges = {"Count": (1, 1_000_000), "Interval": (0, 3_600_000), "TTL": (1, 255),
              "SrcPort": (0, 65535), "DstPort": (0, 65535), "ICMPID": (0, 65535)}
    for key, (low, high) in ranges.items():
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            errors.append(FieldError(key, f"{value} is outside {low}..{high}"))
    kind = str(data.get("Type") or "icmp4")
    if kind not in TYPES:
        errors.append(FieldError("Type", f"{kind!r} is not one of {', '.join(TYPES)}"))
    if str(data.get("Mode") or "unique") not in MODES:
        errors.append(FieldError("Mode", f"{data.get('Mode')!r} is not one of {', '.join(MODES)}"))
    for key in ("SrcIP", "DstIP"):
        if data.get(key):
            try:
                ipaddress.ip_interface(str(data[key]))
            except ValueError:
                errors.append(FieldError(key, f"{data[key]!r} is not an IP address or CIDR"))
    if kind[:-1] in ("tcp", "udp") and not data.get("DstPort") and not data.get("Pcap"):
        errors.append(FieldError("DstPort", f"a destination port is needed for {kind}"))
    return errors


def first_ip(node: Node | None, version: int) -> str:
    if node is None:
        return ""
    for cidr in node.Metadata.get("IPV6" if version == 6 else "IPV4") or []:
        ip = _strip(str(cidr))
        try:
            if ipaddress.ip_address(ip).version == version and not ipaddress.ip_address(
                    ip).is_link_local:
                return ip
        except ValueError:
            continue
    return ""


def next_hop_mac(src: Node, dst_ip: str) -> str:
    """The MAC to send `dst_ip`'s packets to from `src`: the longest prefix match over
    all its routing tables, then its neighbour entry for the gateway (or for `dst_ip`
    itself on a direct route); "" when unknown."""
    try:
        dst = ipaddress.ip_address(dst_ip)
    except ValueError:
        return ""
    best: tuple[int, str] | None = None
    for table in src.Metadata.get("RoutingTables") or []:
        for route in table.get("Routes") or []:
            try:
                net = ipaddress.ip_network(str(route.get("Prefix")), strict=False)
            except ValueError:
                continue
            if net.version != dst.version or dst not in net:
                continue
            hops = route.get("NextHops") or [{}]
            gateway = str(hops[0].get("IP") or dst_ip)
            if best is None or net.prefixlen > best[0]:
                best = (net.prefixlen, gateway)
    gateway = best[1] if best else dst_ip
    for n in src.Metadata.get("Neighbors") or []:
        if str(n.get("IP")) == gateway and n.get("MAC"):
            return str(n["MAC"])
    return ""


def resolve(data: Mapping[str, Any], src: Node, dst: Node | None,
            rng: random.Random) -> dict[str, Any]:
    """The injection JSON the agent gets: every address and id decided. Raises
    `CaptureInvalid` with one error per field that cannot be resolved."""
    out: dict[str, Any] = {**DEFAULTS, **{k: v for k, v in data.items() if v not in (None, "")}}
    out.pop("Increment", None)
    out["IncrementPayload"] = bool(data.get("IncrementPayload") or data.get("Increment"))
    kind = str(out["Type"])
    version = 6 if kind.endswith("6") else 4
    errors: list[FieldError] = []
    if not out.get("Pcap"):
        out["SrcIP"] = _strip(str(out.get("SrcIP") or "")) or first_ip(src, version)
        if not out["SrcIP"]:
            errors.append(FieldError("SrcIP", f"the source node {src.name or src.ID} has no "
                                              f"IPv{version} address; give SrcIP"))
        out["SrcMAC"] = str(out.get("SrcMAC") or src.Metadata.get("MAC") or "")
        if not out["SrcMAC"]:
            errors.append(FieldError("SrcMAC", f"the source node {src.name or src.ID} has no "
                                               f"MAC; give SrcMAC"))
        out["DstIP"] = _strip(str(out.get("DstIP") or "")) or first_ip(dst, version)
        if not out["DstIP"]:
            errors.append(FieldError("DstIP", "give DstIP, or a Dst node with an "
                                              f"IPv{version} address"))
        if not out.get("DstMAC") and out["DstIP"]:
            ext = dst.Metadata.get("ExtID") if dst is not None else None
            out["DstMAC"] = (next_hop_mac(src, out["DstIP"])
                             or (str(ext.get("attached-mac") or "") if isinstance(ext, dict)
                                 else "")
                             or (str(dst.Metadata.get("MAC") or "") if dst is not None else ""))
        if not out.get("DstMAC") and out["DstIP"]:
            errors.append(FieldError("DstMAC", f"no route/neighbour on {src.name or src.ID} "
                                               f"gives the MAC for {out['DstIP']} and no Dst "
                                               "node MAC; give DstMAC or Dst"))
        if kind.startswith("icmp") and not out.get("ICMPID"):
            out["ICMPID"] = rng.randrange(1, 65536)
        if not kind.startswith("icmp") and not out.get("SrcPort"):
            out["SrcPort"] = rng.randrange(32768, 61000)
    if errors:
        raise CaptureInvalid(errors)
    try:
        inj = Injection.from_json(out)
    except InjectionError as exc:
        field, _, message = str(exc).partition(": ")
        raise CaptureInvalid([FieldError(field, message)]) from None
    first = next(frames(inj, rng), b"")
    out["TrackingID"] = tracking_id(first) if first else ""
    return out


class Injections:
    def __init__(self, api: Api, send: Send, stop: Stop,
                 connected: Callable[[], Sequence[str]]) -> None:
        self.api = api
        self.send = send
        self.stop_on = stop
        self.connected = connected
        self.items: dict[str, dict[str, Any]] = {}       # id -> resource JSON
        self.placed: dict[str, tuple[str, str]] = {}     # id -> (host, node id)

    async def _query_node(self, query: str, field: str) -> Node:
        try:
            result = await self.api.gremlin(query)
        except GremlinError as exc:
            raise CaptureInvalid([FieldError(field, str(exc))]) from None
        ids = [item.get("ID") for item in (result or []) if isinstance(item, dict)]
        nodes = [self.api.graph.nodes[i] for i in ids if i in self.api.graph.nodes]
        if not nodes:
            raise CaptureInvalid([FieldError(field, f"{query!r} matches no node")])
        if len(nodes) > 1:
            raise CaptureInvalid([FieldError(field, f"{query!r} matches {len(nodes)} nodes; "
                                                    "it must match one")])
        return nodes[0]

    async def create(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, resolve and start an injection; return its resource JSON. Raises
        `CaptureInvalid` (field errors) or `Unavailable` (the agent is not connected)."""
        if errors := check_spec(data):
            raise CaptureInvalid(errors)
        await self.api.writer.flush()
        src = await self._query_node(str(data["Src"]), "Src")
        dst = await self._query_node(str(data["Dst"]), "Dst") if data.get("Dst") else None
        if not src.Host:
            raise CaptureInvalid([FieldError("Src", f"node {src.ID} belongs to no agent")])
        spec = resolve(data, src, dst, random.Random())
        spec["UUID"] = str(uuidlib.uuid4())
        spec["StartTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if src.Host not in self.connected():
            raise Unavailable(f"Src: the agent of host {src.Host!r} is not connected")
        if not await self.send(src.Host, dict(spec), src.ID):
            raise Unavailable(f"Src: the agent of host {src.Host!r} did not take the injection")
        self.items[spec["UUID"]] = spec
        self.placed[spec["UUID"]] = (src.Host, src.ID)
        log.info("injection %s: %s x%s from %s (%s) to %s", spec["UUID"], spec["Type"],
                 spec["Count"], src.ID, src.Host, spec.get("DstIP", "pcap"))
        return self._view(spec)

    def _view(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The resource as stored, plus what the agent reports on the source node."""
        out = dict(spec)
        out.pop("Pcap", None)
        host_node = self.placed.get(str(spec["UUID"]))
        node = self.api.graph.nodes.get(host_node[1]) if host_node else None
        entries = node.Metadata.get("PacketInjections") if node is not None else None
        for e in entries or []:
            if isinstance(e, dict) and e.get("ID") == spec["UUID"]:
                out.update({k: e[k] for k in ("State", "Error", "PacketsSent") if k in e})
        return out

    def list(self) -> dict[str, dict[str, Any]]:
        return {k: self._view(v) for k, v in self.items.items()}

    def get(self, ident: str) -> dict[str, Any] | None:
        spec = self.items.get(ident)
        return self._view(spec) if spec is not None else None

    async def delete(self, ident: str) -> bool:
        """Forget the injection and stop it on its agent if it still runs."""
        if self.items.pop(ident, None) is None:
            return False
        host, node_id = self.placed.pop(ident)
        if host in self.connected():
            await self.stop_on(host, ident, node_id)
        return True
