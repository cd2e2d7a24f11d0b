"""Validation: every error names the element and the field."""

import pytest

from skygraph.topology import snapshot
from skygraph.topology.errors import ValidationError
from skygraph.topology.model import Edge, Node, validate_edge, validate_node


@pytest.mark.parametrize(("meta", "field"), [
    ({"Name": "eth0"}, "Metadata.Type"),
    ({"Type": "veth"}, "Metadata.Name"),
    ({"Type": "veth", "Name": ""}, "Metadata.Name"),
    ({"Type": "netns", "Name": "vm1"}, "Metadata.Path"),
    ({"Type": "ovsport", "Name": "p1"}, "Metadata.UUID"),
    ({"Type": "veth", "Name": "eth0", "Host": "x"}, "Metadata.Host"),
    ({"Type": "veth", "Name": "eth0", "Speed": float("nan")}, "Metadata.Speed"),
    ({"Type": "veth", "Name": "eth0", "Ovs": {"": 1}}, "Metadata.Ovs"),
])
def test_node_validation_names_node_and_field(meta, field):
    with pytest.raises(ValidationError) as err:
        validate_node(Node("n1", meta))
    assert err.value.element == "node n1"
    assert err.value.field == field
    assert str(err.value).startswith(f"node n1: field '{field}'")


def test_edge_requires_relation_type_and_endpoints():
    with pytest.raises(ValidationError, match=r"edge e1: field 'Metadata.RelationType': required"):
        validate_edge(Edge("e1", "a", "b", {}))
    with pytest.raises(ValidationError, match=r"edge e1: field 'Child': required"):
        validate_edge(Edge("e1", "a", "", {"RelationType": "layer2"}))


def test_snapshot_errors_name_the_element_position():
    text = '{"Nodes": [{"ID": "a", "Metadata": {"Type": "host", "Name": "h"}}, ' \
           '{"ID": "b", "Metadata": {"Type": "veth"}}], "Edges": []}'
    with pytest.raises(ValidationError, match=r"node b: field 'Metadata.Name': required"):
        snapshot.parse(text, "topo.json")
    with pytest.raises(ValidationError, match=r"topo.json: Nodes\[0\]: field 'ID'"):
        snapshot.parse('{"Nodes": [{"Metadata": {}}]}', "topo.json")
    with pytest.raises(ValidationError, match=r"topo.json: .*not JSON: .*line 1 column 2"):
        snapshot.parse("{x", "topo.json")
    with pytest.raises(ValidationError, match=r"field 'Links': unknown key"):
        snapshot.parse('{"Nodes": [], "Links": []}', "topo.json")


def test_snapshot_round_trip_keeps_skydive_shape():
    node = Node("a", {"Type": "host", "Name": "h", "mydict": {"value": 123}}, Host="h",
                CreatedAt=5, UpdatedAt=6, Revision=2)
    edge = Edge("e", "a", "a", {"RelationType": "layer2"}, CreatedAt=5, UpdatedAt=5, Revision=1)
    doc = snapshot.to_json([node], [edge])
    assert set(doc["Nodes"][0]) == {"ID", "Metadata", "Host", "Origin", "CreatedAt",
                                    "UpdatedAt", "Revision"}
    assert doc["Edges"][0]["Parent"] == "a"
    assert snapshot.from_json(doc) == ([node], [edge])
