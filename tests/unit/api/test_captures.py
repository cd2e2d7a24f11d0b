"""Capture validation (SPEC §1b) and the duplicate rule, without a database."""

from __future__ import annotations

import pytest

from skygraph.api.captures import Capture, CaptureInvalid, is_duplicate, validate
from skygraph.capture.bpf import BPFError
from skygraph.capture.sources.base import CaptureSpec


def check_bpf(expr: str) -> None:
    if "((" in expr:
        raise BPFError(f"BPF filter {expr!r}: syntax error")


def fields(spec: dict) -> dict:
    return validate(spec, 10, check_bpf)


def errors(spec: dict, max_raw: int = 10) -> dict[str, str]:
    with pytest.raises(CaptureInvalid) as info:
        validate(spec, max_raw, check_bpf)
    return {e.field: e.message for e in info.value.errors}


def test_defaults_follow_skydive():
    f = fields({"GremlinQuery": "G.V().Has('Name', 'eth0')"})
    c = Capture(uuid="u", **f)
    assert (c.layer_key_mode, c.header_size, c.sampling_rate, c.polling_interval,
            c.raw_packet_limit, c.type, c.state) == ("L2", 0, 1, 10, 0, "", "pending")
    assert c.to_json()["GremlinQuery"] == "G.V().Has('Name', 'eth0')"
    assert Capture.from_properties({**c.properties()}) == c


@pytest.mark.parametrize(("spec", "field", "needle"), [
    ({"HeaderSize": 13}, "HeaderSize", "14..4096"),
    ({"HeaderSize": 4097}, "HeaderSize", "14..4096"),
    ({"RawPacketLimit": -1}, "RawPacketLimit", "0..10"),
    ({"LayerKeyMode": "l2"}, "LayerKeyMode", "L2 or L3"),
    ({"ExtraLayers": 8}, "ExtraLayers", "unknown bits"),
    ({"ExtraLayers": "DNS"}, "ExtraLayers", "list of layer names"),
    ({"TargetType": "ipfix"}, "TargetType", "unknown target type"),
    ({"TargetType": "netflowv5"}, "Target", "needs a Target"),
    ({"Target": "10.0.0.1:2055", "TargetType": "erspanv1"}, "Target", "ip:0"),
    ({"Target": "10.0.0.1:0", "TargetType": "sflow"}, "Target", "UDP port"),
    ({"Target": "example.com:2055", "TargetType": "netflowv5"}, "Target", "ip:port"),
    ({"Type": "ebpf", "BPFFilter": "icmp"}, "BPFFilter", "does not support BPF"),
    ({"Type": "ebpf", "RawPacketLimit": 2}, "RawPacketLimit", "raw packets"),
    ({"BPFFilter": "tcp (("}, "BPFFilter", "syntax error"),
    ({"Name": 3}, "Name", "expected a string"),
    ({"Port": True}, "Port", "expected an integer"),
    ({"TTL": -5}, "TTL", "negative"),
    ({"Workers": 65}, "Workers", "0..64"),
    ({"Workers": -1}, "Workers", "0..64"),
    ({"Workers": "4"}, "Workers", "expected an integer"),
])
def test_one_bad_field_one_error(spec, field, needle):
    got = errors({"GremlinQuery": "G.V()", **spec})
    assert list(got) == [field] and needle in got[field], got


def test_valid_targets_and_names():
    assert fields({"GremlinQuery": "G.V()", "Target": "[::1]:6343", "TargetType": "sflow"})
    assert fields({"GremlinQuery": "G.V()", "Target": "192.0.2.1:0",
                   "TargetType": "erspanv2"})["target_type"] == "erspanv2"
    assert fields({"GremlinQuery": "G.V()", "ExtraLayers": ["DHCPv4"]})["extra_layers"] == 4
    assert fields({"GremlinQuery": "G.V()", "UUID": "ignored", "Count": 3})


def test_workers_round_trip_to_the_agent():
    """Workers (skygraph extension): stored, served back and read by the agent's spec."""
    assert fields({"GremlinQuery": "G.V()"})["workers"] == 0
    c = Capture(uuid="u", **fields({"GremlinQuery": "G.V()", "Workers": 64}))
    assert c.workers == 64 and c.to_json()["Workers"] == 64
    assert c.properties()["Workers"] == 64 and Capture.from_properties(c.properties()) == c
    old = {k: v for k, v in c.properties().items() if k != "Workers"}  # stored before Workers
    assert Capture.from_properties(old).workers == 0
    spec = CaptureSpec.from_json({**c.to_json(), "Type": "afpacket"})  # what agents get
    assert spec.workers == 64


def test_raw_packet_bound_is_configurable():
    assert fields({"GremlinQuery": "G.V()", "RawPacketLimit": 10})
    assert "0..3" in errors({"GremlinQuery": "G.V()", "RawPacketLimit": 4}, max_raw=3)[
        "RawPacketLimit"]


def test_duplicate_rule():
    base = Capture(uuid="a", gremlin_query="G.V()", type="afpacket", bpf_filter="icmp")
    assert is_duplicate(base, base)
    assert not is_duplicate(Capture(uuid="b", gremlin_query="G.V()", type="afpacket",
                                    bpf_filter="udp"), base)
    sock = Capture(uuid="c", gremlin_query="G.V()", type="sflow", bpf_filter="icmp")
    assert is_duplicate(Capture(uuid="d", gremlin_query="G.V()", type="sflow",
                                bpf_filter="udp"), sock)
    assert not is_duplicate(Capture(uuid="e", gremlin_query="G.V().Limit(1)", type="sflow"),
                            sock)
    assert is_duplicate(Capture(uuid="f", gremlin_query="G.V()"),
                        Capture(uuid="g", gremlin_query="G.V()"))


def test_missing_query_is_required_not_a_crash():
    assert errors({"Name": "x"}) == {"GremlinQuery": "required"}
    assert errors({"GremlinQuery": "  "}) == {"GremlinQuery": "required"}
    with pytest.raises(CaptureInvalid, match="expected a JSON object"):
        validate(["G.V()"], 10, check_bpf)  # type: ignore[arg-type]
