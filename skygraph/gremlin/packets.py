"""Skydive's `RawPackets()` and `BPF(filter)` steps (SPEC §1f), and raw packets
as a capture file.

`Flows()...RawPackets()` gives `[{flow UUID: [RawPacket, ...]}]` (Skydive's
RawPacket JSON: `Timestamp` ms, `Index` 1-based per flow, `Data` base64,
`LinkType`), packets by `Index`, or `[]` when none: the packets stored with
the selected flows (flowschema.py); with `At(t)` those with `Timestamp <= t`,
with `At(t, d)` those inside the slice. Without a time context every stored
packet of the flows is returned (Skydive asks the agents for the packets
kept since their last update; here the analyzer holds them all).

`BPF(filter)` keeps the packets a libpcap filter accepts, compiled once per
link type (snaplen 256, as Skydive) by the `Compile` callable the caller of
`execute` provides (gremlin runs no compiler itself) and run in userspace.

`render(result)` writes such a result as one capture file, packets in time
order with their original timestamps (ms, as kept) and link types:

- one link type: a classic pcap of that link type;
- Ethernet and raw IP packets mixed: classic Ethernet pcap, each IP packet
  behind a synthesized Ethernet header (zero MACs, its EtherType), since
  tcpdump reads one link type per file;
- IPv4 and IPv6 without Ethernet: classic pcap, LINKTYPE_RAW;
- any other mix: pcapng with one interface per link type (Wireshark and
  tshark read it; tcpdump refuses files mixing link types).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from skygraph.gremlin import results
from skygraph.gremlin.ast import Literal, Step
from skygraph.gremlin.errors import GremlinQueryError, NotAvailableError
from skygraph.gremlin.plan import FLOWS, RAW_PACKETS, Record
from skygraph.gremlin.source import HistorySource
from skygraph.topology import schema
from skygraph.topology.flowschema import packet_json

if TYPE_CHECKING:
    from skygraph.gremlin.translator import _Builder

# (expression, link type) -> a predicate on packet bytes; raises ValueError with
# libpcap's message for a filter it does not compile.
Compile = Callable[[str, int], Callable[[bytes], bool]]
Packets = dict[str, list[dict[str, Any]]]

LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6 = 1, 101, 228, 229
IP_LINKTYPES = frozenset({LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6})
SNAPLEN = 262_144
BPF_SNAPLEN = 256  # Skydive's DefaultCaptureLength, what BPF() compiles with
PCAP_MAGIC_US = 0xA1B2C3D4
PCAPNG_SHB, PCAPNG_IDB, PCAPNG_EPB, PCAPNG_BOM = 0x0A0D0D0A, 0x1, 0x6, 0x1A2B3C4D


class NotRenderable(ValueError):
    """The result is not raw packets (the message says what to ask instead)."""


# ---------------------------------------------------------------- steps

def step_raw_packets(b: _Builder, step: Step) -> None:
    b.need(step, FLOWS)
    p = b.fresh("p")
    conds: list[str] = []
    if isinstance(b.source, HistorySource):
        conds.append(f"{p}.Timestamp <= {b.source.t}")
        if b.source.frm is not None:
            conds.append(f"{p}.Timestamp >= {b.source.frm}")
    b.flush()
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    b.emit(f"MATCH ({b.cur})-[:{schema.quote(schema.HAS_PACKET)}]->({p}){where}")
    b.flow.packet_var = p
    b.kind = RAW_PACKETS


def step_bpf(b: _Builder, step: Step) -> None:
    b.need(step, RAW_PACKETS)
    arg = step.args[0]
    if not isinstance(arg, Literal) or not isinstance(arg.value, str) or not arg.value.strip():
        raise GremlinQueryError("BPF() takes a filter (a string, libpcap syntax)", arg.column)
    b.flow.packet_filters.append((arg.value, arg.column))


def finish(b: _Builder) -> tuple[str, Callable[[list[Record]], Any]]:
    cap = b.limits.max_results

    def finish_packets(rows: list[Record]) -> list[Packets]:
        results.check_cap(rows, cap)
        out: Packets = {}
        seen: set[tuple[str, int]] = set()
        for row in rows:
            packet = packet_json(row["props"])
            mark = (str(row["id"]), packet["Index"])
            if mark not in seen:
                seen.add(mark)
                out.setdefault(mark[0], []).append(packet)
        for packets in out.values():
            packets.sort(key=lambda p: p["Index"])
        return [out] if out else []
    return (f"RETURN {b.cur}.UUID AS id, properties({b.flow.packet_var}) AS props"
            f"{b.cap_clause()}", finish_packets)


# ---------------------------------------------------------------- BPF

async def apply_filters(result: Any, filters: tuple[tuple[str, int], ...],
                        compile_bpf: Compile | None) -> Any:
    """Keep the packets every filter accepts; flows left without packets go."""
    if compile_bpf is None:
        raise NotAvailableError("BPF() is not available here: no BPF compiler (libpcap)",
                                filters[0][1])
    series = packets_of(result)
    matchers: dict[tuple[str, int], Callable[[bytes], bool]] = {}
    for expression, column in filters:
        kept: Packets = {}
        for uuid, packets in series.items():
            for p in packets:
                link_type = int(p["LinkType"])
                matcher = matchers.get((expression, link_type))
                if matcher is None:
                    try:
                        matcher = await asyncio.to_thread(compile_bpf, expression, link_type)
                    except ValueError as exc:
                        raise GremlinQueryError(f"BPF(): {exc}", column) from None
                    matchers[(expression, link_type)] = matcher
                if matcher(_data(p)):
                    kept.setdefault(uuid, []).append(p)
        series = kept
    return [series] if series else []


# ---------------------------------------------------------------- capture files

def packets_of(result: Any) -> Packets:
    """The packets of a RawPackets() result (empty for an empty result)."""
    hint = "end the query with RawPackets(), e.g. G.Flows().RawPackets()"
    if not isinstance(result, list) or len(result) > 1:
        raise NotRenderable(f"the result is not raw packets: {hint}")
    if not result:
        return {}
    series = result[0]
    if not isinstance(series, dict) or not all(
            isinstance(ps, list) and all(isinstance(p, dict) and "Data" in p and "LinkType" in p
                                         and "Timestamp" in p for p in ps)
            for ps in series.values()):
        raise NotRenderable(f"the result is not raw packets: {hint}")
    return series


def _data(p: Mapping[str, Any]) -> bytes:
    try:
        return base64.b64decode(str(p["Data"]), validate=True)
    except (binascii.Error, ValueError):
        raise NotRenderable(f"raw packet {p.get('Index')}: Data is not base64") from None


def link_type_for(link_types: set[int]) -> int | None:
    """The one link type of a classic pcap holding these, or None (pcapng needed)."""
    if len(link_types) <= 1:
        return next(iter(link_types), LINKTYPE_ETHERNET)
    if link_types <= IP_LINKTYPES | {LINKTYPE_ETHERNET}:
        return LINKTYPE_ETHERNET if LINKTYPE_ETHERNET in link_types else LINKTYPE_RAW
    return None


def _as(data: bytes, link_type: int, target: int) -> bytes:
    """`data` of `link_type` re-framed for a file of link type `target`."""
    if link_type == target:
        return data
    version = data[0] >> 4 if data else 4
    if target == LINKTYPE_ETHERNET:
        return bytes(12) + (b"\x86\xdd" if version == 6 else b"\x08\x00") + data
    return data  # raw IPv4 or IPv6 in a LINKTYPE_RAW file


def render(result: Any) -> bytes:
    """A RawPackets() result as a pcap (or pcapng) file; NotRenderable otherwise."""
    series = packets_of(result)
    packets = sorted(((int(p["Timestamp"]), order, int(p.get("Index") or 0), p)
                      for order, ps in enumerate(series.values()) for p in ps),
                     key=lambda x: x[:3])
    link_types = {int(p["LinkType"]) for *_, p in packets}
    target = link_type_for(link_types)
    if target is None:
        return _pcapng(packets)
    out = [struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, target)]
    for ts, _, _, p in packets:
        data = _as(_data(p), int(p["LinkType"]), target)
        sec, ms = divmod(ts, 1000)
        out.append(struct.pack("<IIII", sec, ms * 1000, len(data), len(data)) + data)
    return b"".join(out)


def _block(kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    size = len(body) + 12
    return struct.pack("<II", kind, size) + body + struct.pack("<I", size)


def _pcapng(packets: list[tuple[int, int, int, dict[str, Any]]]) -> bytes:
    interfaces: dict[int, int] = {}
    blocks = [_block(PCAPNG_SHB, struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1))]
    for *_, p in packets:
        lt = int(p["LinkType"])
        if lt not in interfaces:
            interfaces[lt] = len(interfaces)
            # default timestamp resolution: microseconds
            blocks.append(_block(PCAPNG_IDB, struct.pack("<HHI", lt, 0, SNAPLEN)))
    for ts, _, _, p in packets:
        data = _data(p)
        us = ts * 1000
        blocks.append(_block(PCAPNG_EPB, struct.pack(
            "<IIIII", interfaces[int(p["LinkType"])], us >> 32, us & 0xFFFFFFFF, len(data),
            len(data)) + data))
    return b"".join(blocks)
