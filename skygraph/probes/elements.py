"""How probes put nodes and edges into the shared in-memory graph.

- A probe only sets and removes the metadata keys it manages: a node fed by
  two probes (an OVS internal port seen by netlink and by OVSDB, SPEC §1a)
  keeps both sets of keys.
- Links get Skydive's deterministic edge IDs (`ids.edge_id`).
- TIDs follow `ids.tid`: recomputed when a node's Name or Type changes or its
  ownership parent changes, and passed down to what it owns.

All calls happen on the agent's event loop, one at a time, like Skydive's
probes under the graph lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from skygraph.topology import ids
from skygraph.topology.graph import Graph
from skygraph.topology.model import LAYER2, OWNERSHIP, Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    MetadataOp,
    NodeAdded,
    NodeDeleted,
    NodePartiallyUpdated,
)


class Writer:
    def __init__(self, graph: Graph, host_id: str, origin: str = "") -> None:
        self.graph = graph
        self.host_id = host_id
        self.origin = origin or f"agent.{host_id}"
        self.host_tid = ids.host_tid(host_id)
        self._names: dict[str, set[str]] = {}
        self.touched: set[str] = set()   # IDs of what probes announced since `load()`

    # ------------------------------------------------------------ reads
    def node(self, ident: str) -> Node | None:
        return self.graph.nodes.get(ident)

    def named(self, name: str) -> list[Node]:
        """Nodes whose Name is `name` (for the OVS/netlink merge rules)."""
        return [self.graph.nodes[i] for i in sorted(self._names.get(name, ()))
                if i in self.graph.nodes]

    def owner(self, ident: str) -> Node | None:
        for e in self.graph.edges_of(ident):
            if e.relation_type == OWNERSHIP and e.Child == ident:
                return self.graph.nodes.get(e.Parent)
        return None

    def owned(self, ident: str) -> list[Node]:
        return [self.graph.nodes[e.Child] for e in self.graph.edges_of(ident)
                if e.relation_type == OWNERSHIP and e.Parent == ident]

    def links(self, ident: str, relation: str = LAYER2) -> list[Edge]:
        return [e for e in self.graph.edges_of(ident) if e.relation_type == relation]

    # ------------------------------------------------------------ resync
    def load(self, nodes: Iterable[Node], edges: Iterable[Edge]) -> None:
        """Seed the graph with this host's elements from the store (agent restart),
        keeping their revisions; `sweep` later deletes those no probe announced."""
        for n in nodes:
            self.graph.apply_nowait(NodeAdded(n))
            self._index(n.ID, None, n.Metadata.get("Name"))
        for e in edges:
            if e.Parent in self.graph.nodes and e.Child in self.graph.nodes:
                self.graph.apply_nowait(EdgeAdded(e))
        self.touched.clear()

    async def sweep(self) -> int:
        """Delete this host's nodes and edges not announced since `load`; return how many."""
        stale_edges = [e for e in self.graph.edges.values()
                       if e.Host == self.host_id and e.ID not in self.touched]
        for e in stale_edges:
            if e.ID in self.graph.edges:
                await self.graph.apply(EdgeDeleted(e))
        stale = [n.ID for n in self.graph.nodes.values()
                 if n.Host == self.host_id and n.ID not in self.touched]
        for ident in stale:
            await self.delete(ident)
        return len(stale) + len(stale_edges)

    # ------------------------------------------------------------ nodes
    async def put(self, ident: str, keys: Mapping[str, Any], drop: Iterable[str] = ()) -> Node:
        """Create node `ident` with `keys`, or set `keys` and remove `drop` on it."""
        self.touched.add(ident)
        old = self.graph.nodes.get(ident)
        if old is None:
            meta = dict(keys)
            node = Node(ident, meta, Host=self.host_id, Origin=self.origin)
            await self.graph.apply(NodeAdded(node))
            self._index(ident, None, meta.get("Name"))
            await self._retid(ident)
            return self.graph.nodes[ident]
        ops = [MetadataOp(k, v) for k, v in keys.items() if old.Metadata.get(k, _ABSENT) != v]
        ops += [MetadataOp(k, delete=True) for k in drop if k in old.Metadata and k not in keys]
        if ops:
            await self.graph.apply(NodePartiallyUpdated(ident, tuple(ops)))
            self._index(ident, old.Metadata.get("Name"), self.graph.nodes[ident].Metadata.get("Name"))
            if any(op.key in ("Name", "Type", "Path", "UUID") for op in ops):
                await self._retid(ident)
        return self.graph.nodes[ident]

    async def delete(self, ident: str) -> None:
        node = self.graph.nodes.get(ident)
        if node is not None:
            await self.graph.apply(NodeDeleted(node))
            self._index(ident, node.Metadata.get("Name"), None)

    def _index(self, ident: str, old: Any, new: Any) -> None:
        if old == new:
            return
        if isinstance(old, str) and old in self._names:
            self._names[old].discard(ident)
            if not self._names[old]:
                del self._names[old]
        if isinstance(new, str):
            self._names.setdefault(new, set()).add(ident)

    async def delete_tree(self, ident: str) -> None:
        """Delete `ident` and, depth first, everything it owns."""
        for child in self.owned(ident):
            await self.delete_tree(child.ID)
        await self.delete(ident)

    # ------------------------------------------------------------ edges
    async def link(self, parent: str, child: str, relation: str,
                   meta: Mapping[str, Any] | None = None) -> str:
        ident = ids.edge_id(parent, child, relation)
        if parent not in self.graph.nodes or child not in self.graph.nodes:
            return ident  # an end is still being announced: its own event links it
        metadata = {"RelationType": relation, **(meta or {})}
        self.touched.add(ident)
        old = self.graph.edges.get(ident)
        if old is not None and dict(old.Metadata) == metadata:
            return ident
        await self.graph.apply(EdgeAdded(Edge(ident, parent, child, metadata,
                                              Host=self.host_id, Origin=self.origin)))
        if relation == OWNERSHIP and old is None:
            await self._retid(child)
        return ident

    async def unlink(self, parent: str, child: str, relation: str) -> None:
        ident = ids.edge_id(parent, child, relation)
        edge = self.graph.edges.get(ident)
        if edge is not None:
            await self.graph.apply(EdgeDeleted(edge))
            if relation == OWNERSHIP:
                await self._retid(child)

    async def own(self, parent: str, child: str) -> None:
        await self.link(parent, child, OWNERSHIP)

    # ------------------------------------------------------------ TIDs
    async def _retid(self, ident: str) -> None:
        node = self.graph.nodes.get(ident)
        if node is None:
            return
        owner = self.owner(ident)
        owner_tid = owner.Metadata.get("TID") if owner is not None else None
        new = ids.tid(ident, node.Metadata, self.host_tid,
                      owner_tid if isinstance(owner_tid, str) else None)
        if new == node.Metadata.get("TID"):
            return
        op = MetadataOp("TID", new) if new is not None else MetadataOp("TID", delete=True)
        await self.graph.apply(NodePartiallyUpdated(ident, (op,)))
        for child in self.owned(ident):
            await self._retid(child.ID)


class _Absent:
    pass


_ABSENT = _Absent()
