"""Missing keys vs keys holding null (or other values the store keeps as JSON
text): a null-valued key exists, never equals a string, and is not a value."""

from __future__ import annotations

import pytest

from tests.integration.gremlin.conftest import GremlinDB, edge, node

pytestmark = pytest.mark.bolt


@pytest.fixture(scope="module", autouse=True)
def graph(gdb: GremlinDB) -> None:
    gdb.load([node("a", Name="a", Type="device", Nothing=None, Text="null", Empty={},
                   Routes=[{"Prefix": "0.0.0.0/0"}], Ovs={"Metric": {"RxBytes": 7}}),
              node("b", Name="b", Type="device", Text="x", Nums=[1, 2])],
             [edge("e", "a", "b", RelationType="layer2", Weight=None)])


@pytest.mark.parametrize(("query", "expected"), [
    ("G.V().HasKey('Nothing')", ["a"]),
    ("G.V().HasNot('Nothing')", ["b"]),
    ("G.V().Has('Nothing')", ["a"]),
    ("G.V().Has('Nothing', 'null')", []),
    ("G.V().Has('Text', 'null')", ["a"]),
    ("G.V().Has('Empty', '{}')", []),
    ("G.V().Has('Nothing', Ne('x'))", ["a"]),
    ("G.V().Has('Nothing', Nee('x'))", ["a", "b"]),
    ("G.V().Has('Missing', Nee('x'))", ["a", "b"]),
    ("G.V().Has('Missing', Ne('x'))", []),
    ("G.V().HasKey('Ovs')", ["a"]),
    ("G.V().HasKey('Ovs.Metric')", ["a"]),
    ("G.V().Has('Ovs.Metric.RxBytes', Gt(5))", ["a"]),
    ("G.V().HasKey('Routes')", ["a"]),
    ("G.V().Has('Nums', 2)", ["b"]),
    ("G.V().Has('Nums', Within(5, 2))", ["b"]),
    ("G.V().Has('Nums', Without(5, 2))", ["a"]),
    ("G.E().HasKey('Weight')", ["e"]),
])
def test_keys(gdb: GremlinDB, query: str, expected: list[str]) -> None:
    assert sorted(r["ID"] for r in gdb.query(query)) == expected


def test_values_of_encoded_and_nested_keys(gdb: GremlinDB) -> None:
    assert gdb.query("G.V().Values('Nothing')") == []
    assert gdb.query("G.V().Values('Empty')") == []
    assert gdb.query("G.V().Values('Routes')") == [[{"Prefix": "0.0.0.0/0"}]]
    assert gdb.query("G.V().Values('Ovs')") == [{"Metric": {"RxBytes": 7}}]
    assert gdb.query("G.V().Values('Ovs.Metric.RxBytes')") == [7]
    assert gdb.query("G.V('a').ValueMap('Routes', 'Ovs.Metric', 'Nothing')") == [
        {"Routes": [{"Prefix": "0.0.0.0/0"}], "Ovs.Metric": {"RxBytes": 7}}]
    (a,) = gdb.query("G.V('a')")
    assert a["Metadata"]["Nothing"] is None and a["Metadata"]["Empty"] == {}
