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
  The analyzer adds `Host` (the agent that sent it) and `UpdatedAt` (when it
  was written); neither is part of the flow's JSON.
- `(:Flow)-[:CAPTURED_ON]->(:Node)` to every live node whose `TID` is the
  flow's `NodeTID`; `(:Flow)-[:INSIDE]->(:Flow)` from an inner flow to its
  tunnel flow (`ParentUUID`). Links are made when the flow is written; when
  the node appears later the topology writer links it (batch.py); when the
  parent arrives later, the parent's first write links its children.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from skygraph.topology.schema import (
    CAPTURED_ON,
    FLOW_LABEL,
    INSIDE,
    INTERNAL_PROPERTIES,
    NODE_LABEL,
    from_properties,
    quote,
    to_properties,
)

FLOW = quote(FLOW_LABEL)
HOST = "Host"  # the agent (host ID) that sent the flow
UPDATED_AT = "UpdatedAt"  # ms epoch, when the analyzer wrote it
PARENT_UUID = "ParentUUID"  # stored on inner flows only

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
    props = to_properties(flow)
    if props.get(PARENT_UUID) == "":
        # an outer flow: not stored, so the ParentUUID index holds inner flows only
        # (one key shared by most flows makes every delete and update slow)
        del props[PARENT_UUID]
    props[HOST] = host
    props[UPDATED_AT] = now_ms
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


def write_row(flow: Mapping[str, Any], host: str, now_ms: int) -> dict[str, Any]:
    """One row of UPSERT: the UUID, what orders updates (`Last`, then the update
    tick `LastUpdateMetric.Last`), the links to make and the properties.
    Raises FlowError (see `flow_properties`)."""
    props = flow_properties(flow, host, now_ms)
    lum = flow.get("LastUpdateMetric")
    tick = lum.get("Last", 0) if isinstance(lum, Mapping) else 0
    return {"UUID": props["UUID"], "Last": props.get("Last", 0),
            "tick": tick if isinstance(tick, int) and not isinstance(tick, bool) else 0,
            "tid": props.get("NodeTID") or "", "parent": props.get("ParentUUID") or "",
            "props": props}


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

# rows: write_row(); an update older than the stored one is skipped.
UPSERT = (
    f"UNWIND $rows AS r MERGE (f:{FLOW} {{UUID: r.UUID}}) "
    "WITH f, r WHERE f.Last IS NULL OR r.Last > f.Last OR "
    "(r.Last = f.Last AND r.tick >= coalesce(f.`LastUpdateMetric.Last`, 0)) "
    "SET f = r.props"
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
BY_UUIDS = f"UNWIND $uuids AS u MATCH (f:{FLOW} {{UUID: u}}) RETURN properties(f) AS p"
# Deleted in chunks: one transaction per chunk keeps each commit small.
PRUNE = (
    f"MATCH (f:{FLOW}) WHERE f.Last < $cutoff WITH f LIMIT $chunk "
    "DETACH DELETE f RETURN count(*) AS deleted"
)
CLEAR = f"MATCH (f:{FLOW}) WITH f LIMIT $chunk DETACH DELETE f RETURN count(*) AS deleted"
