"""The batch compiler's decisions, without a database (batch.py is pure)."""

from skygraph.topology.batch import (
    Known,
    Stored,
    _diff,
    _group,
    compile_batch,
    defer_edges_of_deleted_nodes,
    node_properties,
    plan_edges,
    plan_nodes,
)
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeDeleted, NodeUpdated


def node(rev: int, t: int, name: str = "eth0", type_: str = "veth", **meta: object) -> Node:
    return Node("n", {"Type": type_, "Name": name, **meta}, CreatedAt=1, UpdatedAt=t,
                Revision=rev)



def test_events_not_newer_than_the_stored_revision_are_skipped():
    stored = {"n": Stored(updated_at=20, revision=2, labels=frozenset({"Node", "Interface"}))}
    plan = compile_batch([NodeAdded(node(1, 10)), NodeUpdated(node(2, 20))], stored, {})
    assert plan.statements == []
    plan = compile_batch([NodeUpdated(node(2, 20)), NodeUpdated(node(3, 30))], stored, {})
    [stmt] = plan.statements
    assert stmt.params["rows"][0]["key"] == "n/2/20"  # the stored revision is archived
    assert stmt.params["rows"][0]["at"] == 30


def test_a_delete_older_than_a_re_creation_is_stale():
    stored = {"n": Stored(updated_at=50, revision=1, labels=frozenset({"Node", "Interface"}))}
    assert compile_batch([NodeDeleted(node(3, 30).with_(DeletedAt=40))], stored, {}) \
        .statements == []
    deleted = {"n": Stored(0, 0, deleted_at=40)}
    assert compile_batch([NodeAdded(node(1, 10))], deleted, {}).statements == []


def test_intermediate_revisions_are_archived_with_the_next_ones_time():
    plan = compile_batch([NodeAdded(node(1, 10)), NodeUpdated(node(2, 20)),
                          NodeDeleted(node(2, 20).with_(DeletedAt=30))], {}, {})
    archives = [r["props"] for s in plan.statements for r in s.params["rows"]
                if "ArchivedNode" in s.cypher]
    assert [(a["Revision"], a["ArchivedAt"], a.get("DeletedAt")) for a in archives] == [
        (1, 20, None), (2, 30, 30)]
    assert not any("CREATE (n:" in s.cypher for s in plan.statements)  # never made live
    assert plan.written_nodes == {"n": None}


def test_known_revision_sends_only_the_difference():
    stored = {"n": Stored(updated_at=10, revision=1, labels=frozenset({"Node", "Interface"}))}
    old = node(1, 10, MTU=1500, Up=1)
    known = {"n": Known(1, 10, node_properties(old))}
    plan = compile_batch([NodeUpdated(node(2, 20, MTU=9000, Up=True))], stored, {},
                         known_nodes=known)
    [stmt] = plan.statements
    row = stmt.params["rows"][0]
    assert row["diff"] == {"MTU": 9000, "Up": True, "UpdatedAt": 20, "Revision": 2}
    assert (row["old"]["MTU"], row["old"]["ArchivedAt"], row["old"]["_key"]) == (
        1500, 20, "n/1/10")
    # A memory of another revision is not used.
    plan = compile_batch([NodeUpdated(node(2, 20))], stored, {},
                         known_nodes={"n": Known(7, 70, {})})
    assert "properties(n)" in plan.statements[0].cypher


def test_diff_removes_keys_and_tells_types_apart():
    assert _diff({"a": 1, "b": [1, 2], "c": "x"}, {"a": True, "b": [1, 2.0]}) == {
        "a": True, "b": [1, 2.0], "c": None}


def test_kind_change_needs_the_nodes_edges_then_recreates_them():
    stored = {"n": Stored(updated_at=10, revision=1, labels=frozenset({"Node"}))}
    update = [NodeUpdated(node(2, 20))]
    assert compile_batch(update, stored, {}).needs_attached == ["n"]
    edge = {"id": "e", "t": "OWNERSHIP", "p": "h", "c": "n", "props": {"ID": "e"}}
    plan = compile_batch(update, stored, {}, attached={"n": [edge]})
    texts = [s.cypher for s in plan.statements]
    assert any("CREATE (n:`Node`:`Interface`)" in t for t in texts)
    assert any("CREATE (a)-[e:`OWNERSHIP`]->(b)" in t for t in texts)


def test_edges_to_a_node_the_batch_deletes_are_deferred():
    h = Node("h", {"Type": "host", "Name": "h"}, CreatedAt=1, UpdatedAt=1, Revision=1)
    e = Edge("e", "h", "n", {"RelationType": "ownership"}, CreatedAt=1, UpdatedAt=1,
             Revision=1)
    plan = compile_batch([NodeAdded(h), EdgeAdded(e),
                          NodeDeleted(node(1, 1).with_(DeletedAt=2))],
                         {"n": Stored(1, 1, frozenset({"Node", "Interface"}))}, {})
    assert plan.deferred_edges == ["e"]
    assert "e" not in plan.written_edges


def test_statements_run_removals_then_node_writes_then_edges_then_deletes():
    """Within a transaction a re-created element never meets its old self and an
    edge is written after both its ends."""
    def n(ident: str, type_: str, t: int = 5, rev: int = 1) -> Node:
        return Node(ident, {"Type": type_, "Name": ident}, CreatedAt=1, UpdatedAt=t, Revision=rev)
    gone = n("gone", "veth")
    stored = {"gone": Stored(1, 1, frozenset({"Node", "Interface"})),
              "back": Stored(1, 1, frozenset({"Node", "Interface"}))}
    plan = compile_batch([
        NodeAdded(n("b", "veth")), NodeAdded(n("a", "host")),
        EdgeAdded(Edge("e", "a", "b", {"RelationType": "ownership"}, CreatedAt=1,
                       UpdatedAt=5, Revision=1)),
        NodeDeleted(n("back", "veth", 3).with_(DeletedAt=3)), NodeAdded(n("back", "veth", 4, 2)),
        NodeDeleted(gone.with_(UpdatedAt=6, DeletedAt=6))], stored, {})
    kinds = []
    for s in plan.statements:
        c = s.cypher
        kinds.append("remove" if "DETACH DELETE" in c or c.rstrip().endswith("DELETE e")
                     else "edge" if "-[e:" in c else "archive" if "a:Archived" in c[:40]
                     else "node")
    # the re-created node's old self goes first; the deleted node goes last
    assert kinds[:2] == ["remove", "remove"] and kinds[-2:] == ["remove", "remove"]
    assert "remove" not in kinds[2:-2]
    assert kinds.index("edge") > max(i for i, k in enumerate(kinds) if k == "node")
    assert [r["ID"] for r in plan.statements[0].params["rows"]] == ["back"]
    assert [r["ID"] for r in plan.statements[-1].params["rows"]] == ["gone"]


def test_creates_go_by_label_in_one_order_whatever_the_batch_order():
    """Two writers' transactions take their locks in the same order."""
    def creates(*types: str) -> list[str]:
        ms = [NodeAdded(Node(f"n{i}", {"Type": t, "Name": t}, CreatedAt=1, UpdatedAt=1,
                             Revision=1)) for i, t in enumerate(types)]
        return [s.cypher for s in compile_batch(ms, {}, {}).statements]
    assert creates("veth", "host", "netns") == creates("netns", "veth", "host")


def test_node_and_edge_plans_are_separate_steps():
    h = Node("h", {"Type": "host", "Name": "h"}, CreatedAt=1, UpdatedAt=1, Revision=1)
    e = Edge("e", "h", "x", {"RelationType": "ownership"}, CreatedAt=1, UpdatedAt=1, Revision=1)
    node_events, edge_events = _group([NodeAdded(h), EdgeAdded(e)])
    nodes = plan_nodes(node_events, {}, None, {}, set(edge_events))
    assert [r["props"]["ID"] for r in nodes.creates[("Node", "Host")]] == ["h"]
    edges = plan_edges(edge_events, {}, {})
    assert [r["ID"] for r in edges.creates["OWNERSHIP"]] == ["e"]
    assert set(nodes.written) == {"h"} and set(edges.written) == {"e"}
    assert defer_edges_of_deleted_nodes(edges, {"x"}) == ["e"]
    assert edges.creates["OWNERSHIP"] == [] and edges.written == {}
