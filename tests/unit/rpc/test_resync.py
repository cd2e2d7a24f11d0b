"""The analyzer-side resync (skygraph.api.agents.resync_plan), applied to a real
in-memory graph: the host's elements become exactly the agent's, other hosts'
stay, nothing is duplicated."""

from __future__ import annotations

from skygraph.api.agents import resync_plan
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, EdgeDeleted, NodeAdded, NodeDeleted, StoreMutation


def n(ident: str, host: str = "h1", **meta: object) -> Node:
    return Node(ident, {"Name": ident, "Type": "veth", **meta}, Host=host)


def e(ident: str, parent: str, child: str, host: str = "h1") -> Edge:
    return Edge(ident, parent, child, {"RelationType": "layer2"}, Host=host)


def graph_with(nodes: list[Node], edges: list[Edge]) -> Graph:
    g = Graph(clock=lambda: 1000)
    for x in nodes:
        g.apply_nowait(NodeAdded(x))
    for y in edges:
        g.apply_nowait(EdgeAdded(y))
    return g


def resync(g: Graph, host: str, nodes: list[Node], edges: list[Edge]) -> list[StoreMutation]:
    plan = resync_plan(g.nodes, g.edges, host, nodes, edges)
    applied: list[StoreMutation] = []
    for m in plan.mutations:
        applied += g.apply_nowait(m)
    return applied


def test_resync_keeps_what_the_agent_has_and_removes_the_rest() -> None:
    g = graph_with([n("a"), n("b"), n("c"), n("x", host="h2")],
                   [e("ab", "a", "b"), e("bc", "b", "c"), e("ax", "a", "x", host="h2")])
    agent_nodes = [n("a"), n("b", MTU=9000), n("d")]
    agent_edges = [e("ab", "a", "b"), e("bd", "b", "d")]
    applied = resync(g, "h1", agent_nodes, agent_edges)
    assert sorted(g.nodes) == ["a", "b", "d", "x"]
    assert sorted(g.edges) == ["ab", "ax", "bd"]
    assert g.nodes["b"].Metadata["MTU"] == 9000 and g.nodes["b"].Revision == 2
    assert g.nodes["a"].Revision == 1                      # unchanged: not rewritten
    kinds = sorted((type(m).__name__, (m.node.ID if hasattr(m, "node") else m.edge.ID))
                   for m in applied)
    assert kinds == [("EdgeAdded", "bd"), ("EdgeDeleted", "bc"), ("NodeAdded", "d"),
                     ("NodeDeleted", "c"), ("NodeUpdated", "b")]


def test_resync_twice_changes_nothing() -> None:
    g = graph_with([], [])
    agent = ([n("a"), n("b")], [e("ab", "a", "b")])
    assert len(resync(g, "h1", *agent)) == 3
    assert resync(g, "h1", *agent) == []


def test_an_edge_whose_ends_changed_is_replaced() -> None:
    g = graph_with([n("a"), n("b"), n("c")], [e("l", "a", "b")])
    plan = resync_plan(g.nodes, g.edges, "h1", [n("a"), n("b"), n("c")], [e("l", "a", "c")])
    assert [type(m) for m in plan.mutations if isinstance(m, (EdgeDeleted, EdgeAdded))] == \
        [EdgeDeleted, EdgeAdded]
    for m in plan.mutations:
        g.apply_nowait(m)
    assert (g.edges["l"].Parent, g.edges["l"].Child) == ("a", "c")


def test_an_agent_cannot_touch_another_hosts_elements() -> None:
    g = graph_with([n("x", host="h2"), n("a")], [])
    no_host = Node("z", {"Name": "z", "Type": "veth"})
    plan = resync_plan(g.nodes, g.edges, "h1", [n("a"), n("x", host="h1"), n("y", host="h2"), no_host], [])
    assert plan.refused == ["node x: exists as an element of host 'h2'",
                            "node y: belongs to host 'h2'"]
    added = [m.node for m in plan.mutations if isinstance(m, NodeAdded)]
    assert [(x.ID, x.Host) for x in added] == [("a", "h1"), ("z", "h1")]   # no Host: the agent's
    assert not any(isinstance(m, NodeDeleted) for m in plan.mutations)
