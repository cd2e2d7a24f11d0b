"""Metadata <-> Bolt properties: lossless for every JSON value, readable in Browser."""

from hypothesis import given
from hypothesis import strategies as st

from skygraph.topology.model import RESERVED_KEYS
from skygraph.topology.schema import from_properties, kind_label, quote, relationship_type, to_properties

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8) \
    | st.floats(allow_nan=False, allow_infinity=False)
keys = st.text(min_size=1, max_size=6).filter(lambda k: k not in ("_json", "_key"))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=4), max_leaves=12)


top_keys = keys.filter(lambda k: k not in RESERVED_KEYS)  # validation rejects those


@given(st.dictionaries(top_keys, json_values, max_size=6))
def test_round_trip_is_lossless(meta):
    """Every valid metadata tree comes back unchanged."""
    assert from_properties(to_properties(meta)) == meta


def test_nested_maps_are_flattened_and_lists_kept():
    props = to_properties({"Name": "eth0", "Ovs": {"Metric": {"RxBytes": 5}},
                           "IPV4": ["10.0.0.1/24"], "Indexes": [5, 6]})
    assert props == {"Name": "eth0", "Ovs.Metric.RxBytes": 5, "IPV4": ["10.0.0.1/24"],
                     "Indexes": [5, 6]}


def test_values_bolt_cannot_store_become_json_with_their_path_listed():
    props = to_properties({"RoutingTables": [{"ID": 254}], "Empty": {}, "Mixed": [1, "a"],
                           "ExtID": {"k8s.ovn.org/x": "y"}, "Null": None})
    assert props["RoutingTables"] == '[{"ID":254}]'
    assert props["ExtID"] == '{"k8s.ovn.org/x":"y"}'
    assert sorted(props["_json"]) == sorted(['["RoutingTables"]', '["Empty"]', '["Mixed"]',
                                             '["ExtID"]', '["Null"]'])


def test_labels_and_relationship_types():
    assert kind_label("host") == "Host"
    assert kind_label("veth") == kind_label("internal") == kind_label("vxlan") == "Interface"
    assert kind_label("ovsbridge") == "OvsBridge"
    assert kind_label("k8s-pod") is None
    assert relationship_type("ownership") == "OWNERSHIP"
    assert relationship_type("k8s.association") == "K8S_ASSOCIATION"
    assert quote("a`b") == "`a``b`"
