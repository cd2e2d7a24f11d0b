"""How flows map onto the database (docs/graph-model.md, "Flows").

Pure: a flow's Skydive JSON (`Flow.to_json()`, what agents send) <-> the
properties of its `(:Flow)` node, and the Cypher that writes, links, reads
and prunes flows. The store (flowstore.py) runs it.

- One `(:Flow)` per `UUID` (unique constraint); an update overwrites the
  node's properties, unless it is older than what is stored (`Last`, then
  `LastUpdateMetric.Last`), so a replayed or late update changes nothing.
- The flow's fields are flattened like node metadata (`Network.A`,
  `Metric.ABPackets`, `ICMP.ID`; `DNS.Questions` as JSON text listed in
  `_json`), so `flow_json(properties)` gives back exactly the JSON sent;
  an outer flow's empty `ParentUUID` is left out (and put back on reads).
  The analyzer adds `Host` (the agent that sent it) and `UpdatedAt` (ms,
  the analyzer's wall clock when the store last wrote the flow: set by the
  write itself, not taken from the packets); neither is part of the flow's
  JSON.
- `(:Flow)-[:CAPTURED_ON]->(:Node)` to every live node whose `TID` is the
  flow's `NodeTID`; `(:Flow)-[:INSIDE]->(:Flow)` from an inner flow to its
  tunnel flow (`ParentUUID`). Links are made when the flow is written; when
  the node appears later the topology writer links it (batch.py); when the
  parent arrives later, the parent's first write links its children.
- Every update's `LastUpdateMetric` is also kept as a sample
  `(:Flow)-[:HAS_METRIC]->(:FlowMetric)` (keyed by flow UUID and window end,
  so a replayed update adds nothing): the flow's history of counters.
- The packets an agent kept (`RawPacketLimit`) travel with the flow update as
  `LastRawPackets` (`wire_json`: Skydive's RawPacket JSON, `Data` in base64);
  each is stored once as `(:Flow)-[:HAS_PACKET]->(:RawPacket)` keyed by flow
  UUID and `Index`, `Data` as bytes. At most `max_raw_packets` per flow are
  kept (a larger `Index` is dropped), each at most `MAX_RAW_PACKET_BYTES`.
- Retention counts from when things were written, never from packet times
  (an imported trace from years ago stays as long as live traffic): samples
  whose `UpdatedAt` (set when the sample was written) is older than the
  cutoff are pruned, then flows whose `UpdatedAt` is, with their links and
  what they still hang on to. `Start`/`Last` stay the packet times that
  history queries read. Rows of versions that did not set `UpdatedAt` on
  samples get it from their `Last` once (`BACKFILL`), so they keep the
  expiry they had.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from skygraph.topology.flow import Flow
from skygraph.topology.schema import (
    ARCHIVE_KEY,
    CAPTURED_ON,
    FLOW_LABEL,
    FLOW_METRIC_LABEL,
    HAS_METRIC,
    HAS_PACKET,
    INSIDE,
    INTERNAL_PROPERTIES,
    NODE_LABEL,
    RAW_PACKET_LABEL,
    from_properties,
    quote,
    to_properties,
)

FLOW = quote(FLOW_LABEL)
HOST = "Host"  # the agent (host ID) that sent the flow
# ms epoch, the analyzer's clock when the store last wrote the flow (or a sample):
# what the retention counts from (set by UPSERT / WRITE_SAMPLES with $now)
UPDATED_AT = "UpdatedAt"
# ms epoch: the agent went away while the flow could still be active (seen within
# flow.expire); the next update of the flow (the agent back) clears it
AGENT_DISCONNECTED_AT = "AgentDisconnectedAt"
PARENT_UUID = "ParentUUID"  # stored on inner flows only
RAW_PACKETS = "LastRawPackets"  # on the wire only: the packets kept since the last update
FLOW_UUID = "FlowUUID"  # on samples and raw packets: their flow
DEFAULT_MAX_RAW_PACKETS = 10  # per flow (SPEC §3 fix 6: analyzer.api.max_raw_packets)
MAX_RAW_PACKET_BYTES = 65_535  # a stored packet's data (captures' snaplen is at most 4096)

# Skydive's JSON key order (flow.proto field order) of a flow and its messages.
FLOW_FIELDS = ("UUID", "LayersPath", "Application", "Link", "Network", "Transport", "ICMP",
               "DHCPv4", "DNS", "VRRPv2", "LastUpdateMetric", "Metric", "TCPMetric", "IPMetric",
               "Start", "Last", "TrackingID", "L3TrackingID", "ParentUUID", "NodeTID",
               "CaptureID", "RawPacketsCaptured", "FinishType")
LAYER_FIELDS = ("Protocol", "A", "B", "ID")
METRIC_FIELDS = ("ABPackets", "ABBytes", "BAPackets", "BABytes", "Start", "Last", "RTT")
MESSAGE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Link": LAYER_FIELDS, "Network": LAYER_FIELDS, "Transport": LAYER_FIELDS,
    "ICMP": ("Type", "Code", "ID"),
    "LastUpdateMetric": METRIC_FIELDS, "Metric": METRIC_FIELDS,
    "TCPMetric": ("ABSynStart", "BASynStart", "ABSynTTL", "BASynTTL", "ABFinStart", "BAFinStart",
                  "ABRstStart", "BARstStart", "ABSegmentOutOfOrder", "ABSegmentSkipped",
                  "ABSegmentSkippedBytes", "ABPackets", "ABBytes", "ABSawStart", "ABSawEnd",
                  "BASegmentOutOfOrder", "BASegmentSkipped", "BASegmentSkippedBytes",
                  "BAPackets", "BABytes", "BASawStart", "BASawEnd"),
    "IPMetric": ("Fragments", "FragmentErrors"),
}
# Fields that always hold one scalar (never a list), so filters on them are
# plain equalities that the indexes serve.
SCALAR_FIELDS = frozenset(f for f in FLOW_FIELDS if f not in MESSAGE_FIELDS
                          and f not in ("DHCPv4", "DNS", "VRRPv2"))


class FlowError(ValueError):
    """A flow document the store cannot take; the message names the flow and the field."""


def is_scalar_field(path: str) -> bool:
    """A flow key (`Last`, `Network.A`, `Metric.ABBytes`) that holds one scalar."""
    head, _, rest = path.partition(".")
    if not rest:
        return head in SCALAR_FIELDS
    return head in MESSAGE_FIELDS and "." not in rest


# ---------------------------------------------------------------- properties

def wire_json(flow: Flow) -> dict[str, Any]:
    """What an agent sends for a flow: Skydive's flow JSON plus, when the capture
    keeps packets, `LastRawPackets` (Skydive's RawPacket JSON, `Data` in base64)."""
    doc = flow.to_json()
    if flow.last_raw_packets:
        doc[RAW_PACKETS] = [p.to_json() for p in flow.last_raw_packets]
    return doc


def without_packets(flow: Mapping[str, Any]) -> dict[str, Any]:
    """The flow's Skydive JSON (what subscribers see): `LastRawPackets` left out."""
    return {k: v for k, v in flow.items() if k != RAW_PACKETS}


def flow_properties(flow: Mapping[str, Any], host: str, now_ms: int) -> dict[str, Any]:
    """The properties of a flow's node. Raises FlowError for a flow without a
    UUID, a reserved field, or a key field of the wrong type."""
    uuid = flow.get("UUID")
    if not isinstance(uuid, str) or not uuid:
        raise FlowError(f"flow without a UUID (field 'UUID': {uuid!r})")
    for key in flow:
        if key in INTERNAL_PROPERTIES:
            raise FlowError(f"flow {uuid}: field {key!r} is reserved")
    for key in ("NodeTID", "ParentUUID", "TrackingID", "L3TrackingID", "CaptureID"):
        if not isinstance(flow.get(key, ""), str):
            raise FlowError(f"flow {uuid}: field {key!r} must be a string")
    for key in ("Start", "Last"):
        value = flow.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise FlowError(f"flow {uuid}: field {key!r} must be an integer (ms)")
    props = to_properties(without_packets(flow))
    if props.get(PARENT_UUID) == "":
        # an outer flow: not stored, so the ParentUUID index holds inner flows only
        # (one key shared by most flows makes every delete and update slow)
        del props[PARENT_UUID]
    props[HOST] = host
    props[UPDATED_AT] = now_ms  # when accepted; the store's write sets it again
    return props


def flow_json(props: Mapping[str, Any]) -> dict[str, Any]:
    """A stored flow back in Skydive's JSON shape and key order."""
    doc = from_properties(props)
    doc.setdefault(PARENT_UUID, "")  # always in Skydive's JSON
    return _ordered(doc, FLOW_FIELDS, top=True)


def _ordered(doc: Mapping[str, Any], order: Sequence[str], top: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in order:
        if key in doc:
            out[key] = doc[key]
    for key in sorted(k for k in doc if k not in out):
        out[key] = doc[key]
    for key, value in out.items():
        if isinstance(value, dict):
            out[key] = _ordered(value, MESSAGE_FIELDS.get(key, ()) if top else ())
    return out


def write_row(flow: Mapping[str, Any], host: str, now_ms: int,
              max_raw_packets: int = DEFAULT_MAX_RAW_PACKETS) -> dict[str, Any]:
    """One row of UPSERT: the UUID, what orders updates (`Last`, then the update
    tick `LastUpdateMetric.Last`), the links to make and the properties; plus the
    update's metric sample (`sample`, None without a LastUpdateMetric window), its
    raw packets to keep (`packets`) and how many were over `max_raw_packets`
    (`dropped`). Raises FlowError (see `flow_properties`, `raw_packets`)."""
    props = flow_properties(flow, host, now_ms)
    uuid = props["UUID"]
    lum = flow.get("LastUpdateMetric")
    tick = lum.get("Last", 0) if isinstance(lum, Mapping) else 0
    packets = raw_packets(uuid, flow.get(RAW_PACKETS))
    kept = [p for p in packets if p["props"]["Index"] <= max_raw_packets]
    return {"UUID": uuid, "Last": props.get("Last", 0),
            "tick": tick if _is_int(tick) else 0,
            "tid": props.get("NodeTID") or "", "parent": props.get("ParentUUID") or "",
            "props": props, "sample": metric_sample(uuid, lum), "packets": kept,
            "dropped": len(packets) - len(kept)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def metric_sample(uuid: str, lum: Any) -> dict[str, Any] | None:
    """The row of a flow update's LastUpdateMetric sample, keyed by the flow and the
    window's end; None when there is no window (no integer Start and Last)."""
    if not isinstance(lum, Mapping) or not _is_int(lum.get("Start")) \
            or not _is_int(lum.get("Last")):
        return None
    props: dict[str, Any] = {k: lum[k] for k in METRIC_FIELDS if _is_int(lum.get(k))}
    key = f"{uuid}/{lum['Last']}"
    props[FLOW_UUID] = uuid
    props[ARCHIVE_KEY] = key
    return {"UUID": uuid, "key": key, "props": props}


def raw_packets(uuid: str, packets: Any) -> list[dict[str, Any]]:
    """Rows of the raw packets sent with a flow update (`LastRawPackets`), keyed by
    the flow and `Index`. Raises FlowError naming the packet and field that is wrong."""
    if packets is None:
        return []
    if not isinstance(packets, list):
        raise FlowError(f"flow {uuid}: field {RAW_PACKETS!r} must be a list of raw packets")
    rows = []
    for i, p in enumerate(packets):
        where = f"flow {uuid}: {RAW_PACKETS}[{i}]"
        if not isinstance(p, Mapping):
            raise FlowError(f"{where}: expected an object, got {type(p).__name__}")
        for key in ("Timestamp", "Index", "LinkType"):
            if not _is_int(p.get(key)) or p[key] < (1 if key == "Index" else 0):
                raise FlowError(f"{where}: field {key!r} must be a "
                                f"{'positive' if key == 'Index' else 'non-negative'} integer")
        data = p.get("Data")
        try:
            raw = base64.b64decode(data, validate=True) if isinstance(data, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if raw is None:
            raise FlowError(f"{where}: field 'Data' must be base64 text")
        if len(raw) > MAX_RAW_PACKET_BYTES:
            raise FlowError(f"{where}: {len(raw)} bytes of data, more than "
                            f"{MAX_RAW_PACKET_BYTES}")
        key = f"{uuid}/{p['Index']}"
        rows.append({"UUID": uuid, "key": key, "props": {
            "Timestamp": p["Timestamp"], "Index": p["Index"], "LinkType": p["LinkType"],
            "Data": raw, FLOW_UUID: uuid, ARCHIVE_KEY: key}})
    return rows


def sample_json(props: Mapping[str, Any]) -> dict[str, Any]:
    """A stored sample as Skydive's FlowMetric JSON (RTT only when set)."""
    out = {k: int(props.get(k) or 0) for k in METRIC_FIELDS if k != "RTT"}
    if props.get("RTT"):
        out["RTT"] = int(props["RTT"])
    return out


def packet_json(props: Mapping[str, Any]) -> dict[str, Any]:
    """A stored raw packet as Skydive's RawPacket JSON (`Data` in base64)."""
    data = props.get("Data") or b""
    if isinstance(data, list):  # a server that hands byte arrays back as lists
        data = bytes(data)
    return {"Timestamp": int(props.get("Timestamp") or 0), "Index": int(props.get("Index") or 0),
            "Data": base64.b64encode(bytes(data)).decode("ascii"),
            "LinkType": int(props.get("LinkType") or 0)}


def newest(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per UUID, the newest (a later row wins a tie): the database
    evaluates a statement's guard for every row before it writes any."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        old = best.get(row["UUID"])
        if old is None or (row["Last"], row["tick"]) >= (old["Last"], old["tick"]):
            best[row["UUID"]] = row
    return list(best.values())


# ---------------------------------------------------------------- Cypher

NODE = quote(NODE_LABEL)
_CAPTURED_ON = quote(CAPTURED_ON)
_INSIDE = quote(INSIDE)

_UPDATED_AT = quote(UPDATED_AT)
# rows: write_row(); now: the write's wall clock (ms). An update older than the
# stored one is skipped (and so does not extend the flow's retention).
UPSERT = (
    f"UNWIND $rows AS r MERGE (f:{FLOW} {{UUID: r.UUID}}) "
    "WITH f, r WHERE f.Last IS NULL OR r.Last > f.Last OR "
    "(r.Last = f.Last AND r.tick >= coalesce(f.`LastUpdateMetric.Last`, 0)) "
    f"SET f = r.props, f.{_UPDATED_AT} = $now"
)
# rows {UUID, tid}: the flows linked to their capture node (now or before).
LINK_NODES = (
    f"UNWIND $rows AS r MATCH (f:{FLOW} {{UUID: r.UUID}}) MATCH (n:{NODE} {{TID: r.tid}}) "
    f"MERGE (f)-[:{_CAPTURED_ON}]->(n) RETURN DISTINCT r.UUID AS uuid"
)
# rows {UUID, parent}: the flows linked to their parent flow.
LINK_PARENTS = (
    f"UNWIND $rows AS r MATCH (f:{FLOW} {{UUID: r.UUID}}) MATCH (p:{FLOW} {{UUID: r.parent}}) "
    f"MERGE (f)-[:{_INSIDE}]->(p) RETURN DISTINCT r.UUID AS uuid"
)
# uuids: flows seen for the first time; children that arrived before them.
LINK_CHILDREN = (
    f"UNWIND $uuids AS u MATCH (c:{FLOW} {{ParentUUID: u}}) MATCH (p:{FLOW} {{UUID: u}}) "
    f"MERGE (c)-[:{_INSIDE}]->(p) RETURN count(*) AS linked"
)
# Appended to the creation of topology nodes (batch.py): a new node with a TID
# gets the flows captured on it (it is new, so none is linked yet).
LINK_NEW_NODE = (
    f"WITH n WHERE n.TID IS NOT NULL MATCH (f:{FLOW} {{NodeTID: n.TID}}) "
    f"CREATE (f)-[:{_CAPTURED_ON}]->(n)"
)
# host, since, now: the host's flows still possibly active are marked, once.
MARK_AGENT_GONE = (
    f"MATCH (f:{FLOW}) WHERE f.`{HOST}` = $host AND f.Last >= $since "
    f"AND f.`{AGENT_DISCONNECTED_AT}` IS NULL SET f.`{AGENT_DISCONNECTED_AT}` = $now "
    "RETURN count(f) AS marked"
)
BY_UUIDS = f"UNWIND $uuids AS u MATCH (f:{FLOW} {{UUID: u}}) RETURN properties(f) AS p"
METRIC = quote(FLOW_METRIC_LABEL)
PACKET = quote(RAW_PACKET_LABEL)
_HAS_METRIC = quote(HAS_METRIC)
_HAS_PACKET = quote(HAS_PACKET)
# rows {UUID, key, props}: samples and packets, each written once, under their flow
# (written or merged by UPSERT in the same transaction); a sample keeps the write's
# time ($now) for the retention, a packet goes with its flow.
WRITE_SAMPLES = (
    f"UNWIND $rows AS r MATCH (f:{FLOW} {{UUID: r.UUID}}) "
    f"MERGE (m:{METRIC} {{{ARCHIVE_KEY}: r.key}}) "
    f"ON CREATE SET m += r.props, m.{_UPDATED_AT} = $now "
    f"MERGE (f)-[:{_HAS_METRIC}]->(m)"
)
WRITE_PACKETS = (
    f"UNWIND $rows AS r MATCH (f:{FLOW} {{UUID: r.UUID}}) "
    f"MERGE (p:{PACKET} {{{ARCHIVE_KEY}: r.key}}) ON CREATE SET p += r.props "
    f"MERGE (f)-[:{_HAS_PACKET}]->(p)"
)
SAMPLES_OF = (
    f"UNWIND $uuids AS u MATCH (:{FLOW} {{UUID: u}})-[:{_HAS_METRIC}]->(m) "
    "RETURN u AS uuid, properties(m) AS p"
)
PACKETS_OF = (
    f"UNWIND $uuids AS u MATCH (:{FLOW} {{UUID: u}})-[:{_HAS_PACKET}]->(p) "
    "RETURN u AS uuid, properties(p) AS p"
)
# Run in chunks (one transaction per chunk keeps each commit small), each returning
# how many it did (`n`), until a chunk does fewer than $chunk.
# Samples and flows that carry no write time (written by a version that did not set
# it) get their `Last`, once, before the first prune: they keep the expiry they had,
# and the prune statements below need no fallback (so they stay index range scans).
BACKFILL = [f"MATCH (x:{label}) WHERE x.{_UPDATED_AT} IS NULL WITH x LIMIT $chunk "
            f"SET x.{_UPDATED_AT} = coalesce(x.Last, 0) RETURN count(*) AS n"
            for label in (METRIC, FLOW)]
# Samples not written since the cutoff go first (a long-lived flow keeps only its
# recent ones); then flows not written since, with what is left of their samples
# (normally none: a sample is written with its flow, never after it) and packets.
PRUNE_SAMPLES = (
    f"MATCH (m:{METRIC}) WHERE m.{_UPDATED_AT} < $cutoff WITH m LIMIT $chunk "
    "DETACH DELETE m RETURN count(*) AS n"
)
PRUNE = (
    f"MATCH (f:{FLOW}) WHERE f.{_UPDATED_AT} < $cutoff WITH f LIMIT $chunk "
    f"CALL {{ WITH f MATCH (f)-[:{_HAS_METRIC}|{_HAS_PACKET}]->(x) DETACH DELETE x }} "
    "DETACH DELETE f RETURN count(*) AS n"
)
CLEAR = [f"MATCH (x:{label}) WITH x LIMIT $chunk DETACH DELETE x RETURN count(*) AS n"
         for label in (METRIC, PACKET, FLOW)]
