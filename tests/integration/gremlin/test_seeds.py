"""Topology questions from the seeds, pasted unchanged, on a seeds-like host:
two namespaces (vm1, vm2) each with an eth0 whose veth peer sits on a Linux
bridge in the root namespace, which also has its own eth0 and an OVS bridge."""

from __future__ import annotations

from typing import Any

import pytest

from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, Mutation, NodeAdded
from tests.integration.gremlin.conftest import GremlinDB

pytestmark = pytest.mark.bolt


def topology() -> list[Mutation]:
    def n(ident: str, name: str, typ: str, **meta: Any) -> NodeAdded:
        return NodeAdded(Node(ident, {"Name": name, "Type": typ, **meta}, Host="host1"))

    def e(parent: str, child: str, rel: str, **meta: Any) -> EdgeAdded:
        return EdgeAdded(Edge(f"{parent}-{rel}-{child}", parent, child,
                              {"RelationType": rel, **meta}, Host="host1"))

    return [
        n("host", "host1", "host"),
        n("eth0", "eth0", "device", MAC="52:54:00:00:00:01", IPV4=["192.168.50.10/24"],
          MTU=1500, State="UP"),
        n("br0", "br0", "bridge", MTU=1500, State="UP"),
        n("vm1", "vm1", "netns", Path="/var/run/netns/vm1"),
        n("vm2", "vm2", "netns", Path="/var/run/netns/vm2"),
        n("vm1.eth0", "eth0", "veth", MAC="aa:00:00:00:01:01", IPV4=["10.0.0.1/24"],
          MTU=1500, State="UP"),
        n("vm2.eth0", "eth0", "veth", MAC="aa:00:00:00:02:01", IPV4=["10.0.0.2/24"],
          MTU=1500, State="UP"),
        n("vm1-eth0", "vm1-eth0", "veth", MAC="aa:00:00:00:01:02", MTU=1500, State="UP"),
        n("vm2-eth0", "vm2-eth0", "veth", MAC="aa:00:00:00:02:02", MTU=1500, State="UP"),
        n("br-int", "br-int", "ovsbridge", UUID="b-uuid"),
        n("br-int-port", "br-int", "ovsport", UUID="p-uuid"),
        e("host", "eth0", "ownership"), e("host", "br0", "ownership"),
        e("host", "vm1", "ownership"), e("host", "vm2", "ownership"),
        e("vm1", "vm1.eth0", "ownership"), e("vm2", "vm2.eth0", "ownership"),
        e("host", "vm1-eth0", "ownership"), e("host", "vm2-eth0", "ownership"),
        e("vm1-eth0", "vm1.eth0", "layer2", Type="veth"),
        e("vm2-eth0", "vm2.eth0", "layer2", Type="veth"),
        e("br0", "vm1-eth0", "layer2"), e("br0", "vm2-eth0", "layer2"),
        e("host", "br-int", "ownership"), e("br-int", "br-int-port", "ownership"),
        e("br-int", "br-int-port", "layer2"),
    ]


@pytest.fixture(scope="module", autouse=True)
def seeds_graph(gdb: GremlinDB) -> None:
    graph = Graph(clock=lambda: 1_000)
    muts = [m for mutation in topology() for m in graph.apply_nowait(mutation)]
    gdb.clear()
    gdb.apply(muts)


def ids(result: list[dict[str, Any]]) -> list[str]:
    return sorted(r["ID"] for r in result)


def test_capture_gremlin_from_the_seeds(gdb: GremlinDB) -> None:
    assert ids(gdb.query("G.V().Has('Name', 'vm1').Out().Has('Name', 'eth0')")) == ["vm1.eth0"]
    assert ids(gdb.query('G.V().Has("Name", "vm1").Out().Has("Name", "eth0")')) == ["vm1.eth0"]


def test_every_eth0(gdb: GremlinDB) -> None:
    assert ids(gdb.query("G.V().Has('Name', 'eth0')")) == ["eth0", "vm1.eth0", "vm2.eth0"]


def test_seed_flow_query_runs(gdb: GremlinDB) -> None:
    # no flows in this graph: no packets (tests/integration/gremlin/test_flow_history.py
    # runs it on stored flows)
    assert gdb.query("G.At('-1s', 1000).Flows().Has('Application', 'ICMPv4').RawPackets()") \
        == []


def test_shortest_path_over_layer2(gdb: GremlinDB) -> None:
    paths = gdb.query("G.V().Has('Name', 'vm1').Out().Has('Name', 'eth0')"
                      ".ShortestPathTo(Metadata('IPV4', '10.0.0.2/24'), "
                      "Metadata('RelationType', 'layer2'))")
    assert [[n["ID"] for n in p] for p in paths] == [
        ["vm1.eth0", "vm1-eth0", "br0", "vm2-eth0", "vm2.eth0"]]
    # the same filter through the generic (property) path
    paths = gdb.query("G.V('vm1.eth0').ShortestPathTo(Metadata('IPV4', '10.0.0.2/24'), "
                      "Metadata('RelationType', 'layer2', 'Type', Nee('x')))")
    assert [[n["ID"] for n in p] for p in paths] == [["vm1.eth0", "vm1-eth0", "br0",
                                                      "vm2-eth0", "vm2.eth0"]]


def test_ownership_tree(gdb: GremlinDB) -> None:
    assert ids(gdb.query("G.V().Has('Type', 'host').Descendants()")) == [
        "br-int", "br0", "eth0", "host", "vm1", "vm1-eth0", "vm2", "vm2-eth0"]
    assert len(gdb.query("G.V().Has('Type', 'host').Descendants(0)")) == 11
    assert ids(gdb.query("G.V('vm1.eth0').Ascendants(0)")) == ["host", "vm1", "vm1.eth0"]
    assert ids(gdb.query("G.V('br0').Neighbors('RelationType', 'layer2')")) == [
        "br0", "vm1-eth0", "vm2-eth0"]


def test_two_edges_between_the_same_nodes_are_kept(gdb: GremlinDB) -> None:
    # ovsbridge -> ovsport has both an ownership and a layer2 edge (SPEC §1a)
    assert len(gdb.query("G.V().Has('Type', 'ovsbridge').Out()")) == 2
    assert len(gdb.query("G.V().Has('Type', 'ovsbridge').Out().Dedup()")) == 1
    assert len(gdb.query("G.V().Has('Type', 'ovsbridge').OutE('RelationType', 'layer2')")) == 1


def test_typical_questions(gdb: GremlinDB) -> None:
    assert gdb.query("G.V().Has('Type', 'netns').Values('Name')") in (["vm1", "vm2"],
                                                                      ["vm2", "vm1"])
    assert gdb.query("G.V().Has('Type', 'veth', 'State', 'UP').Count()") == 4
    assert ids(gdb.query("G.V().Has('IPV4', Ipv4Range('10.0.0.0/8'))")) == ["vm1.eth0",
                                                                           "vm2.eth0"]
    assert ids(gdb.query("G.V().Has('MAC', Regex('aa:00:00:00:01:.*'))")) == ["vm1-eth0",
                                                                              "vm1.eth0"]
    assert ids(gdb.query("G.V().Has('Name', 'br0').Out().Out().Has('Type', 'veth')")) == [
        "vm1.eth0", "vm2.eth0"]
    assert ids(gdb.query("G.V().Has('Name', 'br0').OutE().OutV()")) == ["vm1-eth0", "vm2-eth0"]
    assert ids(gdb.query("G.V().Has('Name', 'vm1-eth0').InE().InV()")) == ["br0", "host"]
    assert gdb.query("G.V().HasEither('Type', 'netns', 'Type', 'host').Count()") == 3
    assert gdb.query("G.E().Has('RelationType', 'layer2').Count()") == 5
    assert gdb.query("G.V().Has('Type', 'host').Out().Has('Type', 'netns').Out()"
                     ".Dedup().Count()") == 2


def test_missing_node_by_id(gdb: GremlinDB) -> None:
    from skygraph.gremlin import ElementNotFoundError
    with pytest.raises(ElementNotFoundError, match=r"^Node 'nope' does not exist$"):
        gdb.query("G.V('nope').Out()")
    with pytest.raises(ElementNotFoundError, match=r"^Edge 'nope' does not exist$"):
        gdb.query("G.E('nope')")


def test_limits(gdb: GremlinDB) -> None:
    from skygraph.gremlin import LimitExceededError, Limits
    with pytest.raises(LimitExceededError, match="more than 3 results"):
        gdb.query("G.V()", limits=Limits(max_results=3))
    with pytest.raises(LimitExceededError, match="more than 3 results"):
        gdb.query("G.V().Values('Name')", limits=Limits(max_results=3, cap_in_query=True))
    assert len(gdb.query("G.V().Limit(3)", limits=Limits(max_results=3))) == 3


def test_hostile_strings_change_nothing(gdb: GremlinDB) -> None:
    before = gdb.query("G.V().Count()")
    for hostile in ["x') DETACH DELETE n //", "x\\') DETACH DELETE n //",
                    "'}) MATCH (m) DETACH DELETE m //"]:
        literal = "'" + hostile.replace("\\", "\\\\").replace("'", "\\'") + "'"
        assert gdb.query(f"G.V().Has('Name', {literal})") == []
        assert gdb.query(f"G.V().Has('Name', Regex({literal.replace('(', '').replace(')', '')}))"
                         ) == []
        assert gdb.query(f"G.V().Has({literal}, 1)") == []
    assert gdb.query("G.V().Count()") == before
