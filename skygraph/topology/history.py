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


def visible_at(x: str, t: str) -> str:
    """Cypher condition: revision `x` is the one visible at time point `t`
    (a parameter or expression). Live elements pass on their start alone."""
    return (f"{x}.CreatedAt <= {t} AND {x}.UpdatedAt <= {t} AND "
            f"({x}.DeletedAt IS NULL OR {x}.DeletedAt > {t}) AND "
            f"({x}.ArchivedAt IS NULL OR {x}.ArchivedAt > {t})")


def visible_in(x: str, start: str, end: str) -> str:
    """Cypher condition: revision `x` is alive at some instant of [start, end]."""
    return (f"{x}.CreatedAt <= {end} AND {x}.UpdatedAt <= {end} AND "
            f"({x}.DeletedAt IS NULL OR {x}.DeletedAt >= {start}) AND "
            f"({x}.ArchivedAt IS NULL OR {x}.ArchivedAt >= {start})")


def _union(nodes: bool, cond: str, x: str, key: str = "") -> str:
    """Live and archived revisions of nodes (or edges) that satisfy `cond`."""
    live = f"MATCH ({x}:Node{key})" if nodes else f"MATCH (:Node)-[{x}{key}]->(:Node)"
    archived = f"MATCH ({x}:{'ArchivedNode' if nodes else 'ArchivedEdge'}{key})"
    return (f"{live} WHERE {cond} RETURN properties({x}) AS p UNION ALL "
            f"{archived} WHERE {cond} RETURN properties({x}) AS p")


LIVE_NODES = "MATCH (n:Node) RETURN properties(n) AS p"
LIVE_EDGES = "MATCH (:Node)-[e]->(:Node) RETURN properties(e) AS p"
NODES_AT = _union(True, visible_at("n", "$t"), "n")
EDGES_AT = _union(False, visible_at("e", "$t"), "e")
NODES_IN = _union(True, visible_in("n", "$start", "$end"), "n")
EDGES_IN = _union(False, visible_in("e", "$start", "$end"), "e")
NODE_LIVE = "MATCH (n:Node {ID: $id}) RETURN properties(n) AS p"
NODE_AT = _union(True, visible_at("n", "$t"), "n", " {ID: $id}")


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
