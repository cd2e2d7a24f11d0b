"""The flow fields the translator looks flows up by and the indexes bootstrap
creates are the same list: a filterable field without an index fails here."""

from skygraph.gremlin.lookups import LOOKUP_RANK
from skygraph.topology import schema

# The fields users filter flows on (issue 17): each must be served by an index.
FILTERED_BY_USERS = ("Application", "LayersPath", "Network.A", "Network.B", "Link.A", "Link.B",
                     "Transport.A", "Transport.B", "TrackingID", "L3TrackingID", "ParentUUID",
                     "NodeTID", "CaptureID", "Start", "Last")


def test_every_looked_up_field_has_an_index():
    unindexed = [p for p in LOOKUP_RANK if p != "UUID" and p not in schema.FLOW_INDEXED]
    assert unindexed == []


def test_every_flow_index_is_used_by_the_translator():
    assert [p for p in schema.FLOW_INDEXED if p not in LOOKUP_RANK] == []


def test_the_fields_users_filter_on_are_looked_up_through_an_index():
    assert [p for p in FILTERED_BY_USERS if p not in LOOKUP_RANK] == []


def test_bootstrap_creates_each_flow_index():
    stmts = "\n".join(schema.schema_statements())
    for prop in schema.FLOW_INDEXED:
        statement = schema.flow_index_statement(prop)
        assert statement in stmts and f"ON (f.{schema.quote(prop)})" in statement
    assert "REQUIRE f.UUID IS UNIQUE" in stmts
