"""Every flow field the translator and the GraphQL filters look flows up by has
an index, and the Cypher keeps one indexed condition where the planner uses it
(gremlin/lookups.py)."""

from __future__ import annotations

import re

import pytest

from skygraph.graphql.filters import MetadataPredicateInput
from skygraph.graphql.flows import FILTER_FIELDS, FlowFilterInput, page_query
from skygraph.gremlin import prepare
from skygraph.gremlin.flows import ENDPOINTS, TRACKING_ID
from skygraph.gremlin.lookups import INTEGER_FIELDS, LOOKUP_RANK, RANGE_RANK, split
from skygraph.gremlin.predicates import ELEMENT_KEYS
from skygraph.topology import schema

NOW = 1_700_000_000_000
INDEXED = {*schema.FLOW_INDEXED, "UUID"}  # UUID: the unique constraint's index


def test_every_ranked_field_is_indexed_and_every_index_ranked() -> None:
    assert set(LOOKUP_RANK) == INDEXED
    assert INTEGER_FIELDS.issubset({*schema.FLOW_INDEXED, "UpdatedAt"})


def test_every_field_the_filters_name_is_indexed() -> None:
    """A new filter field (GraphQL) or a key the flow steps look up themselves
    without an index fails here."""
    graphql = {ELEMENT_KEYS.get(key, key) for _, _, key in FILTER_FIELDS}
    endpoints = {f"{layer}.{end}" for layer in ENDPOINTS for end in ("A", "B")}
    steps = {"NodeTID", "ParentUUID", "Start", "Last", TRACKING_ID.prop}
    assert graphql | endpoints | steps <= INDEXED, (graphql | endpoints | steps) - INDEXED


def _match_where(cypher: str) -> str:
    """The first MATCH's WHERE (what the planner can serve from an index)."""
    m = re.search(r"MATCH \(f\d*:`?Flow`?\) WHERE (.*?)(?: WITH | RETURN )", cypher)
    assert m, cypher
    return m.group(1)


@pytest.mark.parametrize("attr,gql,key", FILTER_FIELDS)
def test_each_graphql_filter_field_finds_its_flows_by_index(attr: str, gql: str,
                                                            key: str) -> None:
    cypher, _ = page_query(FlowFilterInput(**{attr: "x"}), None, None, None, 10)
    prop = ELEMENT_KEYS.get(key, key)
    assert _match_where(cypher) == f"f.{schema.quote(prop)} = $p0"


@pytest.mark.parametrize("prop", sorted(INDEXED))
def test_each_indexed_field_is_a_plain_comparison_in_the_match(prop: str) -> None:
    value = "5" if prop not in INTEGER_FIELDS else 5
    literal = f"'{value}'" if isinstance(value, str) else str(value)
    key = "@Host" if prop == "Host" else prop  # Host is an element field: @Host
    cypher = prepare(f"G.Flows().Has('{key}', {literal})", NOW).cypher
    assert _match_where(cypher) == f"f1.{schema.quote(prop)} = $p0"


def test_either_end_stays_one_or_in_the_match_and_other_lookups_follow() -> None:
    # next to a plain indexed equality the embedded server would seek that one and
    # test the OR on every flow it finds: the equality is tested after a WITH
    cypher = prepare("G.Flows().Has('Application', 'UDP').Has('Network', '10.0.0.1')",
                     NOW).cypher
    assert cypher.startswith("MATCH (f1:`Flow`) WHERE (f1.`Network.A` = $p1 OR "
                             "f1.`Network.B` = $p2) WITH f1 WHERE f1.`Application` = $p0 ")
    # the best-ranked look-up wins, whatever the order of the steps
    cypher = prepare("G.Flows().Has('Network', '10.0.0.1', 'TrackingID', 't')", NOW).cypher
    assert _match_where(cypher) == "f1.`TrackingID` = $p2"
    # HasEither over indexed keys: one union of seeks
    cypher = prepare("G.Flows().HasEither('Network.A', 'a', 'Link.B', 'b')", NOW).cypher
    assert _match_where(cypher) == "(f1.`Network.A` = $p0 OR f1.`Link.B` = $p1)"


def test_ranges_and_unindexed_tests_stay_with_the_lookup() -> None:
    cypher = prepare("G.At(1700000000, 60).Flows().Has('Application', 'DNS', 'ICMP.ID', 3)",
                     NOW).cypher
    # the window's ranges and the unindexed ICMP.ID are tested on the seek's flows
    assert _match_where(cypher).startswith("f1.`Application` = $p3 AND f1.Last >= $p2 "
                                           "AND f1.Start <= $p1")
    # alone, a range is the look-up (Last first: a recent window narrows it)
    cypher = prepare("G.At(1700000000, 60).Flows()", NOW).cypher
    assert _match_where(cypher) == "f1.Last >= $p2 AND f1.Start <= $p1"
    assert _match_where(prepare("G.Flows().Has('Transport.A', Inside(1, 9))", NOW).cypher) \
        == "(f1.`Transport.A` > $p0 AND f1.`Transport.A` < $p1)"


def test_flows_of_nodes_use_a_better_lookup_than_their_capture_nodes() -> None:
    # after a WITH the embedded server seeks plain equalities only: a UNION of them
    cypher = prepare("G.V().Has('Name', 'eth0').Flows().Has('Network', '10.0.0.1')", NOW).cypher
    assert "WITH collect(DISTINCT n1.TID) AS tids3 CALL { WITH tids3 MATCH (f2:`Flow`) " \
           "WHERE f2.`Network.A` = $p1 AND f2.NodeTID IN tids3 RETURN f2 UNION WITH tids3 " \
           "MATCH (f2:`Flow`) WHERE f2.`Network.B` = $p2 AND f2.NodeTID IN tids3 RETURN f2 } " \
           "RETURN" in cypher
    cypher = prepare("G.V().Has('Name', 'eth0').Flows().Has('Network.A', Within('a', 'b'))",
                     NOW).cypher
    assert "f2.`Network.A` = $p2 AND f2.NodeTID IN tids3 RETURN f2 UNION WITH tids3 " \
           "MATCH (f2:`Flow`) WHERE f2.`Network.A` = $p3 AND" in cypher
    cypher = prepare("G.V().Has('Name', 'eth0').Flows().Has('TrackingID', 't', 'ICMP.ID', 1)",
                     NOW).cypher
    assert "MATCH (f2:`Flow`) WHERE f2.`TrackingID` = $p1 AND f2.NodeTID IN tids3 WITH f2 " \
           "WHERE f2.`ICMP.ID` = $p2 RETURN" in cypher
    # a range is no look-up there: the capture nodes' flows are
    cypher = prepare("G.V().Has('Name', 'eth0').Flows().Has('Last', Gt(5))", NOW).cypher
    assert "UNWIND tids3 AS t4 MATCH (f2:`Flow` {NodeTID: t4}) WITH f2 WHERE " \
           "f2.`Last` > $p1 RETURN" in cypher
    cypher = prepare("G.V().Has('Name', 'eth0').Flows().Has('Application', 'DNS')", NOW).cypher
    assert "UNWIND tids3 AS t4 MATCH (f2:`Flow` {NodeTID: t4}) WITH f2 WHERE " \
           "f2.`Application` = $p1 RETURN" in cypher


def test_a_literal_of_the_other_type_gets_a_type_test() -> None:
    """An index seek on the embedded server matches '80' to 80; Cypher does not."""
    assert "(f1.`Transport.A` = $p0 AND f1.`Transport.A` IS :: STRING)" in prepare(
        "G.Flows().Has('Transport.A', '80')", NOW).cypher
    assert "(f1.`TrackingID` = $p0 AND (f1.`TrackingID` IS :: INTEGER OR " \
           "f1.`TrackingID` IS :: FLOAT))" in prepare("G.Flows().Has('TrackingID', 5)", NOW).cypher
    within = prepare("G.Flows().Has('Application', Within('DNS', 'UDP', 3))", NOW)
    assert _match_where(within.cypher) == (
        "(f1.`Application` IN $p0 OR (f1.`Application` IN $p1 AND "
        "(f1.`Application` IS :: INTEGER OR f1.`Application` IS :: FLOAT)))")
    # (and one value each, for a UNION of seeks where only equalities are sought)
    assert dict(within.params) == {"p0": ["DNS", "UDP"], "p1": [3], "p2": "DNS", "p3": "UDP",
                                   "p4": 3}
    # the same types: a plain comparison
    assert "IS ::" not in prepare("G.Flows().Has('Transport.A', 80.0)", NOW).cypher
    # an OR of type-tested comparisons is still a union of seeks
    typed_or = prepare("G.Flows().Has('Application', 'DNS').Has('Transport', '80')", NOW)
    assert _match_where(typed_or.cypher).startswith("((f1.`Transport.A` = $p1 AND ")


def test_graphql_since_until_and_cursor_follow_the_lookup() -> None:
    filt = FlowFilterInput(application="DNS",
                           metadata=[MetadataPredicateInput(key="Network", eq="10.0.0.1")])
    cypher, _ = page_query(filt, 5, 9, None, 10)
    assert cypher.startswith("MATCH (f:`Flow`) WHERE (f.`Network.A` = $p1 OR "
                             "f.`Network.B` = $p2) AND f.Last >= $p3 AND f.Start <= $p4 "
                             "WITH f WHERE f.`Application` = $p0 WITH f ORDER BY f.UUID")


def test_split_keeps_the_order_of_the_rest() -> None:
    ranks = {"a": 4, "b": 1, "c": RANGE_RANK, "d": 1}
    assert split(["x", "a", "c", "b", "d"], ranks) == (["b", "x", "c"], ["a", "d"])
    assert split(["x", "y"], ranks) == (["x", "y"], [])


def test_flow_index_statements_are_named_quoted_and_typed() -> None:
    stmts = schema.schema_statements()
    assert "CREATE INDEX flow_network_a IF NOT EXISTS FOR (f:`Flow`) ON (f.`Network.A`)" in stmts
    assert "CREATE INDEX flow_last IF NOT EXISTS FOR (f:`Flow`) ON (f.`Last`)" in stmts
    seed = next(i for i, s in enumerate(stmts) if s.startswith("MERGE (s:`Flow`"))
    first_index = next(i for i, s in enumerate(stmts) if s.startswith("CREATE INDEX flow_"))
    assert seed < first_index
    assert "s.`Transport.A` = 4611686018427387904" in stmts[seed]
    assert stmts[-1].startswith("MATCH (s:`FlowMetric`") and "DETACH DELETE s" in stmts[-1]
    assert stmts[-2].startswith("MATCH (s:`Flow` {`UUID`: '_skygraph_index_types'})")


# The fields users filter flows on (issue 17): each must be served by an index.
FILTERED_BY_USERS = ("Application", "LayersPath", "Network.A", "Network.B", "Link.A", "Link.B",
                     "Transport.A", "Transport.B", "TrackingID", "L3TrackingID", "ParentUUID",
                     "NodeTID", "CaptureID", "Start", "Last")


def test_the_fields_users_filter_on_are_looked_up_through_an_index() -> None:
    assert [p for p in FILTERED_BY_USERS if p not in LOOKUP_RANK] == []


def test_bootstrap_creates_each_flow_index() -> None:
    stmts = "\n".join(schema.schema_statements())
    for prop in schema.FLOW_INDEXED:
        statement = schema.flow_index_statement(prop)
        assert statement in stmts and f"ON (f.{schema.quote(prop)})" in statement
    assert "REQUIRE f.UUID IS UNIQUE" in stmts
