"""The API's read builders (Cypher text + parameters) and the Python matcher,
without a database. The same filters run against the real store in
tests/integration/graphql/test_filter_semantics.py."""

from __future__ import annotations

from typing import Any

import pytest

from skygraph.api.reads import (
    EdgeFilter,
    FilterError,
    MetadataPredicate,
    NodeFilter,
    When,
    check_filter,
    decode_cursor,
    edges_page_query,
    encode_cursor,
    incident_edges_query,
    matches,
    matches_predicates,
    neighbours_query,
    nodes_by_ids_query,
    nodes_page_query,
)
from skygraph.topology.model import Edge, Node

LIVE, AT, DURING = When(), When(at=1000), When(during=(1000, 2000))


def P(key: str, **op: Any) -> MetadataPredicate:
    return MetadataPredicate(key, **op)


# ---------------------------------------------------------------- Cypher builders

def test_live_page_query_takes_every_value_as_a_parameter() -> None:
    f = NodeFilter(type="netns", name="x' OR true //", host="h1", name_regex="a.*",
                   metadata=(P("Ovs.DPDK", eq=True), P("MTU", gt=1500), P("IPV4", in_=("a", "b"))))
    cypher, params = nodes_page_query(f, LIVE, encode_cursor(Node("n9")), 11)
    assert cypher.startswith("MATCH (n:`Node`) WHERE ")
    assert cypher.endswith(" WITH n ORDER BY n.ID LIMIT $p8 RETURN properties(n) AS p")
    assert "x' OR true" not in cypher and "x' OR true //" in params.values()
    assert "n.`Ovs.DPDK`" in cypher and "n.`Host` = $" in cypher and "n.`Type` = $" in cypher
    assert "n.ID > $" in cypher
    assert params["p8"] == 11 and params["p7"] == "n9"
    assert "Archived" not in cypher


def test_history_page_queries_union_archived_revisions() -> None:
    cypher, params = nodes_page_query(NodeFilter(type="netns"), AT, None, 5)
    assert "MATCH (n:`Node`) WHERE n.CreatedAt <= $t" in cypher
    assert "UNION ALL MATCH (n:`ArchivedNode`) WHERE n.CreatedAt <= $t" in cypher
    assert "n.ArchivedAt > $t" in cypher and params["t"] == 1000
    cypher, params = nodes_page_query(None, DURING, encode_cursor(Node("a", UpdatedAt=7,
                                                                       Revision=2)), 5)
    assert "n.DeletedAt >= $start" in cypher and (params["start"], params["end"]) == (1000, 2000)
    assert cypher.endswith("WITH n ORDER BY n.ID, n.UpdatedAt, n.Revision LIMIT $p3 "
                           "RETURN properties(n) AS p")
    assert "n.UpdatedAt > $p1" in cypher and "n.Revision > $p2" in cypher


def test_edge_pages_use_a_typed_pattern_and_keep_the_exact_test() -> None:
    f = EdgeFilter(relation_type="layer2", parent="a", child="b", host="h")
    cypher, params = edges_page_query(f, LIVE, None, 3)
    assert cypher.startswith("MATCH (:`Node`)-[e:`LAYER2`]->(:`Node`) WHERE ")
    assert "e.`RelationType` = $" in cypher and "e.Parent = $" in cypher
    assert {"layer2", "a", "b", "h"} <= set(params.values())
    cypher, _ = edges_page_query(EdgeFilter(relation_type="we`ird"), LIVE, None, 3)
    assert "[e:`WE_IRD`]" in cypher  # sanitised by the schema, never the raw text
    cypher, _ = edges_page_query(f, AT, None, 3)
    assert "MATCH (e:`ArchivedEdge`) WHERE" in cypher


@pytest.mark.parametrize(("direction", "live", "archived"), [
    ("out", "(_s:`Node` {ID: _id})-[e]->(_o)", ["e.Parent = _id"]),
    ("in", "(_s:`Node` {ID: _id})<-[e]-(_o)", ["e.Child = _id"]),
    ("both", "(_s:`Node` {ID: _id})-[e]-(_o)", ["e.Parent = _id", "e.Child = _id"]),
])
def test_incident_edges_of_many_nodes_in_one_query(direction: str, live: str,
                                                   archived: list[str]) -> None:
    cypher, params = incident_edges_query(direction, LIVE, EdgeFilter(relation_type="ownership"))
    assert cypher.startswith("UNWIND $ids AS _id ")
    assert live.replace("[e]", "[e:`OWNERSHIP`]") in cypher
    assert "ownership" in params.values()
    cypher, params = incident_edges_query(direction, AT, None)
    assert all(a in cypher for a in archived) and params == {"t": 1000}
    assert cypher.count("ArchivedEdge") == len(archived)


def test_neighbours_and_nodes_by_id_queries() -> None:
    cypher, params = neighbours_query("out", LIVE, None, NodeFilter(type="veth"))
    assert "-[e]->(m)" in cypher and "m.`Type` = $p0" in cypher and params == {"p0": "veth"}
    cypher, params = neighbours_query("both", DURING, EdgeFilter(relation_type="layer2"), None)
    assert "CASE WHEN e.Parent = _id THEN e.Child ELSE e.Parent END AS _oid" in cypher
    assert "MATCH (m:`ArchivedNode` {ID: _oid})" in cypher and params["end"] == 2000
    assert nodes_by_ids_query(LIVE) == ("UNWIND $ids AS _id MATCH (n:`Node` {ID: _id}) "
                                        "RETURN properties(n) AS p")
    assert "ArchivedNode" in nodes_by_ids_query(AT)
    with pytest.raises(FilterError, match="direction must be one of out, in, both"):
        incident_edges_query("up", LIVE, None)


@pytest.mark.parametrize(("f", "message"), [
    (NodeFilter(name_regex="("), "filter nameRegex: invalid regex '('"),
    (NodeFilter(metadata=(P("MTU"),)), "filter metadata[0]: key 'MTU': give exactly one of"),
    (NodeFilter(metadata=(P("MTU", eq=1, lt=3),)), "give exactly one of eq, ne, in"),
    (NodeFilter(metadata=(P("a`b", eq=1),)), "filter metadata[0]: invalid key 'a`b'"),
    (NodeFilter(metadata=(P("a..b", eq=1),)), "invalid key"),
    (NodeFilter(metadata=(P("x", eq=[1]),)), "expected a string, number or boolean"),  # type: ignore[arg-type]
    (NodeFilter(metadata=(P("x", lt="many"),)), "Lt() expects a number"),  # type: ignore[arg-type]
    (EdgeFilter(metadata=(P("x", regex="[a"),)), "filter metadata[0]: invalid regex"),
])
def test_invalid_filters_name_the_field(f: NodeFilter | EdgeFilter, message: str) -> None:
    with pytest.raises(FilterError) as info:
        check_filter(f)
    assert message in str(info.value)
    node = Node("n", {"x": 1, "MTU": 1})
    with pytest.raises(FilterError):  # the matcher rejects what the builder rejects
        matches(f, node if isinstance(f, NodeFilter) else Edge("e", "a", "b", {"x": 1}))


def test_cursors_and_time_scopes() -> None:
    cursor = encode_cursor(Node("ns/ü", UpdatedAt=5, Revision=3))
    assert decode_cursor(cursor) == ("ns/ü", 5, 3)
    for bad in ("", "!!!", "bm9wZQ", encode_cursor(Node("x"))[:-2]):
        with pytest.raises(FilterError, match="invalid cursor"):
            decode_cursor(bad)
    with pytest.raises(FilterError, match="not both"):
        When(at=1, during=(1, 2))
    with pytest.raises(FilterError, match="from is after to"):
        When(during=(3, 2))


# ---------------------------------------------------------------- the Python matcher

NODE = Node("n1", {
    "Name": "eth0", "Type": "veth", "MTU": 1500, "Speed": 2.5, "Up": True, "Zero": 0,
    "IPV4": ["10.0.0.1/24", "10.0.0.2/24"], "Flags": [1, 2], "Ovs": {"DPDK": True, "Ports": 2},
    "Null": None, "Empty": {}, "Routes": [{"Dst": "0.0.0.0/0"}], "Mixed": [1, "a"],
    "Text": "null", "ExtID": {"k8s.ovn.org/id": "x"}, "Number": "42",
}, Host="agentA", CreatedAt=1000, UpdatedAt=2000, Revision=2)


@pytest.mark.parametrize(("pred", "expected"), [
    (P("Name", eq="eth0"), True),
    (P("Name", eq="eth"), False),
    (P("IPV4", eq="10.0.0.2/24"), True),           # an item of a list
    (P("MTU", eq=1500.0), True),                    # numbers compare by value
    (P("Up", eq=1), False),                         # booleans only equal booleans
    (P("Zero", eq=False), False),
    (P("Up", eq=True), True),
    (P("Number", eq=42), False),                    # no string/number coercion
    (P("Ovs.DPDK", eq=True), True),                 # dotted path into a map
    (P("Metadata.Ovs.Ports", eq=2), True),
    (P("Ovs", eq="x"), False),
    (P("Null", eq="null"), False),                  # JSON-stored values are not their text
    (P("Text", eq="null"), True),                   # ... but a real string is
    (P("Routes", eq='[{"Dst":"0.0.0.0/0"}]'), False),
    (P("Mixed", eq=1), False),                      # a mixed list is stored as JSON text
    (P("Name", ne="eth1"), True),
    (P("Name", ne="eth0"), False),
    (P("Missing", ne="x"), False),                  # ne needs the key
    (P("IPV4", ne="10.0.0.1/24"), False),           # contains it
    (P("Ovs", ne="x"), True),                       # a map exists through its children
    (P("Type", in_=("device", "veth")), True),
    (P("Flags", in_=(3, 2)), True),
    (P("Flags", in_=(3,)), False),
    (P("Name", regex="eth[0-9]"), True),
    (P("Name", regex="eth"), False),                # anchored, as Cypher's =~
    (P("IPV4", regex="10\\.0\\.0\\.2/.*"), True),
    (P("MTU", regex="1500"), False),                # regexes match strings only
    (P("Routes", regex=".*Dst.*"), True),           # ... including JSON-stored text
    (P("MTU", lt=1501), True),
    (P("MTU", lt=1500), False),
    (P("MTU", gt=1499.9), True),                    # the bound is cast to an integer (1499)
    (P("Speed", gt=2), True),
    (P("Name", gt=1), False),
    (P("Up", gt=0), False),
    (P("IPV4", gt=0), False),
    (P("Ovs", exists=True), True),
    (P("Ovs.DPDK", exists=True), True),
    (P("Ovs.Nope", exists=True), False),
    (P("Null", exists=True), True),
    (P("Empty", exists=True), True),
    (P("ExtID", exists=True), True),
    (P("ExtID.k8s", exists=True), False),
    (P("Missing", exists=False), True),
    (P("@Host", eq="agentA"), True),
    (P("@CreatedAt", lt=1001), True),
    (P("@Revision", in_=(2, 3)), True),
    (P("@DeletedAt", exists=True), False),
    (P("Host", exists=True), False),                # element fields are not metadata
])
def test_matcher_semantics(pred: MetadataPredicate, expected: bool) -> None:
    assert matches(NodeFilter(metadata=(pred,)), NODE) is expected


def test_matcher_filter_fields() -> None:
    assert matches(NodeFilter(type="veth", name="eth0", host="agentA"), NODE)
    assert not matches(NodeFilter(type="veth", host="agentB"), NODE)
    assert matches(NodeFilter(types=("host", "veth"), name_regex="e.*"), NODE)
    assert not matches(NodeFilter(types=()), NODE)
    assert matches(None, NODE) and matches(NodeFilter(), NODE)
    edge = Edge("e1", "a", "b", {"RelationType": "layer2", "Type": "veth"}, Host="agentA")
    assert matches(EdgeFilter(relation_type="layer2", parent="a", child="b", host="agentA"), edge)
    assert not matches(EdgeFilter(parent="b"), edge)
    assert not matches(EdgeFilter(relation_type="ownership"), edge)
    assert matches(EdgeFilter(metadata=(P("Type", eq="veth"),)), edge)
    assert not matches(NodeFilter(), edge) and not matches(EdgeFilter(), NODE)


def test_predicates_on_flow_documents() -> None:
    flow = {"UUID": "f1", "Application": "TCP", "Network": {"A": "10.0.0.1", "B": "10.0.0.2"},
            "Metric": {"ABBytes": 1200}, "LayersPath": "Ethernet/IPv4/TCP"}
    assert matches_predicates([P("Network.A", regex="10\\..*"), P("Metric.ABBytes", gt=1000)],
                              flow)
    assert not matches_predicates([P("Application", eq="UDP")], flow)
    assert matches_predicates([], flow)
