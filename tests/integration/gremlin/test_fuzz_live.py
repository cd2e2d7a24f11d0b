"""Fuzz against the real server: random dialect-shaped queries over the
four-node graph, live and in the past, give a result or a GremlinError —
never a database error (which would mean the translator wrote bad Cypher)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skygraph.gremlin import GremlinError, Limits
from tests.integration.gremlin.conftest import GremlinDB
from tests.integration.gremlin.test_traversal_suite import four_nodes  # noqa: F401

pytestmark = pytest.mark.bolt

KEY = st.sampled_from(["'Value'", "'Name'", "'@ID'", "'Type'", "'Map'", "'Map.a'", "'IPV4'",
                       "'List'", "'Indexes'", "'Direction'", "'RelationType'", "'Nope'"])
VALUE = st.one_of(st.integers(-2, 5).map(str),
                  st.sampled_from(["'Node4'", "'intf'", "'111'", "'Left'", "'layer2'", "true",
                                   "1.0", "'10.0.0.1'", "''", "'-1s'"]))
PRED = st.one_of(
    st.builds(lambda n, a: f"{n}({a})",
              st.sampled_from(["Ne", "Nee", "Lt", "Gt", "Lte", "Gte", "Regex"]), VALUE),
    st.builds(lambda n, a, b: f"{n}({a}, {b})",
              st.sampled_from(["Inside", "Outside", "Between", "Within", "Without"]),
              VALUE, VALUE),
    st.sampled_from(["Ipv4Range('10.0.0.0/8')", "Regex('N.*')", "Regex('1.*')"]),
)
PAIR = st.builds(lambda k, v: f"{k}, {v}", KEY, st.one_of(VALUE, PRED))
PAIRS = st.lists(PAIR, max_size=2).map(", ".join)
STEP = st.one_of(
    st.builds(lambda n, a: f".{n}({a})",
              st.sampled_from(["Has", "HasEither", "Out", "In", "Both", "OutE", "InE", "BothE",
                               "OutV", "InV", "BothV", "SubGraph"]), PAIRS),
    st.builds(lambda n, k: f".{n}({k})",
              st.sampled_from(["HasKey", "HasNot", "Values", "Dedup", "Sort", "Sum", "As",
                               "Select", "ValueMap"]), KEY),
    st.sampled_from([".Count()", ".Dedup()", ".Limit(2)", ".Range(1, 3)", ".Keys()",
                     ".V()", ".E()", ".Sort(DESC, 'Value')", ".Descendants()",
                     ".Neighbors('RelationType', 'layer2', 2)", ".Ascendants(0)",
                     ".ShortestPathTo(Metadata('Value', 4))",
                     ".ShortestPathTo(Metadata('Value', 3), Metadata('Direction', 'Left'))",
                     ".ValueMap()"]),
)
START = st.sampled_from(["G.V()", "G.E()", "G.V('n1')", "G.At(NOW).V()",
                         "G.At('-1s', FOREVER).V()", "G.At(NOW).E()", "G.V().As('a')"])
QUERY = st.builds(lambda s, steps: s + "".join(steps), START, st.lists(STEP, max_size=5))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=QUERY)
def test_random_queries_on_the_server(gdb: GremlinDB, text: str) -> None:
    try:
        gdb.query(text, limits=Limits(timeout_s=5.0))
    except GremlinError as err:
        assert str(err)
