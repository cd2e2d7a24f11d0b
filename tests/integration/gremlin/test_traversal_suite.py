"""SPEC §1f: Skydive's traversal unit-test facts, on the four-node graph,
against the embedded server (graffiti/graph/traversal/traversal_test.go)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.gremlin.conftest import GremlinDB, edge, node

pytestmark = pytest.mark.bolt


@pytest.fixture(scope="module", autouse=True)
def four_nodes(gdb: GremlinDB) -> None:
    gdb.load(
        [node("n1", Value=1, Type="intf", Bytes=1024, List=["111", "222"], Map={"a": 1}),
         node("n2", Value=2, Type="intf", Bytes=2024, IPV4=["10.0.0.1", "10.0.1.2"]),
         node("n3", Value=3, IPV4="192.168.0.34/24", Map={}, MTU=1500),
         node("n4", Value=4, Name="Node4", Bytes=4024, IPV4="192.168.1.34", Indexes=[5, 6])],
        [edge("e1", "n1", "n2", RelationType="layer2", Direction="Left", Name="e1"),
         edge("e2", "n2", "n3", RelationType="layer2", Direction="Left", Name="e2"),
         edge("e3", "n3", "n4", RelationType="layer2", Name="e3"),
         edge("e4", "n1", "n4", RelationType="layer2", Name="e4"),
         edge("e5", "n1", "n3", RelationType="layer2", Mode="Direct", Name="e5")])


# (query, expected number of results)
COUNTS = [
    ("G.V().Has('Value', 1)", 1),
    ("G.V().Has('Type', 'intf')", 2),
    ("G.V().HasEither('Type', 'intf', 'Name', 'Node4')", 3),
    ("G.V().HasEither('Bytes', 1024, 'Bytes', 2024)", 2),
    ("G.V().Has('List', '111')", 1),
    ("G.V().Has('Indexes', 6)", 1),
    ("G.V().Has('Value', 1).Out().Has('Value', 2).OutE().Has('Direction', 'Left').OutV().Out()",
     1),
    ("G.V().Has('Value', 3).BothE()", 3),
    ("G.V().Has('Value', 1).Out().Has('Value', 4)", 1),
    ("G.V().Has('Value', 1).Out().Has('Name', 'Node4')", 1),
    ("G.V().Has('Value', 1).OutE().Has('Mode', 'Slow').OutV()", 0),
    ("G.V().Has('Value', 1).OutE().Has('Mode', 'Direct').OutV()", 1),
    ("G.V().Has('Type')", 2),
    ("G.V().Has('Value', Within(1, 2, 4))", 3),
    ("G.V().Has('Value', Within(1.0, 2, 4))", 3),
    ("G.V().Has('Value', Without(1, 3))", 2),
    ("G.V().Has('Value', Lt(3))", 2),
    ("G.V().Has('Value', Gt(3))", 1),
    ("G.V().Has('Value', Lte(3))", 3),
    ("G.V().Has('Value', Gte(3))", 2),
    ("G.V().Has('Value', Inside(1, 4))", 2),
    ("G.V().Has('Value', Between(1, 4))", 3),
    ("G.V().Has('Value', Outside(2, 3))", 2),
    ("G.V().Has('Value', Ne(1))", 3),
    ("G.V().Has('MTU', Ne(1200))", 1),
    ("G.V().Has('MTU', Ne(''))", 1),
    ("G.V().Has('MTU', Ne(1500))", 0),
    ("G.V().Has('aaaaaaaaaaa', Ne(''))", 0),
    ("G.V().Has('Value', Nee(1))", 3),
    ("G.V().Has('MTU', Nee(1200))", 4),
    ("G.V().Has('MTU', Nee(''))", 4),
    ("G.V().Has('MTU', Nee(1500))", 3),
    ("G.V().Has('aaaaaaaaaaa', Nee(''))", 4),
    ("G.V().Has('Value', NE(1))", 3),
    ("G.V().Has('MTU', NEE(1500))", 3),
    ("G.V().HasKey('Name')", 1),
    ("G.V().HasKey('Unknown')", 0),
    ("G.V().HasKey('List')", 1),
    ("G.V().HasKey('Map')", 2),
    ("G.V().HasNot('Name')", 3),
    ("G.V().Has('Name', Regex('.*ode.*'))", 1),
    ("G.V().Has('Name', Regex('ode5'))", 0),
    ("G.V().Has('Name', Regex('ode'))", 0),
    ("G.V().Has('IPV4', Ipv4Range('192.168.0.0/24'))", 1),
    ("G.V().Has('IPV4', Ipv4Range('192.168.0.0/16'))", 2),
    ("G.V().Has('IPV4', Ipv4Range('192.168.0.0/26'))", 1),
    ("G.V().Has('IPV4', Ipv4Range('192.168.0.77/26'))", 0),
    ("G.V().Has('IPV4', Ipv4Range('192.168.2.0/24'))", 0),
    ("G.V().Has('IPV4', Ipv4Range('10.0.0.0/24'))", 1),
    ("G.V().Has('Value', 2).Both()", 2),
    ("G.E().Has('Name', 'e3').BothV()", 2),
    ("G.V().Out().Has('Value', 4)", 2),
    ("G.V().Out().Has('Value', 4).Dedup()", 1),
    ("G.E().Dedup('Direction')", 4),
    ("G.V().Dedup('Type')", 3),
    ("G.V().Values('Type')", 2),
    ("G.V().Values('Map')", 1),
    ("G.E().Has('Direction', 'Left').SubGraph().V()", 3),
    ("G.E().Has('Direction', 'Left').SubGraph().E()", 2),
    ("G.V().Has('Type', 'intf').SubGraph().V()", 2),
    ("G.V().Has('Type', 'intf').SubGraph().E()", 1),
    ("G.V().Has('Value', 2).ShortestPathTo(Metadata('Value', 4)).SubGraph().V()", 3),
    ("G.V().Has('Value', 1).ShortestPathTo(Metadata('Value', 3))", 1),
    ("G.V().Has('Value', Within(1, 2)).ShortestPathTo(Metadata('Value', 3))", 2),
    ("G.V().Has('Value', 1).ShortestPathTo(Metadata('Value', 3), Metadata('Direction', 'Left'))",
     1),
    ("G.V().Has('Value', NE('ZZZ')).Limit(1)", 1),
    ("G.V().HasNot('ZZZ').Limit(1)", 1),
    ("G.V().HasKey('Value').Limit(1)", 1),
    ("G.V().Out().Limit(1)", 1),
    ("G.V().In().Limit(1)", 1),
    ("G.V().Both().Limit(1)", 1),
    ("G.V().Dedup().Limit(1)", 1),
    ("G.V().OutE().Limit(1)", 1),
    ("G.V().InE().Limit(1)", 1),
    ("G.V().BothE().Limit(1)", 1),
    ("G.V().BothE().InV().Limit(1)", 1),
    ("G.V().BothE().OutV().Limit(1)", 1),
    ("G.V().Range(1, 3)", 2),
    ("G.V('n1')", 1),
    ("G.E('e5')", 1),
    ("G.V().Has('@ID', 'n2')", 1),
    ("G.V().Has('@Host', 'host1')", 4),
    ("G.V().Has('Metadata.Value', 2)", 1),
    ("G.V().Has('Map.a', 1)", 1),
    ("G.V().HasKey('Map.a')", 1),
    ("G.V().Has('ID', 'n1')", 0),
    ("G.V().Has('Value', 1).Out().In()", 5),
    ("G.V().Has('Value', 1).OutE().InV()", 3),
    ("G.V().Has('Value', 1).Descendants('RelationType', 'layer2')", 4),
    ("G.V().Has('Value', 2).Descendants('RelationType', 'layer2', 0)", 3),
    ("G.V().Has('Value', 4).Ascendants('Name', 'e3')", 2),
    ("G.V().Has('Value', 2).Neighbors('RelationType', 'layer2')", 3),
    ("G.V().Has('Value', 1).Descendants()", 1),
    ("G.V().Has('Value', 1).As('a').Out().As('b').Select('a', 'b')", 4),
    ("G.V().Has('Value', 1).As('a').Out().Select('a')", 1),
    ("G.V().Sort(DESC, 'Value').Limit(1).Has('Value', 4)", 1),
]


@pytest.mark.parametrize(("query", "expected"), COUNTS, ids=[q for q, _ in COUNTS])
def test_result_count(gdb: GremlinDB, query: str, expected: int) -> None:
    assert len(gdb.query(query)) == expected


def names(result: list[dict[str, Any]]) -> list[Any]:
    return [r["Metadata"].get("Name", r["Metadata"].get("Value")) for r in result]


def test_chain_reaches_node4(gdb: GremlinDB) -> None:
    res = gdb.query("G.V().Has('Value', 1).Out().Has('Value', 2).OutE()"
                    ".Has('Direction', 'Left').OutV().Out()")
    assert names(res) == ["Node4"]


def test_outv_is_child(gdb: GremlinDB) -> None:
    res = gdb.query("G.V().Has('Value', 1).OutE().Has('Mode', 'Direct').OutV()")
    assert res[0]["Metadata"]["Value"] == 3
    res = gdb.query("G.V().Has('Value', 1).OutE().Has('Mode', 'Direct').InV()")
    assert res[0]["Metadata"]["Value"] == 1


def test_count_and_sum(gdb: GremlinDB) -> None:
    assert gdb.query("G.V().Count()") == 4
    assert gdb.query("g.v().count()") == 4
    assert gdb.query("G.V().Sum('Bytes')") == 7072
    assert gdb.query("G.E().Count()") == 5


def test_keys(gdb: GremlinDB) -> None:
    keys = gdb.query("G.V().Keys()")
    assert len(keys) == 16
    assert "@ID" in keys and "Map" in keys and "IPV4" in keys


def test_values(gdb: GremlinDB) -> None:
    assert sorted(gdb.query("G.V().Values('Value')")) == [1, 2, 3, 4]
    assert gdb.query("G.V().Values('Map')") == [{"a": 1}]
    assert gdb.query("G.V().Values('Type').Dedup()") == ["intf"]
    assert gdb.query("G.V().Values('Type').Count()") == 2
    assert gdb.query("G.V().Has('Value', 1).Values('@ID')") == ["n1"]
    assert gdb.query("G.V().Has('Value', 1).Values('List')") == [["111", "222"]]


def test_value_map(gdb: GremlinDB) -> None:
    res = gdb.query("G.V().Has('Value', Within(1, 4)).Sort('Value').ValueMap('Value', 'Name')")
    assert res == [{"Value": 1}, {"Value": 4, "Name": "Node4"}]


def test_shortest_path_shapes(gdb: GremlinDB) -> None:
    paths = gdb.query("G.V().Has('Value', 1).ShortestPathTo(Metadata('Value', 3))")
    assert [[n["ID"] for n in p] for p in paths] == [["n1", "n3"]]
    paths = gdb.query("G.V().Has('Value', 1).ShortestPathTo(Metadata('Value', 3), "
                      "Metadata('Direction', 'Left'))")
    assert [[n["ID"] for n in p] for p in paths] == [["n1", "n2", "n3"]]
    paths = gdb.query("G.V().Has('Value', 1).ShortestPathTo(Metadata('Value', 3), "
                      "Metadata('RelationType', 'layer2'))")
    assert [[n["ID"] for n in p] for p in paths] == [["n1", "n3"]]


def test_node_json_shape(gdb: GremlinDB) -> None:
    (n1,) = gdb.query("G.V('n1')")
    assert n1 == {"ID": "n1", "Metadata": {"Value": 1, "Type": "intf", "Bytes": 1024,
                                           "List": ["111", "222"], "Map": {"a": 1}},
                  "Host": "host1", "Origin": "test", "CreatedAt": 1000, "UpdatedAt": 1000,
                  "Revision": 0} or set(n1) >= {"ID", "Metadata", "Host", "Origin",
                                                "CreatedAt", "UpdatedAt", "Revision"}
    assert n1["Metadata"]["Map"] == {"a": 1}
    (e5,) = gdb.query("G.E('e5')")
    assert (e5["Parent"], e5["Child"]) == ("n1", "n3")
    assert e5["Metadata"] == {"RelationType": "layer2", "Mode": "Direct", "Name": "e5"}


def test_subgraph_terminal(gdb: GremlinDB) -> None:
    graph = gdb.query("G.V().Has('Type', 'intf').SubGraph()")
    assert sorted(n["ID"] for n in graph["Nodes"]) == ["n1", "n2"]
    assert [e["ID"] for e in graph["Edges"]] == ["e1"]


def test_sort(gdb: GremlinDB) -> None:
    assert [n["ID"] for n in gdb.query("G.V().Sort('Value')")] == ["n1", "n2", "n3", "n4"]
    assert [n["ID"] for n in gdb.query("G.V().Sort(DESC, 'Value')")] == ["n4", "n3", "n2", "n1"]


def test_stream_order_is_kept(gdb: GremlinDB) -> None:
    def order(text: str) -> list[str]:
        return [n["ID"] for n in gdb.query(text)]
    assert order("G.V().Sort('Value').Dedup('Type')") == ["n1", "n3", "n4"]
    assert order("G.V().Sort(DESC, 'Value').Dedup('Type')") == ["n4", "n3", "n2"]
    # children of n3 (n4), then n2 (n3), then n1 (n2, n4, n3): first occurrences win
    assert order("G.V().Sort(DESC, 'Value').Out().Dedup()") == ["n4", "n3", "n2"]
