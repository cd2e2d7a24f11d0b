"""The in-memory graph: applies mutations with Skydive's rules and publishes
every applied change, resolved to full states, on the event bus.

Rules kept from Skydive (graffiti/graph/graph.go, topology.go):
- nodes need `Type` and `Name`, edges `RelationType` (model.validate_*);
- an edge's endpoints must exist;
- `ownership` is exclusive: adding an ownership edge to a child first deletes
  any other ownership edge whose child is that node;
- deleting a node deletes its edges first;
- every update increments `Revision` and moves `UpdatedAt` forward.
Time comes from an injected clock (ms epoch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from skygraph.topology.bus import EventBus
from skygraph.topology.errors import NotFoundError, ValidationError
from skygraph.topology.model import OWNERSHIP, Edge, Node, validate_edge, validate_node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgePartiallyUpdated,
    EdgeUpdated,
    Mutation,
    NodeAdded,
    NodeDeleted,
    NodePartiallyUpdated,
    NodeUpdated,
    StoreMutation,
    apply_ops,
)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Graph:
    def __init__(self, bus: EventBus[StoreMutation] | None = None,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.bus = bus
        self.clock = clock
        self.nodes: dict[str, Node] = {}
        self.edges: dict[str, Edge] = {}
        self._incident: dict[str, set[str]] = {}

    # ------------------------------------------------------------ reads
    def edges_of(self, node_id: str) -> list[Edge]:
        return [self.edges[e] for e in sorted(self._incident.get(node_id, ()))]

    def load(self, nodes: Iterable[Node], edges: Iterable[Edge]) -> None:
        """Seed the graph from the store (process start) without publishing, keeping
        revisions; edges whose ends are not loaded are skipped."""
        for n in nodes:
            self.apply_nowait(NodeAdded(n))
        for e in edges:
            if e.Parent in self.nodes and e.Child in self.nodes:
                self.apply_nowait(EdgeAdded(e))

    # ------------------------------------------------------------ apply
    async def apply(self, mutation: Mutation) -> list[StoreMutation]:
        """Apply one mutation; publish and return what it changed (full states)."""
        applied = self.apply_nowait(mutation)
        if self.bus is not None:
            for m in applied:
                await self.bus.publish(m)
        return applied

    async def apply_all(self, mutations: Iterable[Mutation]) -> list[StoreMutation]:
        out: list[StoreMutation] = []
        for m in mutations:
            out.extend(await self.apply(m))
        return out

    def apply_nowait(self, mutation: Mutation) -> list[StoreMutation]:
        """Apply one mutation without publishing; return what it changed."""
        match mutation:
            case NodeAdded(node=node):
                return self._add_node(node)
            case NodeUpdated(node=node):
                return self._update_node(node.ID, dict(node.Metadata), node.UpdatedAt)
            case NodePartiallyUpdated(id=ident, ops=ops, updated_at=at):
                old = self._node(ident)
                return self._update_node(ident, apply_ops(dict(old.Metadata), ops), at)
            case NodeDeleted(node=node):
                return self._delete_node(node.ID, node.DeletedAt)
            case EdgeAdded(edge=edge):
                return self._add_edge(edge)
            case EdgeUpdated(edge=edge):
                return self._update_edge(edge.ID, dict(edge.Metadata), edge.UpdatedAt)
            case EdgePartiallyUpdated(id=ident, ops=ops, updated_at=at):
                olde = self._edge(ident)
                return self._update_edge(ident, apply_ops(dict(olde.Metadata), ops), at)
            case EdgeDeleted(edge=edge):
                return self._delete_edge(edge.ID, edge.DeletedAt)
        raise TypeError(f"not a mutation: {mutation!r}")

    # ------------------------------------------------------------ nodes
    def _add_node(self, node: Node) -> list[StoreMutation]:
        validate_node(node)
        if node.ID in self.nodes:
            # A node announced again (resync): an update if anything changed.
            old = self.nodes[node.ID]
            if dict(old.Metadata) == dict(node.Metadata):
                return []
            return self._update_node(node.ID, dict(node.Metadata), node.UpdatedAt)
        now = self.clock()
        created = node.CreatedAt or now
        node = node.with_(CreatedAt=created, UpdatedAt=max(node.UpdatedAt or created, created),
                          Revision=node.Revision or 1, DeletedAt=None)
        self.nodes[node.ID] = node
        return [NodeAdded(node)]

    def _update_node(self, ident: str, metadata: dict[str, Any], at: int) -> list[StoreMutation]:
        old = self._node(ident)
        new = old.with_(Metadata=metadata, Revision=old.Revision + 1,
                        UpdatedAt=max(at or self.clock(), old.UpdatedAt))
        validate_node(new)
        self.nodes[ident] = new
        return [NodeUpdated(new)]

    def _delete_node(self, ident: str, at: int | None) -> list[StoreMutation]:
        node = self._node(ident)
        when = max(at or self.clock(), node.UpdatedAt)
        out: list[StoreMutation] = []
        for edge in self.edges_of(ident):
            out.extend(self._delete_edge(edge.ID, when))
        del self.nodes[ident]
        self._incident.pop(ident, None)
        out.append(NodeDeleted(node.with_(DeletedAt=when)))
        return out

    # ------------------------------------------------------------ edges
    def _add_edge(self, edge: Edge) -> list[StoreMutation]:
        validate_edge(edge)
        where = f"edge {edge.ID}"
        for field, end in (("Parent", edge.Parent), ("Child", edge.Child)):
            if end not in self.nodes:
                raise ValidationError(where, field, f"node {end} does not exist")
        if edge.ID in self.edges:
            old = self.edges[edge.ID]
            if (old.Parent, old.Child) != (edge.Parent, edge.Child):
                raise ValidationError(where, "Parent/Child",
                                      "an existing edge cannot change its endpoints")
            if dict(old.Metadata) == dict(edge.Metadata):
                return []
            return self._update_edge(edge.ID, dict(edge.Metadata), edge.UpdatedAt)
        out: list[StoreMutation] = []
        now = self.clock()
        if edge.relation_type == OWNERSHIP:
            for other in self.edges_of(edge.Child):
                if other.relation_type == OWNERSHIP and other.Child == edge.Child:
                    out.extend(self._delete_edge(other.ID, now))
        created = edge.CreatedAt or now
        edge = edge.with_(CreatedAt=created, UpdatedAt=max(edge.UpdatedAt or created, created),
                          Revision=edge.Revision or 1, DeletedAt=None)
        self.edges[edge.ID] = edge
        self._incident.setdefault(edge.Parent, set()).add(edge.ID)
        self._incident.setdefault(edge.Child, set()).add(edge.ID)
        out.append(EdgeAdded(edge))
        return out

    def _update_edge(self, ident: str, metadata: dict[str, Any], at: int) -> list[StoreMutation]:
        old = self._edge(ident)
        new = old.with_(Metadata=metadata, Revision=old.Revision + 1,
                        UpdatedAt=max(at or self.clock(), old.UpdatedAt))
        validate_edge(new)
        self.edges[ident] = new
        return [EdgeUpdated(new)]

    def _delete_edge(self, ident: str, at: int | None) -> list[StoreMutation]:
        edge = self._edge(ident)
        del self.edges[ident]
        for end in (edge.Parent, edge.Child):
            self._incident.get(end, set()).discard(ident)
        return [EdgeDeleted(edge.with_(DeletedAt=max(at or self.clock(), edge.UpdatedAt)))]

    def _node(self, ident: str) -> Node:
        try:
            return self.nodes[ident]
        except KeyError:
            raise NotFoundError(f"node {ident} does not exist") from None

    def _edge(self, ident: str) -> Edge:
        try:
            return self.edges[ident]
        except KeyError:
            raise NotFoundError(f"edge {ident} does not exist") from None
