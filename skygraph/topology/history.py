"""Reading the graph and its history: Cypher for the live graph, the graph at
a time point, and every revision in a time slice; records back to elements.

A revision (live element or ArchivedNode/ArchivedEdge) is visible
- at time point t: CreatedAt <= t AND UpdatedAt <= t AND
  (DeletedAt IS NULL OR DeletedAt > t) AND (ArchivedAt IS NULL OR ArchivedAt > t),
  which gives at most one revision per element;
- in the slice [start, end] (Skydive's filter, SPEC §1h): CreatedAt <= end AND
  UpdatedAt <= end AND (DeletedAt IS NULL OR DeletedAt >= start) AND
  (ArchivedAt IS NULL OR ArchivedAt >= start).
Live elements carry neither DeletedAt nor ArchivedAt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skygraph.topology.model import Edge, Node
from skygraph.topology.schema import from_properties

_LIVE_EDGE = "MATCH (:Node)-[e]->(:Node) {where} RETURN properties(e) AS p"
_ARCH_EDGE = "MATCH (e:ArchivedEdge) {where} RETURN properties(e) AS p"

LIVE_NODES = "MATCH (n:Node) RETURN properties(n) AS p"
LIVE_EDGES = _LIVE_EDGE.format(where="")

_AT = "{x}.CreatedAt <= $t AND {x}.UpdatedAt <= $t"
_ARCH_AT = (_AT + " AND {x}.ArchivedAt > $t AND ({x}.DeletedAt IS NULL OR {x}.DeletedAt > $t)")
_IN = "{x}.CreatedAt <= $end AND {x}.UpdatedAt <= $end"
_ARCH_IN = (_IN + " AND {x}.ArchivedAt >= $start AND "
            "({x}.DeletedAt IS NULL OR {x}.DeletedAt >= $start)")

NODES_AT = (f"MATCH (n:Node) WHERE {_AT.format(x='n')} RETURN properties(n) AS p UNION ALL "
            f"MATCH (n:ArchivedNode) WHERE {_ARCH_AT.format(x='n')} RETURN properties(n) AS p")
EDGES_AT = (_LIVE_EDGE.format(where="WHERE " + _AT.format(x="e")) + " UNION ALL "
            + _ARCH_EDGE.format(where="WHERE " + _ARCH_AT.format(x="e")))
NODES_IN = (f"MATCH (n:Node) WHERE {_IN.format(x='n')} RETURN properties(n) AS p UNION ALL "
            f"MATCH (n:ArchivedNode) WHERE {_ARCH_IN.format(x='n')} RETURN properties(n) AS p")
EDGES_IN = (_LIVE_EDGE.format(where="WHERE " + _IN.format(x="e")) + " UNION ALL "
            + _ARCH_EDGE.format(where="WHERE " + _ARCH_IN.format(x="e")))

NODE_LIVE = "MATCH (n:Node {ID: $id}) RETURN properties(n) AS p"
NODE_AT = (f"MATCH (n:Node {{ID: $id}}) WHERE {_AT.format(x='n')} RETURN properties(n) AS p "
           f"UNION ALL MATCH (n:ArchivedNode {{ID: $id}}) WHERE {_ARCH_AT.format(x='n')} "
           "RETURN properties(n) AS p")


def node_from_record(record: Mapping[str, Any]) -> Node:
    p = record["p"]
    return Node(ID=p["ID"], Metadata=from_properties(p), Host=p.get("Host") or "",
                Origin=p.get("Origin") or "", CreatedAt=p.get("CreatedAt") or 0,
                UpdatedAt=p.get("UpdatedAt") or 0, Revision=p.get("Revision") or 0,
                DeletedAt=p.get("DeletedAt"))


def edge_from_record(record: Mapping[str, Any]) -> Edge:
    p = record["p"]
    return Edge(ID=p["ID"], Parent=p["Parent"], Child=p["Child"], Metadata=from_properties(p),
                Host=p.get("Host") or "", Origin=p.get("Origin") or "",
                CreatedAt=p.get("CreatedAt") or 0, UpdatedAt=p.get("UpdatedAt") or 0,
                Revision=p.get("Revision") or 0, DeletedAt=p.get("DeletedAt"))
