"""Translator: Cypher shape, parameters, safety and the errors users see."""

from __future__ import annotations

import re

import pytest

from skygraph.gremlin import (
    GremlinError,
    GremlinQueryError,
    Limits,
    NotAvailableError,
    parse,
    prepare,
    translate,
)
from skygraph.gremlin.errors import LimitExceededError

NOW = 1_700_000_000_000


def cypher(text: str) -> str:
    return prepare(text, NOW).cypher


def test_seed_query_plan() -> None:
    p = prepare("G.V().Has('Name', 'vm1').Out().Has('Name', 'eth0')", NOW)
    assert p.cypher == ("MATCH (n1:`Node`) WHERE (n1.`Name` = $p0) "
                        "MATCH (n1)-->(n2) WHERE (n2.`Name` = $p1) AND 'Node' IN labels(n2) "
                        "RETURN properties(n2) AS element")
    assert p.params["p0"] == "vm1" and p.params["p1"] == "eth0"
    assert "ArchivedNode" not in p.cypher and "ArchivedEdge" not in p.cypher


def test_list_aware_terms_except_for_scalar_keys() -> None:
    # Name/Type/TID/MAC/RelationType are always strings: a plain, indexable equality
    assert "n1.`Name` = $p0)" in cypher("G.V().Has('Name', 'x')")
    assert "n1.`Name` IN $p0" in cypher("G.V().Has('Name', Within('x', 'y'))")
    # any other key also matches a list containing the value (SPEC §1f)
    assert "$p0 IN (CASE WHEN n1.`IPV4` IS :: LIST<ANY> NOT NULL" in cypher(
        "G.V().Has('IPV4', '10.0.0.1')")


def test_every_hop_is_its_own_match() -> None:
    # separate MATCH clauses: one edge may be walked twice (Out().In() returns the origin)
    assert cypher("G.V().Out().In()").count("MATCH") == 3


def test_outv_is_child_inv_is_parent() -> None:
    assert "WITH endNode(e1) AS n2" in cypher("G.E().OutV()")
    assert "WITH startNode(e1) AS n2" in cypher("G.E().InV()")


def test_filters_fold_into_the_match() -> None:
    text = cypher("G.V().Has('Type', 'host').HasKey('Name').HasNot('X')")
    assert text.count("MATCH") == 1 and " WITH n1" not in text


def test_context_reads_history() -> None:
    p = prepare("G.At('-1s').V().Has('Name', 'lo')", NOW)
    assert "ArchivedNode" in p.cypher
    assert NOW - 1000 in p.params.values()
    slice_ = prepare("G.At('-1s', 1000).V()", NOW)
    assert {NOW - 1000, NOW - 1000 - 1_000_000} <= set(slice_.params.values())


HOSTILE = [
    "x') DETACH DELETE n //",
    "x` DETACH DELETE n //",
    "x\" RETURN 1 //",
    "}) MATCH (m) DETACH DELETE m //",
]

QUERIES = [
    "G.V().Has('Name', {v})", "G.V().Has('Name', Within({v}, 'a'))",
    "G.V().Has('Name', Regex({v}))", "G.V().Has('Name', Ne({v}))", "G.V({v})",
    "G.E({v})", "G.V().Out('Name', {v})", "G.V().HasEither('A', {v}, 'B', {v})",
    "G.V().ShortestPathTo(Metadata('Name', {v}), Metadata('RelationType', {v}))",
    "G.V().Descendants('RelationType', {v})", "G.V().Has('Name', Nee({v})).Values('Name')",
    "G.At('-1s').V().Has('Name', {v}).Out()", "G.V().SubGraph('Name', {v}).E()",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("template", QUERIES)
def test_no_user_value_in_cypher(template: str, value: str) -> None:
    literal = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    text = template.format(v=literal)
    try:
        p = prepare(text, NOW)
    except GremlinQueryError:
        return  # rejected (e.g. an invalid regex) is safe too
    assert value not in p.cypher
    assert "DETACH" not in p.cypher and "DELETE" not in p.cypher
    assert value in [v for v in p.params.values()] or \
        any(value in v for v in p.params.values() if isinstance(v, list)) or "Regex" in text


def test_hostile_keys_are_rejected_or_quoted() -> None:
    with pytest.raises(GremlinQueryError, match="invalid key"):
        prepare("G.V().Has('a`) DETACH DELETE n //', 1)", NOW)
    text = cypher("G.V().Has('a) DETACH DELETE n //', 1)")
    assert "`a) DETACH DELETE n //`" in text  # a backquoted property name, nothing else
    assert re.search(r"n1\.`a\) DETACH DELETE n //` = \$p0", text)


# Semantic errors, with their exact messages.
ERRORS = [
    ("G", "column 2: expected a step after G, like V() or E()"),
    ("G.Has('a', 1)", "column 3: Has() cannot follow G"),
    ("G.V().OutV()", "column 7: OutV() cannot follow V()"),
    ("G.E().Out()", "column 7: Out() cannot follow E()"),
    ("G.V().Count().Out()", "column 15: Out() cannot follow Count()"),
    ("G.V().Values('a').Out()", "column 19: Out() cannot follow Values()"),
    ("G.V().Has('a', 1, 'b')",
     "column 7: Has() takes a key alone or key, value pairs; got 3 arguments"),
    ("G.V().Has(1, 2)", "column 11: expected a key (a string), got 1"),
    ("G.V().Has('', 2)", "column 11: invalid key ''"),
    ("G.V().Has('a..b', 2)", "column 11: invalid key 'a..b'"),
    ("G.V().Has('a', Regex('a(b'))",
     "column 22: invalid regex 'a(b': missing ), unterminated subpattern at position 1"),
    ("G.V().Has('a', Lt('x'))", "column 19: Lt() expects a number, got 'x'"),
    ("G.V().Has('a', Ipv4Range('10.0.0.0/33'))",
     "column 26: Ipv4Range() expects an IPv4 CIDR, got '10.0.0.0/33'"),
    ("G.V().Has('a', NOW)", "column 16: unexpected keyword NOW as a value"),
    ("G.At('yesterday').V()",
     "column 6: invalid time 'yesterday': expected NOW, a duration like '-1s', an RFC 1123 "
     "date or epoch seconds/milliseconds"),
    ("G.At(NOW, 'soon').V()",
     "column 11: invalid duration 'soon': expected FOREVER, a duration like '5m' or seconds"),
    ("G.At(true).V()",
     "column 6: invalid time True: expected NOW, a duration like '-1s', an RFC 1123 date or "
     "epoch seconds/milliseconds"),
    ("G.V().At('-1s')", "column 7: Context() must come right after G"),
    ("G.V().Range(3, 1)", "column 7: Range() needs 0 <= from <= to, got 3, 1"),
    ("G.V().Sort(NOW, 'a')", "column 12: Sort() order must be ASC or DESC, got NOW"),
    ("G.V().Select('x')", "column 14: Select(): no set saved by As('x')"),
    ("G.V().ShortestPathTo('x')", "column 22: ShortestPathTo() expects Metadata(...), got 'x'"),
    ("G.V().Sum()", "column 7: Sum() on nodes needs a key"),
    ("G.V(1)", "column 5: V() takes an element ID (a string)"),
    ("G.V().Dedup().Values('a').Dedup('b')",
     "column 27: Dedup() after Values() takes no keys"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[t for t, _ in ERRORS])
def test_query_errors(text: str, message: str) -> None:
    with pytest.raises(GremlinError) as info:
        prepare(text, NOW)
    assert str(info.value) == message


# Flow steps not implemented yet: a clear error naming the step and why.
FLOW_QUERIES = [
    ("G.V().Sockets()", 7, "Sockets",
     "no socket information (Skydive's socketinfo probe) is collected"),
    ("G.V().NextHop('1.1.1.1')", 7, "NextHop", "routing tables are not evaluated yet"),
    ("G.Workflow('check-connectivity', 'a', 'b')", 3, "Workflow", "workflows are not supported"),
]


# SPEC §1f flow-step examples that translate (they run in tests/integration/gremlin/test_flows.py).
SPEC_FLOW_QUERIES = [
    "G.Flows().Has('ICMP.ID', 222)", "G.Flows().Has('ICMP.ID', NE(555))",
    "G.Flows().Has('ICMP.ID', NE(555)).Limit(1)",
    "G.Flows().HasEither('ICMP.ID', 222, 'ICMP.ID', 444)",
    "G.Flows().Has('NodeTID', 'node1').Has('ICMP.ID', 222)", "G.Flows().Dedup('ICMP.ID')",
    "G.Flows().CaptureNode()", "G.Flows().Node()", "G.Flows().In()", "G.Flows().Out()",
    "G.Flows().Both()", "G.Flows().Nodes()", "G.Flows().Hops()", "G.Flows().Group()",
    "G.Flows().Group().MoreThan(1)", "G.Flows().Sort(DESC, 'Last').Range(0, 5)",
    "G.Context(NOW, 60).Flows().Has('Network', '169.254.34.33')",
    "G.V().Has('Name', 'eth0').ShortestPathTo(Metadata('Name', 'eth1')).Flows()",
    "G.Flows().Sum('Metric.ABBytes')",
    "G.V().Has('Name', 'eth0').Flows().Metrics().Aggregates(10)",
    "G.Flows().RawPackets().BPF('port 22')",
    "G.At('-1s', 1000).Flows().Has('Application', 'ICMPv4').RawPackets()",
    "G.At('-1s', 1000).Flows().Metrics().Sum()",
]
SPEC_UNAVAILABLE = [
    "G.Flows().Sockets()", "G.V().NextHop('8.8.8.8')",
    "G.Workflow('check-connectivity', 'a', 'b')",
]


@pytest.mark.parametrize("text", SPEC_FLOW_QUERIES)
def test_spec_flow_queries_translate(text: str) -> None:
    plan = prepare(text, NOW)
    assert "`Flow`" in plan.cypher


@pytest.mark.parametrize("text", SPEC_UNAVAILABLE)
def test_spec_flow_queries_not_available_fail_cleanly(text: str) -> None:
    parse(text)
    with pytest.raises(NotAvailableError, match=r"^column \d+: \w+\(\) is not available: "):
        prepare(text, NOW)


@pytest.mark.parametrize(("text", "column", "step", "why"), FLOW_QUERIES)
def test_flow_steps_not_available(text: str, column: int, step: str, why: str) -> None:
    with pytest.raises(NotAvailableError) as info:
        prepare(text, NOW)
    assert str(info.value) == f"column {column}: {step}() is not available: {why}"


def test_depth_limit() -> None:
    with pytest.raises(LimitExceededError, match="depth 50 exceeds the limit of 10"):
        prepare("G.V().Descendants(50)", NOW)
    assert "*0..10]" in cypher("G.V().Descendants(0)")
    assert "*..4]" in translate(parse("G.V().ShortestPathTo(Metadata('Name', 'x'))"), NOW,
                                Limits(max_depth=4)).cypher


def test_result_cap() -> None:
    p = translate(parse("G.V()"), NOW, Limits(max_results=2))
    assert "LIMIT" not in p.cypher  # checked on the records (a LIMIT is slow on ArcadeDB)
    in_query = translate(parse("G.V()"), NOW, Limits(max_results=2, cap_in_query=True))
    assert in_query.params[in_query.cypher.rsplit("$", 1)[1]] == 3
    rows = [{"element": {"ID": str(i)}} for i in range(3)]
    with pytest.raises(LimitExceededError, match="more than 2 results"):
        p.finish(rows)
    assert len(p.finish(rows[:2])) == 2


def test_flow_filters_are_plain_parameterised_comparisons() -> None:
    p = prepare("G.Flows().Has('NodeTID', 'n1').Has('IPV4.A', '10.0.0.1')", NOW)
    # the address finds the flows (an index seek), the capture node tests them
    assert p.cypher.startswith("MATCH (f1:`Flow`) WHERE f1.`Network.A` = $p1 "
                               "WITH f1 WHERE f1.`NodeTID` = $p0 RETURN")
    assert dict(p.params) == {"p0": "n1", "p1": "10.0.0.1"}
    assert "WHERE (f1.`Transport.A` = $p0 OR f1.`Transport.B` = $p1) RETURN" in cypher(
        "G.Flows().Has('TCP', 80)")
    assert "f1.`Link.B` = $p0" in cypher("G.Flows().Has('ETHERNET.B', 'x')")
    # extra layers may hold lists: list-aware, as on nodes
    assert "IN (CASE WHEN" in cypher("G.Flows().Has('DNS.ID', 3)")
    # from nodes: their TIDs, through the NodeTID index
    assert "collect(DISTINCT n1.TID) AS tids3 UNWIND tids3 AS t4 MATCH (f2:`Flow` " \
           "{NodeTID: t4})" in cypher("G.V().Has('Name', 'eth0').Flows()")


def test_flow_time_window_follows_the_context_and_flow_expire() -> None:
    p = translate(parse("G.At(1000, 60).Flows()"), NOW, Limits(flow_expire_s=30))
    # one parameter per bound: plain ranges the integer indexes serve
    assert "f1.Last >= $p2 AND f1.Start <= $p1" in p.cypher
    assert (p.params["p1"], p.params["p2"]) == (1_000_000, 940_000 - 30_000)
    p = translate(parse("G.At(1000).Flows()"), NOW)
    assert "f1.Last >= $p1 AND f1.Start <= $p0" in p.cypher
    assert p.params["p1"] == 1_000_000 - 600_000  # flow.expire's default
    assert "Start" not in cypher("G.Flows()")
