"""Flows <-> `(:Flow)` properties (pure): validation, the round trip, update order."""

from __future__ import annotations

import pytest

from skygraph.topology.flow import (
    Flow,
    FlowLayer,
    FlowMetric,
    FlowProtocol,
    ICMPLayer,
    ICMPType,
    TCPMetric,
    TransportLayer,
)
from skygraph.topology.flowschema import (
    FlowError,
    flow_json,
    flow_properties,
    is_scalar_field,
    newest,
    write_row,
)


def test_invalid_flow_documents_are_refused_with_the_field_named() -> None:
    for doc, message in (({"LayersPath": "x"}, "flow without a UUID"),
                         ({"UUID": 3}, "flow without a UUID"),
                         ({"UUID": "u", "Host": "h"}, "flow u: field 'Host' is reserved"),
                         ({"UUID": "u", "NodeTID": 1}, "flow u: field 'NodeTID' must be a string"),
                         ({"UUID": "u", "Last": "x"}, "flow u: field 'Last' must be an integer")):
        with pytest.raises(FlowError, match=message):
            flow_properties(doc, "h", 1)


def test_flattened_like_metadata_plus_the_analyzers_own_fields() -> None:
    props = flow_properties({"UUID": "u", "Link": {"Protocol": "ETHERNET", "A": "a", "ID": 0},
                             "DNS": {"Questions": [{"Name": "x"}], "QR": True}}, "h", 5)
    assert props["Link.A"] == "a" and props["Host"] == "h" and props["UpdatedAt"] == 5
    assert props["_json"] == ['["DNS","Questions"]']
    assert flow_json(props) == {"UUID": "u", "Link": {"Protocol": "ETHERNET", "A": "a", "ID": 0},
                                "DNS": {"QR": True, "Questions": [{"Name": "x"}]},
                                "ParentUUID": ""}
    # an outer flow's empty ParentUUID is not stored (one index key for most flows)
    outer = flow_properties({"UUID": "o", "ParentUUID": ""}, "h", 1)
    assert "ParentUUID" not in outer and flow_json(outer) == {"UUID": "o", "ParentUUID": ""}
    assert flow_properties({"UUID": "i", "ParentUUID": "o"}, "h", 1)["ParentUUID"] == "o"


def test_round_trip_keeps_skydive_json_and_key_order() -> None:
    flow = Flow(uuid="u1", layers_path="Ethernet/IPv4/TCP", application="TCP",
                link=FlowLayer(FlowProtocol.ETHERNET, "02:00:00:00:00:0a", "02:00:00:00:00:0b", 8),
                network=FlowLayer(FlowProtocol.IPV4, "10.0.0.1", "10.0.0.2"),
                transport=TransportLayer(FlowProtocol.TCP, 1234, 80),
                last_update_metric=FlowMetric(1, 60, 0, 0, 10, 20),
                metric=FlowMetric(3, 180, 2, 120, 5, 20, rtt=33000), tcp_metric=TCPMetric(
                    ab_syn_start=5, ab_syn_ttl=64), start=5, last=20, tracking_id="t",
                l3_tracking_id="l", parent_uuid="", node_tid="n", capture_id="c")
    doc = flow.to_json()
    # as the database returns them: in no particular order
    props = dict(sorted(flow_properties(doc, "h", 1).items(), reverse=True))
    back = flow_json(props)
    assert back == doc
    assert list(back) == list(doc)
    for key in ("Link", "Network", "Transport", "Metric", "LastUpdateMetric", "TCPMetric"):
        assert list(back[key]) == list(doc[key]), key
    icmp = Flow(uuid="u2", icmp=ICMPLayer(ICMPType.ECHO, 0, 7)).to_json()
    assert flow_json(flow_properties(icmp, "h", 1)) == icmp


def test_scalar_fields() -> None:
    for key in ("UUID", "Last", "NodeTID", "Network.A", "Metric.ABBytes", "ICMP.ID",
                "TCPMetric.ABSynStart"):
        assert is_scalar_field(key), key
    for key in ("Network", "DNS.Questions", "DNS.ID", "Metric.A.B", "Other"):
        assert not is_scalar_field(key), key


def test_newest_update_per_flow_wins_in_a_batch() -> None:
    def update(last: int, tick: int, n: int) -> dict[str, object]:
        return write_row({"UUID": "u", "Last": last, "LastUpdateMetric": {"Last": tick},
                          "Metric": {"ABPackets": n}}, "h", 1)
    rows = newest([update(5, 10, 1), update(6, 20, 2), update(6, 15, 3), update(4, 30, 4)])
    assert [r["props"]["Metric.ABPackets"] for r in rows] == [2]
    rows = newest([update(6, 20, 2), update(6, 20, 5)])  # a tie: the later one
    assert [r["props"]["Metric.ABPackets"] for r in rows] == [5]


def _with_packets() -> Flow:
    from skygraph.topology.flow import RawPacket
    flow = Flow(uuid="u", start=10, last=20, metric=FlowMetric(1, 98, 1, 98, 10, 20),
                last_update_metric=FlowMetric(1, 98, 1, 98, 0, 1000))
    flow.last_raw_packets = (RawPacket(10, 1, b"\x00\x01req", 1), RawPacket(20, 2, b"rep", 1))
    flow.raw_packets_captured = 2
    return flow


def test_wire_json_carries_the_kept_packets_which_the_flow_node_does_not() -> None:
    from skygraph.topology.flowschema import wire_json
    flow = _with_packets()
    wire = wire_json(flow)
    assert wire["LastRawPackets"] == [
        {"Timestamp": 10, "Index": 1, "Data": "AAFyZXE=", "LinkType": 1},
        {"Timestamp": 20, "Index": 2, "Data": "cmVw", "LinkType": 1}]
    assert "LastRawPackets" not in flow.to_json()  # Skydive's JSON never has them
    row = write_row(wire, "h", 5)
    assert "LastRawPackets" not in flow_json(row["props"])
    assert [(p["key"], p["props"]["Data"], p["props"]["FlowUUID"]) for p in row["packets"]] == [
        ("u/1", b"\x00\x01req", "u"), ("u/2", b"rep", "u")]
    assert row["sample"] == {"UUID": "u", "key": "u/1000", "props": {
        "ABPackets": 1, "ABBytes": 98, "BAPackets": 1, "BABytes": 98, "Start": 0, "Last": 1000,
        "FlowUUID": "u", "_key": "u/1000"}}
    # the store's bound per flow: a larger Index is dropped (and counted)
    bounded = write_row(wire, "h", 5, max_raw_packets=1)
    assert [p["key"] for p in bounded["packets"]] == ["u/1"] and bounded["dropped"] == 1


def test_bad_raw_packets_are_refused_with_the_packet_and_field_named() -> None:
    from skygraph.topology.flowschema import MAX_RAW_PACKET_BYTES
    good = {"Timestamp": 1, "Index": 1, "Data": "AA==", "LinkType": 1}
    for packets, message in (
            ("x", "flow u: field 'LastRawPackets' must be a list"),
            ([3], r"flow u: LastRawPackets\[0\]: expected an object"),
            ([good, {**good, "Index": 0}], r"LastRawPackets\[1\]: field 'Index' must be a "
                                           "positive integer"),
            ([{**good, "Timestamp": "1"}], "field 'Timestamp' must be a non-negative"),
            ([{**good, "Data": "!!"}], "field 'Data' must be base64"),
            ([{**good, "Data": "A" * (MAX_RAW_PACKET_BYTES // 3 * 4 + 8)}], "more than 65535")):
        with pytest.raises(FlowError, match=message):
            write_row({"UUID": "u", "LastRawPackets": packets}, "h", 1)


def test_no_sample_without_an_update_window() -> None:
    assert write_row({"UUID": "u"}, "h", 1)["sample"] is None
    assert write_row({"UUID": "u", "LastUpdateMetric": {"ABPackets": 1}}, "h", 1)["sample"] \
        is None
