"""How graph elements map onto a Bolt/Cypher database (docs/graph-model.md).

Pure: labels, relationship types, metadata <-> property encoding and the
schema statements. The store executes what this module describes; the
Gremlin translator builds its Cypher from the same names.

- A live node is `(:Node:<Kind>)`; the kind label comes from `Metadata.Type`
  (every link type is `:Interface`). An unknown type gets `:Node` only.
- A live edge is a relationship whose type is `RelationType` upper-cased
  (`ownership` -> `:OWNERSHIP`), from the `Parent` node to the `Child` node.
- Archived revisions (history) are `(:ArchivedNode)` and `(:ArchivedEdge)`
  nodes, never `:Node`, so live queries do not see them.
- A flow is `(:Flow)` (never `:Node`), keyed by `UUID`, with its fields
  flattened like metadata (flowschema.py); `(:Flow)-[:CAPTURED_ON]->(:Node)`
  links it to the interface whose `TID` is its `NodeTID`, and
  `(:Flow)-[:INSIDE]->(:Flow)` an inner flow to its tunnel flow (`ParentUUID`).
  Its metric samples `(:FlowMetric)` and kept packets `(:RawPacket)` hang
  off it (`HAS_METRIC`, `HAS_PACKET`).
- Metadata is stored as properties: nested maps flattened with dots
  (`Ovs.Metric.RxBytes`), lists of one scalar type kept as lists; every other
  value (null, empty map or list, list of maps, mixed list, a map with a
  dotted key, an integer beyond int64) is stored as its JSON text, and its
  path is listed in the `_json` property so reads decode it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

NODE_LABEL = "Node"
ARCHIVED_NODE_LABEL = "ArchivedNode"
ARCHIVED_EDGE_LABEL = "ArchivedEdge"
FLOW_LABEL = "Flow"
CAPTURED_ON = "CAPTURED_ON"  # (:Flow)-[:CAPTURED_ON]->(:Node {TID: NodeTID})
INSIDE = "INSIDE"  # (inner:Flow)-[:INSIDE]->(tunnel:Flow {UUID: inner.ParentUUID})
FLOW_METRIC_LABEL = "FlowMetric"  # one LastUpdateMetric sample of a flow
RAW_PACKET_LABEL = "RawPacket"  # one packet kept with its flow (RawPacketLimit)
HAS_METRIC = "HAS_METRIC"  # (:Flow)-[:HAS_METRIC]->(:FlowMetric)
HAS_PACKET = "HAS_PACKET"  # (:Flow)-[:HAS_PACKET]->(:RawPacket)
JSON_KEYS = "_json"
ARCHIVE_KEY = "_key"

# Element fields stored as properties next to the metadata.
NODE_FIELDS = ("ID", "Host", "Origin", "CreatedAt", "UpdatedAt", "Revision")
EDGE_FIELDS = ("ID", "Parent", "Child", "Host", "Origin", "CreatedAt", "UpdatedAt", "Revision")
HISTORY_FIELDS = ("DeletedAt", "ArchivedAt")
INTERNAL_PROPERTIES = frozenset(NODE_FIELDS + EDGE_FIELDS + HISTORY_FIELDS + (JSON_KEYS, ARCHIVE_KEY))

# Metadata.Type -> kind label. Types not listed here and not link types get
# no kind label. Link types (netlink and OVS interface types) map to Interface.
KIND_LABELS: Mapping[str, str] = {
    "host": "Host",
    "netns": "Netns",
    "ovsbridge": "OvsBridge",
    "ovsport": "OvsPort",
    "ofrule": "OfRule",
    "ofgroup": "OfGroup",
    "fabric": "Fabric",
}
INTERFACE_TYPES = frozenset({
    "device", "veth", "bridge", "internal", "vxlan", "gre", "gretap", "ip6gre", "ip6gretap",
    "geneve", "erspan", "ip6erspan", "stt", "lisp", "patch", "tun", "tap", "tuntap",
    "openvswitch", "bond", "team", "vlan", "dummy", "macvlan", "macvtap", "ipvlan", "ipip",
    "sit", "ip6tnl", "vrf", "wireguard", "ifb", "nlmon", "vti", "vti6", "xfrm", "loopback",
    "dpdk", "dpdkr", "dpdkvhostuser", "dpdkvhostuserclient", "system", "can", "vcan", "veth-peer",
})
INTERFACE_LABEL = "Interface"

# Relationship types known in advance get an index on their ID at bootstrap.
KNOWN_RELATION_TYPES = ("ownership", "layer2", "mirroring", "vf", "vlayer2", "connected",
                        "multipath", "mapping", "networkpolicy")

# Flow properties with an index: every field the Gremlin flow steps and the GraphQL
# filters look flows up by (gremlin/lookups.py LOOKUP_RANK; tests/unit/gremlin/
# test_flow_lookups.py keeps the two in step), parent links (ParentUUID), the
# history window (Start, Last) and the agent's flows (Host).
FLOW_INDEXED = ("TrackingID", "L3TrackingID", "NodeTID", "CaptureID", "ParentUUID", "Last",
                "Start", "Application", "LayersPath", "Network.A", "Network.B", "Link.A",
                "Link.B", "Transport.A", "Transport.B", "Host")
# Indexed properties holding integers, by label. The embedded server types an
# index's keys when it is created: STRING unless the label already has a node
# with the property, and on STRING keys an integer range scans the label. So
# bootstrap creates one throw-away node per label carrying them first
# (`INDEX_TYPE_SEED`, deleted at the end; dialect.py). Neo4j ignores it.
INTEGER_INDEXED: Mapping[str, tuple[str, ...]] = {
    FLOW_LABEL: ("Start", "Last", "Transport.A", "Transport.B", "UpdatedAt"),
    FLOW_METRIC_LABEL: ("Last", "UpdatedAt"),
}
INDEX_TYPE_SEED = "_skygraph_index_types"
_SEED_KEYS = {FLOW_LABEL: "UUID", FLOW_METRIC_LABEL: ARCHIVE_KEY}
_SEED_VALUE = 2**62  # beyond int32: the keys become LONG

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REL_CLEAN = re.compile(r"[^A-Za-z0-9_]")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def kind_label(node_type: str) -> str | None:
    """The kind label for a node `Type`, or None for an unknown type."""
    if node_type in KIND_LABELS:
        return KIND_LABELS[node_type]
    if node_type in INTERFACE_TYPES:
        return INTERFACE_LABEL
    return None


def relationship_type(relation_type: str) -> str:
    """`RelationType` -> Cypher relationship type: upper-cased, other characters as `_`."""
    cleaned = _REL_CLEAN.sub("_", relation_type.upper())
    if not cleaned or cleaned[0].isdigit():
        cleaned = "R_" + cleaned
    return cleaned


def quote(name: str) -> str:
    """Backquote a label, relationship type or property key for Cypher text."""
    return "`" + name.replace("`", "``") + "`"


def check_identifier(name: str) -> str:
    """Accept only plain identifiers where a label or relationship type is pasted into Cypher."""
    if not _IDENT.match(name):
        raise ValueError(f"not a valid Cypher identifier: {name!r}")
    return name


# ---------------------------------------------------------------- properties

def to_properties(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten metadata into Bolt-storable properties (plus `_json` when needed)."""
    props: dict[str, Any] = {}
    json_paths: list[str] = []
    _flatten(metadata, [], props, json_paths)
    if json_paths:
        props[JSON_KEYS] = json_paths
    return props


def from_properties(props: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild metadata from stored properties (internal properties are skipped)."""
    meta: dict[str, Any] = {}
    encoded = props.get(JSON_KEYS) or []
    json_props = set()
    for path_text in encoded:
        path = json.loads(path_text)
        prop = ".".join(path)
        json_props.add(prop)
        if prop in props:
            _set_path(meta, path, json.loads(props[prop]))
    for key, value in props.items():
        if key in INTERNAL_PROPERTIES or key in json_props:
            continue
        _set_path(meta, key.split("."), value)
    return meta


def _flatten(value: Mapping[str, Any], path: list[str], props: dict[str, Any],
             json_paths: list[str]) -> None:
    # Hot on every write: exact type checks first, the generic rules after.
    prefix = ".".join(path) + "." if path else ""
    for key, item in value.items():
        t = type(item)
        if "." not in key:
            if t is str or t is bool or t is float or (
                    t is int and INT64_MIN <= item <= INT64_MAX):
                props[prefix + key] = item
                continue
            if t is dict or isinstance(item, Mapping):
                if item and not any("." in k for k in item):
                    _flatten(item, [*path, key], props, json_paths)
                    continue
            elif isinstance(item, (list, tuple)) and _storable_list(item):
                props[prefix + key] = list(item)
                continue
        props[prefix + key] = json.dumps(item, separators=(",", ":"), sort_keys=True)
        json_paths.append(json.dumps([*path, key], separators=(",", ":")))


def _storable_list(value: list[Any] | tuple[Any, ...]) -> bool:
    """A non-empty list of one scalar type (ints within int64) is stored as a list."""
    if not value:
        return False
    first = type(value[0])
    if first not in (str, bool, int, float) or any(type(v) is not first for v in value):
        return False
    return first is not int or all(INT64_MIN <= v <= INT64_MAX for v in value)


def _set_path(meta: dict[str, Any], path: list[str], value: Any) -> None:
    cur = meta
    for part in path[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[path[-1]] = value


# ---------------------------------------------------------------- schema DDL

def schema_statements() -> list[str]:
    """Constraints and indexes, idempotent (`IF NOT EXISTS`), in Neo4j 5 syntax."""
    stmts = [
        "CREATE CONSTRAINT node_id IF NOT EXISTS FOR (n:Node) REQUIRE n.ID IS UNIQUE",
        "CREATE CONSTRAINT archived_node_key IF NOT EXISTS "
        "FOR (n:ArchivedNode) REQUIRE n._key IS UNIQUE",
        "CREATE CONSTRAINT archived_edge_key IF NOT EXISTS "
        "FOR (n:ArchivedEdge) REQUIRE n._key IS UNIQUE",
        # API resources (captures), outside the topology (no :Node label).
        "CREATE CONSTRAINT capture_uuid IF NOT EXISTS FOR (c:Capture) REQUIRE c.UUID IS UNIQUE",
    ]
    for prop in ("Name", "Type", "TID", "MAC", "PeerIntfMAC", "Host"):
        stmts.append(f"CREATE INDEX node_{prop.lower()} IF NOT EXISTS FOR (n:Node) ON (n.{prop})")
    # Flows: one node per UUID; the keys flows are looked up by.
    stmts.append("CREATE CONSTRAINT flow_uuid IF NOT EXISTS FOR (f:Flow) REQUIRE f.UUID IS UNIQUE")
    stmts += index_seed_statements()
    for prop in FLOW_INDEXED:
        stmts.append(flow_index_statement(prop))
    # A flow's metric samples and raw packets: keyed (replays change nothing). The
    # retention prunes flows and samples by when they were written (`UpdatedAt`).
    stmts += [
        "CREATE CONSTRAINT flow_metric_key IF NOT EXISTS FOR (m:FlowMetric) REQUIRE m._key IS UNIQUE",
        "CREATE INDEX flow_metric_last IF NOT EXISTS FOR (m:FlowMetric) ON (m.Last)",
        "CREATE INDEX flow_metric_updated_at IF NOT EXISTS FOR (m:FlowMetric) ON (m.UpdatedAt)",
        "CREATE INDEX flow_updated_at IF NOT EXISTS FOR (f:Flow) ON (f.UpdatedAt)",
        "CREATE CONSTRAINT raw_packet_key IF NOT EXISTS FOR (p:RawPacket) REQUIRE p._key IS UNIQUE",
    ]
    for prop in ("ID", "ArchivedAt"):
        stmts.append(f"CREATE INDEX archived_node_{prop.lower()} IF NOT EXISTS "
                     f"FOR (n:ArchivedNode) ON (n.{prop})")
    for prop in ("ID", "Parent", "Child", "ArchivedAt"):
        stmts.append(f"CREATE INDEX archived_edge_{prop.lower()} IF NOT EXISTS "
                     f"FOR (n:ArchivedEdge) ON (n.{prop})")
    for rel in KNOWN_RELATION_TYPES:
        stmts.append(relationship_index_statement(relationship_type(rel)))
    stmts += index_seed_statements(delete=True)
    return stmts


def flow_index_name(prop: str) -> str:
    """`Network.A` -> `flow_network_a` (existing names unchanged: `flow_last`)."""
    return "flow_" + check_identifier(prop.replace(".", "_")).lower()


def flow_index_statement(prop: str) -> str:
    return (f"CREATE INDEX {flow_index_name(prop)} IF NOT EXISTS "
            f"FOR (f:{quote(FLOW_LABEL)}) ON (f.{quote(prop)})")


def index_seed_statements(delete: bool = False) -> list[str]:
    """The throw-away nodes that give integer index keys their type (see
    INTEGER_INDEXED); with `delete`, the statements removing them."""
    stmts = []
    for label, props in INTEGER_INDEXED.items():
        node = f"(s:{quote(label)} {{{quote(_SEED_KEYS[label])}: '{INDEX_TYPE_SEED}'}})"
        if delete:
            stmts.append(f"MATCH {node} DETACH DELETE s")
        else:
            sets = ", ".join(f"s.{quote(p)} = {_SEED_VALUE}" for p in props)
            stmts.append(f"MERGE {node} SET {sets}")
    return stmts


def relationship_index_statement(rel_type: str) -> str:
    check_identifier(rel_type)
    return (f"CREATE INDEX rel_{rel_type.lower()}_id IF NOT EXISTS "
            f"FOR ()-[r:{quote(rel_type)}]-() ON (r.ID)")
