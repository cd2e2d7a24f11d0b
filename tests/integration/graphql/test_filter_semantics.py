"""One filter, two evaluations: the Cypher `Reads` sends to the real store and
the Python matcher subscriptions use must keep the same nodes and edges, on
a graph with awkward values (lists, maps, nulls, JSON-stored values, booleans
next to numbers)."""

from __future__ import annotations

from typing import Any

import pytest

from skygraph.api.reads import EdgeFilter, MetadataPredicate, NodeFilter, matches
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded
from tests.integration.graphql.conftest import Served
from tests.unit.api.test_reads import NODE

pytestmark = pytest.mark.bolt

ODD = [
    NODE,
    Node("odd2", {"Name": "eth0", "Type": "device", "MTU": "1500", "Up": 1, "Zero": False,
                  "IPV4": "10.0.0.2/24", "Flags": [2], "Ovs": {"DPDK": False}, "Null": "null",
                  "Text": None, "Mixed": ["a", "b"], "Routes": [], "Number": 42},
         Host="agentB"),
    Node("odd3", {"Name": "odd3", "Type": "device", "Ovs": {"Ports": 2.0}, "Speed": 3,
                  "Empty": {"k": 1}, "ExtID": {"k8s": "x"}}, Host="agentA"),
]


@pytest.fixture(scope="module", autouse=True)
def odd_nodes(served: Served) -> None:
    served.apply([*(NodeAdded(n) for n in ODD),
                  EdgeAdded(Edge("odd-e", "odd2", "odd3", {"RelationType": "layer2",
                                                           "Weight": 3, "Tags": ["a", "b"]}))])


def P(key: str, **op: Any) -> MetadataPredicate:
    return MetadataPredicate(key, **op)


NODE_FILTERS = [
    *(NodeFilter(metadata=(P(key, **op),)) for key, op in [
        ("Name", {"eq": "eth0"}), ("IPV4", {"eq": "10.0.0.2/24"}), ("MTU", {"eq": 1500.0}),
        ("MTU", {"eq": "1500"}), ("Up", {"eq": 1}), ("Up", {"eq": True}), ("Zero", {"eq": 0}),
        ("Zero", {"eq": False}), ("Number", {"eq": 42}), ("Number", {"eq": "42"}),
        ("Ovs.DPDK", {"eq": True}), ("Ovs.DPDK", {"eq": False}), ("Ovs.Ports", {"eq": 2}),
        ("Null", {"eq": "null"}), ("Text", {"eq": "null"}), ("Mixed", {"eq": "a"}),
        ("Routes", {"eq": "[]"}), ("Flags", {"eq": 2}),
        ("Name", {"ne": "eth0"}), ("Missing", {"ne": "x"}), ("IPV4", {"ne": "10.0.0.1/24"}),
        ("Ovs", {"ne": "x"}), ("Up", {"ne": True}), ("Null", {"ne": "null"}),
        ("Type", {"in_": ("device", "host")}), ("Flags", {"in_": (2, 3)}),
        ("Up", {"in_": (1,)}), ("Mixed", {"in_": ("a",)}),
        ("Name", {"regex": "eth[0-9]"}), ("IPV4", {"regex": "10\\.0\\.0\\.2/.*"}),
        ("MTU", {"regex": "15.*"}), ("Routes", {"regex": ".*Dst.*"}), ("Null", {"regex": "nu.*"}),
        ("MTU", {"lt": 1501}), ("MTU", {"gt": 1499.9}), ("Speed", {"gt": 2}),
        ("Up", {"gt": 0}), ("IPV4", {"gt": 0}), ("Ovs.Ports", {"lt": 3}),
        ("Ovs", {"exists": True}), ("Ovs.DPDK", {"exists": True}), ("Null", {"exists": True}),
        ("Empty", {"exists": True}), ("Empty.k", {"exists": True}), ("ExtID", {"exists": True}),
        ("ExtID.k8s", {"exists": True}), ("Text", {"exists": False}), ("Host", {"exists": True}),
        ("@Host", {"eq": "agentB"}), ("@Revision", {"in_": (1, 2)}), ("@CreatedAt", {"gt": 0}),
    ]),
    NodeFilter(type="device", host="agentA"),
    NodeFilter(types=("device", "veth"), name_regex="eth.*"),
    NodeFilter(name="eth0", metadata=(P("IPV4", exists=True), P("Up", ne=False))),
]
EDGE_FILTERS = [
    EdgeFilter(relation_type="layer2"),
    EdgeFilter(relation_type="layer2", metadata=(P("Type", eq="veth"),)),
    EdgeFilter(parent="odd2"),
    EdgeFilter(child="if1-3", host="agentA"),
    EdgeFilter(metadata=(P("Weight", gt=2), P("Tags", eq="b"))),
    EdgeFilter(metadata=(P("Tags", in_=("c", "a")),)),
    EdgeFilter(metadata=(P("Type", exists=False), P("RelationType", regex="own.*"))),
]


@pytest.mark.parametrize("f", NODE_FILTERS, ids=repr)
def test_nodes_cypher_and_python_agree(served: Served, f: NodeFilter) -> None:
    page = served.run(served.api.reads.nodes(f, first=1000))
    assert not page.has_next
    expected = sorted(n.ID for n in served.api.graph.nodes.values() if matches(f, n))
    assert [n.ID for n in page.items] == expected


@pytest.mark.parametrize("f", EDGE_FILTERS, ids=repr)
def test_edges_cypher_and_python_agree(served: Served, f: EdgeFilter) -> None:
    page = served.run(served.api.reads.edges(f, first=1000))
    expected = sorted(e.ID for e in served.api.graph.edges.values() if matches(f, e))
    assert expected and [e.ID for e in page.items] == expected
