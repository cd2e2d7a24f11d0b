"""Compile a batch of mutations into the Cypher statements that apply it.

Pure: the store reads the stored revision of every element the batch touches
(`stored_*_query`), then `compile_batch` decides, per element, what to
archive and what to write, and returns statements to run in one transaction,
in order. Properties: see schema.py.

Per element, the batch's events (upserts and deletes, in order) are applied
after the stored revision:
- events up to the one equal to the stored revision (same Revision and
  UpdatedAt) were applied already and are skipped, so replaying a batch
  changes nothing;
- the stored revision is archived when the first remaining event replaces it
  (ArchivedAt = that event's time, DeletedAt as well when it is a delete);
- every intermediate revision of the batch is archived;
- the last event decides the live element: updated in place, created, or
  deleted (a node's remaining edges are archived and deleted with it).
Archived revisions are keyed `ID/Revision/UpdatedAt`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skygraph.topology.flowschema import LINK_NEW_NODE
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgeUpdated,
    NodeAdded,
    NodeDeleted,
    NodeUpdated,
    StoreMutation,
)
from skygraph.topology.schema import NODE_LABEL, kind_label, quote, relationship_type, to_properties

STORED_NODES_QUERY = (
    "UNWIND $ids AS id MATCH (n:Node {ID: id}) "
    "RETURN n.ID AS id, n.UpdatedAt AS u, n.Revision AS r, labels(n) AS l"
)
STORED_EDGES_QUERY = (
    "UNWIND $rows AS row MATCH (a:Node {ID: row.p})-[e]->(b:Node {ID: row.c}) "
    "WHERE e.ID = row.id RETURN e.ID AS id, e.UpdatedAt AS u, e.Revision AS r, type(e) AS t"
)
# For elements not live: when were they last deleted (stale events come before that).
DELETED_NODES_QUERY = (
    "UNWIND $ids AS id MATCH (a:ArchivedNode {ID: id}) WHERE a.DeletedAt IS NOT NULL "
    "RETURN id, max(a.DeletedAt) AS d"
)
DELETED_EDGES_QUERY = (
    "UNWIND $ids AS id MATCH (a:ArchivedEdge {ID: id}) WHERE a.DeletedAt IS NOT NULL "
    "RETURN id, max(a.DeletedAt) AS d"
)


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store holds now for an element: its revision and labels or type."""

    updated_at: int
    revision: int
    labels: frozenset[str] = frozenset()
    rel_type: str = ""
    # Set when the element is not live: the time of its last deletion.
    deleted_at: int | None = None

    @property
    def live(self) -> bool:
        return self.deleted_at is None


@dataclass(frozen=True, slots=True)
class Known:
    """The properties this process last wrote for an element, at that revision.

    When the stored revision is this one, the archive is built from these
    properties and the update sends only what changed: copying
    `properties(n)` on the server costs more than the update itself.
    """

    revision: int
    updated_at: int
    props: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Statement:
    cypher: str
    params: dict[str, Any]
    # Rows of edges this statement creates (it returns how many it created; a
    # shortfall means an endpoint went away meanwhile: see MISSING_ENDS_QUERY).
    creates_edges: tuple[dict[str, str], ...] = ()
    # Nodes this statement updates only if they are still at the revision the
    # store remembers (it returns how many it updated; a shortfall means the
    # memory is stale: the store forgets these nodes and applies the batch again).
    guarded: tuple[str, ...] = ()


@dataclass
class BatchPlan:
    statements: list[Statement] = field(default_factory=list)
    # Nodes whose kind label changes: the store must read their edges (`attached`)
    # and compile again, because the node is re-created and its edges with it.
    needs_attached: list[str] = field(default_factory=list)

    # Edges not written because an endpoint is not in the graph (the writer defers them).
    deferred_edges: list[str] = field(default_factory=list)
    # What the live elements are once the plan is applied (None: deleted), for Known.
    written_nodes: dict[str, Known | None] = field(default_factory=dict)
    written_edges: dict[str, Known | None] = field(default_factory=dict)


def touched(mutations: Sequence[StoreMutation]) -> tuple[list[str], list[dict[str, str]]]:
    """What the plan needs to know the stored state of: the nodes the batch
    changes and its edges (id, parent, child)."""
    nodes: dict[str, None] = {}
    edges: dict[str, dict[str, str]] = {}
    for m in mutations:
        if isinstance(m, (NodeAdded, NodeUpdated, NodeDeleted)):
            nodes[m.node.ID] = None
        else:
            e = m.edge
            edges[e.ID] = {"id": e.ID, "p": e.Parent, "c": e.Child}
    return list(nodes), list(edges.values())


def archive_key(ident: str, revision: int, updated_at: int) -> str:
    return f"{ident}/{revision}/{updated_at}"


def node_properties(node: Node) -> dict[str, Any]:
    props = to_properties(node.Metadata)
    props.update(ID=node.ID, Host=node.Host, Origin=node.Origin, CreatedAt=node.CreatedAt,
                 UpdatedAt=node.UpdatedAt, Revision=node.Revision)
    return props


def edge_properties(edge: Edge) -> dict[str, Any]:
    props = to_properties(edge.Metadata)
    props.update(ID=edge.ID, Parent=edge.Parent, Child=edge.Child, Host=edge.Host,
                 Origin=edge.Origin, CreatedAt=edge.CreatedAt, UpdatedAt=edge.UpdatedAt,
                 Revision=edge.Revision)
    return props


def node_labels(node: Node) -> tuple[str, ...]:
    kind = kind_label(node.type)
    return (NODE_LABEL, kind) if kind else (NODE_LABEL,)


@dataclass(frozen=True, slots=True)
class _Event:
    delete: bool
    element: Node | Edge

    @property
    def time(self) -> int:
        e = self.element
        return (e.DeletedAt or e.UpdatedAt) if self.delete else e.UpdatedAt


def _group(mutations: Sequence[StoreMutation]) -> tuple[dict[str, list[_Event]],
                                                        dict[str, list[_Event]]]:
    nodes: dict[str, list[_Event]] = {}
    edges: dict[str, list[_Event]] = {}
    for m in mutations:
        if isinstance(m, (NodeAdded, NodeUpdated, NodeDeleted)):
            nodes.setdefault(m.node.ID, []).append(_Event(isinstance(m, NodeDeleted), m.node))
        elif isinstance(m, (EdgeAdded, EdgeUpdated, EdgeDeleted)):
            edges.setdefault(m.edge.ID, []).append(_Event(isinstance(m, EdgeDeleted), m.edge))
    return nodes, edges


def _remaining(events: list[_Event], stored: Stored | None) -> list[_Event]:
    """The events not older than what is stored (a replayed or stale prefix is dropped)."""
    if stored is None:
        return events
    start = 0
    for i, ev in enumerate(events):
        if _stale(ev, stored):
            start = i + 1
    return events[start:]


def _stale(ev: _Event, stored: Stored) -> bool:
    if stored.deleted_at is not None:
        return ev.time <= stored.deleted_at
    if ev.delete:
        return ev.time < stored.updated_at
    return (ev.element.UpdatedAt, ev.element.Revision) <= (stored.updated_at, stored.revision)


def _archive_rows(events: list[_Event], props_of: Any) -> list[dict[str, Any]]:
    """Archive rows for every upsert event followed by another event of the batch."""
    rows = []
    for ev, nxt in itertools.pairwise(events):
        if ev.delete:
            continue
        el = ev.element
        props = props_of(el)
        props["ArchivedAt"] = nxt.time
        if nxt.delete:
            props["DeletedAt"] = nxt.time
        key = archive_key(el.ID, el.Revision, el.UpdatedAt)
        props["_key"] = key
        rows.append({"key": key, "props": props})
    return rows


# Which of these edge rows lack an endpoint (after a create fell short).
MISSING_ENDS_QUERY = (
    "UNWIND $rows AS row OPTIONAL MATCH (a:Node {ID: row.p}) OPTIONAL MATCH (b:Node {ID: row.c}) "
    "WITH row, a, b WHERE a IS NULL OR b IS NULL RETURN row.ID AS id"
)
ATTACHED_EDGES_QUERY = (
    "UNWIND $ids AS id MATCH (n:Node {ID: id})-[e]-(o) WHERE 'Node' IN labels(o) WITH DISTINCT e "
    "RETURN e.ID AS id, type(e) AS t, startNode(e).ID AS p, endNode(e).ID AS c, "
    "properties(e) AS props"
)


def compile_batch(mutations: Sequence[StoreMutation], stored_nodes: Mapping[str, Stored],
                  stored_edges: Mapping[str, Stored],
                  attached: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                  known_nodes: Mapping[str, Known] | None = None,
                  known_edges: Mapping[str, Known] | None = None) -> BatchPlan:
    """Statements applying `mutations` over the stored state.

    `attached` maps a node whose kind label changes to its edges as stored
    (rows of ATTACHED_EDGES_QUERY); without it such nodes are listed in
    `needs_attached` and the plan is incomplete.
    """
    node_events, edge_events = _group(mutations)
    nodes = plan_nodes(node_events, stored_nodes, attached, known_nodes or {},
                       set(edge_events))
    edges = plan_edges(edge_events, {k: v for k, v in stored_edges.items()
                                     if k not in nodes.recreated_edges}, known_edges or {})
    deferred = defer_edges_of_deleted_nodes(edges, nodes.deleted)
    return BatchPlan(statements=statement_order(nodes, edges),
                     needs_attached=nodes.needs_attached, deferred_edges=deferred,
                     written_nodes=nodes.written, written_edges=edges.written)


Rows = list[dict[str, Any]]


@dataclass
class NodePlan:
    """Rows of the node statements of a batch, by what happens to each node."""

    resets: Rows = field(default_factory=list)     # stored node removed before re-creation
    relabels: Rows = field(default_factory=list)   # re-created with another kind label
    updates: Rows = field(default_factory=list)    # updated in place, stored state copied
    diffs: Rows = field(default_factory=list)      # updated in place from a known revision
    creates: dict[tuple[str, ...], Rows] = field(default_factory=dict)  # by labels
    deletes: Rows = field(default_factory=list)
    archives: Rows = field(default_factory=list)   # intermediate revisions of the batch
    # Stored edges of relabelled nodes, re-created as they are (by relationship type).
    kept_edges: dict[str, Rows] = field(default_factory=dict)
    # Stored edges of relabelled nodes that the batch's own edge events re-create.
    recreated_edges: set[str] = field(default_factory=set)
    # Nodes whose last event is a delete (their edges in the batch are not written).
    deleted: set[str] = field(default_factory=set)
    needs_attached: list[str] = field(default_factory=list)
    written: dict[str, Known | None] = field(default_factory=dict)


@dataclass
class EdgePlan:
    """Rows of the edge statements of a batch, by what happens to each edge;
    updates, diffs and creates by relationship type."""

    resets: Rows = field(default_factory=list)
    updates: dict[str, Rows] = field(default_factory=dict)
    diffs: dict[str, Rows] = field(default_factory=dict)
    creates: dict[str, Rows] = field(default_factory=dict)
    deletes: Rows = field(default_factory=list)
    archives: Rows = field(default_factory=list)
    written: dict[str, Known | None] = field(default_factory=dict)


def plan_nodes(node_events: Mapping[str, list[_Event]], stored_nodes: Mapping[str, Stored],
               attached: Mapping[str, Sequence[Mapping[str, Any]]] | None,
               known_nodes: Mapping[str, Known], edges_in_batch: set[str]) -> NodePlan:
    """What to write for each node the batch touches, given what is stored."""
    plan = NodePlan()
    for ident, all_events in node_events.items():
        if all_events[-1].delete:
            plan.deleted.add(ident)
        stored = stored_nodes.get(ident)
        events = _remaining(all_events, stored)
        if not events:
            continue
        if stored is not None and not stored.live:
            stored = None
        plan.archives.extend(_archive_rows(events, node_properties))
        first, last = events[0], events[-1]
        first_delete = next((ev.time for ev in events if ev.delete), None)
        if stored is not None:
            stored_row = {"ID": ident, "at": first.time,
                          "deleted": first.time if first.delete else None,
                          "key": archive_key(ident, stored.revision, stored.updated_at)}
        if last.delete:
            plan.written[ident] = None
            if stored is not None:
                stored_row["edges_at"] = first_delete
                plan.deletes.append(stored_row)
            continue
        node = last.element
        assert isinstance(node, Node)
        labels = node_labels(node)
        if stored is not None and first_delete is None and set(labels) != stored.labels:
            # The kind label changes: the database may not relabel in place
            # (dialect), so the node is re-created and its edges kept as they are.
            if attached is None or ident not in attached:
                plan.needs_attached.append(ident)
                continue
            plan.relabels.append(stored_row)
            for row in attached[ident]:
                if row["id"] in edges_in_batch:
                    plan.recreated_edges.add(row["id"])
                else:
                    plan.kept_edges.setdefault(row["t"], []).append(
                        {"ID": row["id"], "p": row["p"], "c": row["c"], "props": row["props"]})
            stored = None
        elif stored is not None and first_delete is not None:
            stored_row["edges_at"] = first_delete
            plan.resets.append(stored_row)
            stored = None
        props = node_properties(node)
        plan.written[ident] = Known(node.Revision, node.UpdatedAt, props)
        if stored is None:
            plan.creates.setdefault(labels, []).append({"props": props})
        elif (k := _known_for(known_nodes.get(ident), stored)) is not None:
            plan.diffs.append({"ID": ident, "key": stored_row["key"], "r": k.revision,
                               "u": k.updated_at, "old": _archived(k, first),
                               "diff": _diff(k.props, props)})
        else:
            stored_row["props"] = props
            plan.updates.append(stored_row)
    return plan


def plan_edges(edge_events: Mapping[str, list[_Event]], stored_edges: Mapping[str, Stored],
               known_edges: Mapping[str, Known]) -> EdgePlan:
    """What to write for each edge the batch touches, given what is stored."""
    plan = EdgePlan()
    for ident, all_events in edge_events.items():
        stored = stored_edges.get(ident)
        events = _remaining(all_events, stored)
        if not events:
            continue
        if stored is not None and not stored.live:
            stored = None
        plan.archives.extend(_archive_rows(events, edge_properties))
        first, last = events[0], events[-1]
        edge = last.element
        assert isinstance(edge, Edge)
        ends = {"ID": ident, "p": edge.Parent, "c": edge.Child}
        if stored is not None:
            srow = {**ends, "at": first.time, "deleted": first.time if first.delete else None,
                    "key": archive_key(ident, stored.revision, stored.updated_at)}
        rel = relationship_type(edge.relation_type)
        if last.delete:
            plan.written[ident] = None
            if stored is not None:
                plan.deletes.append(srow)
            continue
        if stored is not None and (any(ev.delete for ev in events) or stored.rel_type != rel):
            srow["deleted"] = next((ev.time for ev in events if ev.delete), first.time)
            plan.resets.append(srow)
            stored = None
        props = edge_properties(edge)
        plan.written[ident] = Known(edge.Revision, edge.UpdatedAt, props)
        if stored is None:
            plan.creates.setdefault(rel, []).append({**ends, "props": props})
        elif (k := _known_for(known_edges.get(ident), stored)) is not None:
            plan.diffs.setdefault(rel, []).append({**ends, "key": srow["key"],
                                                   "old": _archived(k, first),
                                                   "diff": _diff(k.props, props)})
        else:
            plan.updates.setdefault(rel, []).append({**srow, "props": props})
    return plan


def defer_edges_of_deleted_nodes(edges: EdgePlan, deleted: set[str]) -> list[str]:
    """Take out of `edges` the creates whose endpoint the batch itself deletes
    (the writer defers them); their ids. An endpoint missing from the database
    is found later, by the create's count."""
    deferred: list[str] = []
    for rel, rows in edges.creates.items():
        kept = []
        for row in rows:
            if row["p"] in deleted or row["c"] in deleted:
                deferred.append(row["ID"])
                edges.written.pop(row["ID"], None)
            else:
                kept.append(row)
        edges.creates[rel] = kept
    return deferred


def statement_order(nodes: NodePlan, edges: EdgePlan) -> list[Statement]:
    """The statements of a batch in the order they must run: removals of stored
    elements first (so a re-created element does not meet its old self), then
    node writes, the edges that need those nodes, archives, and the deletes last
    (an edge is archived before its node takes it away). Within a step,
    statements go by label or relationship type in sorted order, so concurrent
    writers take their locks in one order."""
    out: list[Statement] = []

    def add(cypher: str, rows: Rows, creates: tuple[dict[str, str], ...] = (),
            guarded: tuple[str, ...] = ()) -> None:
        if rows:
            out.append(Statement(cypher, {"rows": rows}, creates, guarded))

    add(_EDGE_REMOVE, edges.resets)
    add(_NODE_EDGES_REMOVE, nodes.resets)
    add(_NODE_REMOVE, nodes.resets)
    add(_NODE_EDGES_DROP, nodes.relabels)
    add(_NODE_REMOVE, nodes.relabels)
    add(_NODE_UPDATE, nodes.updates)
    add(_NODE_UPDATE_KNOWN, nodes.diffs, guarded=tuple(r["ID"] for r in nodes.diffs))
    for labels, rows in sorted(nodes.creates.items()):
        add(_node_create(labels), rows)
    for rel, rows in sorted(nodes.kept_edges.items()):
        add(_edge_create(rel), rows)
    add(_NODE_ARCHIVE, nodes.archives)
    for rel, rows in sorted(edges.updates.items()):
        add(_edge_update(rel), rows)
    for rel, rows in sorted(edges.diffs.items()):
        add(_edge_update_known(rel), rows)
    for rel, rows in sorted(edges.creates.items()):
        add(_edge_create(rel), rows, tuple({"ID": r["ID"], "p": r["p"], "c": r["c"]}
                                           for r in rows))
    add(_EDGE_ARCHIVE, edges.archives)
    add(_EDGE_REMOVE, edges.deletes)
    add(_NODE_EDGES_REMOVE, nodes.deletes)
    add(_NODE_REMOVE, nodes.deletes)
    return out


# Archives are CREATEd, not MERGEd (30% less server work): an archive is only
# written for a revision the stale guard shows was never archived, and the
# unique `_key` constraint turns a duplicate into an error the writer isolates.
_ARCHIVE_STORED = ("CREATE (a:{label}) SET a = properties({x}), a._key = row.key, "
                   "a.ArchivedAt = row.at, a.DeletedAt = row.deleted")

_NODE_UPDATE = (
    "UNWIND $rows AS row MATCH (n:Node {ID: row.ID}) "
    + _ARCHIVE_STORED.format(label="ArchivedNode", x="n") + " SET n = row.props"
)
_NODE_UPDATE_KNOWN = (
    "UNWIND $rows AS row MATCH (n:Node {ID: row.ID}) "
    "WHERE n.Revision = row.r AND n.UpdatedAt = row.u "
    "CREATE (a:ArchivedNode) SET a = row.old SET n += row.diff RETURN count(n) AS updated"
)
# DETACH: what is left attached is not topology (flows' CAPTURED_ON links).
_NODE_REMOVE = (
    "UNWIND $rows AS row MATCH (n:Node {ID: row.ID}) "
    + _ARCHIVE_STORED.format(label="ArchivedNode", x="n") + " DETACH DELETE n"
)
# The edges still attached to a node that goes away end with it (topology edges:
# relationships to flows are not edges of the graph).
_NODE_EDGES_REMOVE = (
    "UNWIND $rows AS row MATCH (n:Node {ID: row.ID})-[e]-(o) WHERE 'Node' IN labels(o) "
    "WITH e, min(row.edges_at) AS at "
    "CREATE (a:ArchivedEdge) SET a = properties(e), "
    "a._key = e.ID + '/' + toString(e.Revision) + '/' + toString(e.UpdatedAt), "
    "a.RelationType = coalesce(e.RelationType, type(e)), a.ArchivedAt = at, a.DeletedAt = at "
    "DELETE e"
)
_NODE_EDGES_DROP = "UNWIND $rows AS row MATCH (n:Node {ID: row.ID})-[e]-() WITH DISTINCT e DELETE e"
_NODE_ARCHIVE = "UNWIND $rows AS row CREATE (a:ArchivedNode) SET a = row.props"
_EDGE_ARCHIVE = "UNWIND $rows AS row CREATE (a:ArchivedEdge) SET a = row.props"
_EDGE_REMOVE = (
    "UNWIND $rows AS row MATCH (:Node {ID: row.p})-[e]->(:Node {ID: row.c}) WHERE e.ID = row.ID "
    + _ARCHIVE_STORED.format(label="ArchivedEdge", x="e") + " DELETE e"
)


def _edge_update_known(rel: str) -> str:
    return (f"UNWIND $rows AS row MATCH (:Node {{ID: row.p}})-[e:{quote(rel)}]->(:Node {{ID: row.c}}) "
            "WHERE e.ID = row.ID CREATE (a:ArchivedEdge) SET a = row.old SET e += row.diff")


def assumed_stored(mutations: Sequence[StoreMutation], known: Mapping[str, Known]
                   ) -> dict[str, Stored]:
    """Nodes whose stored state need not be read: the batch only updates them
    (no delete, same kind) and the store remembers their revision. Their
    update is guarded (`Statement.guarded`), so a stale memory is detected."""
    out: dict[str, Stored] = {}
    for ident, events in _group(mutations)[0].items():
        k = known.get(ident)
        if k is None or any(ev.delete for ev in events):
            continue
        labels = node_labels(Node(ident, {"Type": k.props.get("Type", "")}))
        final = events[-1].element
        assert isinstance(final, Node)
        if node_labels(final) == labels:
            out[ident] = Stored(k.updated_at, k.revision, frozenset(labels))
    return out


def _known_for(known: Known | None, stored: Stored) -> Known | None:
    if known is not None and (known.revision, known.updated_at) == (stored.revision,
                                                                   stored.updated_at):
        return known
    return None


def _archived(known: Known, replaced_by: _Event) -> dict[str, Any]:
    """The archive row of a known revision ended by `replaced_by`."""
    props = dict(known.props)
    props["ArchivedAt"] = replaced_by.time
    if replaced_by.delete:
        props["DeletedAt"] = replaced_by.time
    props["_key"] = archive_key(str(props["ID"]), known.revision, known.updated_at)
    return props


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Properties to `SET n += diff` to turn `old` into `new` (null removes a key)."""
    out = {k: v for k, v in new.items() if k not in old or not _same(old[k], v)}
    out.update((k, None) for k in old if k not in new)
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (1, 1.0 and True are three different properties)."""
    t = type(a)
    if t is not type(b):
        return False
    if t is list:
        return len(a) == len(b) and all(type(x) is type(y) and x == y for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _node_create(labels: tuple[str, ...]) -> str:
    """Create nodes; a node with a TID gets the flows captured on it linked."""
    return (f"UNWIND $rows AS row CREATE (n:{':'.join(quote(lb) for lb in labels)}) "
            f"SET n = row.props {LINK_NEW_NODE}")


def _edge_create(rel: str) -> str:
    return (f"UNWIND $rows AS row MATCH (a:Node {{ID: row.p}}) MATCH (b:Node {{ID: row.c}}) "
            f"CREATE (a)-[e:{quote(rel)}]->(b) SET e = row.props RETURN count(e) AS created")


def _edge_update(rel: str) -> str:
    return (f"UNWIND $rows AS row MATCH (:Node {{ID: row.p}})-[e:{quote(rel)}]->(:Node {{ID: row.c}}) "
            "WHERE e.ID = row.ID " + _ARCHIVE_STORED.format(label="ArchivedEdge", x="e")
            + " SET e = row.props")
