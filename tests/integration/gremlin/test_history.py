"""At/Context over a graph with history (SPEC §1h): time points see one
revision per element, time slices every revision alive inside the slice."""

from __future__ import annotations

from typing import Any

import pytest

from skygraph.gremlin import ElementNotFoundError
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeDeleted, NodeUpdated
from tests.integration.gremlin.conftest import GremlinDB

pytestmark = pytest.mark.bolt

T = 1_700_000_000_000          # the graph is built at T .. T+4s
NOW = T + 10_000               # queries run 10 s later


@pytest.fixture(scope="module", autouse=True)
def history_graph(gdb: GremlinDB) -> None:
    clock = [T]
    graph = Graph(clock=lambda: clock[0])
    gdb.clear()

    def step(at: int, *mutations: Any) -> None:
        clock[0] = at
        gdb.apply([m for mutation in mutations for m in graph.apply_nowait(mutation)])

    step(T,
         NodeAdded(Node("host", {"Name": "host1", "Type": "host"})),
         NodeAdded(Node("lo", {"Name": "lo", "Type": "device", "State": "DOWN"})),
         NodeAdded(Node("eth0", {"Name": "eth0", "Type": "device", "State": "UP"})),
         EdgeAdded(Edge("h-lo", "host", "lo", {"RelationType": "ownership"})),
         EdgeAdded(Edge("h-eth0", "host", "eth0", {"RelationType": "ownership"})))
    step(T + 2000, NodeUpdated(Node("lo", {"Name": "lo", "Type": "device", "State": "UP"},
                                    UpdatedAt=T + 2000)))
    step(T + 3000, NodeDeleted(Node("eth0", {}, DeletedAt=T + 3000)))
    step(T + 4000,
         NodeAdded(Node("eth1", {"Name": "eth1", "Type": "device", "State": "UP"})),
         EdgeAdded(Edge("h-eth1", "host", "eth1", {"RelationType": "ownership"})))


def q(gdb: GremlinDB, text: str) -> Any:
    return gdb.query(text, now_ms=NOW)


def ids(result: list[dict[str, Any]]) -> list[str]:
    return sorted(r["ID"] for r in result)


def test_live_graph_ignores_history(gdb: GremlinDB) -> None:
    assert ids(q(gdb, "G.V()")) == ["eth1", "host", "lo"]
    assert q(gdb, "G.E().Count()") == 2


@pytest.mark.parametrize(("query", "expected"), [
    ("G.At('-8500ms').V()", ["eth0", "host", "lo"]),            # T+1.5s
    (f"G.At({T + 1500}).V()", ["eth0", "host", "lo"]),           # epoch ms
    (f"G.At({(T + 1500) // 1000}).V()", ["eth0", "host", "lo"]),  # epoch seconds
    ("G.Context('-6500ms').V()", ["host", "lo"]),                  # T+3.5s: eth0 gone
    ("G.At(NOW).V()", ["eth1", "host", "lo"]),
    ("G.At('-1h').V()", []),
    ("G.At('Tue, 14 Nov 2023 22:13:21 GMT').V()", ["eth0", "host", "lo"]),  # T+1s
])
def test_time_points(gdb: GremlinDB, query: str, expected: list[str]) -> None:
    assert ids(q(gdb, query)) == expected


def test_time_point_sees_the_revision_of_that_time(gdb: GremlinDB) -> None:
    assert q(gdb, "G.At('-8500ms').V().Has('Name', 'lo').Values('State')") == ["DOWN"]
    assert q(gdb, "G.At('-7s').V().Has('Name', 'lo').Values('State')") == ["UP"]
    assert q(gdb, "G.At('-8500ms').V().Has('State', 'DOWN').Count()") == 1
    assert q(gdb, "G.At('-7s').V().Has('State', 'DOWN').Count()") == 0


def test_traversals_in_the_past(gdb: GremlinDB) -> None:
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'host1').Out()")) == ["eth0", "lo"]
    assert ids(q(gdb, "G.At('-6500ms').V().Has('Name', 'host1').Out()")) == ["lo"]
    assert ids(q(gdb, "G.At(NOW).V().Has('Name', 'host1').Out()")) == ["eth1", "lo"]
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'eth0').In()")) == ["host"]
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'eth0').Both()")) == ["host"]
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'host1').OutE()")) == ["h-eth0", "h-lo"]
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'host1').BothE().OutV()")) == [
        "eth0", "lo"]
    assert ids(q(gdb, "G.At('-8500ms').E().InV()")) == ["host", "host"]
    assert ids(q(gdb, "G.At('-8500ms').E().BothV().Dedup()")) == ["eth0", "host", "lo"]
    assert q(gdb, "G.At('-8500ms').E().Count()") == 2
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Type', 'device').SubGraph().V()")) == [
        "eth0", "lo"]
    assert ids(q(gdb, "G.At('-8500ms').E().Has('Child', 'eth0').SubGraph().V()")) == []
    assert ids(q(gdb, "G.At('-8500ms').E().SubGraph().V()")) == ["eth0", "host", "lo"]
    assert ids(q(gdb, "G.At(NOW, FOREVER).E().SubGraph('RelationType', 'ownership').E()")) == [
        "h-eth0", "h-eth1", "h-lo"]
    sub = q(gdb, "G.At('-8500ms').V().SubGraph()")
    assert sorted(e["ID"] for e in sub["Edges"]) == ["h-eth0", "h-lo"]


def test_deleted_element_carries_deleted_at(gdb: GremlinDB) -> None:
    # an archived revision is returned as stored, with the time it ended (like Skydive)
    (eth0,) = q(gdb, "G.At('-8500ms').V().Has('Name', 'eth0')")
    assert eth0["DeletedAt"] == T + 3000
    (eth0,) = q(gdb, "G.At(NOW, FOREVER).V().Has('Name', 'eth0')")
    assert eth0["DeletedAt"] == T + 3000


def test_time_slices(gdb: GremlinDB) -> None:
    los = q(gdb, "G.At(NOW, FOREVER).V().Has('Name', 'lo')")
    assert sorted(n["Metadata"]["State"] for n in los) == ["DOWN", "UP"]
    assert len(q(gdb, "G.At('-5s', 10).V()")) == 5
    # [T+4.5s, T+5s]: eth0 was deleted before the slice started
    assert ids(q(gdb, "G.At('-5s', '500ms').V()")) == ["eth1", "host", "lo"]
    assert q(gdb, "G.Context(NOW, FOREVER).E().Count()") == 3


def test_walks_in_the_past(gdb: GremlinDB) -> None:
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'host1').Descendants()")) == [
        "eth0", "host", "lo"]
    assert ids(q(gdb, "G.At(NOW).V().Has('Name', 'host1').Descendants(0)")) == [
        "eth1", "host", "lo"]
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'lo').Ascendants(3)")) == [
        "host", "lo"]
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'lo').Neighbors(2)")) == [
        "eth0", "host", "lo"]
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'lo').Neighbors('RelationType', "
                      "'layer2', 2)")) == ["lo"]
    assert ids(q(gdb, "G.At('-8500ms').V().Has('Name', 'eth0').Descendants(4)")) == ["eth0"]
    # a slice holds both revisions of lo; Dedup() keeps one per ID
    assert len(q(gdb, "G.At(NOW, FOREVER).V().Has('Name', 'host1').Out()")) == 4
    assert ids(q(gdb, "G.At(NOW, FOREVER).V().Has('Name', 'host1').Out().Dedup()")) == [
        "eth0", "eth1", "lo"]


def test_shortest_paths_in_the_past(gdb: GremlinDB) -> None:
    def paths(text: str) -> list[list[str]]:
        return [[n["ID"] for n in p] for p in q(gdb, text)]
    assert paths("G.At('-8500ms').V('lo').ShortestPathTo(Metadata('Name', 'eth0'))") == [
        ["lo", "host", "eth0"]]
    assert paths("G.At(NOW).V('lo').ShortestPathTo(Metadata('Name', 'eth0'))") == []
    assert paths("G.At(NOW).V('lo').ShortestPathTo(Metadata('Name', 'eth1'), "
                 "Metadata('RelationType', 'ownership'))") == [["lo", "host", "eth1"]]
    assert paths("G.At(NOW).V('lo').ShortestPathTo(Metadata('Name', 'eth1'), "
                 "Metadata('RelationType', 'layer2'))") == []
    assert ids(q(gdb, "G.At('-8500ms').V('lo').ShortestPathTo(Metadata('Name', 'eth0'))"
                      ".SubGraph().V()")) == ["eth0", "host", "lo"]
    assert q(gdb, "G.At('-8500ms').V().ShortestPathTo(Metadata('Type', 'host')).Count()") == 2


def test_v_by_id_in_the_past(gdb: GremlinDB) -> None:
    assert ids(q(gdb, "G.At('-8500ms').V('eth0')")) == ["eth0"]
    with pytest.raises(ElementNotFoundError, match="Node 'eth0' does not exist"):
        q(gdb, "G.At(NOW).V('eth0')")
