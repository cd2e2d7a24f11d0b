"""Capture mutations and queries over GraphQL: field-level validation errors
named by their GraphQL input field, a duplicate, list/get/delete."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.graphql.conftest import Served

pytestmark = pytest.mark.bolt

CREATE = """mutation($in: CaptureInput!) { createCapture(input: $in) {
    capture { id gremlinQuery name description type bpfFilter headerSize rawPacketLimit
              extraTCPMetric ipDefrag reassembleTCP layerKeyMode extraLayers target targetType
              port samplingRate pollingInterval workers ttl count state createdAt }
    errors { field message code existingId } } }"""


def create(served: Served, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = served.data(CREATE, {"in": fields})["createCapture"]
    return out


@pytest.mark.parametrize(("fields", "field", "needle"), [
    ({"gremlinQuery": "G.V().Has("}, "gremlinQuery", "end of query"),
    ({"gremlinQuery": "  "}, "gremlinQuery", "required"),
    ({"type": "tcpdump"}, "type", "unknown capture type"),
    ({"bpfFilter": "tcp port ((("}, "bpfFilter", ""),
    ({"headerSize": 13}, "headerSize", "14..4096"),
    ({"rawPacketLimit": 11}, "rawPacketLimit", "0..10"),
    ({"type": "ebpf", "extraTCPMetric": False, "bpfFilter": "icmp"}, "bpfFilter", "BPF"),
    ({"layerKeyMode": "L4"}, "layerKeyMode", "L2 or L3"),
    ({"extraLayers": ["DNS", "SMTP"]}, "extraLayers", "unknown layer 'SMTP'"),
    ({"targetType": "ipfix"}, "targetType", "unknown target type"),
    ({"target": "nowhere", "targetType": "netflowv5"}, "target", "ip:port"),
    ({"port": 70000}, "port", "not a port"),
    ({"samplingRate": -1}, "samplingRate", "negative"),
    ({"pollingInterval": -1}, "pollingInterval", "negative"),
    ({"ttl": -1}, "ttl", "negative"),
    ({"workers": 65}, "workers", "0..64"),
])
def test_each_invalid_field_gets_its_own_error(served: Served, fields: dict[str, Any],
                                               field: str, needle: str) -> None:
    out = create(served, **{"gremlinQuery": "G.V().Has('Type', 'netns')", **fields})
    assert out["capture"] is None
    assert [(e["field"], e["code"]) for e in out["errors"]] == [(field, "INVALID")]
    assert needle in out["errors"][0]["message"]


def test_several_invalid_fields_at_once(served: Served) -> None:
    out = create(served, gremlinQuery="G.V(", headerSize=5, layerKeyMode="x", ipDefrag=True)
    assert sorted(e["field"] for e in out["errors"]) == ["gremlinQuery", "headerSize",
                                                         "layerKeyMode"]


def test_create_list_get_duplicate_delete(served: Served) -> None:
    made = create(served, gremlinQuery="G.V().Has('Name', 'eth0')", name="web",
                  description="port 80", type="pcap", bpfFilter="tcp port 80", headerSize=128,
                  rawPacketLimit=5, extraTCPMetric=True, ipDefrag=True, reassembleTCP=True,
                  layerKeyMode="L3", extraLayers=["DNS", "DHCPv4"], target="127.0.0.1:2055",
                  targetType="netflowv5", port=0, samplingRate=2, pollingInterval=5,
                  workers=4, ttl=60_000)
    assert made["errors"] == []
    cap = made["capture"]
    assert cap["gremlinQuery"] == "G.V().Has('Name', 'eth0')" and cap["type"] == "pcap"
    assert cap["bpfFilter"] == "tcp port 80" and cap["headerSize"] == 128
    assert (cap["extraTCPMetric"], cap["ipDefrag"], cap["reassembleTCP"]) == (True, True, True)
    assert sorted(cap["extraLayers"]) == ["DHCPv4", "DNS"] and cap["layerKeyMode"] == "L3"
    assert (cap["target"], cap["targetType"], cap["samplingRate"], cap["pollingInterval"]) == \
        ("127.0.0.1:2055", "netflowv5", 2, 5)
    assert cap["workers"] == 4
    assert cap["ttl"] == 60_000 and cap["state"] == "pending" and cap["count"] == 0
    assert cap["createdAt"] > 0

    listed = served.data("{ captures { id name } }")["captures"]
    assert {"id": cap["id"], "name": "web"} in listed
    got = served.data("query($id: ID!) { capture(id: $id) { id rawPacketLimit workers } }",
                      {"id": cap["id"]})["capture"]
    assert got == {"id": cap["id"], "rawPacketLimit": 5, "workers": 4}

    dup = create(served, gremlinQuery="G.V().Has('Name', 'eth0')", type="pcap",
                 bpfFilter="tcp port 80")
    assert dup["capture"] is None
    (error,) = dup["errors"]
    assert (error["field"], error["code"], error["existingId"]) == \
        ("gremlinQuery", "DUPLICATE", cap["id"])
    assert cap["id"] in error["message"]
    other_filter = create(served, gremlinQuery="G.V().Has('Name', 'eth0')", type="pcap",
                          bpfFilter="udp")
    assert other_filter["errors"] == []  # pcap allows several captures with other filters

    delete = "mutation($id: ID!) { deleteCapture(id: $id) }"
    assert served.data(delete, {"id": cap["id"]}) == {"deleteCapture": True}
    assert served.data(delete, {"id": cap["id"]}) == {"deleteCapture": False}
    assert served.data("query($id: ID!) { capture(id: $id) { id } }",
                       {"id": cap["id"]}) == {"capture": None}


def test_input_types_are_checked_by_graphql(served: Served) -> None:
    message = served.error("mutation { createCapture(input: {gremlinQuery: \"G.V()\", "
                           "headerSize: \"big\"}) { errors { field } } }")
    assert message == 'Int cannot represent non-integer value: "big"'
